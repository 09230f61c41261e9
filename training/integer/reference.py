"""The numpy reference: executes the integer IR on int64, op by op, exactly as the generated C does.

Each function carries the name of its C kernel (firmware_template/kernels/<op>.c.j2) and computes the
fixed-point semantics documented in training/quant/__init__.py; each checks the accumulator bound lowering proved.
"""
from __future__ import annotations

import numpy as np

from siq.training.errors import SiqError
from siq.training.quant import INT32_MAX, codebook_weights

from .ir import (AddRequant, AvgPool2d, ConcatRequant, Conv2dGeneralRequant, Conv2dRequant, Conv2dRequantMaxpool,
                 DenseRequant, DenseScores, IntegerModel, LRNRequant, MaxPool2d, QuantizeInput)


def requantize(acc: np.ndarray, shift: int, max_code: int) -> np.ndarray:
    """acc already holds the rounding half: out = clamp(acc >> shift, 0, max_code) (or << -shift)."""
    if shift > 0:
        out = acc >> shift  # numpy >> on int64 is floor division: exactly Eq. 5 with the half folded in
    else:
        out = acc << -shift
    return np.clip(out, 0, max_code)


def requantize_channels(acc: np.ndarray, shifts: np.ndarray, max_code: int) -> np.ndarray:
    """requantize with output channel o's own shift (acc [N, C, H, W]; each bias holds its channel's half)."""
    return np.concatenate([requantize(acc[:, o:o + 1], int(s), max_code) for o, s in enumerate(shifts)], axis=1)


def quantize_input(images: np.ndarray, op: QuantizeInput) -> np.ndarray:
    pixels = images.reshape(len(images), *op.shape).astype(np.int64)
    if op.shift >= 0:
        codes = pixels << op.shift
    else:
        codes = (pixels + (1 << (-op.shift - 1))) >> -op.shift
    return np.minimum(codes, op.max_code)


def _check_bound(acc: np.ndarray, bound: int, name: str) -> None:
    if acc.size and int(np.max(np.abs(acc))) > bound:
        raise AssertionError(f"{name}: accumulator {int(np.max(np.abs(acc)))} exceeds the proven bound {bound}")


def conv2d_requant(codes: np.ndarray, op: Conv2dRequant) -> np.ndarray:
    if op.in_shifts is not None:  # each input channel onto the finest channel's step
        codes = codes.astype(np.int64) << op.in_shifts.astype(np.int64)[None, :, None, None]
    padded = np.pad(codes, ((0, 0), (0, 0), (op.pad, op.pad), (op.pad, op.pad)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (op.k, op.k), axis=(2, 3))
    windows = windows[:, :, ::op.stride, ::op.stride][:, :, :op.out_shape[1], :op.out_shape[2]]
    weights = codebook_weights(op.codebook, op.indices)  # [O, C, K, K]
    acc = np.einsum("nchwij,ocij->nohw", windows, weights, optimize=True) + op.bias[None, :, None, None]
    _check_bound(acc, op.acc_bound, op.name)
    return requantize(acc, op.shift, op.max_code)


def conv2d_general_requant(codes: np.ndarray, op: Conv2dGeneralRequant) -> np.ndarray:
    top, bottom, left, right = op.pad
    (kh, kw), (sh, sw), (_, oh, ow) = op.kernel, op.stride, op.out_shape
    padded = np.pad(codes, ((0, 0), (0, 0), (top, bottom), (left, right)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw][:, :, :oh, :ow]                 # [N, C, OH, OW, KH, KW]
    weights = codebook_weights(op.codebook, op.indices)                # [O, C / groups, KH, KW]
    n, g = len(codes), op.groups
    windows = windows.reshape(n, g, -1, oh, ow, kh, kw)
    weights = weights.reshape(g, -1, *weights.shape[1:])               # [G, O / G, C / G, KH, KW]
    acc = np.einsum("ngchwij,gocij->ngohw", windows, weights, optimize=True).reshape(n, -1, oh, ow)
    acc = acc + op.bias[None, :, None, None]
    _check_bound(acc, op.acc_bound, op.name)
    if op.channel_shifts is not None:
        return requantize_channels(acc, op.channel_shifts, op.max_code)
    return requantize(acc, op.shift, op.max_code)


def avgpool2d(codes: np.ndarray, op: AvgPool2d) -> np.ndarray:
    (kh, kw), (sh, sw), (_, oh, ow) = op.kernel, op.stride, op.out_shape
    padded = np.pad(codes.astype(np.int64), ((0, 0), (0, 0), (op.pad, op.pad), (op.pad, op.pad)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    sums = windows[:, :, ::sh, ::sw][:, :, :oh, :ow].sum(axis=(4, 5))
    numerators = (sums << op.up) + op.divisor // 2
    _check_bound(numerators, op.acc_bound, op.name)
    return np.minimum(numerators // op.divisor, op.max_code)  # floor division of non-negative integers


def maxpool2d(codes: np.ndarray, op: MaxPool2d) -> np.ndarray:
    n, c, h, w = codes.shape
    k = op.k
    return codes.reshape(n, c, h // k, k, w // k, k).max(axis=(3, 5))


def conv2d_requant_maxpool(codes: np.ndarray, op: Conv2dRequantMaxpool) -> np.ndarray:
    """The fused C kernel computes each pooled output from its k x k conv outputs; max-pool commutes with the
    monotone requantization, so this equals the two ops in sequence."""
    return maxpool2d(conv2d_requant(codes, op.conv), op.pool)


def lrn_requant(codes: np.ndarray, op: LRNRequant) -> np.ndarray:
    squares = np.pad(codes * codes, ((0, 0), (op.window_before, op.window_after), (0, 0), (0, 0)))
    channels = codes.shape[1]
    window = sum(squares[:, j:j + channels] for j in range(op.window_before + op.window_after + 1))
    product = codes * op.table[window >> op.index_shift] + (1 << (op.frac_bits - 1))
    _check_bound(product, INT32_MAX, op.name)
    return np.minimum(product >> op.frac_bits, op.max_code)


def dense_requant(codes: np.ndarray, op: DenseRequant) -> np.ndarray:
    acc = codes.reshape(len(codes), -1) @ codebook_weights(op.codebook, op.indices).T + op.bias
    _check_bound(acc, op.acc_bound, op.name)
    return requantize(acc, op.shift, op.max_code)


def dense_scores(codes: np.ndarray, op: DenseScores) -> np.ndarray:
    acc = codes.reshape(len(codes), -1) @ codebook_weights(op.codebook, op.indices).T + op.bias
    _check_bound(acc, op.acc_bound, op.name)
    return acc


def add_requant(inputs: list[np.ndarray], op: AddRequant) -> np.ndarray:
    a, b = (x.astype(np.int64) for x in inputs)
    total = (a - op.zero_a) * op.scale_a + (b - op.zero_b) * op.scale_b + op.rounding
    _check_bound(total, op.bound, op.name)
    return np.clip(total >> op.shift, 0, op.max_code)  # >> on int64 is floor division, also for a negative sum


def concat_requant(inputs: list[np.ndarray], op: ConcatRequant) -> np.ndarray:
    parts = [np.minimum((x.astype(np.int64) * scale + rounding) >> shift, op.max_code)
             for x, scale, rounding, shift in zip(inputs, op.scales, op.roundings, op.shifts)]
    return np.concatenate(parts, axis=1)


OP_FUNCTIONS = {
    "quantize_input": quantize_input,
    "conv2d_requant": conv2d_requant,
    "conv2d_general_requant": conv2d_general_requant,
    "avgpool2d": avgpool2d,
    "maxpool2d": maxpool2d,
    "conv2d_requant_maxpool": conv2d_requant_maxpool,
    "lrn_requant": lrn_requant,
    "dense_requant": dense_requant,
    "dense_scores": dense_scores,
    "add_requant": add_requant,
    "concat_requant": concat_requant,
}
MERGE_OPS = ("add_requant", "concat_requant")  # functions taking the list of their inputs


def run_integer(model: IntegerModel, images: np.ndarray, batch: int = 500) -> list[np.ndarray]:
    """Every op's output for uint8 images [N, C, H, W]; the last one is the int scores [N, classes]."""
    if images.dtype != np.uint8:
        raise SiqError(f"images must be uint8, got {images.dtype}")
    outputs: list[list[np.ndarray]] = [[] for _ in model.ops]
    for start in range(0, len(images), batch):
        done: list[np.ndarray] = []
        for k, op in enumerate(model.ops):
            ins = [done[j] for j in model.inputs[k]] or [images[start:start + batch]]
            done.append(OP_FUNCTIONS[op.name](ins if op.name in MERGE_OPS else ins[0], op))
            outputs[k].append(done[-1])
    return [np.concatenate(o) for o in outputs]


def integer_scores(model: IntegerModel, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """The int scores [N, classes], a batch at a time keeping only the scores: run_integer keeps every op's output
    (on resnet8 at N = 10,000 its first map alone is 1.2 GiB of int64)."""
    if len(images) <= batch:
        return run_integer(model, images, batch)[-1]
    return np.concatenate([run_integer(model, images[start:start + batch], batch)[-1]
                           for start in range(0, len(images), batch)])


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Activation codes as the generated C stores them (kernels/common.c.j2 store_code): bits = 8 is a byte a code;
    bits = 4 puts code i in bits [4 (i mod 2), 4 (i mod 2) + 4) of byte i // 2 (LSB first)."""
    flat = np.asarray(codes).reshape(-1).astype(np.uint8)
    if bits == 8:
        return flat
    if bits != 4 or flat.size and int(flat.max()) > 15:
        raise ValueError(f"cannot pack codes into {bits} bits")
    padded = np.concatenate([flat, np.zeros(flat.size % 2, np.uint8)])
    return (padded[0::2] | padded[1::2] << 4).astype(np.uint8)


def unpack_codes(stored: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first `count` codes of a buffer written by pack_codes (kernels/common.c.j2 load_code); bytes past
    them ignored."""
    stored = np.asarray(stored, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return stored[:count]
    return np.stack([stored & 15, stored >> 4], axis=1).reshape(-1)[:count]


def first_mismatch(expected: list[np.ndarray], got: list[np.ndarray], ops: list,
                   op_indices: list[int] | None = None) -> dict | None:
    """The first op (in execution order) whose outputs differ, with the first differing image, index, values.
    expected/got/ops are parallel lists; op_indices gives each entry's position in the model (default 0..)."""
    for k, (a, b) in enumerate(zip(expected, got)):
        a = np.asarray(a).reshape(len(a), -1)
        b = np.asarray(b).reshape(len(b), -1)
        diff = np.argwhere(a != b)
        if len(diff):
            image, index = (int(v) for v in diff[0])
            return {"op": op_indices[k] if op_indices else k, "name": ops[k].name, "layer": ops[k].layer_index,
                    "image": image, "index": index, "expected": int(a[image, index]), "got": int(b[image, index]),
                    "count": int(len(np.unique(diff[:, 0])))}
    return None

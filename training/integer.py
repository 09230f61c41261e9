"""Integer reference model: numpy on int64, mirroring the generated C op by op.

Each op function here has a C twin of the same name in firmware_template/kernels.c.j2; both compute exactly
the fixed-point semantics documented in training/quant.py. The ops are built from a QuantizedModel by
build_integer_model, which also proves that no accumulator can leave int32.

Layouts: feature maps are [C, H, W] (channel-major, as PyTorch flattens them); conv weights [C_OUT, C_IN, K, K];
dense weights [OUT, IN]. Codes are unsigned a-bit integers in [0, 2^a - 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arch import LRN, Conv, Dense, Dropout, Flatten, MaxPool, ReLU
from .errors import SiqError
from .quant import INT32_MAX, QuantizedModel, codebook_weights, input_point_of, lrn_table, quantizable


@dataclass
class QuantizeInput:
    """code = clamp(floor(pixel * 2^shift_from_pixel + 1/2), 0, max_code) for pixel in 0..255."""
    shape: tuple[int, int, int]
    shift: int            # s_in - 8: > 0 scales up, < 0 is a rounding right shift
    max_code: int
    layer_index: int = -1
    name: str = "quantize_input"


@dataclass
class Conv2dRequant:
    """out[o, y, x] = requantize(bias[o] + sum_{c, ky, kx} in[c, y*stride + ky - pad, x*stride + kx - pad]
                                 * codebook[indices[o, c, ky, kx]])   (zero outside the input;
    a per-channel codebook [C_OUT, K] reads codebook[o, indices[o, c, ky, kx]])."""
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    k: int
    stride: int
    pad: int
    codebook: np.ndarray   # int64 [K], or [C_OUT, K] per output channel
    indices: np.ndarray    # uint8 [C_OUT, C_IN, K, K]
    bits: int
    bias: np.ndarray       # int64 [C_OUT]: integer bias plus the rounding half 2^(shift-1) when shift > 0
    shift: int             # requantization: acc * 2^-shift (right shift if > 0, left shift if < 0)
    max_code: int
    acc_bound: int         # proven max |acc| over all inputs with codes in [0, in_max_code]
    layer_index: int       # arch layer whose (quantized) output this equals: the relu after the conv
    name: str = "conv2d_requant"


@dataclass
class MaxPool2d:
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    k: int
    layer_index: int
    name: str = "maxpool2d"


@dataclass
class LRNRequant:
    """S = sum of in[c']^2 over the channel window; out = clamp(floor((in * table[S >> index_shift]
    + 2^(frac_bits-1)) >> frac_bits), 0, max_code)."""
    shape: tuple[int, int, int]
    window_before: int
    window_after: int
    index_shift: int
    table: np.ndarray      # int64, every entry * max_code + 2^(frac_bits-1) <= INT32_MAX
    frac_bits: int
    max_code: int
    layer_index: int
    name: str = "lrn_requant"


@dataclass
class DenseRequant:
    in_features: int
    out_features: int
    codebook: np.ndarray
    indices: np.ndarray    # uint8 [OUT, IN]
    bits: int
    bias: np.ndarray
    shift: int
    max_code: int
    acc_bound: int
    layer_index: int
    name: str = "dense_requant"


@dataclass
class DenseScores:
    """The last layer: int32 scores = bias + sum in * codebook[indices], no requantization."""
    in_features: int
    out_features: int
    codebook: np.ndarray
    indices: np.ndarray
    bits: int
    bias: np.ndarray
    acc_bound: int
    layer_index: int
    name: str = "dense_scores"


@dataclass
class IntegerModel:
    input_shape: tuple[int, int, int]
    num_classes: int
    act_bits: int          # feature-map codes 0 .. 2^act_bits - 1
    ops: list
    class_names: list[str]
    score_exponent: int    # scores = real logits * 2^score_exponent
    input_bits: int        # input codes 0 .. 2^input_bits - 1


# ---------------------------------------------------------------- building and proving

def accumulator_bound(codebook, indices, bias, in_max_code: int) -> int:
    """Largest |acc| any input with codes in [0, in_max_code] can produce, over every partial sum: per output,
    acc lies in [bias + max_code * sum(negative weights), bias + max_code * sum(positive weights)]."""
    w = codebook_weights(codebook, indices).reshape(indices.shape[0], -1)
    high = bias + in_max_code * np.sum(np.maximum(w, 0), axis=1)
    low = bias + in_max_code * np.sum(np.minimum(w, 0), axis=1)
    return int(max(np.max(np.abs(high)), np.max(np.abs(low)), np.max(np.abs(bias))))


def _prove(bound: int, where: str) -> int:
    if bound > INT32_MAX:
        raise SiqError(f"{where}: the accumulator can reach {bound} > 2^31-1 = {INT32_MAX}; "
                       "use fewer activation or codebook bits, or a smaller fan-in")
    return bound


def build_integer_model(qm: QuantizedModel) -> IntegerModel:
    """Lower the quantized model to integer ops, refusing what the integer client cannot compute exactly."""
    arch = qm.arch
    quantizable(arch)
    shapes = [arch.input] + arch.shapes()
    max_code = 2**qm.act_bits - 1
    shift_from_pixel = qm.shifts[-1] - 8
    ops: list = [QuantizeInput(arch.input, shift_from_pixel, 2**qm.input_bits - 1)]
    last = arch.weighted_layers()[-1]
    for i, layer in enumerate(arch.layers):
        in_shape, out_shape = shapes[i], shapes[i + 1]
        where = f"layer {i} ({layer.type})"
        if isinstance(layer, (Conv, Dense)):
            lc = qm.layers[i]
            if lc.per_channel and lc.codebook.shape[0] != out_shape[0]:
                raise SiqError(f"{where}: {lc.codebook.shape[0]} codebook rows for {out_shape[0]} output channels")
            acc_exp = qm.accumulator_exponent(i)
            bias = qm.biases[i].astype(np.int64)
            in_max_code = 2 ** qm.bits_at(input_point_of(arch, i)) - 1
            bound = accumulator_bound(lc.codebook, lc.indices, bias, in_max_code)
            if i == last:
                ops.append(DenseScores(in_shape[0], out_shape[0], lc.codebook, lc.indices, lc.bits, bias,
                                       _prove(bound, where), i))
                continue
            # A left shift of 8 or more saturates every positive accumulator (max_code <= 255 < 2^8), so
            # shifts below -8 are clamped there: the same result, and the C never shifts by 32 or more.
            shift = max(acc_exp - qm.shifts[i + 1], -8)
            half = 2 ** (shift - 1) if shift > 0 else 0
            bound = _prove(bound + half, where)
            common = dict(codebook=lc.codebook, indices=lc.indices, bits=lc.bits, bias=bias + half, shift=shift,
                          max_code=max_code, acc_bound=bound, layer_index=i + 1)
            if isinstance(layer, Conv):
                ops.append(Conv2dRequant(in_shape, out_shape, layer.k, layer.stride, layer.pad, **common))
            else:
                ops.append(DenseRequant(in_shape[0], out_shape[0], **common))
        elif isinstance(layer, ReLU):
            if i == 0 or not isinstance(arch.layers[i - 1], (Conv, Dense)):
                raise SiqError(f"{where}: relu must directly follow a conv or dense layer in the integer client")
        elif isinstance(layer, MaxPool):
            if in_shape[1] % layer.k or in_shape[2] % layer.k:
                raise SiqError(f"{where}: pool {layer.k} does not divide the {in_shape[1]}x{in_shape[2]} map; "
                               "change the padding or the pool size")
            ops.append(MaxPool2d(in_shape, out_shape, layer.k, i))
        elif isinstance(layer, LRN):
            tab = lrn_table(layer, qm.shifts[input_point_of(arch, i)], qm.shifts[i], qm.act_bits)
            ops.append(LRNRequant(in_shape, tab.window_before, tab.window_after, tab.index_shift,
                                  np.array(tab.table, dtype=np.int64), tab.frac_bits, max_code, i))
        elif isinstance(layer, (Flatten, Dropout)):
            pass  # [C, H, W] is already flat in channel-major order; dropout is the identity at inference
        else:
            raise SiqError(f"{where}: no integer implementation for this layer type")
    return IntegerModel(arch.input, arch.num_classes, qm.act_bits, ops, list(qm.class_names),
                        qm.accumulator_exponent(last), qm.input_bits)


# ---------------------------------------------------------------- the ops (numpy twins of the C kernels)

def requantize(acc: np.ndarray, shift: int, max_code: int) -> np.ndarray:
    """acc already holds the rounding half: out = clamp(acc >> shift, 0, max_code) (or << -shift)."""
    if shift > 0:
        out = acc >> shift  # numpy >> on int64 is floor division: exactly Eq. 5 with the half folded in
    else:
        out = acc << -shift
    return np.clip(out, 0, max_code)


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
    n, c, h, w = codes.shape
    padded = np.pad(codes, ((0, 0), (0, 0), (op.pad, op.pad), (op.pad, op.pad)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (op.k, op.k), axis=(2, 3))
    windows = windows[:, :, ::op.stride, ::op.stride][:, :, :op.out_shape[1], :op.out_shape[2]]
    weights = codebook_weights(op.codebook, op.indices)  # [O, C, K, K]
    acc = np.einsum("nchwij,ocij->nohw", windows, weights, optimize=True) + op.bias[None, :, None, None]
    _check_bound(acc, op.acc_bound, op.name)
    return requantize(acc, op.shift, op.max_code)


def maxpool2d(codes: np.ndarray, op: MaxPool2d) -> np.ndarray:
    n, c, h, w = codes.shape
    k = op.k
    return codes.reshape(n, c, h // k, k, w // k, k).max(axis=(3, 5))


def conv2d_requant_maxpool(codes: np.ndarray, conv: Conv2dRequant, pool: MaxPool2d) -> np.ndarray:
    """The fused C kernel computes each pooled output from its k x k conv outputs; max-pool commutes with the
    monotone requantization, so this equals the two ops in sequence."""
    return maxpool2d(conv2d_requant(codes, conv), pool)


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


OP_FUNCTIONS = {
    "quantize_input": quantize_input,
    "conv2d_requant": conv2d_requant,
    "maxpool2d": maxpool2d,
    "lrn_requant": lrn_requant,
    "dense_requant": dense_requant,
    "dense_scores": dense_scores,
}


def run_integer(model: IntegerModel, images: np.ndarray, batch: int = 500) -> list[np.ndarray]:
    """Every op's output for uint8 images [N, C, H, W]; the last one is the int scores [N, classes]."""
    if images.dtype != np.uint8:
        raise SiqError(f"images must be uint8, got {images.dtype}")
    outputs: list[list[np.ndarray]] = [[] for _ in model.ops]
    for start in range(0, len(images), batch):
        x = images[start:start + batch]
        for k, op in enumerate(model.ops):
            x = OP_FUNCTIONS[op.name](x, op)
            outputs[k].append(x)
    return [np.concatenate(o) for o in outputs]


def integer_scores(model: IntegerModel, images: np.ndarray) -> np.ndarray:
    return run_integer(model, images)[-1]


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Activation codes as the generated C stores them (kernels.c.j2 store_code): bits = 8 is a byte a code;
    bits = 4 puts code i in bits [4 (i mod 2), 4 (i mod 2) + 4) of byte i // 2 (LSB first)."""
    flat = np.asarray(codes).reshape(-1).astype(np.uint8)
    if bits == 8:
        return flat
    if bits != 4 or flat.size and int(flat.max()) > 15:
        raise ValueError(f"cannot pack codes into {bits} bits")
    padded = np.concatenate([flat, np.zeros(flat.size % 2, np.uint8)])
    return (padded[0::2] | padded[1::2] << 4).astype(np.uint8)


def unpack_codes(stored: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first `count` codes of a buffer written by pack_codes (kernels.c.j2 load_code); bytes past them ignored."""
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

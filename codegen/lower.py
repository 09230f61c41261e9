"""Lowering: integer ops (training/integer.py) -> C-ready ops with packed weights, fused kernels and an arena plan.

Everything the C needs is computed here (prepare), so the generated code only runs integer loops (eval):
  * conv -> relu -> max-pool becomes one conv2d_requant_maxpool call (the pre-pool map never exists);
  * weight indices are packed into one bitstream per layer (codegen/pack.py);
  * every buffer gets an offset in one static arena, planned by liveness (codegen/plan.py);
  * accumulator bounds proven by build_integer_model are carried into the C as comments and static asserts.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import numpy as np

from siq.training.errors import SiqError
from siq.training.integer import (Conv2dRequant, DenseRequant, DenseScores, IntegerModel, LRNRequant, MaxPool2d,
                              QuantizeInput, build_integer_model)
from siq.training.quant import QuantizedModel, codebook_entry_bytes

from siq.version import __version__
from .pack import pack_indices, packed_size
from .plan import GreedyPlanner

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass
class WeightTable:
    """One weighted layer's flash: a codebook of fixed-point values (int8, or int16 for the whole model when any
    value needs it: LoweredModel.codebook_entry_bytes) and the packed index bitstream.

    Codebook layout: codebook_rows rows of codebook_entries values, row-major. codebook_stride = 0: one row for
    the whole layer (every output channel reads codebook[0 .. entries)); codebook_stride = entries: one row per
    output channel, channel o reads codebook[o * stride .. o * stride + entries). The C kernels read index k of
    output channel o at codebook[o * codebook_stride + k] in both cases."""
    name: str
    codebook: list[int]    # every entry, row-major: codebook_rows * codebook_entries values
    packed: bytes
    bits: int
    count: int
    bias: list[int]
    codebook_rows: int = 1
    codebook_stride: int = 0

    @property
    def codebook_entries(self) -> int:
        """Values per row: at most 2^bits."""
        return len(self.codebook) // self.codebook_rows

    def codebook_table(self) -> list[int] | list[list[int]]:
        """The codebook as training/quant.py holds it: [K], or [C_OUT][K] per output channel."""
        if not self.codebook_stride:
            return list(self.codebook)
        k = self.codebook_stride
        return [self.codebook[o * k:(o + 1) * k] for o in range(self.codebook_rows)]


@dataclass
class LoweredOp:
    kernel: str            # the C function (and its numpy twin in training/integer.py)
    source_ops: list[int]  # integer-model ops it computes; its output equals the last one's
    params: dict           # C struct fields (ints, or names of const arrays)
    input: str             # buffer names ("image" is the caller's input, "scores" the caller's output)
    output: str
    macs: int
    comment: str
    weights: WeightTable | None = None
    table: list[int] | None = None
    fast_kernel: str | None = None  # the optimised C kernel with the same results, when one applies
    out_bits: int = 8      # bits per stored code of the output buffer: 8 (bytes) or 4 (two codes a byte, LSB first)
    out_count: int = 0     # codes in the output (its buffer may hold slack bytes past them)
    scratch: str | None = None  # arena buffer of the fast kernel's decoded filter (SIQ_DSP builds), if any


@dataclass
class LoweredModel:
    prefix: str
    integer: IntegerModel
    ops: list[LoweredOp]
    buffers: dict          # name -> (offset, size)
    arena_bytes: int
    config_hash: str
    version: str = __version__
    meta: dict = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def codebook_entry_bytes(self) -> int:
        """1: every codebook is int8 in the C; 2: int16 (a value needs more than 8 bits)."""
        return codebook_entry_bytes([op.weights.codebook for op in self.ops if op.weights])

    @property
    def codebook_type(self) -> str:
        return "int8_t" if self.codebook_entry_bytes == 1 else "int16_t"

    def weights_bytes(self) -> int:
        """Packed indices plus every codebook entry (all rows of a per-channel codebook), as
        QuantizedModel.weights_bytes counts them."""
        entry = self.codebook_entry_bytes
        return sum(len(op.weights.packed) + entry * len(op.weights.codebook) for op in self.ops if op.weights)

    def weights_report(self) -> list[dict]:
        out, entry = [], self.codebook_entry_bytes
        for op in self.ops:
            if op.weights:
                w = op.weights
                out.append({"layer": w.name, "bits": w.bits, "count": w.count, "packed_bytes": len(w.packed),
                            "codebook_bytes": entry * len(w.codebook), "codebook_rows": w.codebook_rows,
                            "codebook_entries": w.codebook_entries, "codebook": w.codebook_table(),
                            "bias_bytes": 4 * len(w.bias)})
        return out


MAX_WEIGHT_BITS = 2**32 - 1  # the C reads index i at bit i * bits of the packed stream, a uint32_t


def _weights(name: str, op) -> WeightTable:
    count = int(op.indices.size)
    if count * op.bits > MAX_WEIGHT_BITS:
        raise SiqError(f"{name}: {count} weights x {op.bits} bits do not fit the C's 32-bit bit positions "
                       f"(at most {MAX_WEIGHT_BITS} bits per layer)")
    packed = pack_indices(op.indices, op.bits)
    assert len(packed) == packed_size(count, op.bits)
    table = np.asarray(op.codebook)
    out_channels = int(op.indices.shape[0])
    if table.ndim not in (1, 2) or table.size == 0 or (table.ndim == 2 and table.shape[0] != out_channels):
        raise SiqError(f"{name}: codebook of shape {list(table.shape)} for {out_channels} output channels: "
                       f"expected [K] (one for the layer) or [{out_channels}, K] (one row per output channel)")
    entries = int(table.shape[-1])
    if entries > 2**op.bits or (count and int(np.max(op.indices)) >= entries):
        raise SiqError(f"{name}: {entries} codebook entries per row for {op.bits}-bit indices up to "
                       f"{int(np.max(op.indices)) if count else 0}: an index would read outside its row")
    codebook = [int(v) for v in table.reshape(-1)]  # row-major: row o is output channel o's values
    try:
        codebook_entry_bytes([codebook])  # int8, or int16 within 15 bits (the DSP kernels' 16-bit lanes)
    except SiqError as exc:
        raise SiqError(f"{name}: {exc}") from None
    per_channel = table.ndim == 2
    return WeightTable(name, codebook, packed, op.bits, count, [int(b) for b in op.bias],
                       codebook_rows=out_channels if per_channel else 1,
                       codebook_stride=entries if per_channel else 0)


def fast_kernel(op: LoweredOp) -> str | None:
    """The optimised kernel computing exactly what op.kernel computes, or None where only the reference applies.

    quantize_input_o4: 4-bit codes stored two a byte, an even number of pixels;
    conv2d_requant_maxpool_k<K>[_i4][_o4]: stride 1, no padding, 2x2 pool (2x2 blocks of accumulators, K taps and
    rows unrolled), _i4/_o4 reading/writing 4-bit codes two a byte;
    lrn_requant_window: any LRN; dense_*_fast: any index width (bytes for 8 bits, a sequential bit reader else).
    """
    p = op.params
    if op.kernel == "quantize_input" and p["out_bits"] == 4 and p["size"] % 2 == 0:
        return "quantize_input_o4"
    if op.kernel == "conv2d_requant_maxpool" and p["stride"] == 1 and p["pad"] == 0 and p["pool"] == 2:
        return (f"conv2d_requant_maxpool_k{p['kernel']}" + ("_i4" if p.get("in_bits") == 4 else "")
                + ("_o4" if p.get("out_bits") == 4 else ""))
    if op.kernel == "lrn_requant":
        return "lrn_requant_window" + ("_i4" if p.get("bits") == 4 else "")
    if op.kernel in ("dense_requant", "dense_scores"):
        return f"{op.kernel}_fast"
    return None


def lower(qm: QuantizedModel, prefix: str = "siq_model", fast: bool = True) -> LoweredModel:
    """fast=False emits only the reference kernels (the default build then equals -DSIQ_REFERENCE_KERNELS)."""
    if not IDENTIFIER.match(prefix):
        raise SiqError(f"prefix {prefix!r} is not a lower-case C identifier (letters, digits, underscores)")
    model = build_integer_model(qm)
    ops: list[LoweredOp] = []
    src = model.ops
    k = 0
    while k < len(src):
        op = src[k]
        if isinstance(op, QuantizeInput):
            if not -16 <= op.shift <= 16:  # the C shifts a pixel (<= 255) by it: both directions stay in range
                raise SiqError(f"input scale 2^{op.shift} per pixel is outside 2^-16 .. 2^16")
            size = int(np.prod(op.shape))
            ops.append(LoweredOp("quantize_input", [k], {"size": size, "shift": op.shift, "max_code": op.max_code},
                                 "image", f"buffer{k}", 0,
                                 f"input {list(op.shape)}: code = clamp(floor(pixel * 2^{op.shift} + 1/2), 0, "
                                 f"{op.max_code})"))
        elif isinstance(op, Conv2dRequant):
            pool = src[k + 1] if k + 1 < len(src) and isinstance(src[k + 1], MaxPool2d) else None
            name = f"layer{op.layer_index - 1}"
            c, h, w = op.in_shape
            o, oh, ow = op.out_shape
            params = {"in_channels": c, "in_height": h, "in_width": w, "out_channels": o,
                      "conv_height": oh, "conv_width": ow, "kernel": op.k, "stride": op.stride, "pad": op.pad,
                      "pool": pool.k if pool else 1, "index_bits": op.bits, "shift": op.shift,
                      "max_code": op.max_code}
            sources = [k, k + 1] if pool else [k]
            out_shape = pool.out_shape if pool else op.out_shape
            ops.append(LoweredOp("conv2d_requant_maxpool" if pool else "conv2d_requant", sources, params,
                                 ops[-1].output, f"buffer{sources[-1]}", o * oh * ow * c * op.k * op.k,
                                 f"conv {o}@{op.k}x{op.k}/{op.stride} pad {op.pad} on {list(op.in_shape)} -> relu"
                                 + (f" -> maxpool {pool.k}" if pool else "") + f" -> {list(out_shape)}; "
                                 f"|acc| <= {op.acc_bound} < 2^31", _weights(name, op)))
            ops[-1].params["acc_bound"] = op.acc_bound
            ops[-1].params["codebook_stride"] = ops[-1].weights.codebook_stride
            k = sources[-1]
        elif isinstance(op, MaxPool2d):
            c, h, w = op.in_shape
            ops.append(LoweredOp("maxpool2d", [k], {"channels": c, "in_height": h, "in_width": w, "pool": op.k},
                                 ops[-1].output, f"buffer{k}", 0,
                                 f"maxpool {op.k} on {list(op.in_shape)} -> {list(op.out_shape)}"))
        elif isinstance(op, LRNRequant):
            c, h, w = op.shape
            ops.append(LoweredOp("lrn_requant", [k],
                                 {"channels": c, "plane": h * w, "window_before": op.window_before,
                                  "window_after": op.window_after, "index_shift": op.index_shift,
                                  "frac_bits": op.frac_bits, "max_code": op.max_code},
                                 ops[-1].output, f"buffer{k}", 0,
                                 f"lrn over {op.window_before + op.window_after + 1} channels on {list(op.shape)}: "
                                 f"table of {len(op.table)} reciprocals, index S >> {op.index_shift}, "
                                 f"{op.frac_bits} fraction bits",
                                 table=[int(v) for v in op.table]))
        elif isinstance(op, (DenseRequant, DenseScores)):
            final = isinstance(op, DenseScores)
            name = f"layer{op.layer_index if final else op.layer_index - 1}"
            params = {"in_features": op.in_features, "out_features": op.out_features, "index_bits": op.bits,
                      "shift": 0 if final else op.shift, "max_code": 0 if final else op.max_code,
                      "acc_bound": op.acc_bound}
            ops.append(LoweredOp("dense_scores" if final else "dense_requant", [k], params, ops[-1].output,
                                 "scores" if final else f"buffer{k}", op.in_features * op.out_features,
                                 f"dense {op.in_features} -> {op.out_features}"
                                 + (" (class scores, int32)" if final else " -> relu")
                                 + f"; |acc| <= {op.acc_bound} < 2^31", _weights(name, op)))
            ops[-1].params["codebook_stride"] = ops[-1].weights.codebook_stride
        else:
            raise SiqError(f"no C kernel for integer op {op.name}")
        k += 1

    for op in ops:
        if op.output != "scores":
            op.out_count = _output_size(src[op.source_ops[-1]])
    packed = _packed_buffers(ops)
    for op in ops:
        if op.kernel in PACKABLE:
            op.out_bits = 4 if op.output in packed else 8
            in_bits = 4 if op.input in packed else 8
            if op.kernel == "lrn_requant":
                op.params["bits"] = op.out_bits  # in place of the pair: _packed_buffers keeps in == out
            else:
                op.params["out_bits"] = op.out_bits
                if op.kernel != "quantize_input":
                    op.params["in_bits"] = in_bits
    if fast:
        for op in ops:
            op.fast_kernel = fast_kernel(op)
    planner = GreedyPlanner()
    buffers = {}
    for index, op in enumerate(ops):
        if op.output != "scores":
            readers = [j for j, other in enumerate(ops) if other.input == op.output]
            size = op.out_count if op.out_bits == 8 else (op.out_count + 1) // 2 + NIBBLE_SLACK
            buffers[op.output] = planner.add_buffer(op.output, size, index, max(readers, default=index))
        if op.fast_kernel and op.fast_kernel.startswith("conv2d_requant_maxpool_k"):
            # one output channel's decoded filter, C_IN * K rows of filter_row_words int32 words, alive for this op
            op.scratch = f"scratch{index}"
            k = op.params["kernel"]
            size = 4 * op.params["in_channels"] * k * filter_row_words(k, op.params["in_bits"])
            buffers[op.scratch] = planner.add_buffer(op.scratch, size, index, index)
    arena = planner.plan()
    placed = {name: (b.offset, b.size) for name, b in buffers.items()}
    lowered = LoweredModel(prefix, model, ops, placed, arena, "", meta=dict(qm.meta))
    lowered.config_hash = _hash(lowered, qm)
    return lowered


# Kernels whose buffers may hold 4-bit codes (reference kernels through load_code/store_code in kernels.c.j2).
PACKABLE = ("quantize_input", "conv2d_requant", "conv2d_requant_maxpool", "lrn_requant")
# A packed buffer read by a fast conv gets one byte past its last code: the SIQ_DSP nibble row body loads a word
# whose fourth byte only feeds zero-weighted lanes, and at the buffer's last row that byte lies past the codes.
NIBBLE_SLACK = 1
# Dual 16-bit lane pairs (lo tap, hi tap) of one kernel row for the SIQ_DSP conv bodies in kernels.c.j2, by
# (K, bits per stored input code); a tap >= K is a zero lane. Bytes, K = 5: in[0..5] as (0,2) (1,3) (2,4) (3,5)
# lanes; K = 3: in[0..3] as (0,2) (1,3). Nibbles, K = 5: one word holds codes 0..7 and (w >> 4j) & 0x000F000F
# is the lane pair (code j, code j + 4), j = 0..3.
DSP_PAIRS = {(3, 8): [(0, 2), (1, 3)], (5, 8): [(0, 2), (1, 3), (4, 5)], (5, 4): [(0, 4), (1, 3), (2, 5)]}


def filter_row_words(k: int, in_bits: int) -> int:
    """int32 words of one kernel row of a decoded filter on SIQ_DSP cores: one per lane pair where a dual-MAC
    body exists for (K, input code bits), else one per tap (kernels.c.j2 SIQ_FILTER_ROW_*)."""
    return len(DSP_PAIRS[(k, in_bits)]) if (k, in_bits) in DSP_PAIRS else k


def _packed_buffers(ops: list[LoweredOp]) -> set[str]:
    """Buffers stored as two 4-bit codes a byte: codes of at most 4 bits (the writer's max_code <= 15; the input
    may be wider than the feature maps) whose writer and every reader can use that layout (reference kernels all
    can; the fast conv reads nibbles for K = 5 on even widths and writes them for even pooled widths; LRN keeps in
    and out in one layout, with an even plane)."""

    def writes(op: LoweredOp) -> bool:
        p = op.params
        if p.get("max_code", 256) > 15:
            return False
        if op.kernel == "quantize_input":
            return True
        if op.kernel.startswith("conv2d_requant"):
            return (p["conv_width"] // p["pool"]) % 2 == 0
        return op.kernel == "lrn_requant" and p["plane"] % 2 == 0

    def reads(op: LoweredOp) -> bool:
        p = op.params
        if op.kernel.startswith("conv2d_requant"):
            fast = op.kernel == "conv2d_requant_maxpool" and p["stride"] == 1 and p["pad"] == 0 and p["pool"] == 2
            return not fast or (p["kernel"] == 5 and p["in_width"] % 2 == 0)
        return op.kernel == "lrn_requant" and p["plane"] % 2 == 0

    packed = {op.output for op in ops if op.output != "scores" and writes(op)}
    changed = True
    while changed:
        changed = False
        for op in ops:
            keep = op.input not in packed or reads(op)
            if op.kernel == "lrn_requant":
                keep = keep and ((op.input in packed) == (op.output in packed))
            if not keep:
                changed = changed or op.input in packed or op.output in packed
                packed.discard(op.input)
                if op.kernel == "lrn_requant":
                    packed.discard(op.output)
    return packed


def _output_size(op) -> int:
    if isinstance(op, QuantizeInput):
        return int(np.prod(op.shape))
    if isinstance(op, (Conv2dRequant, MaxPool2d)):
        return int(np.prod(op.out_shape))
    if isinstance(op, LRNRequant):
        return int(np.prod(op.shape))
    if isinstance(op, DenseRequant):
        return op.out_features
    raise TypeError(op)


def _hash(lowered: LoweredModel, qm: QuantizedModel) -> str:
    """A digest of everything that decides the generated code's behaviour (not of timestamps or paths)."""
    h = hashlib.sha256()
    h.update(json.dumps({"arch": qm.arch.to_dict(), "act_bits": qm.act_bits, "input_bits": qm.input_bits,
                         "shifts": sorted(qm.shifts.items()), "classes": qm.class_names,
                         "prefix": lowered.prefix}, sort_keys=True).encode())
    for op in lowered.ops:
        h.update(json.dumps([op.kernel, op.fast_kernel, op.params, op.table], sort_keys=True).encode())
        if op.weights:
            h.update(bytes(op.weights.packed))
            h.update(json.dumps([op.weights.codebook, op.weights.codebook_rows, op.weights.codebook_stride,
                                 op.weights.bias]).encode())
    return h.hexdigest()[:16]

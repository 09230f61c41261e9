"""Lowering to C: the integer IR (training/integer) -> one typed kernel call per C function call, with packed
weights, activation layouts, fast-kernel choices, an arena plan and every parameter struct filled in.

Everything the C needs is decided here (prepare), so the generated code only runs integer loops (eval):
  * the IR's kernel steps (conv -> relu -> max-pool fused into one conv2d_requant_maxpool) become LoweredOps;
  * weight indices are packed into one bitstream per layer (codegen/pack.py), and a conv's per-channel codebook
    rows shared by several output channels are stored once, with a row-offset table (codegen/weights.py);
  * activation buffers holding codes of at most 4 bits are stored two a byte where every kernel touching them
    can (codegen/kernels.py says which can);
  * every buffer gets an offset in one static arena, planned by liveness (codegen/plan.py);
  * each op's parameter struct (codegen/kernels.py) is filled from the IR's fields, never re-derived.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import numpy as np

from siq.training.errors import SiqError
from siq.training.integer import (AddRequant, AvgPool2d, ConcatRequant, Conv2dGeneralRequant, Conv2dRequant,
                                  Conv2dRequantMaxpool, DenseScores, IntegerModel, LRNRequant, MaxPool2d, QuantizeInput,
                                  build_integer_model, fuse)
from siq.training.quant import QuantizedModel, codebook_entry_bytes
from siq.version import __version__

from . import kernels
from .kernels import (NIBBLE_SLACK, AddParams, AvgPool2dParams, ConcatParams, Conv2dGeneralParams, Conv2dParams,
                      DenseParams, LRNParams, MaxPool2dParams, QuantizeInputParams, fast_kernel, filter_row_words,
                      input_slack)
from .pack import pack_indices, packed_size
from .plan import GreedyPlanner, share_in_place_buffers
from .weights import ChannelTable, WeightTable, channel_table, channel_table_name, share_rows

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_WEIGHT_BITS = 2**32 - 1  # the C reads index i at bit i * bits of the packed stream, a uint32_t


@dataclass
class LoweredOp:
    """One C kernel call. `ir` is the IR op it runs (a fused conv + pool counts as one); its output equals the
    integer model's op source_ops[-1]."""
    kernel: str            # the reference C kernel, named like its numpy twin (codegen/kernels.py KERNELS)
    ir: object
    source_ops: list[int]
    input: str             # buffer names ("image" is the caller's input, "scores" the caller's output)
    output: str
    comment: str
    weights: WeightTable | None = None
    table: list[int] | None = None
    channel_table: ChannelTable | None = None  # a conv's shift per channel (steps per channel), if any
    params: object = None  # the kernel's parameter struct (codegen/kernels.py), filled once the arena is planned
    fast_kernel: str | None = None  # the optimised C kernel with the same results, when one applies
    in_bits: int = 8       # bits per stored code of the input buffer: 8 (bytes) or 4 (two codes a byte, LSB first)
    out_bits: int = 8      # the same for the output buffer
    out_count: int = 0     # codes in the output (its buffer may hold slack bytes past them)
    scratch: str | None = None  # arena buffer of the fast kernel's decoded filter (SIQ_DSP builds), if any
    other: str | None = None    # an add's second input buffer (the C call passes it after `input`)
    other_bits: int = 8
    part: int = 0          # a concat is one call per input: which input this call copies
    in_place: bool = False  # the fast kernel writes its output over its input (kernels.runs_in_place)
    band: kernels.BandLayout | None = None  # conv2d_general_requant_band's scratch layout (tile, staged ring)

    @property
    def inputs(self) -> list[str]:
        return [self.input] + ([self.other] if self.other else [])

    @property
    def macs(self) -> int:
        return self.ir.macs

    @property
    def spec(self) -> kernels.KernelSpec:
        return kernels.spec(self.ir)

    @property
    def conv(self) -> Conv2dRequant | None:
        """The conv of a (fused) conv op."""
        return self.ir.conv if isinstance(self.ir, Conv2dRequantMaxpool) else \
            self.ir if isinstance(self.ir, Conv2dRequant) else None


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

    @property
    def identity_codebook(self) -> bool:
        """Whether some layer stores int8 weights as their 8-bit indices (kernels.index_is_value): the model then
        holds the shared identity codebook once."""
        return any(op.weights.index_is_value for op in self.ops if op.weights)

    def weights_bytes(self) -> int:
        """Packed indices plus every stored codebook entry and row-offset table (WeightTable.codebook_bytes: each
        distinct row once where a conv's output channels share rows, codegen/weights.py); a layer whose indices
        are its int8 weights has no codebook of its own, and the model holds the shared identity codebook once
        instead. QuantizedModel.weights_bytes shares rows by the same rule but counts each layer's own codebook,
        so the two differ where the identity codebook stands in."""
        entry = self.codebook_entry_bytes
        own = sum(len(op.weights.packed) + op.weights.codebook_bytes(entry) for op in self.ops if op.weights)
        return own + (entry * len(kernels.INT8_IDENTITY_CODEBOOK) if self.identity_codebook else 0)

    def weights_report(self) -> list[dict]:
        out, entry = [], self.codebook_entry_bytes
        for op in self.ops:
            if op.weights:
                w = op.weights
                out.append({"layer": w.name, "bits": w.bits, "count": w.count, "packed_bytes": len(w.packed),
                            "codebook_bytes": w.codebook_bytes(entry), "codebook_rows": w.codebook_rows,
                            "codebook_entries": w.codebook_entries, "codebook": w.codebook_table(),
                            "index_is_value": w.index_is_value, "bias_bytes": 4 * len(w.bias)})
        return out


def _weights(op) -> WeightTable:
    name = f"layer{op.weights_layer}"
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
    if kernels.index_is_value(op):
        # the weight's own byte as its index, the identity codebook: the same weights, no lookup (kernels.py)
        values = table[op.indices.astype(np.int64)]
        packed = pack_indices((values % 256).astype(np.uint8), 8)
        return WeightTable(name, list(kernels.INT8_IDENTITY_CODEBOOK), packed, op.bits, count,
                           [int(b) for b in op.bias], index_is_value=True)
    per_channel = table.ndim == 2
    return WeightTable(name, codebook, packed, op.bits, count, [int(b) for b in op.bias],
                       codebook_rows=out_channels if per_channel else 1,
                       codebook_stride=entries if per_channel else 0)


def _activation(op) -> str:
    """What a weighted op's requantization stores: relu'd codes, or a signed point's codes plus its zero point."""
    return f"signed codes + {op.zero_point}" if op.zero_point else "relu"


def _comment(op) -> str:
    """The one-line description of a kernel call that the generated C carries above its parameters."""
    if isinstance(op, QuantizeInput):
        return (f"input {list(op.shape)}: code = clamp(floor(pixel * 2^{op.shift} + 1/2), 0, {op.max_code})")
    if isinstance(op, (Conv2dRequant, Conv2dRequantMaxpool)):
        conv = op.conv if isinstance(op, Conv2dRequantMaxpool) else op
        pool = op.pool if isinstance(op, Conv2dRequantMaxpool) else None
        return (f"conv {conv.out_shape[0]}@{conv.k}x{conv.k}/{conv.stride} pad {conv.pad} on {list(conv.in_shape)} "
                f"-> {_activation(conv)}" + (f" -> maxpool {pool.k}" if pool else "")
                + f" -> {list(pool.out_shape if pool else conv.out_shape)}; |acc| <= {conv.acc_bound} < 2^31")
    if isinstance(op, Conv2dGeneralRequant):
        (kh, kw), (sh, sw) = op.kernel, op.stride
        return (f"conv {op.out_shape[0]}@{kh}x{kw}/{sh}x{sw} pad {list(op.pad)} groups {op.groups} on "
                f"{list(op.in_shape)} -> {_activation(op)} (max code {op.max_code}) -> {list(op.out_shape)}; "
                f"|acc| <= {op.acc_bound} < 2^31")
    if isinstance(op, MaxPool2d):
        return f"maxpool {op.k} on {list(op.in_shape)} -> {list(op.out_shape)}"
    if isinstance(op, AvgPool2d):
        (kh, kw), (sh, sw) = op.kernel, op.stride
        return (f"avgpool {kh}x{kw}/{sh}x{sw} pad {op.pad} on {list(op.in_shape)} -> {list(op.out_shape)}: "
                f"((sum << {op.up}) + {op.divisor // 2}) / {op.divisor}, at most {op.max_code}")
    if isinstance(op, AddRequant):
        return (f"add {list(op.out_shape)}: ((a - {op.zero_a}) * {op.scale_a} + (b - {op.zero_b}) * {op.scale_b} "
                f"+ {op.rounding}) >> {op.shift}, clamped to 0..{op.max_code}; |sum| <= {op.bound} < 2^31")
    if isinstance(op, ConcatRequant):
        return f"concat of {len(op.in_channels)} inputs ({list(op.in_channels)} channels) -> {list(op.out_shape)}"
    if isinstance(op, LRNRequant):
        return (f"lrn over {op.window_before + op.window_after + 1} channels on {list(op.shape)}: "
                f"table of {len(op.table)} reciprocals, index S >> {op.index_shift}, {op.frac_bits} fraction bits")
    final = isinstance(op, DenseScores)
    return (f"dense {op.in_features} -> {op.out_features}"
            + (" (class scores, int32)" if final else f" -> {_activation(op)}")
            + f"; |acc| <= {op.acc_bound} < 2^31")


def _params(op: LoweredOp, scratch: str, index: int):
    """The kernel's parameter struct, every number taken from the IR op and the chosen layouts."""
    ir, w = op.ir, op.weights
    arrays = w.arrays if w else {}
    if op.channel_table is not None:
        arrays = {**arrays, op.channel_table.field: channel_table_name(index, op.channel_table)}
    elif isinstance(ir, (Conv2dRequant, Conv2dRequantMaxpool)):
        arrays = {**arrays, "in_shifts": "NULL"}
    elif isinstance(ir, Conv2dGeneralRequant):
        arrays = {**arrays, "channel_shifts": "NULL"}
    if isinstance(ir, QuantizeInput):
        return QuantizeInputParams(ir.out_count, ir.shift, ir.max_code, op.out_bits)
    if isinstance(ir, (Conv2dRequant, Conv2dRequantMaxpool)):
        conv, pool = op.conv, ir.pool.k if isinstance(ir, Conv2dRequantMaxpool) else 1
        (c, h, wd), (o, oh, ow) = conv.in_shape, conv.out_shape
        return Conv2dParams(c, h, wd, o, oh, ow, conv.k, conv.stride, conv.pad, pool, conv.bits, conv.shift,
                            conv.max_code, op.in_bits, op.out_bits, w.codebook_stride, scratch=scratch,
                            codebook_rows=w.rows_array or "NULL", **arrays)
    if isinstance(ir, Conv2dGeneralRequant):
        (c, h, wd), (o, oh, ow) = ir.in_shape, ir.out_shape
        return Conv2dGeneralParams(c, h, wd, o, oh, ow, *ir.kernel, *ir.stride, ir.pad[0], ir.pad[2], ir.groups,
                                   ir.bits, ir.shift, ir.max_code, op.in_bits, op.out_bits, w.codebook_stride,
                                   scratch=scratch, codebook_rows=w.rows_array or "NULL",
                                   **kernels.band_fields(op.band), **arrays)
    if isinstance(ir, MaxPool2d):
        c, h, wd = ir.in_shape
        return MaxPool2dParams(c, h, wd, ir.k)
    if isinstance(ir, AvgPool2d):
        (c, h, wd), (_, oh, ow) = ir.in_shape, ir.out_shape
        divisor_shift = ir.divisor.bit_length() - 1 if ir.divisor & (ir.divisor - 1) == 0 else -1
        return AvgPool2dParams(c, h, wd, oh, ow, *ir.kernel, *ir.stride, ir.pad, ir.up, ir.divisor, divisor_shift,
                               ir.max_code, op.in_bits, op.out_bits)
    if isinstance(ir, AddRequant):
        return AddParams(ir.out_count, ir.zero_a, ir.scale_a, ir.zero_b, ir.scale_b, ir.rounding, ir.shift,
                         ir.max_code, op.in_bits, op.other_bits, op.out_bits)
    if isinstance(ir, ConcatRequant):
        j, plane = op.part, ir.out_shape[1] * ir.out_shape[2]
        return ConcatParams(ir.in_channels[j] * plane, sum(ir.in_channels[:j]) * plane, ir.scales[j],
                            ir.roundings[j], ir.shifts[j], ir.max_code, op.in_bits, op.out_bits)
    if isinstance(ir, LRNRequant):
        c, h, wd = ir.shape
        return LRNParams(c, h * wd, ir.window_before, ir.window_after, ir.index_shift, ir.frac_bits, ir.max_code,
                         op.out_bits, f"op{index}_lrn_table")
    return DenseParams(ir.in_features, ir.out_features, ir.bits, ir.shift, ir.max_code, w.codebook_stride,
                       index_is_value=int(w.index_is_value), **arrays)


def lower(qm: QuantizedModel, prefix: str = "siq_model", fast: bool = True) -> LoweredModel:
    """fast=False emits only the reference kernels (the default build then equals -DSIQ_REFERENCE_KERNELS)."""
    if not IDENTIFIER.match(prefix):
        raise SiqError(f"prefix {prefix!r} is not a lower-case C identifier (letters, digits, underscores)")
    model = build_integer_model(qm)
    ops: list[LoweredOp] = []
    buffer_of: dict[int, str] = {}  # integer op -> the buffer holding its output
    for step in fuse(model):
        op = kernels.general_conv(step.op)
        if type(op) not in kernels.KERNELS:
            raise SiqError(f"no C kernel for integer op {op.name}")
        if isinstance(op, QuantizeInput) and not -16 <= op.shift <= 16:
            # the C shifts a pixel (<= 255) by it: both directions stay in range
            raise SiqError(f"input scale 2^{op.shift} per pixel is outside 2^-16 .. 2^16")
        final = isinstance(op, DenseScores)
        weighted = op.conv if isinstance(op, Conv2dRequantMaxpool) else op
        reads = [buffer_of[j] for j in model.inputs[step.sources[0]]] or ["image"]
        output = "scores" if final else f"buffer{step.sources[-1]}"
        for k in step.sources:
            buffer_of[k] = output
        calls = [(read, None, j) for j, read in enumerate(reads)] if isinstance(op, ConcatRequant) else \
            [(reads[0], reads[1] if len(reads) > 1 else None, 0)]
        for read, other, part in calls:
            comment = _comment(op) + (f": input {part}" if isinstance(op, ConcatRequant) else "")
            ops.append(LoweredOp(kernels.spec(op).name, op, step.sources, read, output, comment,
                                 weights=_weights(weighted) if hasattr(weighted, "indices") else None,
                                 table=[int(v) for v in op.table] if isinstance(op, LRNRequant) else None,
                                 channel_table=channel_table(op),
                                 out_count=0 if final else op.out_count, other=other, part=part))

    entry = codebook_entry_bytes([op.weights.codebook for op in ops if op.weights])
    for op in ops:  # a conv's output channels sharing codebook rows: each row once (codegen/weights.py)
        if op.weights and isinstance(op.ir, (Conv2dRequant, Conv2dRequantMaxpool, Conv2dGeneralRequant)):
            op.weights = share_rows(op.weights, entry)

    packed = _packed_buffers(ops)
    for op in ops:
        if op.spec.packable:
            op.out_bits = 4 if op.output in packed else 8
            op.in_bits = 4 if op.input in packed else 8
            op.other_bits = 4 if op.other in packed else 8
        if fast:
            op.fast_kernel = fast_kernel(op.ir, op.in_bits, op.out_bits)
    share_in_place_buffers(ops)

    planner = GreedyPlanner()
    buffers = {}
    for index, op in enumerate(ops):
        if op.output != "scores" and op.output not in buffers:  # a concat's later calls write the same buffer
            # alive from its first writer to its last reader: an add's shortcut stays alive across its branch
            readers = [j for j, other in enumerate(ops) if op.output in other.inputs]
            slack = max((input_slack(ops[j].fast_kernel, ops[j].in_bits) for j in readers), default=NIBBLE_SLACK)
            size = op.out_count if op.out_bits == 8 else (op.out_count + 1) // 2 + slack
            buffers[op.output] = planner.add_buffer(op.output, size, index, max(readers, default=index))
        if op.fast_kernel and isinstance(op.ir, Conv2dRequantMaxpool):
            # one output channel's decoded filter, C_IN * K rows of filter_row_words int32 words, alive for this op
            op.scratch, conv = f"scratch{index}", op.ir.conv
            size = 4 * conv.in_shape[0] * conv.k * filter_row_words(conv.k, op.in_bits)
            buffers[op.scratch] = planner.add_buffer(op.scratch, size, index, index)
        elif op.fast_kernel and isinstance(op.ir, (Conv2dRequant, Conv2dGeneralRequant)):
            # one output channel's decoded weights: C_IN (conv2d_requant_1x1), C_IN / groups * KH * KW (general)
            op.scratch, words = f"scratch{index}", kernels.scratch_words(op.ir, op.fast_kernel)
            op.band = kernels.band_layout(op.ir) if op.fast_kernel == "conv2d_general_requant_band" else None
            buffers[op.scratch] = planner.add_buffer(op.scratch, 4 * words, index, index)
    arena = planner.plan()
    for op in (op for op in ops if op.band):  # a band conv's scratch grows into what its step leaves free:
        offers, before = kernels.BandOffers(op.ir), buffers[op.scratch].size  # wider tiles stage the input less
        size = planner.grow(buffers[op.scratch], offers, arena)
        op.band, arena = offers.layouts[size] if size != before else op.band, planner.plan()
    placed = {name: (b.offset, b.size) for name, b in buffers.items()}
    for index, op in enumerate(ops):
        scratch = "NULL"
        if op.scratch:
            offset = placed[op.scratch][0]
            assert offset % 4 == 0, "the planner aligns every buffer to 4 bytes"
            scratch = f"(int32_t *)(arena_words + {offset // 4})"
        op.params = _params(op, scratch, index)
    lowered = LoweredModel(prefix, model, ops, placed, arena, "", meta=dict(qm.meta))
    lowered.config_hash = _hash(lowered, qm)
    return lowered


def _packed_buffers(ops: list[LoweredOp]) -> set[str]:
    """Buffers stored as two 4-bit codes a byte: those whose writer and every reader can use that layout
    (KernelSpec.writes_nibbles / reads_nibbles; LRN keeps in and out in one layout)."""
    packed = {op.output for op in ops if op.output != "scores" and op.spec.writes_nibbles(op.ir)}
    changed = True
    while changed:
        changed = False
        for op in ops:
            same = op.spec.in_place
            keep = all(read not in packed for read in op.inputs) or op.spec.reads_nibbles(op.ir)
            if same:
                keep = keep and ((op.input in packed) == (op.output in packed))
            if not keep:
                changed = changed or any(read in packed for read in op.inputs) or op.output in packed
                packed.difference_update(op.inputs)
                if same:
                    packed.discard(op.output)
    return packed


def _hash(lowered: LoweredModel, qm: QuantizedModel) -> str:
    """A digest of everything that decides the generated code's behaviour (not of timestamps or paths): per op
    its kernels, the numbers of its parameter struct and its proven bound, its tables and weights."""
    h = hashlib.sha256()
    widths = {"point_widths": sorted(qm.point_widths.items())} if qm.point_widths else {}
    h.update(json.dumps({"arch": qm.arch.to_dict(), "act_bits": qm.act_bits, "input_bits": qm.input_bits,
                         "shifts": sorted(qm.shifts.items()), "classes": qm.class_names,
                         "prefix": lowered.prefix, **widths}, sort_keys=True).encode())
    for op in lowered.ops:
        numbers = kernels.scalars(op.params)
        if hasattr(op.ir, "acc_bound"):
            numbers["acc_bound"] = op.ir.acc_bound
        shifts = [op.channel_table.values] if op.channel_table else []
        h.update(json.dumps([op.kernel, op.fast_kernel, numbers, op.table, *shifts], sort_keys=True).encode())
        if op.weights:
            h.update(bytes(op.weights.packed))
            w = op.weights
            shared = [w.row_offsets] if w.row_offsets is not None else []
            h.update(json.dumps([w.codebook, w.codebook_rows, w.codebook_stride, w.bias, *shared]).encode())
    return h.hexdigest()[:16]

"""LoweredModel -> the typed context the C templates render (model.c.j2, model.h.j2, kernels/*.c.j2).

Nothing here decides a number: shapes, shifts, bounds and layouts come from the lowered model; this module only
says which kernels and helpers the model's source needs, in which builds, and formats arrays for reading.

Builds: one generated source compiles two ways. The default build runs each op's fast kernel where lowering
chose one; -DSIQ_REFERENCE_KERNELS runs every op's reference kernel. A function is emitted for the builds that
call it: BOTH (no guard), REFERENCE (#ifdef SIQ_REFERENCE_KERNELS) or DEFAULT (#ifndef SIQ_REFERENCE_KERNELS),
so neither build compiles an unused static function.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from siq.training.integer import Conv2dRequantMaxpool, DenseRequant, DenseScores, LRNRequant

from . import kernels
from .lower import LoweredModel
from .weights import IDENTITY_CODEBOOK_ARRAY, channel_table_name

BOTH, REFERENCE, DEFAULT = "both", "reference", "default"
LINE_WIDTH = 96  # initializer text per line; the templates indent it by 4, so lines stay within 100 characters


def union(builds: set[str]) -> str | None:
    """The guard of a function called from the given builds ({} -> not emitted)."""
    if {REFERENCE, DEFAULT} <= builds or BOTH in builds:
        return BOTH
    return next(iter(builds), None)


def wrap(items: list[str], width: int = LINE_WIDTH) -> list[str]:
    """Initializer items as lines of at most `width` characters, each line ending with a comma."""
    lines, line = [], ""
    for item in items:
        piece = f"{item},"
        if line and len(line) + 1 + len(piece) > width:
            lines.append(line)
            line = ""
        line = f"{line} {piece}" if line else piece
    return lines + ([line] if line else [])


@dataclass
class WeightArrays:
    """A weighted layer's three flash arrays (their names: weights.WeightTable.arrays)."""
    name: str
    codebook_array: str
    weights_array: str
    bias_array: str
    bits: int
    count: int
    rows: int
    entries: int
    stride: int
    codebook_lines: list[str]
    packed_bytes: int
    packed_lines: list[str]
    bias_count: int
    bias_lines: list[str]
    shared_codebook: bool = False  # its codebook is the model's identity codebook (IdentityCodebook), not its own
    rows_array: str | None = None  # the row-offset table where output channels share rows (codegen/weights.py)
    out_channels: int = 0          # entries of rows_array
    rows_lines: list[str] = field(default_factory=list)


@dataclass
class TableArray:
    name: str
    length: int
    lines: list[str]
    ctype: str = "uint32_t"


@dataclass
class BufferSlot:
    name: str
    offset: int
    size: int


@dataclass
class OpCall:
    """One kernel call of <prefix>_infer and its parameter struct."""
    index: int
    params_name: str
    kernel: str
    fast_kernel: str | None
    comment: str
    struct: str
    initializer: list[str]
    input_expr: str
    output_expr: str
    in_place_bytes: int = 0  # the input buffer's bytes when the fast kernel overwrites it (LoweredOp.in_place)


@dataclass
class ConvRows:
    """A fast conv's filter decoder and row body, one per (K, input layout)."""
    name: str
    k: int
    in4: bool
    pairs: list[tuple[int, int]]   # SIQ_DSP lane pairs of a kernel row (kernels.DSP_PAIRS); [] for no dual-MAC body
    channels: int                  # the most input channels of a conv using it

    @property
    def dsp(self) -> bool:
        return bool(self.pairs)

    @property
    def words(self) -> int:
        return kernels.filter_row_words(self.k, 4 if self.in4 else 8)

    @property
    def pairs_text(self) -> str:
        return " ".join(f"(w{lo}, {f'w{hi}' if hi < self.k else 0})" for lo, hi in self.pairs)


@dataclass
class FastConv:
    name: str
    k: int
    in4: bool
    out4: bool
    rows: str                      # its ConvRows name


@dataclass
class KernelContext:
    """What firmware_template/kernels/*.c.j2 emit: typedefs, and for each function the builds calling it."""
    codebook_type: str
    templates: list[str]               # kernels/<op>.c.j2 in emission order
    typedefs: dict[str, str]           # struct name -> typedef text (codegen/kernels.py)
    functions: dict[str, str]          # C function -> BOTH / REFERENCE / DEFAULT; absent: not emitted
    conv_rows: list[ConvRows] = field(default_factory=list)
    fast_convs: list[FastConv] = field(default_factory=list)
    filter_size: int = 0               # int16 taps of the largest decoded filter (portable fast builds)
    dense_values: bool = False         # a fast dense reads 8-bit indices that are their int8 weights
    dense_u8: bool = False             # a fast dense reads other 8-bit indices as bytes
    dense_widths: list[int] = field(default_factory=list)  # 1/2/4-bit indices read a byte at a time
    dense_stream: bool = False         # a fast dense reads other widths through index_stream
    lrn_max_channels: int = 0
    lrn_max_squares: int = 0

    def has(self, name: str) -> bool:
        return name in self.functions

    @property
    def fast(self) -> bool:
        return any(b == DEFAULT for b in self.functions.values())

    dsp_kernels: bool = False          # a fast kernel of kernels.DSP_KERNELS is called
    row_tables: bool = False           # some conv's output channels share codebook rows (codegen/weights.py)
    aligned_inputs: bool = False       # some pointwise conv shifts its input channels (Conv2dRequant.in_shifts)
    channel_shifts: bool = False       # some depthwise conv requantizes per channel (channel_shifts)
    pointwise_block: int = kernels.POINTWISE_BLOCK

    @property
    def dsp(self) -> bool:
        """The dual 16-bit MAC helpers are emitted: a DSP conv kernel, a conv row body or the int8-weight dense
        uses them."""
        return self.dsp_kernels or any(r.dsp for r in self.conv_rows) or self.dense_values


def kernel_context(lm: LoweredModel) -> KernelContext:
    builds: dict[str, set[str]] = {}
    for op in lm.ops:
        reference = REFERENCE if op.fast_kernel else BOTH
        for name in (op.kernel, *op.spec.helpers):
            builds.setdefault(name, set()).add(reference)
        if op.fast_kernel:
            helpers = op.spec.fast_helpers
            if isinstance(op.ir, (DenseRequant, DenseScores)) and \
                    kernels.dense_path(op.ir, op.weights.index_is_value) not in ("u8", "stream"):
                helpers = tuple(h for h in helpers if h != "index_stream")  # its body reads bytes
            for name in (op.fast_kernel, *helpers):
                builds.setdefault(name, set()).add(DEFAULT)
    functions = {name: union(b) for name, b in builds.items()}
    specs = {}
    for op in lm.ops:
        specs.setdefault(op.spec.template, op.spec.params)
    ctx = KernelContext(lm.codebook_type, [t for t in kernels.TEMPLATES if t in specs],
                        {p.STRUCT: kernels.typedef(p, lm.codebook_type) for p in specs.values()}, functions)
    rows, mains = {}, {}
    for op in lm.ops:
        if op.fast_kernel and isinstance(op.ir, Conv2dRequantMaxpool):  # the unrolled row kernels
            conv = op.conv
            key = (conv.k, op.in_bits)
            name = kernels.conv_rows_name(conv.k, op.in_bits)
            row = rows.setdefault(key, ConvRows(name, conv.k, op.in_bits == 4, kernels.DSP_PAIRS.get(key, []), 0))
            row.channels = max(row.channels, conv.in_shape[0])
            mains[op.fast_kernel] = FastConv(op.fast_kernel, conv.k, op.in_bits == 4, op.out_bits == 4, name)
    ctx.conv_rows = [rows[key] for key in sorted(rows)]
    ctx.dsp_kernels = any(op.fast_kernel in kernels.DSP_KERNELS for op in lm.ops)
    ctx.row_tables = any(op.weights.row_offsets is not None for op in lm.ops if op.weights)
    ctx.aligned_inputs = any(op.channel_table and op.channel_table.field == "in_shifts" for op in lm.ops)
    ctx.channel_shifts = any(op.channel_table and op.channel_table.field == "channel_shifts" for op in lm.ops)
    ctx.fast_convs = [mains[name] for name in sorted(mains)]
    ctx.filter_size = max((r.channels * r.k * r.k for r in ctx.conv_rows), default=0)
    dense = [op for op in lm.ops if op.fast_kernel and isinstance(op.ir, (DenseRequant, DenseScores))]
    paths = {kernels.dense_path(op.ir, op.weights.index_is_value) for op in dense}
    ctx.dense_values, ctx.dense_u8, ctx.dense_stream = "values" in paths, "u8" in paths, "stream" in paths
    ctx.dense_widths = sorted(int(path[1:]) for path in paths if path in ("b1", "b2", "b4"))
    lrn = [op.ir for op in lm.ops if op.fast_kernel and isinstance(op.ir, LRNRequant)]
    ctx.lrn_max_channels = max((op.shape[0] for op in lrn), default=0)
    ctx.lrn_max_squares = max((op.window_before + op.shape[0] + op.window_after + 1 for op in lrn), default=0)
    return ctx


def weight_arrays(lm: LoweredModel) -> list[WeightArrays]:
    out = []
    for op in lm.ops:
        if not op.weights:
            continue
        w = op.weights
        if w.row_offsets is not None:
            # each distinct row once, on its own lines, marked with the offset the table gives its channels
            codebook = []
            for r, row in enumerate(w.stored_rows()):
                lines = wrap([str(v) for v in row], LINE_WIDTH - 16)
                codebook += [f"{lines[0]} /* offset {r * w.codebook_stride} */"] + lines[1:]
        elif w.codebook_stride:
            # one row per output channel, each starting on its own line and marked with its channel
            codebook = []
            for o, row in enumerate(w.codebook_table()):
                lines = wrap([str(v) for v in row], LINE_WIDTH - 12)
                codebook += [f"{lines[0]} /* o = {o} */"] + lines[1:]
        else:
            codebook = wrap([str(v) for v in w.codebook])
        offsets = w.row_offsets or []
        out.append(WeightArrays(w.name, w.arrays["codebook"], w.arrays["weights"], w.arrays["bias"], w.bits,
                                w.count, w.codebook_rows, w.codebook_entries, w.codebook_stride, codebook,
                                len(w.packed), wrap([f"0x{v:02x}" for v in w.packed]), len(w.bias),
                                wrap([kernels.literal(v, "int32_t") for v in w.bias]), w.index_is_value,
                                w.rows_array, len(offsets), wrap([f"{v}u" for v in offsets])))
    return out


@dataclass
class IdentityCodebook:
    """The codebook shared by the layers whose 8-bit indices are their int8 weights: entry k is the int8 value
    of byte k (kernels.INT8_IDENTITY_CODEBOOK)."""
    name: str
    length: int
    lines: list[str]


def identity_codebook(lm: LoweredModel) -> IdentityCodebook | None:
    if not lm.identity_codebook:
        return None
    values = kernels.INT8_IDENTITY_CODEBOOK
    return IdentityCodebook(IDENTITY_CODEBOOK_ARRAY, len(values), wrap([str(v) for v in values]))


def op_calls(lm: LoweredModel) -> tuple[list[OpCall], list[TableArray]]:
    calls, tables = [], []
    for index, op in enumerate(lm.ops):
        if op.table is not None:
            tables.append(TableArray(op.params.table, len(op.table), wrap([f"{v}u" for v in op.table])))
        if op.channel_table is not None:
            t = op.channel_table
            tables.append(TableArray(channel_table_name(index, t), len(t.values),
                                     wrap([kernels.literal(v, t.ctype) for v in t.values]), t.ctype))
        calls.append(OpCall(index, f"op{index}_{op.kernel}_params", op.kernel, op.fast_kernel, op.comment,
                            op.params.STRUCT, kernels.initializer(op.params),
                            ", ".join(_buffer_expr(lm, read) for read in op.inputs),  # an add reads two
                            _buffer_expr(lm, op.output), lm.buffers[op.input][1] if op.in_place else 0))
    return calls, tables


def _buffer_expr(lm: LoweredModel, name: str) -> str:
    if name == "image":
        return "image"
    if name == "scores":
        return "out"
    offset = lm.buffers[name][0]
    return "arena" if offset == 0 else f"arena + {offset}"

"""The C kernels as one cohesive table, every kernel declared once beside the others: its parameter struct
(field name, C type, meaning), the IR op it runs, its template, and the rule for when its fast variant applies.

A parameter struct is a dataclass whose fields carry their C type and a comment; from it follow both the C
`typedef` (typedef()) and every op's C99 designated initializer (initializer()), so a field's name, order and
type exist in this one place. Kernel names (reference and fast) are spelled only here; the reference kernel of
an IR op has the name of its numpy twin in training/integer/reference.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable, ClassVar

import numpy as np

from siq.training.integer import (AddRequant, AvgPool2d, ConcatRequant, Conv2dGeneralRequant, Conv2dRequant,
                                  Conv2dRequantMaxpool, DenseRequant, DenseScores, LRNRequant, MaxPool2d,
                                  QuantizeInput)

CODEBOOK_POINTER = "const {codebook} *"  # the model's codebook entry type: int8_t, or int16_t when a value needs it


def c_field(ctype: str, doc: str = ""):
    """A parameter-struct field: its C type and the comment the typedef carries."""
    return field(metadata={"ctype": ctype, "doc": doc})


def is_pointer(f) -> bool:
    return f.metadata["ctype"].endswith("*")


@dataclass
class QuantizeInputParams:
    STRUCT: ClassVar[str] = "quantize_input_params"
    size: int = c_field("int32_t", "pixels: C * H * W")
    shift: int = c_field("int32_t", "s_in - 8: pixel * 2^shift, |shift| <= 16")
    max_code: int = c_field("int32_t", "2^a - 1")
    out_bits: int = c_field("uint32_t", "bits per stored code: 8 or 4")


@dataclass
class Conv2dParams:
    STRUCT: ClassVar[str] = "conv2d_params"
    in_channels: int = c_field("int32_t")
    in_height: int = c_field("int32_t")
    in_width: int = c_field("int32_t")
    out_channels: int = c_field("int32_t")
    conv_height: int = c_field("int32_t", "conv output, before pooling")
    conv_width: int = c_field("int32_t")
    kernel: int = c_field("int32_t")
    stride: int = c_field("int32_t")
    pad: int = c_field("int32_t")
    pool: int = c_field("int32_t", "1: no pooling")
    index_bits: int = c_field("uint32_t")
    shift: int = c_field("int32_t")
    max_code: int = c_field("int32_t")
    in_bits: int = c_field("uint32_t", "bits per stored code of the input buffer: 8 or 4")
    out_bits: int = c_field("uint32_t", "bits per stored code of the output buffer: 8 or 4")
    codebook_stride: int = c_field("int32_t", "entries per output channel's codebook row; 0: one for the layer")
    codebook: str = c_field(CODEBOOK_POINTER, "row of out channel o: codebook_row(): see codebook_rows")
    codebook_rows: str = c_field("const uint16_t *", "out channel o's row offset; NULL: o * codebook_stride")
    weights: str = c_field("const uint8_t *", "packed indices, layout [C_OUT][C_IN][K][K]")
    bias: str = c_field("const int32_t *", "bias plus rounding half, on the accumulator grid")
    scratch: str = c_field("int32_t *", "arena words of one decoded filter (fast kernels, DSP cores), else NULL")
    in_shifts: str = c_field("const uint8_t *", "input channel c's codes << in_shifts[c] (steps per channel); NULL: "
                                                "none")


@dataclass
class Conv2dGeneralParams:
    STRUCT: ClassVar[str] = "conv2d_general_params"
    in_channels: int = c_field("int32_t")
    in_height: int = c_field("int32_t")
    in_width: int = c_field("int32_t")
    out_channels: int = c_field("int32_t")
    out_height: int = c_field("int32_t")
    out_width: int = c_field("int32_t")
    kernel_height: int = c_field("int32_t")
    kernel_width: int = c_field("int32_t")
    stride_height: int = c_field("int32_t")
    stride_width: int = c_field("int32_t")
    pad_top: int = c_field("int32_t", "bottom/right padding only extends out_height/out_width")
    pad_left: int = c_field("int32_t")
    groups: int = c_field("int32_t", "divides in_channels and out_channels")
    index_bits: int = c_field("uint32_t")
    shift: int = c_field("int32_t")
    max_code: int = c_field("int32_t")
    in_bits: int = c_field("uint32_t", "bits per stored code of the input buffer: 8 or 4")
    out_bits: int = c_field("uint32_t", "bits per stored code of the output buffer: 8 or 4")
    codebook_stride: int = c_field("int32_t", "entries per output channel's codebook row; 0: one for the layer")
    codebook: str = c_field(CODEBOOK_POINTER, "row of out channel o: codebook_row(): see codebook_rows")
    codebook_rows: str = c_field("const uint16_t *", "out channel o's row offset; NULL: o * codebook_stride")
    weights: str = c_field("const uint8_t *", "packed indices, layout [C_OUT][C_IN / groups][KH][KW]")
    bias: str = c_field("const int32_t *", "bias plus rounding half, on the accumulator grid")
    scratch: str = c_field("int32_t *", "arena words of one output channel's decoded taps (fast kernel)")
    channel_shifts: str = c_field("const int8_t *", "out channel o's requantization shift (steps per channel); "
                                                    "NULL: shift")
    tile_channels: int = c_field("int32_t", "output channels a tile of the band kernel decodes (codegen band_layout)")
    band_channels: int = c_field("int32_t", "band kernel: bytes a staged column, C_IN / groups rounded up to 4")
    band_width: int = c_field("int32_t", "band kernel: staged columns a row (input column j - pad_left)")
    band_rows: int = c_field("int32_t", "band kernel: staged rows its ring holds (>= kernel_height)")


@dataclass
class AvgPool2dParams:
    STRUCT: ClassVar[str] = "avgpool2d_params"
    channels: int = c_field("int32_t")
    in_height: int = c_field("int32_t")
    in_width: int = c_field("int32_t")
    out_height: int = c_field("int32_t")
    out_width: int = c_field("int32_t")
    kernel_height: int = c_field("int32_t")
    kernel_width: int = c_field("int32_t")
    stride_height: int = c_field("int32_t")
    stride_width: int = c_field("int32_t")
    pad: int = c_field("int32_t", "zero rows/columns on every side, counted in the mean")
    up: int = c_field("int32_t", "octaves the output's step is finer than the input's: the sum's left shift")
    divisor: int = c_field("int32_t", "kernel_height * kernel_width * 2^(octaves the output's step is coarser)")
    divisor_shift: int = c_field("int32_t", "log2(divisor) when divisor is a power of two, else -1")
    max_code: int = c_field("int32_t", "the output's largest code")
    in_bits: int = c_field("uint32_t", "bits per stored code of the input buffer: 8 or 4")
    out_bits: int = c_field("uint32_t", "bits per stored code of the output buffer: 8 or 4")


@dataclass
class MaxPool2dParams:
    STRUCT: ClassVar[str] = "maxpool2d_params"
    channels: int = c_field("int32_t")
    in_height: int = c_field("int32_t")
    in_width: int = c_field("int32_t")
    pool: int = c_field("int32_t")


@dataclass
class LRNParams:
    STRUCT: ClassVar[str] = "lrn_params"
    channels: int = c_field("int32_t")
    plane: int = c_field("int32_t", "H * W")
    window_before: int = c_field("int32_t", "the window is channels c - before .. c + after")
    window_after: int = c_field("int32_t")
    index_shift: int = c_field("uint32_t")
    frac_bits: int = c_field("uint32_t")
    max_code: int = c_field("uint32_t")
    bits: int = c_field("uint32_t", "bits per stored code of input and output: 8 or 4")
    table: str = c_field("const uint32_t *", "fixed-point reciprocals of (k + alpha/n * S)^beta")


@dataclass
class DenseParams:
    STRUCT: ClassVar[str] = "dense_params"
    in_features: int = c_field("int32_t")
    out_features: int = c_field("int32_t")
    index_bits: int = c_field("uint32_t")
    shift: int = c_field("int32_t", "unused by dense_scores")
    max_code: int = c_field("int32_t", "unused by dense_scores")
    codebook_stride: int = c_field("int32_t", "entries per output feature's codebook row; 0: one for the layer")
    codebook: str = c_field(CODEBOOK_POINTER, "row of out feature o: codebook + o * codebook_stride")
    index_is_value: int = c_field("uint32_t", "1: each 8-bit index is its int8 weight (identity codebook)")
    weights: str = c_field("const uint8_t *", "packed indices, layout [OUT][IN]")
    bias: str = c_field("const int32_t *")


@dataclass
class AddParams:
    STRUCT: ClassVar[str] = "add_params"
    count: int = c_field("int32_t", "codes in each input and in the output")
    zero_a: int = c_field("int32_t", "zero point of a's codes: 2^(a-1) for a signed point, else 0")
    scale_a: int = c_field("int32_t", "2^k: a's step to the common step")
    zero_b: int = c_field("int32_t")
    scale_b: int = c_field("int32_t")
    rounding: int = c_field("int32_t", "2^(shift-1), or 0 for shift 0")
    shift: int = c_field("int32_t", ">= 0: the common step to the output's")
    max_code: int = c_field("int32_t")
    a_bits: int = c_field("uint32_t", "bits per stored code of input a: 8 or 4")
    b_bits: int = c_field("uint32_t", "bits per stored code of input b: 8 or 4")
    out_bits: int = c_field("uint32_t", "bits per stored code of the output buffer: 8 or 4")


@dataclass
class ConcatParams:
    STRUCT: ClassVar[str] = "concat_params"
    count: int = c_field("int32_t", "codes of this input: C_j * H * W")
    offset: int = c_field("int32_t", "its first code in the output: (channels before it) * H * W")
    scale: int = c_field("int32_t", "2^k: left shift to the output's step")
    rounding: int = c_field("int32_t", "2^(shift-1), or 0 for shift 0")
    shift: int = c_field("int32_t", "right shift to the output's step")
    max_code: int = c_field("int32_t")
    in_bits: int = c_field("uint32_t", "bits per stored code of the input buffer: 8 or 4")
    out_bits: int = c_field("uint32_t", "bits per stored code of the output buffer: 8 or 4")


PARAMS = (QuantizeInputParams, Conv2dParams, Conv2dGeneralParams, MaxPool2dParams, AvgPool2dParams, LRNParams,
          DenseParams, AddParams, ConcatParams)


def typedef(params: type, codebook: str) -> str:
    """The C typedef of a parameter struct, one field a line in declaration order."""
    lines = ["typedef struct {"]
    for f in fields(params):
        ctype = f.metadata["ctype"].format(codebook=codebook)
        decl = f"    {ctype}{'' if ctype.endswith('*') else ' '}{f.name};"
        lines.append(f"{decl:<36}/* {f.metadata['doc']} */" if f.metadata["doc"] else decl)
    return "\n".join(lines + [f"}} {params.STRUCT};"])


def literal(value: int, ctype: str) -> str:
    if ctype == "uint32_t":
        return f"{value}u"
    # -2147483648 is the negation of a constant that does not fit in int: INT32_MIN (<stdint.h>) instead.
    return "INT32_MIN" if value == -2**31 else str(value)


def initializer(params) -> list[str]:
    """The designated initializer lines (`.name = value,`) of one op's parameter struct, in field order."""
    out = []
    for f in fields(params):
        value = getattr(params, f.name)
        out.append(f".{f.name} = {value if is_pointer(f) else literal(value, f.metadata['ctype'])},")
    return out


def scalars(params) -> dict[str, int]:
    """The integer fields of a parameter struct (what the op's numbers are, without the arrays it points at)."""
    return {f.name: getattr(params, f.name) for f in fields(params) if not is_pointer(f)}


# ---------------------------------------------------------------- fast variants and the layouts each kernel takes
# A rule fast(op, in_bits, out_bits) names the optimised kernel computing exactly what the reference kernel
# computes for op with those activation layouts (bits per stored code), or None where only the reference applies.

def _never(op, *layout) -> None:
    return None


def _quantize_input_fast(op: QuantizeInput, in_bits: int, out_bits: int) -> str | None:
    """quantize_input_o4: 4-bit codes stored two a byte, an even number of pixels."""
    return "quantize_input_o4" if out_bits == 4 and op.out_count % 2 == 0 else None


def conv_fast_applies(op: Conv2dRequantMaxpool) -> bool:
    """conv2d_requant_maxpool_k<K>*: stride 1, no padding, 2x2 pool (2x2 blocks of accumulators)."""
    return op.conv.stride == 1 and op.conv.pad == 0 and op.pool.k == 2


def general_conv(op):
    """The op lowering runs: a Conv2dRequant without a fast kernel of its own (all but the 1x1 pointwise conv)
    becomes the identical Conv2dGeneralRequant, whose fast kernels take any kernel, stride and padding."""
    if isinstance(op, Conv2dRequant) and _pointwise_fast(op, 8, 8) is None:
        return op.as_general()
    return op


def conv_rows_name(k: int, in_bits: int) -> str:
    """The filter decoder and row body of a fast conv (kernels/conv2d_rows.c.j2), shared by its output layouts."""
    return f"k{k}" + ("_i4" if in_bits == 4 else "")


def _conv_fast(op: Conv2dRequantMaxpool, in_bits: int, out_bits: int) -> str | None:
    """conv2d_requant_maxpool_k<K>[_i4][_o4]: K taps and rows unrolled, _i4/_o4 reading/writing 4-bit codes."""
    if not conv_fast_applies(op):
        return None
    return f"conv2d_requant_maxpool_{conv_rows_name(op.conv.k, in_bits)}" + ("_o4" if out_bits == 4 else "")


def _pointwise_fast(op: Conv2dRequant, in_bits: int, out_bits: int) -> str | None:
    """conv2d_requant_1x1: a 1x1 conv, stride 1, no padding (MobileNet's and DS-CNN's pointwise convs), any code
    layout: on SIQ_DSP cores blocks of POINTWISE_BLOCK pixels repacked as channel lane pairs, four output channels
    by two pixels of dual MACs; elsewhere each output channel's weights decoded once, no bounds checks."""
    return "conv2d_requant_1x1" if op.k == 1 and op.stride == 1 and op.pad == 0 else None


def _general_conv_fast(op: Conv2dGeneralRequant, in_bits: int, out_bits: int) -> str:
    """conv2d_general_requant_depthwise where each group reads one input channel (depthwise convs, channel
    multipliers, a conv of a one-channel input): the channel's plane staged once as zero-padded bytes, windows
    summed without bounds tests. conv2d_general_requant_band for every other general conv (grouped too) where a
    pair of output channels fits BAND_SCRATCH_BYTES (band_layout); conv2d_general_requant_fast otherwise: each
    output channel's C_IN/groups * KH * KW taps decoded once into the scratch, each window clipped to the map
    once per output."""
    if op.in_shape[0] == op.groups:
        return "conv2d_general_requant_depthwise"
    if band_tile(op):
        return "conv2d_general_requant_band"
    return "conv2d_general_requant_fast"


# conv2d_general_requant_band keeps a tile of output channels' taps decoded in the arena, next to a ring of staged
# input rows: tiles are as wide as fits this many bytes beside the ring. A tile stages its input rows again unless
# the ring holds every row the conv reads.
BAND_SCRATCH_BYTES = 5120


@dataclass(frozen=True)
class BandLayout:
    """How conv2d_general_requant_band lays out its scratch (kernels/conv2d_band.c.j2): `tile` output channels'
    decoded taps (an even count of channel slots: the SIQ_DSP body decodes channel pairs), then a ring of `rows`
    staged input rows of `width` columns, each column `channels` bytes (C_IN / groups rounded up to 4, so a word is
    four channels of one tap)."""
    tile: int
    channels: int
    width: int
    rows: int
    channel_bytes: int   # one output channel's taps: KH * KW * channels int16 (or their SIQ_DSP lane pairs)

    @property
    def ring_bytes(self) -> int:
        return self.rows * self.width * self.channels

    @property
    def scratch_bytes(self) -> int:
        return (self.tile + self.tile % 2) * self.channel_bytes + self.ring_bytes


def _band_geometry(op: Conv2dGeneralRequant) -> tuple[int, int, int, int]:
    """(channels a column, columns a row, the ring's least rows (KH), every input row the conv reads). The SIQ_DSP
    body sums two pixels a pass, so the columns cover an even number of outputs (the extra one reads zeros)."""
    (kh, kw), (sh, sw), (_, oh, ow) = op.kernel, op.stride, op.out_shape
    channels = -(-(op.in_shape[0] // op.groups) // 4) * 4
    return channels, (ow + ow % 2 - 1) * sw + kw, kh, (oh - 1) * sh + kh


def _band_tile(group_out: int, channel_bytes: int, room: int) -> int:
    """As few tiles a group as fit `room` bytes, then as narrow as that count allows (less scratch, same staging);
    even unless it spans the group. 0 when not two channels fit."""
    fit = room // channel_bytes
    if fit >= group_out + group_out % 2:
        return group_out
    if fit < 2:
        return 0
    tiles = -(-group_out // (fit - fit % 2))
    width = -(-group_out // tiles)
    return width + width % 2


def band_layout(op: Conv2dGeneralRequant, budget: int = BAND_SCRATCH_BYTES) -> BandLayout | None:
    """The band kernel's layout within `budget` scratch bytes, or None when not even one channel pair fits beside a
    ring of KH rows. Of a ring of KH rows (each tile stages the input again) and one holding every row read (staged
    once), the one staging fewer rows; on a tie the smaller scratch."""
    channels, width, least, every = _band_geometry(op)
    group_out = op.out_shape[0] // op.groups
    channel_bytes = op.kernel[0] * op.kernel[1] * channels * 2
    best = None
    for rows in sorted({least, every}):
        room = budget - rows * width * channels
        tile = _band_tile(group_out, channel_bytes, room) if room > 0 else 0
        if not tile:
            continue
        staged = rows if rows == every else every * -(-group_out // tile)
        layout = BandLayout(tile, channels, width, rows, channel_bytes)
        key = (staged, layout.scratch_bytes)
        if best is None or key < best[0]:
            best = (key, layout)
    return best[1] if best else None


class BandOffers:
    """GreedyPlanner.grow's offer for a band conv: the scratch bytes of its layout within a budget. It keeps each
    layout it offered, so the one the planner kept is known by its size."""

    def __init__(self, op: Conv2dGeneralRequant):
        self.op, self.layouts = op, {}

    def __call__(self, budget: int) -> int | None:
        layout = band_layout(self.op, budget)
        if layout is None:
            return None
        self.layouts[layout.scratch_bytes] = layout
        return layout.scratch_bytes


def band_fields(layout: BandLayout | None) -> dict[str, int]:
    """Conv2dGeneralParams' band kernel fields for a layout (zeros for a general conv on another kernel)."""
    if layout is None:
        return {"tile_channels": 0, "band_channels": 0, "band_width": 0, "band_rows": 0}
    return {"tile_channels": layout.tile, "band_channels": layout.channels, "band_width": layout.width,
            "band_rows": layout.rows}


def band_tile(op: Conv2dGeneralRequant) -> int:
    """Output channels conv2d_general_requant_band decodes at once (tile_channels), 0 when it does not apply."""
    layout = band_layout(op)
    return layout.tile if layout else 0


def staged_plane_bytes(op: Conv2dGeneralRequant) -> int:
    """Bytes of one zero-padded input plane staged by conv2d_general_requant_depthwise: the rows and columns its
    windows read, ((out_height - 1) * stride_h + KH) x ((out_width - 1) * stride_w + KW), plus three bytes: the
    SIQ_DSP bodies load a word per 4 columns of a window row, whose bytes past the window (at the last row's end,
    past the plane) only meet zero taps."""
    (kh, kw), (sh, sw), (_, oh, ow) = op.kernel, op.stride, op.out_shape
    return ((oh - 1) * sh + kh) * ((ow - 1) * sw + kw) + 3


def _lrn_fast(op: LRNRequant, in_bits: int, out_bits: int) -> str:
    """lrn_requant_window[_i4]: any LRN (a sliding channel window per pixel)."""
    return "lrn_requant_window" + ("_i4" if out_bits == 4 else "")


def _dense_fast(op, in_bits: int, out_bits: int) -> str:
    """dense_*_fast: any index width, its row body chosen by dense_path: 8-bit indices that are their own int8
    weights (index_is_value) four rows a pass without the codebook, dual 16-bit MACs on SIQ_DSP cores; 1/2/4-bit
    indices in byte-aligned rows a byte at a time; other 8-bit indices as bytes; the rest through the index stream."""
    return f"{KERNELS[type(op)].name}_fast"


def _add_fast(op: AddRequant, in_bits: int, out_bits: int) -> str:
    """add_requant_fast: any layouts, two codes a step (one byte of nibbles or two bytes), no per-code calls."""
    return "add_requant_fast"


def index_is_value(op) -> bool:
    """Whether lowering stores a dense layer's weights as their own 8-bit indices: 8-bit indices, one codebook
    for the layer, every value in int8. An index then costs the byte the weight itself costs, so the C holds the
    weight's two's-complement byte as its index and the identity codebook (entry k = k, or k - 256 from 128 on):
    codebook[index] is still the weight (the reference kernel is unchanged), and the fast kernel skips the lookup."""
    table = np.asarray(op.codebook)
    return (isinstance(op, (DenseRequant, DenseScores)) and op.bits == 8 and table.ndim == 1
            and table.size > 0 and int(table.min()) >= -128 and int(table.max()) <= 127)


INT8_IDENTITY_CODEBOOK = tuple(k - 256 * (k >= 128) for k in range(256))


def dense_path(op, index_is_value: bool) -> str:
    """Which body of dense_*_fast runs a dense op (kernels/dense.c.j2): "values" (int8 weights stored as their
    indices), "u8" (other 8-bit indices, as bytes), "b1"/"b2"/"b4" (1, 2 or 4-bit indices whose rows start on a
    byte: in_features a multiple of 8 / bits, a byte's indices unpacked with constant shifts) or "stream" (any
    other width, through the sequential index reader)."""
    if index_is_value:
        return "values"
    if op.bits == 8:
        return "u8"
    if op.bits in (1, 2, 4) and op.in_features % (8 // op.bits) == 0:
        return f"b{op.bits}"
    return "stream"


def _small_codes(op) -> bool:
    return op.max_code <= 15  # 4-bit codes (the input may be wider than the feature maps)


def _even_plane(op: LRNRequant) -> bool:
    return op.out_count % 2 == 0


@dataclass(frozen=True)
class KernelSpec:
    """A reference kernel: its name (C function and numpy twin), its parameter struct, its template, the static
    helpers it and its fast variant call, when the fast variant applies, and which activation layouts its
    kernels (reference and fast) accept: writes_nibbles(op) / reads_nibbles(op) say whether they can write /
    read 4-bit codes two a byte; in_place keeps input and output in one layout."""
    name: str
    params: type
    template: str                    # firmware_template/kernels/<template>
    helpers: tuple[str, ...] = ()
    fast_helpers: tuple[str, ...] = ()
    fast: Callable = _never
    packable: bool = False           # reads and writes activations through load_code/store_code (8 or 4 bits)
    writes_nibbles: Callable = _never
    reads_nibbles: Callable = _never
    in_place: bool = False


_CONV_HELPERS = ("conv2d_accumulate", "codebook_row", "read_index", "load_code", "store_code", "requantize")
KERNELS = {
    QuantizeInput: KernelSpec("quantize_input", QuantizeInputParams, "quantize_input.c.j2", ("store_code",),
                              fast=_quantize_input_fast, packable=True, writes_nibbles=_small_codes),
    # the reference conv and the pointwise kernel read nibbles always and write them where codes fit 4 bits (any
    # output width: a code that shares its byte with another op's keeps that nibble)
    Conv2dRequant: KernelSpec("conv2d_requant", Conv2dParams, "conv2d.c.j2", _CONV_HELPERS,
                              ("codebook_row", "read_index", "load_code", "store_code", "requantize"),
                              fast=_pointwise_fast, packable=True, writes_nibbles=_small_codes,
                              reads_nibbles=lambda op: True),
    # the fast conv reads nibbles for K = 5 on even input widths and writes them for even pooled widths
    Conv2dRequantMaxpool: KernelSpec(
        "conv2d_requant_maxpool", Conv2dParams, "conv2d.c.j2", _CONV_HELPERS,
        ("codebook_row", "requantize", "index_stream"), fast=_conv_fast, packable=True,
        writes_nibbles=lambda op: _small_codes(op) and (op.conv.out_shape[2] // op.pool.k) % 2 == 0,
        reads_nibbles=lambda op: not conv_fast_applies(op) or (op.conv.k == 5 and op.conv.in_shape[2] % 2 == 0)),
    # reads nibbles always, writes them where codes fit 4 bits (store_code keeps the other nibble of a byte, so
    # any output width works); its fast variant runs every general conv
    Conv2dGeneralRequant: KernelSpec("conv2d_general_requant", Conv2dGeneralParams, "conv2d_general.c.j2",
                                     ("codebook_row", "read_index", "load_code", "store_code", "requantize"),
                                     ("codebook_row", "read_index", "load_code", "store_code", "requantize"),
                                     fast=_general_conv_fast, packable=True,
                                     writes_nibbles=_small_codes, reads_nibbles=lambda op: True),
    MaxPool2d: KernelSpec("maxpool2d", MaxPool2dParams, "maxpool2d.c.j2"),
    AvgPool2d: KernelSpec("avgpool2d", AvgPool2dParams, "avgpool2d.c.j2", ("load_code", "store_code"),
                          packable=True, writes_nibbles=_small_codes, reads_nibbles=lambda op: True),
    LRNRequant: KernelSpec("lrn_requant", LRNParams, "lrn.c.j2", ("load_code", "store_code"), fast=_lrn_fast,
                           packable=True, writes_nibbles=lambda op: _small_codes(op) and _even_plane(op),
                           reads_nibbles=_even_plane, in_place=True),
    DenseRequant: KernelSpec("dense_requant", DenseParams, "dense.c.j2",
                             ("dense_accumulate", "read_index", "requantize"), ("requantize", "index_stream"),
                             fast=_dense_fast),
    DenseScores: KernelSpec("dense_scores", DenseParams, "dense.c.j2", ("dense_accumulate", "read_index"),
                            ("index_stream",), fast=_dense_fast),
    # add and concat read and write either layout (every input's own)
    AddRequant: KernelSpec("add_requant", AddParams, "add.c.j2", ("load_code", "store_code", "requantize"),
                           ("requantize",), fast=_add_fast, packable=True, writes_nibbles=_small_codes,
                           reads_nibbles=lambda op: True),
    ConcatRequant: KernelSpec("concat_requant", ConcatParams, "concat.c.j2", ("load_code", "store_code"),
                              packable=True, writes_nibbles=_small_codes, reads_nibbles=lambda op: True),
}
TEMPLATES = ("quantize_input.c.j2", "conv2d.c.j2", "conv2d_general.c.j2", "maxpool2d.c.j2", "avgpool2d.c.j2",
             "lrn.c.j2", "dense.c.j2", "add.c.j2", "concat.c.j2")


def spec(op) -> KernelSpec:
    return KERNELS[type(op)]


def fast_kernel(op, in_bits: int, out_bits: int) -> str | None:
    """The optimised kernel computing exactly what the reference kernel of `op` computes, or None."""
    return spec(op).fast(op, in_bits, out_bits)


# Dual 16-bit lane pairs (lo tap, hi tap) of one kernel row for the SIQ_DSP conv row bodies
# (kernels/conv2d_rows.c.j2), by (K, bits per stored input code); a tap >= K is a zero lane. Bytes, K = 5:
# in[0..5] as (0,2) (1,3) (2,4) (3,5) lanes; K = 3: in[0..3] as (0,2) (1,3). Nibbles, K = 5: one word holds codes
# 0..7 and (w >> 4j) & 0x000F000F is the lane pair (code j, code j + 4), j = 0..3.
DSP_PAIRS = {(3, 8): [(0, 2), (1, 3)], (5, 8): [(0, 2), (1, 3), (4, 5)], (5, 4): [(0, 4), (1, 3), (2, 5)]}


def filter_row_words(k: int, in_bits: int) -> int:
    """int32 words of one kernel row of a decoded filter on SIQ_DSP cores: one per lane pair where a dual-MAC
    body exists for (K, input code bits), else one per tap (SIQ_FILTER_ROW_* in kernels/conv2d_rows.c.j2)."""
    return len(DSP_PAIRS[(k, in_bits)]) if (k, in_bits) in DSP_PAIRS else k


# A packed buffer read by a fast conv gets one byte past its last code: the SIQ_DSP nibble row body loads a word
# whose fourth byte only feeds zero-weighted lanes, and at the buffer's last row that byte lies past the codes.
NIBBLE_SLACK = 1

# Fast kernels with SIQ_DSP bodies (dual 16-bit MACs on Cortex-M4/M7): the model's source then carries the
# SIQ_DSP intrinsics and their portable twins (kernels/common.c.j2).
DSP_KERNELS = ("conv2d_requant_1x1", "conv2d_general_requant_depthwise", "conv2d_general_requant_band")


# Pixels per block of conv2d_requant_1x1's SIQ_DSP body (even): the block's codes are repacked as channel lane
# pairs once and every output channel pair decodes its weights once per block.
POINTWISE_BLOCK = 32


def runs_in_place(op, fast: str | None, in_bits: int, out_bits: int) -> bool:
    """Whether a fast kernel may write its output over its input buffer (same shape, one code layout):
    conv2d_requant_1x1 reads a block of pixels (all channels) into its scratch before writing that block's
    outputs, which sit where the block's inputs were; conv2d_general_requant_depthwise with one output channel per
    input channel stages a channel's plane before writing that channel. A code sharing a byte with a code not yet
    read keeps that nibble. The reference kernels never run in place: the reference build copies the input aside
    for them (firmware_template/model.c.j2)."""
    if fast not in ("conv2d_requant_1x1", "conv2d_general_requant_depthwise") or in_bits != out_bits:
        return False
    return tuple(op.in_shape) == tuple(op.out_shape) and (fast == "conv2d_requant_1x1" or op.groups == op.in_shape[0])


def input_slack(fast: str | None, in_bits: int) -> int:
    """Bytes a fast kernel may read past the last code of a 4-bit packed input buffer."""
    return NIBBLE_SLACK


def scratch_words(op, fast: str) -> int:
    """int32 words of arena scratch a fast conv kernel needs. conv2d_requant_1x1, the larger of its two bodies:
    SIQ_DSP, four output channels' weight lane pairs (4 * ceil(C_IN / 2) words), then a block of
    ceil(min(plane, POINTWISE_BLOCK) / 2) pixel pairs' input lane pairs (2 * ceil(C_IN / 2) words each); portable,
    one output channel's C_IN int32 weights, then the block's codes as C_IN * block bytes.
    conv2d_general_requant_fast: one output channel's C_IN / groups * KH * KW taps. The depthwise and band kernels:
    as laid out in their templates (kernels/conv2d_depthwise.c.j2, kernels/conv2d_band.c.j2)."""
    if isinstance(op, Conv2dRequant):
        channels, plane = op.in_shape[0], op.in_shape[1] * op.in_shape[2]
        pairs, block = (channels + 1) // 2, min(plane, POINTWISE_BLOCK)
        return max(2 * pairs * (2 + (block + 1) // 2), channels + (channels * block + 3) // 4)
    taps = op.in_shape[0] // op.groups * op.kernel[0] * op.kernel[1]
    if fast == "conv2d_general_requant_band":
        # one tile of output channels' taps (or their SIQ_DSP lane pairs, in the same bytes), then the ring
        return (band_layout(op).scratch_bytes + 3) // 4
    if fast == "conv2d_general_requant_depthwise":
        # two output channels' taps and their SIQ_DSP lane pairs (KH rows of 2 * ceil(KW / 4)), then the staged plane
        return 2 * taps + 2 * op.kernel[0] * 2 * ((op.kernel[1] + 3) // 4) + (staged_plane_bytes(op) + 3) // 4
    return taps

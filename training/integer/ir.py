"""The integer IR: one dataclass per integer op, each naming its C kernel and numpy twin.

Every number the generated C needs is a typed field here, computed once by lower.build_integer_model (shifts,
roundings, proven accumulator bounds, weight tables); codegen reads these fields and never re-derives them.

Layouts: feature maps are [C, H, W] (channel-major, as PyTorch flattens them); conv weights [C_OUT, C_IN, K, K];
dense weights [OUT, IN]. Codes are unsigned a-bit integers in [0, 2^a - 1]; a signed point (a conv/dense feeding
only adds, training/graph.py) stores its signed code plus its zero point 2^(a-1) in the same range.

The ops form a graph: IntegerModel.inputs[k] lists the ops whose outputs op k reads (an add two, a concat two or
more, every other op one; the input quantization reads the image).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class MapOutput:
    """An op whose output is a [C, H, W] feature map (out_shape)."""

    @property
    def out_count(self) -> int:
        return int(np.prod(self.out_shape))


class RequantizedWeighted:
    """A weighted layer whose requantized output is that of the relu (or clip) right after it: layer_index names
    the activation, weights_layer the layer holding the weights."""

    @property
    def weights_layer(self) -> int:
        # a signed point (zero_point > 0) has no relu after it: layer_index is the weighted layer itself
        return self.layer_index if self.zero_point else self.layer_index - 1


@dataclass
class QuantizeInput:
    """code = clamp(floor(pixel * 2^shift + 1/2), 0, max_code) for pixel in 0..255."""
    shape: tuple[int, int, int]
    shift: int            # s_in - 8: > 0 scales up, < 0 is a rounding right shift
    max_code: int
    layer_index: int = -1
    name: str = "quantize_input"

    @property
    def out_count(self) -> int:
        return int(np.prod(self.shape))

    macs = 0


@dataclass
class Conv2dRequant(MapOutput, RequantizedWeighted):
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
    zero_point: int = 0    # > 0: a signed point storing code + zero_point (folded into bias, so no kernel sees it)
    # uint8 [C_IN] or None: input channel c's codes are on a step 2^in_shifts[c] coarser than the finest channel's
    # (a step per channel, quant.aligned_channel_points), so the sum reads in[c] << in_shifts[c]; only 1x1 convs
    # (stride 1, no padding) carry them, and (in_max_code << in_shifts[c]) < 2^15 (the fast kernel's lanes)
    in_shifts: np.ndarray | None = None

    def as_general(self) -> "Conv2dGeneralRequant":
        """The same conv as a Conv2dGeneralRequant (square kernel, one stride, one pad on all four sides, one
        group): identical outputs, so a back end may run whichever op has the faster kernel for the shape."""
        if self.in_shifts is not None:
            raise ValueError("a conv that aligns its input channels has no general form")
        return Conv2dGeneralRequant(self.in_shape, self.out_shape, (self.k, self.k), (self.stride, self.stride),
                                    (self.pad,) * 4, 1, self.codebook, self.indices, self.bits, self.bias,
                                    self.shift, self.max_code, self.acc_bound, self.layer_index,
                                    zero_point=self.zero_point)

    @property
    def macs(self) -> int:
        o, oh, ow = self.out_shape
        return o * oh * ow * self.in_shape[0] * self.k * self.k


@dataclass
class Conv2dGeneralRequant(MapOutput, RequantizedWeighted):
    """Any conv: out[o, y, x] = requantize(bias[o] + sum_{c < C_IN/groups, ky < KH, kx < KW}
    in[g*C_IN/groups + c, y*stride_h + ky - pad_top, x*stride_w + kx - pad_left] * codebook[indices[o, c, ky, kx]])
    with g = o / (C_OUT/groups) the output channel's group (zero outside the input; a per-channel codebook
    [C_OUT, K] reads codebook[o, ...]). Lowering uses it where Conv2dRequant (square kernel, one stride, one pad
    on every side, no groups) does not fit; bottom/right padding only extends the output (out_shape)."""
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]          # (KH, KW)
    stride: tuple[int, int]          # (rows, columns)
    pad: tuple[int, int, int, int]   # (top, bottom, left, right)
    groups: int
    codebook: np.ndarray   # int64 [K], or [C_OUT, K] per output channel
    indices: np.ndarray    # uint8 [C_OUT, C_IN / groups, KH, KW]
    bits: int
    bias: np.ndarray       # int64 [C_OUT]: integer bias plus the rounding half 2^(shift-1) when shift > 0
    shift: int
    max_code: int
    acc_bound: int
    layer_index: int
    name: str = "conv2d_general_requant"
    zero_point: int = 0
    # int8 [C_OUT] or None: output channel o requantizes with channel_shifts[o] instead of shift (a step per
    # channel at the relu after a depthwise conv, quant.aligned_channel_points); bias[o] holds its own half
    channel_shifts: np.ndarray | None = None

    @property
    def macs(self) -> int:
        o, oh, ow = self.out_shape
        return o * oh * ow * (self.in_shape[0] // self.groups) * self.kernel[0] * self.kernel[1]


@dataclass
class AvgPool2d(MapOutput):
    """out[c, y, x] = min(max_code, (sum of the KH x KW window at (y*stride_h - pad, x*stride_w - pad), zero
    outside, times 2^up + divisor / 2) / divisor): the mean rounded half up onto the pool's own step
    (quant.pool_rounding: divisor = KH * KW * 2^down, the output step 2^(down - up) times the input's).
    acc_bound: the largest numerator, below 2^31 (proved at lowering)."""
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: int
    up: int
    divisor: int
    max_code: int          # the output's largest code
    acc_bound: int
    layer_index: int
    name: str = "avgpool2d"

    macs = 0


@dataclass
class MaxPool2d(MapOutput):
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    k: int
    layer_index: int
    name: str = "maxpool2d"

    macs = 0


@dataclass
class Conv2dRequantMaxpool:
    """Fused conv -> relu -> max-pool: each pooled output is the max of its pool x pool requantized conv outputs
    (max commutes with the monotone requantization), so the pre-pool map never exists. Its output equals pool's."""
    conv: Conv2dRequant
    pool: MaxPool2d
    name: str = "conv2d_requant_maxpool"

    @property
    def layer_index(self) -> int:
        return self.pool.layer_index

    @property
    def out_count(self) -> int:
        return self.pool.out_count

    @property
    def macs(self) -> int:
        return self.conv.macs

    @property
    def max_code(self) -> int:
        return self.conv.max_code

    @property
    def acc_bound(self) -> int:
        return self.conv.acc_bound


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

    @property
    def out_count(self) -> int:
        return int(np.prod(self.shape))

    macs = 0


@dataclass
class DenseRequant(RequantizedWeighted):
    in_features: int
    out_features: int
    codebook: np.ndarray
    indices: np.ndarray    # uint8 [OUT, IN]
    bits: int
    bias: np.ndarray
    shift: int
    max_code: int
    acc_bound: int
    layer_index: int       # the relu after the dense layer
    name: str = "dense_requant"
    zero_point: int = 0

    @property
    def out_count(self) -> int:
        return self.out_features

    @property
    def macs(self) -> int:
        return self.in_features * self.out_features


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
    shift = 0              # scores are not requantized
    max_code = 0

    @property
    def weights_layer(self) -> int:
        return self.layer_index

    @property
    def out_count(self) -> int:
        return self.out_features

    @property
    def macs(self) -> int:
        return self.in_features * self.out_features


@dataclass
class AddRequant(MapOutput):
    """out = clamp(((a - zero_a) * scale_a + (b - zero_b) * scale_b + rounding) >> shift, 0, max_code): both
    inputs brought to the finer of their power-of-two steps (scale = 2^k), summed in int32, requantized to the
    output's step with round half up (rounding = 2^(shift-1) when shift > 0). A relu after the add is the lower
    clamp. |a term| + |b term| + rounding <= bound <= 2^31 - 1, proven at lowering."""
    out_shape: tuple[int, ...]
    zero_a: int
    scale_a: int
    zero_b: int
    scale_b: int
    rounding: int
    shift: int             # >= 0 (a left shift of the sum is folded into the scales)
    max_code: int
    bound: int
    layer_index: int       # the relu after the add, or the add itself
    name: str = "add_requant"

    macs = 0


@dataclass
class ConcatRequant(MapOutput):
    """out = the inputs stacked along C, each code requantized to the output's step:
    min((code * scales[j] + roundings[j]) >> shifts[j], max_code) for input j (codes are non-negative)."""
    in_channels: tuple[int, ...]
    out_shape: tuple[int, int, int]
    scales: tuple[int, ...]
    roundings: tuple[int, ...]
    shifts: tuple[int, ...]
    max_code: int
    layer_index: int
    name: str = "concat_requant"

    macs = 0


WeightedOp = Conv2dRequant | Conv2dGeneralRequant | DenseRequant | DenseScores


@dataclass
class IntegerModel:
    input_shape: tuple[int, int, int]
    num_classes: int
    act_bits: int          # feature-map codes 0 .. 2^act_bits - 1 (but at the points of point_widths)
    ops: list
    class_names: list[str]
    score_exponent: int    # scores = real logits * 2^score_exponent
    input_bits: int        # input codes 0 .. 2^input_bits - 1
    inputs: list | None = None  # per op, the indices of the ops it reads (None: a chain, each op reads the last)
    point_widths: dict = field(default_factory=dict)  # feature-map point -> its own code width

    def __post_init__(self):
        if self.inputs is None:
            self.inputs = [()] + [(k,) for k in range(len(self.ops) - 1)]

    def readers(self, k: int) -> list[int]:
        return [j for j, srcs in enumerate(self.inputs) if k in srcs]


@dataclass
class KernelStep:
    """One call of a C kernel: `op` (an IR op, or the fused conv + pool) computing model.ops[sources]; its output
    equals the last source's."""
    op: object
    sources: list[int]

"""Eq. 5 and the grid it works on: rounding, bit widths, activation fake quantization, quantization points.

Every rule here is the one the numpy reference and the C apply too (see the package docstring)."""
from __future__ import annotations

import numpy as np
import torch

from ..arch import MERGES, Add, Arch, Clip, Conv, Dense, ReLU
from ..errors import SiqError
from ..graph import activation_reads, merge_inputs, point_of, points, readers, signed_points

SHIFT_RANGE = range(-8, 25)
INT32_MAX = 2**31 - 1


def round_half_up(x):
    """Eq. 5 rounding, floor(x + 1/2), for numpy arrays, tensors and scalars (never half-to-even)."""
    if isinstance(x, torch.Tensor):
        return torch.floor(x + 0.5)
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def check_bits(bits, what: str, allow_float: bool = False):
    """Bit widths are whole numbers 1..8 (or None = float where allowed)."""
    if bits is None and allow_float:
        return None
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise SiqError(f"{what} must be a whole number from 1 to 8, got {bits!r}")
    return int(bits)


def quantize_activation(x: torch.Tensor, shift: int, bits: int, octaves=None) -> torch.Tensor:
    """Fake-quantize to codes * 2^-shift; exact in float64. With `octaves` (a point with a step per channel,
    channel_step_points), channel c's codes are on step 2^-(shift + octaves[c])."""
    scale = step_scale(x, shift, octaves)
    return torch.clamp(torch.floor(x * scale + 0.5), 0, 2**bits - 1) / scale


def step_scale(x: torch.Tensor, shift: int, octaves=None):
    """2^shift, or per channel 2^(shift + octaves[c]) shaped to broadcast over x's channel axis (axis 1)."""
    if octaves is None:
        return 2.0 ** shift
    exponents = torch.as_tensor(np.asarray(octaves, dtype=np.int64) + shift, dtype=x.dtype)
    return (2.0 ** exponents).reshape((1, -1) + (1,) * (x.dim() - 2))


CHANNEL_STEP_MODES = ("depthwise", "separable")
LANE_BITS = 15  # the fast kernels stage codes in signed 16-bit lanes: an aligned code stays below 2^15


def channel_step_points(arch: Arch, mode: str = "depthwise") -> list[int]:
    """The feature-map points that can take a power-of-two step per channel, in network order.

    "depthwise": the relu right after a conv, read only by depthwise convs (every output channel reads one input
    channel). The conv before it requantizes channel c onto channel c's step and a depthwise conv reads channel c
    alone, so nothing ever sums, compares or stores two channels on one grid: the steps fold into the codebook
    rows on both sides (QuantizedModel.folded_codebook). A point whose conv itself reads such a point is left
    out, so that no codebook row carries two channel scalings (lowering's bound on its entries).
    "separable": those, and the relu right after a depthwise conv read only by pointwise convs
    (aligned_channel_points)."""
    if mode not in CHANNEL_STEP_MODES:
        raise SiqError(f"unknown channel-step mode {mode!r} (known: {', '.join(CHANNEL_STEP_MODES)})")
    read = readers(arch)
    shapes = arch.input_shapes()
    out: list[int] = []
    for p, layer in enumerate(arch.layers):
        if not isinstance(layer, ReLU) or p == 0 or not isinstance(arch.layers[p - 1], Conv) or \
                arch.sources[p] != (p - 1,) or not read.get(p) or input_point_of(arch, p - 1) in out:
            continue
        if all(_is_depthwise(arch.layers[r], shapes[r]) for r in read[p]):
            out.append(p)
    return sorted(out + aligned_channel_points(arch)) if mode == "separable" else out


def aligned_channel_points(arch: Arch) -> list[int]:
    """The relu right after a depthwise conv (one input channel per output channel) whose every reader is a
    pointwise conv (1x1, stride 1, no padding, one group). The depthwise conv requantizes channel c with a shift
    of its own (Conv2dGeneralRequant.channel_shifts); a pointwise conv sums the channels after a left shift of
    each channel's codes onto the finest channel's step (Conv2dRequant.in_shifts)."""
    read = readers(arch)
    shapes = arch.input_shapes()
    out = []
    for p, layer in enumerate(arch.layers):
        if not isinstance(layer, ReLU) or p == 0 or arch.sources[p] != (p - 1,) or not read.get(p):
            continue
        producer = arch.layers[p - 1]
        if isinstance(producer, Conv) and _is_depthwise(producer, shapes[p - 1]) and \
                producer.out == shapes[p - 1][0] and \
                all(_is_pointwise(arch.layers[r], shapes[r]) for r in read[p]):
            out.append(p)
    return out


def _is_depthwise(layer, in_shape) -> bool:
    return isinstance(layer, Conv) and layer.groups == in_shape[0] > 1


def _is_pointwise(layer, in_shape) -> bool:
    return isinstance(layer, Conv) and layer.groups == 1 and tuple(layer.kernel) == (1, 1) and \
        tuple(layer.strides) == (1, 1) and not any(layer.padding(*in_shape[1:]))


def aligned_octave_limit(bits: int) -> int:
    """How many octaves a pointwise conv may shift an input channel's codes of `bits` bits left: the aligned
    code stays inside a signed 16-bit lane."""
    return LANE_BITS - bits


def quantize_signed(x: torch.Tensor, shift: int, bits: int) -> torch.Tensor:
    """Fake-quantize a signed point (graph.py): codes in [-2^(bits-1), 2^(bits-1) - 1] times 2^-shift. The C
    stores code + 2^(bits-1) (signed_zero_point) in the same unsigned a-bit slot."""
    scale, zero = 2.0 ** shift, signed_zero_point(bits)
    return torch.clamp(torch.floor(x * scale + 0.5), -zero, zero - 1) / scale


def signed_zero_point(bits: int) -> int:
    return 2 ** (bits - 1)


def point_bits(point: int, act_bits: int, input_bits: int | None = None, widths: dict | None = None) -> int:
    """Code width at a quantization point: its own in `widths` (per-point widths), else the input image's
    (point -1) input_bits where given, else act_bits."""
    if widths and point in widths:
        return widths[point]
    return input_bits if point == -1 and input_bits is not None else act_bits


def pool_rounding(count: int, shift_in: int, shift_out: int) -> tuple[int, int, int]:
    """The average pool's integer rule from codes on step 2^-shift_in to codes on step 2^-shift_out:
    out = floor((sum * 2^up + divisor // 2) / divisor), divisor = count * 2^down, the mean sum / count rounded
    half up onto the output's step (up, down = the step ratio's power of two, one of them 0). Returns
    (up, divisor, divisor // 2). For an odd divisor the quotient is never exactly half way, so adding
    (divisor - 1) / 2 before the floor still rounds half up."""
    up, down = max(shift_out - shift_in, 0), max(shift_in - shift_out, 0)
    divisor = count << down
    return up, divisor, divisor // 2


def quantization_points(arch: Arch) -> list[int]:
    """Layer indices whose outputs are stored quantized (the input is point -1): every relu, clip and lrn, and
    on branching networks signed conv/dense outputs, adds without a relu after them and concats (graph.py)."""
    return points(arch)


def input_point_of(arch: Arch, index: int) -> int:
    """The quantization point feeding layer `index` (-1 = the input image); its first input for add/concat."""
    return point_of(arch, arch.sources[index][0])


def relu_follows(arch: Arch, index: int) -> bool:
    """A relu or clip directly after layer `index`, reading it."""
    return activation_reads(arch, index)


def point_max_code(arch: Arch, point: int, shift: int, bits: int) -> int:
    """The largest code a quantization point stores. A clip(M) point: round_half_up(M * 2^shift), capped at
    2^bits - 1. Exact for every M: rounding is monotone, so quantizing min(x, M) equals the smaller of x's code
    and M's code; the upper clamp is one more bound in the requantization, never a refusal."""
    layer = arch.layers[point] if point >= 0 else None
    top = 2**bits - 1
    if isinstance(layer, Clip):
        return int(min(top, np.floor(float(layer.max) * 2.0**shift + 0.5)))
    return top


def quantizable(arch: Arch) -> None:
    """The fixed-point scheme needs every conv/dense but the last followed directly by relu (read by nothing
    else), or read only by add layers (a signed point); an add that is not followed by a relu only sums
    non-negative codes; concat joins unsigned codes; the network ends with the dense class scores."""
    weighted = arch.weighted_layers()
    read = readers(arch)
    signed = set(signed_points(arch))
    for i in weighted[:-1]:
        kind = "conv" if isinstance(arch.layers[i], Conv) else "dense"
        others = [r for r in read.get(i, []) if r != i + 1 or i in signed]
        if i in signed and (not read.get(i) or not all(isinstance(arch.layers[r], Add) for r in read[i])):
            raise SiqError(f"layer {i} ({kind}) must be followed by relu, relu6 or clip (or feed only add layers): "
                           "the client stores unsigned feature maps")
        if i not in signed and others:
            raise SiqError(f"layer {i} ({kind}) is read by its relu and by layer {others[0]}: only the relu may read "
                           "a conv/dense output (name the relu and read that)")
    for i, layer in enumerate(arch.layers):
        if isinstance(layer, MERGES):
            feeding = merge_inputs(arch, i)
            if isinstance(layer, Add) and len(feeding) != 2:
                raise SiqError(f"layer {i} (add) sums {len(feeding)} tensors: the integer client adds two; "
                               "chain adds of two")
            # signed points feed only adds (checked above); their sum must meet a relu to be stored unsigned
            negative = [p for p in feeding if p in signed]
            if negative and not activation_reads(arch, i):
                raise SiqError(f"layer {i} (add) reads the signed output of layer {negative[0]} (a conv without "
                               "relu): follow the add with relu, relu6 or clip (the client stores unsigned feature "
                               "maps)")
            if activation_reads(arch, i) and read.get(i) != [i + 1]:
                raise SiqError(f"layer {i} ({layer.type}) is read by its relu and by another layer: name the relu "
                               "and read that")
    if not isinstance(arch.layers[weighted[-1]], Dense) or weighted[-1] != len(arch.layers) - 1:
        raise SiqError("the network must end with a dense layer (the class scores)")



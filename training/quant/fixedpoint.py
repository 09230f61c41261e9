"""Eq. 5 and the grid it works on: rounding, bit widths, activation fake quantization, quantization points.

Every rule here is the one the numpy reference and the C apply too (see the package docstring)."""
from __future__ import annotations

import numpy as np
import torch

from ..arch import ACTIVATIONS, LRN, Arch, Clip, Conv, Dense
from ..errors import SiqError

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


def quantize_activation(x: torch.Tensor, shift: int, bits: int) -> torch.Tensor:
    """Fake-quantize to codes * 2^-shift; exact in float64."""
    scale = 2.0 ** shift
    return torch.clamp(torch.floor(x * scale + 0.5), 0, 2**bits - 1) / scale


def point_bits(point: int, act_bits: int, input_bits: int | None = None) -> int:
    """Code width at a quantization point: the input image (point -1) may have its own, else act_bits."""
    return input_bits if point == -1 and input_bits is not None else act_bits


def quantization_points(arch: Arch) -> list[int]:
    """Layer indices whose outputs are stored quantized: every relu, clip and lrn (the input is point -1)."""
    return [i for i, layer in enumerate(arch.layers) if isinstance(layer, (*ACTIVATIONS, LRN))]


def input_point_of(arch: Arch, index: int) -> int:
    """The quantization point feeding layer `index` (-1 = the input image)."""
    points = [p for p in quantization_points(arch) if p < index]
    return points[-1] if points else -1




def relu_follows(arch: Arch, index: int) -> bool:
    """A relu or clip directly after layer `index`."""
    return index + 1 < len(arch.layers) and isinstance(arch.layers[index + 1], ACTIVATIONS)


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
    """The fixed-point scheme needs every conv/dense but the last followed directly by relu."""
    weighted = arch.weighted_layers()
    for i in weighted[:-1]:
        if not relu_follows(arch, i):
            kind = "conv" if isinstance(arch.layers[i], Conv) else "dense"
            raise SiqError(f"layer {i} ({kind}) must be followed by relu, relu6 or clip: the client stores unsigned "
                           "feature maps")
    if not isinstance(arch.layers[weighted[-1]], Dense) or weighted[-1] != len(arch.layers) - 1:
        raise SiqError("the network must end with a dense layer (the class scores)")



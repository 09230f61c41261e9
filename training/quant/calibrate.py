"""Activation calibration: each quantization point's power-of-two step from calibration images."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import SiqError
from ..nets import Hooks, Net, images_to_input
from ..graph import signed_points
from .fixedpoint import SHIFT_RANGE, point_bits, quantization_points, quantize_activation, quantize_signed

CALIBRATION_SAMPLES = 2_000_000   # activations scored per quantization point


def best_shift(values: torch.Tensor, bits: int, signed: bool = False) -> int:
    """Calibration rule: the power-of-two step minimising the mean squared quantization error (of the signed
    codes for a signed point)."""
    v = values.detach().flatten()
    if v.numel() > CALIBRATION_SAMPLES:
        # evenly spaced indices in exact integer arithmetic: a float32 linspace rounds n - 1 up past the end
        # once n > 2**24 (paper-office on 6,000 Fashion images has 24.6 M activations at one point)
        v = v[torch.arange(CALIBRATION_SAMPLES, dtype=torch.int64) * (v.numel() - 1) // (CALIBRATION_SAMPLES - 1)]
    v = v.to(torch.float64)
    quantize = quantize_signed if signed else quantize_activation
    errors = [(torch.mean((quantize(v, s, bits) - v) ** 2).item(), s) for s in SHIFT_RANGE]
    return min(errors)[1]


CALIBRATION_RULES = ("float", "sequential")


def calibrate_shifts(net: Net, images: np.ndarray, bits: int, rule: str = "float",
                     input_bits: int | None = None, point_widths: dict | None = None) -> dict[int, int]:
    """Shift per quantization point (-1 = input) on calibration images, by best_shift on each point's tensor
    (`bits` wide; the input `input_bits` wide, default `bits`; a point in point_widths that wide).

    rule "float": every tensor as the float network computes it.
    rule "sequential": point by point in network order, each tensor as computed from the already quantized
        points before it (what the client will feed it). It matters where a point rescales its input: lrn here
        multiplies by about k^-beta = 0.59, and on the float tensors MSE picks lrn's step equal to its input's,
        which at 2 bits maps codes 1 and 2 to the same code; on the quantized codes it picks half that step."""
    if rule not in CALIBRATION_RULES:
        raise SiqError(f"unknown calibration rule {rule!r} (known: {', '.join(CALIBRATION_RULES)})")
    net.eval()
    x = images_to_input(images)
    with torch.no_grad():
        if rule == "sequential":
            hooks = _SequentialCalibration(bits, input_bits, point_widths)
            net(x, hooks)
            return hooks.shifts
        collect: list = []
        net(x, collect=collect)
    shifts = {-1: best_shift(x, point_bits(-1, bits, input_bits))}
    signed = set(signed_points(net.arch))
    for p in quantization_points(net.arch):
        shifts[p] = best_shift(collect[p], point_bits(p, bits, input_bits, point_widths), p in signed)
    return shifts


class _SequentialCalibration(Hooks):
    """Chooses each point's shift on the tensor reaching it, then hands on that tensor quantized."""

    def __init__(self, bits: int, input_bits: int | None = None, point_widths: dict | None = None):
        self.bits = bits
        self.input_bits = input_bits
        self.point_widths = point_widths
        self.shifts: dict[int, int] = {}

    def _bits(self, point: int) -> int:
        return point_bits(point, self.bits, self.input_bits, self.point_widths)

    def _calibrate(self, point: int, x: torch.Tensor) -> torch.Tensor:
        bits = self._bits(point)
        self.shifts[point] = best_shift(x, bits)
        return quantize_activation(x, self.shifts[point], bits)

    def input(self, x):
        return self._calibrate(-1, x)

    def activation(self, index, x):
        return self._calibrate(index, x)

    def signed(self, index, x):
        self.shifts[index] = best_shift(x, self._bits(index), signed=True)
        return quantize_signed(x, self.shifts[index], self._bits(index))


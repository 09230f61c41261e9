"""Hooks into the network's forward pass: exact float64 evaluation (equal to the integer C bit for bit) and
float32 quantization-aware training with straight-through estimators."""
from __future__ import annotations

import numpy as np
import torch

from ..arch import LRN
from ..nets import Hooks, Net, images_to_input
from .fixedpoint import (input_point_of, point_bits, pool_rounding, quantize_activation, quantize_signed,
                         signed_zero_point, step_scale)
from .lrn import lrn_table, lrn_window_sum
from .model import QuantizedModel

class ExactHooks(Hooks):
    """float64 evaluation that equals the integer C bit for bit (every value is an exact dyadic rational)."""

    def __init__(self, qm: QuantizedModel):
        self.qm = qm
        self.weights = {i: torch.from_numpy(lc.values()) for i, lc in qm.layers.items()}
        self.bias_values = {i: torch.from_numpy(qm.biases[i].astype(np.float64) * 2.0 ** -qm.accumulator_exponent(i))
                            for i in qm.layers}
        self.tables = {}
        for i, layer in enumerate(qm.arch.layers):
            if isinstance(layer, LRN):
                source = input_point_of(qm.arch, i)  # the table spans the input's codes
                self.tables[i] = lrn_table(layer, qm.shifts[source], qm.shifts[i], qm.bits_at(source))

    def input(self, x):
        return quantize_activation(x, self.qm.shifts[-1], self.qm.input_bits)

    def weight(self, index, w):
        return self.weights[index]

    def bias(self, index, b):
        return self.bias_values[index]

    def activation(self, index, x):
        return quantize_activation(x, self.qm.shifts[index], self.qm.bits_at(index),
                                   self.qm.channel_octaves.get(index))

    def signed(self, index, x):
        return quantize_signed(x, self.qm.shifts[index], self.qm.bits_at(index))

    def lrn(self, index, module, x):
        tab = self.tables[index]
        shift_in = self.qm.shifts[input_point_of(self.qm.arch, index)]
        codes = x * 2.0 ** shift_in  # exact: x holds codes * 2^-shift_in
        window = lrn_window_sum(codes, tab.window_before, tab.window_after)
        m = torch.tensor(tab.table, dtype=torch.float64)[torch.floor(window / 2.0 ** tab.index_shift).long()]
        out_codes = torch.floor((codes * m + 2.0 ** (tab.frac_bits - 1)) / 2.0 ** tab.frac_bits)
        # Returned as a real value; activation() then re-quantizes it, which leaves exact codes unchanged
        # except for the clamp to 2^a - 1, the same clamp the integer lrn applies.
        return out_codes * 2.0 ** -self.qm.shifts[index]

    def avgpool(self, index, module, x):
        return rounded_mean(module, x, self.qm.shifts[input_point_of(self.qm.arch, index)], self.qm.shifts[index])


def rounded_mean(module: torch.nn.AvgPool2d, x: torch.Tensor, shift_in: int, shift_out: int) -> torch.Tensor:
    """The integer average pool on codes q = x * 2^shift_in (pool_rounding's rule; count = kh * kw, padding
    counted), as a real value on step 2^-shift_out, before the clamp to the output's largest code (activation()
    applies it, as the integer op does). The sums are whole numbers in float64; the division is done on int64."""
    kh, kw = (module.kernel_size,) * 2 if isinstance(module.kernel_size, int) else module.kernel_size
    up, divisor, half = pool_rounding(kh * kw, shift_in, shift_out)
    codes = x * 2.0**shift_in
    sums = torch.nn.functional.avg_pool2d(codes, module.kernel_size, module.stride, module.padding,
                                          count_include_pad=True, divisor_override=1)
    out = torch.div(sums.to(torch.int64) * 2**up + half, divisor, rounding_mode="floor")
    return out.to(x.dtype) * 2.0**-shift_out


def ste(x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: forward the quantized value, backward the identity."""
    return x + (quantized - x).detach()


class TrainingHooks(Hooks):
    """float32 quantization-aware training: STE fake quantization of activations (and of weights, through a
    per-layer callable mapping a weight tensor to its quantized value)."""

    def __init__(self, act_bits: int | None, shifts: dict[int, int] | None, weight_quantizers: dict | None = None,
                 input_bits: int | None = None, point_widths: dict | None = None,
                 channel_octaves: dict | None = None):
        self.act_bits = act_bits
        self.channel_octaves = channel_octaves or {}  # point -> per channel, octaves finer than its step
        self.input_bits = input_bits
        self.point_widths = point_widths or {}
        self.shifts = shifts or {}
        self.weight_quantizers = weight_quantizers or {}

    def _act(self, point, x):
        if self.act_bits is None:
            return x
        bits = point_bits(point, self.act_bits, self.input_bits, self.point_widths)
        octaves = self.channel_octaves.get(point)
        scale = step_scale(x, self.shifts[point], octaves)
        clipped = torch.clamp(x, 0.0, (2**bits - 1) / scale) if octaves is None else \
            torch.clamp(x, torch.zeros_like(scale), (2**bits - 1) / scale)
        return ste(clipped, torch.floor(clipped * scale + 0.5) / scale)

    def input(self, x):
        return self._act(-1, x)

    def activation(self, index, x):
        return self._act(index, x)

    def signed(self, index, x):
        """A signed point keeps its calibrated shift (learned steps train the unsigned points only)."""
        if self.act_bits is None:
            return x
        bits = point_bits(index, self.act_bits, self.input_bits, self.point_widths)
        scale, zero = 2.0 ** self.shifts[index], signed_zero_point(bits)
        clipped = torch.clamp(x, -zero / scale, (zero - 1) / scale)
        return ste(clipped, torch.floor(clipped * scale + 0.5) / scale)

    def weight(self, index, w):
        quantizer = self.weight_quantizers.get(index)
        return w if quantizer is None else ste(w, quantizer(w))


def evaluate_exact(qm: QuantizedModel, net: Net, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """Integer scores [N, classes] of the fake-quant float64 model: pre-activation of the last layer * 2^(s_in+e)."""
    net = net.double().eval()
    hooks = ExactHooks(qm)
    last = qm.arch.weighted_layers()[-1]
    scale = 2.0 ** qm.accumulator_exponent(last)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            y = net(images_to_input(images[start:start + batch], torch.float64), hooks)
            out.append((y * scale).numpy())
    scores = np.concatenate(out)
    if not np.array_equal(scores, np.floor(scores)):
        raise AssertionError("exact evaluation produced a non-integer score: fixed-point semantics violated")
    return scores.astype(np.int64)

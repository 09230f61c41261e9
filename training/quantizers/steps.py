"""Trained activation steps (siq+): power-of-two or real steps per quantization point, and the fold that turns
real steps back into powers of two without changing a single code, so the firmware stays shift-only."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..arch import LRN, Conv, Dense
from ..nets import Net
from ..quant import SHIFT_RANGE, input_point_of, point_bits, relu_follows, step_scale
from .interface import FloatCodebook


class LearnedSteps(torch.nn.Module):
    """Trainable power-of-two activation steps: per quantization point a real log2 scale t; the forward pass uses
    the shift s = floor(t + 1/2) (clamped to SHIFT_RANGE), so the firmware stays shift-only.

    quantize(x) = clamp(floor(x 2^s + 1/2), 0, 2^a - 1) 2^-s, with straight-through estimators for both roundings
    (of x 2^s and of t): the gradient reaching t is LSQ's step gradient (round(v) - v inside the range,
    2^a - 1 above it) times d(2^-s)/dt.

    real=True: the feature maps' steps are 2^-t itself (t clamped to SHIFT_RANGE, not rounded); the input's stays
    a power of two (the firmware quantizes raw pixels with a shift). scales() gives what fold_step_scales needs.
    An average pool's point (`tied`: pool point -> the point it reads) then keeps its input's real factor and
    learns only a whole number of octaves beside it: a pool has no weights to fold a factor of its own into, and
    its mean of the input's codes must land on the same codes once the input's factor is folded away.

    channel_octaves (point -> per channel, octaves finer than the point's step; QuantizedModel.channel_octaves):
    a point with steps per channel learns one t for all its channels, each channel's step 2^-(s + octaves[c])."""

    def __init__(self, shifts: dict[int, int], bits: int, input_bits: int | None = None, real: bool = False,
                 point_widths: dict | None = None, tied: dict[int, int] | None = None,
                 channel_octaves: dict | None = None):
        super().__init__()
        self.channel_octaves = dict(channel_octaves or {})
        self.tied = dict(tied or {}) if real else {}
        self.bits = bits
        self.input_bits = input_bits
        self.point_widths = dict(point_widths or {})
        self.real = real
        self.log2_scale = torch.nn.ParameterDict(
            {str(p): torch.nn.Parameter(torch.tensor(float(s))) for p, s in shifts.items()})

    def _log2_scale(self, point: int) -> torch.Tensor:
        t = self.log2_scale[str(point)]
        if point in self.tied:  # the input's real scale plus whole octaves, kept inside SHIFT_RANGE
            base = self._log2_scale(self.tied[point])
            octaves = float(np.floor(float(t.detach() - base.detach()) + 0.5))
            lowest, highest = SHIFT_RANGE.start - float(base.detach()), SHIFT_RANGE.stop - 1 - float(base.detach())
            octaves = float(np.clip(octaves, np.ceil(lowest), np.floor(highest)))
            return base + octaves + (t - t.detach())
        if self.real and point != -1:
            return torch.clamp(t, float(SHIFT_RANGE.start), float(SHIFT_RANGE.stop - 1))
        rounded = torch.clamp(torch.floor(t.detach() + 0.5), SHIFT_RANGE.start, SHIFT_RANGE.stop - 1)
        return t + (rounded - t).detach()

    def _nearest_shift(self, point: int) -> int:
        t = float(self._log2_scale(point).detach())
        return int(np.clip(np.floor(t + 0.5), SHIFT_RANGE.start, SHIFT_RANGE.stop - 1))

    def quantize(self, point: int, x: torch.Tensor) -> torch.Tensor:
        scale = 2.0 ** self._log2_scale(point)
        if point in self.channel_octaves:
            scale = scale * step_scale(x, 0, self.channel_octaves[point])
        top = 2 ** point_bits(point, self.bits, self.input_bits, self.point_widths) - 1
        v = torch.clamp(x * scale, 0.0, float(top))
        return (v + (torch.floor(v + 0.5) - v).detach()) / scale

    def set_bits(self, bits: int) -> None:
        """Change the activation width, keeping each point's clipped range (2^w - 1) step: a point going from
        w to w' bits gets a step (2^w - 1) / (2^w' - 1) times as large (rounded to a power of two where steps are).
        The input keeps its own width where it has one; a point with its own width moves by as many bits as the
        feature maps' width, up to 8."""
        widths = {p: min(8, w + bits - self.bits) for p, w in self.point_widths.items()}
        with torch.no_grad():
            for p, t in self.log2_scale.items():
                old = point_bits(int(p), self.bits, self.input_bits, self.point_widths)
                new = point_bits(int(p), bits, self.input_bits, widths)
                t += float(np.log2((2**new - 1) / (2**old - 1)))
        self.bits, self.point_widths = bits, widths

    def shifts(self) -> dict[int, int]:
        """Each point's power-of-two shift (with real steps: the nearest one, see scales)."""
        return {int(p): self._nearest_shift(int(p)) for p in self.log2_scale}

    def scales(self) -> dict[int, float]:
        """c per point: the trained step is c 2^-s for the shift s of shifts() (1 where steps are powers of two)."""
        return {int(p): 2.0 ** (self._nearest_shift(int(p)) - float(self._log2_scale(int(p)).detach()))
                for p in self.log2_scale}


def fold_step_scales(net: Net, books: dict, scales: dict[int, float]) -> None:
    """Make every activation step a power of two without changing a single code: point p's tensor, trained as
    codes * c_p 2^-s_p, becomes codes * 2^-s_p. The layer producing it (conv/dense before the relu) is scaled by
    1/c_p (weights and bias), the layer consuming it by c_p (weights; max-pool commutes with a positive scale).
    An lrn point q fed by point p: lrn(c_p x) / c_q is an lrn of x with k' = k r and alpha' = alpha c_p^2 r,
    r = (c_q / c_p)^(1/beta), so only its constants change (the firmware's lrn table is computed from them).
    The logits keep their scale (c = 1 past the last point). net (weights, biases, lrn modules, arch) and the
    books' centroids are changed in place."""
    arch = net.arch
    layers = list(arch.layers)
    for i, layer in enumerate(arch.layers):
        c_in = scales.get(input_point_of(arch, i), 1.0)
        if isinstance(layer, (Conv, Dense)):
            c_out = scales.get(i + 1, 1.0) if relu_follows(arch, i) else 1.0
            module = net.layers[i]
            with torch.no_grad():
                module.weight.mul_(c_in / c_out)
                if module.bias is not None:
                    module.bias.div_(c_out)
            if i in books:
                centroids, assignment = books[i]
                books[i] = FloatCodebook(np.asarray(centroids, dtype=np.float64) * (c_in / c_out), assignment)
        elif isinstance(layer, LRN):
            r = (scales.get(i, 1.0) / c_in) ** (1.0 / layer.beta)
            layers[i] = replace(layer, k=layer.k * r, alpha=layer.alpha * c_in**2 * r)
            net.layers[i].k, net.layers[i].alpha = layers[i].k, layers[i].alpha
    net.arch = replace(arch, layers=tuple(layers))

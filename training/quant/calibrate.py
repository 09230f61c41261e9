"""Activation calibration: each quantization point's power-of-two step from calibration images."""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from ..errors import SiqError
from ..nets import Hooks, Net, PartialPass, images_to_input
from ..graph import signed_points
from .fixedpoint import SHIFT_RANGE, point_bits, quantization_points, quantize_activation, quantize_signed
from .hooks import TrainingHooks

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


CALIBRATION_RULES = ("float", "sequential", "output")
DEFAULT_CALIBRATION = "output"  # docs/decisions.md, 'The output rule is the default calibration'
OUTPUT_RULE_IMAGES = 512   # calibration images the "output" rule scores each candidate step on
OUTPUT_RULE_OCTAVES = 2    # its candidates: the point's current step and this many octaves either side
OUTPUT_RULE_SWEEPS = 2     # passes over the points at most (it stops at the first pass that changes none)
OUTPUT_RULE_MARGIN = 1e-4  # a step is replaced only by one whose divergence is lower by this fraction


def calibrate_shifts(net: Net, images: np.ndarray, bits: int, rule: str = DEFAULT_CALIBRATION,
                     input_bits: int | None = None, point_widths: dict | None = None) -> dict[int, int]:
    """calibrate_steps' shifts, with one step per tensor everywhere."""
    return calibrate_steps(net, images, bits, rule, input_bits, point_widths)[0]


def calibrate_steps(net: Net, images: np.ndarray, bits: int, rule: str = DEFAULT_CALIBRATION,
                    input_bits: int | None = None, point_widths: dict | None = None,
                    channel_limits: dict[int, int] | None = None) -> tuple[dict[int, int], dict]:
    """Shift per quantization point (-1 = input) on calibration images, by best_shift on each point's tensor
    (`bits` wide; the input `input_bits` wide, default `bits`; a point in point_widths that wide), and the
    channel octaves of the points in channel_limits (codebook.channel_octave_limits; none for the "sequential"
    rule): each channel's own best_shift, at most the point's limit octaves finer than its step, which is that of
    its coarsest live channel (a channel's step is never coarser than it needs, so no channel clips early).
    Returns (shifts, channel octaves).

    rule "float": every tensor as the float network computes it.
    rule "sequential": point by point in network order, each tensor as computed from the already quantized
        points before it (what the client will feed it). It matters where a point rescales its input: lrn here
        multiplies by about k^-beta = 0.59, and on the float tensors MSE picks lrn's step equal to its input's,
        which at 2 bits maps codes 1 and 2 to the same code; on the quantized codes it picks half that step.
    rule "output" (the default): the "float" rule's steps, then each feature map's step chosen by what the
        network outputs (output_shifts). A tensor's MSE weighs every value alike, so the step that fits its wide
        channels can wreck narrow ones the layers after it depend on: resnet8 on Fashion-MNIST, seed 1, float
        weights, only the first feature map at 4 bits: 43 % of 3,000 test images at its MSE step, 91 % one octave
        finer (float 91 %)."""
    if rule not in CALIBRATION_RULES:
        raise SiqError(f"unknown calibration rule {rule!r} (known: {', '.join(CALIBRATION_RULES)})")
    net.eval()
    x = images_to_input(images)
    with torch.no_grad():
        if rule == "sequential":
            hooks = _SequentialCalibration(bits, input_bits, point_widths)
            net(x, hooks)
            return hooks.shifts, {}
        collect: list = []
        net(x, collect=collect)
    shifts = {-1: best_shift(x, point_bits(-1, bits, input_bits))}
    signed = set(signed_points(net.arch))
    octaves = {}
    for p in quantization_points(net.arch):
        width = point_bits(p, bits, input_bits, point_widths)
        if (channel_limits or {}).get(p, 0) > 0:
            shifts[p], octaves[p] = channel_shifts(collect[p], width, channel_limits[p])
        else:
            shifts[p] = best_shift(collect[p], width, p in signed)
    if rule == "output":
        shifts = output_shifts(net, x, bits, shifts, input_bits, point_widths, octaves)
    return shifts, octaves


def channel_shifts(values: torch.Tensor, bits: int, octave_limit: int) -> tuple[int, np.ndarray]:
    """A point's step and its channels' octaves finer than it: channel c's best_shift s_c, the point's step that of
    its coarsest live channel (min s_c), octaves min(s_c - that, octave_limit). A channel that is zero on every
    calibration image has no step of its own: it takes the point's."""
    per_channel = values.transpose(0, 1).reshape(values.shape[1], -1)
    found = [best_shift(v, bits) if bool(torch.any(v != 0)) else None for v in per_channel]
    live = [s for s in found if s is not None]
    if not live:
        return best_shift(values, bits), np.zeros(len(found), dtype=np.int64)
    coarsest = min(live)
    return coarsest, np.array([0 if s is None else min(s - coarsest, octave_limit) for s in found], dtype=np.int64)


def output_shifts(net: Net, x: torch.Tensor, bits: int, shifts: dict[int, int], input_bits: int | None = None,
                  point_widths: dict | None = None, channel_octaves: dict | None = None) -> dict[int, int]:
    """Coordinate descent from `shifts` on the network's output. Point by point in network order, with every other
    point quantized at its current step, each point takes the step within OUTPUT_RULE_OCTAVES octaves of its
    current one that minimises the mean KL divergence of the quantized network's softmax from the float network's
    on the first OUTPUT_RULE_IMAGES images; passes repeat until one changes no step (OUTPUT_RULE_SWEEPS at most).
    A step is replaced only by one better by OUTPUT_RULE_MARGIN, far above float32's rounding of the mean, so the
    summation order of a machine's convolutions cannot flip the choice. The input keeps its step: its codes are
    the sensor's values as the user maps them (README, 'How the numbers work'), not a trade-off against the layers
    after it. A point with channel_octaves moves all its channels' steps together."""
    net.eval()
    x = x[:OUTPUT_RULE_IMAGES]
    with torch.no_grad():
        float_log_p = torch.log_softmax(net(x), dim=1)
        float_p = float_log_p.exp()

        def hooks(candidate: dict[int, int]) -> TrainingHooks:
            return TrainingHooks(bits, candidate, input_bits=input_bits, point_widths=point_widths,
                                 channel_octaves=channel_octaves)

        def divergence(candidate: dict[int, int], before: PartialPass) -> float:
            quantized_log_p = torch.log_softmax(net.resume(before, hooks(candidate)), dim=1)
            return float(torch.sum(float_p * (float_log_p - quantized_log_p), dtype=torch.float64)) / len(x)

        shifts = dict(shifts)
        best = divergence(shifts, net.prefix(x, hooks(shifts), 0))
        points = sorted(p for p in shifts if p != -1)
        for sweep in range(OUTPUT_RULE_SWEEPS):
            changed = False
            for point in tqdm(points, desc=f"calibration pass {sweep + 1}", unit="point", leave=False, disable=None):
                # the layers before the point do not read its step: computed once for all its candidates
                before = net.prefix(x, hooks(shifts), point)
                centre = shifts[point]
                for shift in range(centre - OUTPUT_RULE_OCTAVES, centre + OUTPUT_RULE_OCTAVES + 1):
                    if shift == shifts[point] or shift not in SHIFT_RANGE:
                        continue
                    trial = {**shifts, point: shift}
                    score = divergence(trial, before)
                    if score < best * (1.0 - OUTPUT_RULE_MARGIN):
                        best, shifts, changed = score, trial, True
            if not changed:
                break
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


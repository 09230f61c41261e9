"""Sensitivity of each weighted layer to its index width: the rise of the validation loss when that layer alone
is quantized after training (post-training, no retraining) to b bits, one codebook for the layer or one per
output channel, with every other layer kept in float and the activations at the run's width.

The codebooks are those the method starts from (k-means for kmeans, siq and siq+; Eq. 5 levels for uniform),
computed by the quantizers' own functions. The loss is the mean cross entropy on a validation split carved
from the training data (Dataset.split_validation), never the test split. Results are cached in a JSON file keyed
by everything they depend on (the float weights, the validation images, the widths asked for, the method's
codebook rule, the activation width and shifts).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from siq.training.fileio import atomic_write_bytes
from siq.training.nets import Net, images_to_input
from siq.training.quant import TrainingHooks, calibrate_shifts, quantization_points
from siq.training.quantizers import centroid_values, kmeans_codebook, per_row, uniform_codebook

SCHEMA = 3
HUTCHINSON_SAMPLES = 16
HESSIAN_IMAGES = 1000  # validation images the Hessian-vector products run on
POINT_CALIBRATION_IMAGES = 500  # calibration images of each width's shifts in point_sensitivities (a report)
ACT_WIDTHS = range(1, 9)


class OnePoint(TrainingHooks):
    """Activations quantized at one quantization point only (-1: the input image); every other point float."""

    def __init__(self, point: int, bits: int, shifts: dict):
        super().__init__(bits, shifts, input_bits=bits)
        self.point = point

    def _act(self, point, x):
        return super()._act(point, x) if point == self.point else x


def point_sensitivities(net: Net, val_x: np.ndarray, val_y: np.ndarray, calibration: np.ndarray) -> dict:
    """{point: {width: loss rise}}: the validation loss rise, over the all-float network, when the activations
    of that point alone are quantized to `width` bits (shifts calibrated on the float network at that width).
    The fit keeps one activation width; these say where a per-point width would matter."""
    base = validation_loss(net, val_x, val_y, TrainingHooks(None, None))
    out = {}
    for bits in ACT_WIDTHS:
        shifts = calibrate_shifts(net, calibration[:POINT_CALIBRATION_IMAGES], bits, "float", bits)
        for point in [-1] + quantization_points(net.arch):
            rise = validation_loss(net, val_x, val_y, OnePoint(point, bits, shifts)) - base
            out.setdefault(point, {})[str(bits)] = rise
    return out


def validation_loss(net: Net, x: np.ndarray, y: np.ndarray, hooks, batch: int = 1000) -> float:
    """Mean cross entropy of the network's scores on (x, y) under the hooks."""
    net.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x), batch):
            scores = net(images_to_input(x[start:start + batch]), hooks)
            target = torch.as_tensor(y[start:start + batch])
            total += float(torch.nn.functional.cross_entropy(scores.double(), target, reduction="sum"))
    return total / max(1, len(x))


def layer_values(w: np.ndarray, bits: int, per_channel: bool, method: str, seed: int) -> np.ndarray:
    """The layer's weights replaced by their codebook values: the codebook the method starts from."""
    if method == "uniform":
        rule = lambda v, start: uniform_codebook(v, bits)  # noqa: E731
    else:
        rule = lambda v, start: kmeans_codebook(v, bits, seed)  # noqa: E731
    centroids, assignment = per_row(rule, w, per_channel)
    return centroid_values(centroids, assignment, w.shape)


def hessian_traces(net: Net, x: np.ndarray, y: np.ndarray, samples: int = HUTCHINSON_SAMPLES, seed: int = 0
                   ) -> dict[int, float]:
    """Per weighted layer, the mean diagonal of the validation loss's Hessian in its weights, tr(H_l) / N_l, by
    Hutchinson's estimator E[v^T H v] with seeded Rademacher vectors v (float network, float activations): the
    curvature TI's and HAWQ's Hessian-aware allocation weigh each layer's quantization error by."""
    net.eval()
    layers = net.arch.weighted_layers()
    weights = [net.layers[i].weight for i in layers]
    x, y = x[:HESSIAN_IMAGES], y[:HESSIAN_IMAGES]
    loss = torch.nn.functional.cross_entropy(net(images_to_input(x)), torch.as_tensor(y))
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    generator = torch.Generator().manual_seed(seed)
    traces = dict.fromkeys(layers, 0.0)
    for _ in range(samples):
        for j, (i, w) in enumerate(zip(layers, weights)):
            # v on this layer's weights only: the other layers' cross terms would add variance, not signal
            v = torch.randint(0, 2, w.shape, generator=generator).to(w.dtype) * 2 - 1
            outputs = [v if k == j else torch.zeros_like(other) for k, other in enumerate(weights)]
            (hv,) = torch.autograd.grad(grads, [w], grad_outputs=outputs, retain_graph=True)
            traces[i] += float((v * hv).sum()) / samples
    return {i: traces[i] / w.numel() for i, w in zip(layers, weights)}


def _key(net: Net, x: np.ndarray, widths, per_channel, method: str, act_bits: int, shifts: dict, seed: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"schema": SCHEMA, "arch": net.arch.to_dict(), "widths": list(widths),
                         "per_channel": list(per_channel), "method": "uniform" if method == "uniform" else "kmeans",
                         "act_bits": act_bits, "shifts": sorted(shifts.items()), "seed": seed}).encode())
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()[:20]


def sensitivities(net: Net, val_x: np.ndarray, val_y: np.ndarray, *, act_bits: int, calibration: np.ndarray,
                  widths=range(1, 9), per_channel=(False, True), method: str = "kmeans", seed: int = 0,
                  input_bits: int | None = None, cache_dir: str | Path | None = None, log=print) -> dict:
    """{"baseline": loss with float weights and act_bits activations, "layers": {layer: {"b" or "b/channel":
    loss rise}}, "hessian": {layer: {choice: 1/2 tr(H)/N ||w - Q(w)||^2}} (the Hessian-aware estimate of the
    same rise, for the greedy ablation), "points": point_sensitivities()} for every weighted layer, width in
    `widths` and per-channel setting in `per_channel`.

    net: the float network (batch norm folded); calibration: the images the activation shifts are calibrated on
    (as quantization calibrates them)."""
    shifts = calibrate_shifts(net, calibration, act_bits, "float", input_bits)
    widths, per_channel = sorted(widths), sorted(per_channel)
    path = None
    if cache_dir is not None:
        key = _key(net, val_x, widths, per_channel, method, act_bits, shifts, seed)
        path = Path(cache_dir) / "sensitivity" / f"{key}.json"
        if path.is_file():
            try:
                cached = json.loads(path.read_text())
                return {part: cached[part] if part == "baseline" else {int(k): v for k, v in cached[part].items()}
                        for part in ("baseline", "layers", "hessian", "points")}
            except (OSError, ValueError, KeyError):
                pass  # unreadable: measure again and overwrite it
    baseline = validation_loss(net, val_x, val_y, TrainingHooks(act_bits, shifts, input_bits=input_bits))
    traces = hessian_traces(net, val_x, val_y, seed=seed)
    layers, hessian = {}, {}
    for i in net.arch.weighted_layers():
        w = net.layers[i].weight.detach().double().numpy()
        rises, estimates = {}, {}
        for bits in widths:
            for channel in per_channel:
                quantized = layer_values(w, bits, channel, method, seed)
                values = torch.from_numpy(quantized).float()
                hooks = TrainingHooks(act_bits, shifts, {i: lambda _, v=values: v}, input_bits=input_bits)
                rises[choice_name(bits, channel)] = validation_loss(net, val_x, val_y, hooks) - baseline
                # second-order estimate of the same rise: 1/2 (tr H / N) ||w - Q(w)||^2
                estimates[choice_name(bits, channel)] = 0.5 * traces[i] * float(np.sum((w - quantized) ** 2))
        layers[i], hessian[i] = rises, estimates
        log(f"sensitivity of layer {i}: " + ", ".join(f"{k} {v:+.4f}" for k, v in rises.items()))
    points = point_sensitivities(net, val_x, val_y, calibration)
    result = {"baseline": baseline, "layers": layers, "hessian": hessian, "points": points}
    if path is not None:
        atomic_write_bytes(path, (json.dumps({part: value if part == "baseline" else
                                              {str(k): v for k, v in value.items()}
                                              for part, value in result.items()}) + "\n").encode())
    return result


def choice_name(bits: int, per_channel: bool) -> str:
    """How a (width, per-channel) choice is written in the cache and the report: "4" or "4/channel"."""
    return f"{bits}/channel" if per_channel else str(bits)

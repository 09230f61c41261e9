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

SCHEMA = 2
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
        shifts = calibrate_shifts(net, calibration, bits, "float", bits)
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
    loss rise}}, "points": point_sensitivities()} for every weighted layer, width in `widths` and per-channel
    setting in `per_channel`.

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
                return {"baseline": cached["baseline"],
                        "layers": {int(k): v for k, v in cached["layers"].items()},
                        "points": {int(k): v for k, v in cached["points"].items()}}
            except (OSError, ValueError, KeyError):
                pass  # unreadable: measure again and overwrite it
    baseline = validation_loss(net, val_x, val_y, TrainingHooks(act_bits, shifts, input_bits=input_bits))
    layers = {}
    for i in net.arch.weighted_layers():
        w = net.layers[i].weight.detach().double().numpy()
        rises = {}
        for bits in widths:
            for channel in per_channel:
                values = torch.from_numpy(layer_values(w, bits, channel, method, seed)).float()
                hooks = TrainingHooks(act_bits, shifts, {i: lambda _, v=values: v}, input_bits=input_bits)
                rises[choice_name(bits, channel)] = validation_loss(net, val_x, val_y, hooks) - baseline
        layers[i] = rises
        log(f"sensitivity of layer {i}: " + ", ".join(f"{k} {v:+.4f}" for k, v in rises.items()))
    points = point_sensitivities(net, val_x, val_y, calibration)
    result = {"baseline": baseline, "layers": layers, "points": points}
    if path is not None:
        atomic_write_bytes(path, (json.dumps({"baseline": baseline, "layers": {str(k): v for k, v in layers.items()},
                                              "points": {str(k): v for k, v in points.items()}}) + "\n").encode())
    return result


def choice_name(bits: int, per_channel: bool) -> str:
    """How a (width, per-channel) choice is written in the cache and the report: "4" or "4/channel"."""
    return f"{bits}/channel" if per_channel else str(bits)

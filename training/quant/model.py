"""The quantized model (everything the client needs), its integer biases, and its file format."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..arch import Arch
from ..errors import SiqError
from ..fileio import load_torch, save_torch
from ..nets import Net
from .codebook import LayerCodebook, codebook_entry_bytes
from .fixedpoint import SHIFT_RANGE, check_bits, input_point_of, point_bits, quantization_points, round_half_up

@dataclass
class QuantizedModel:
    """Everything the client needs: architecture, activation bits and shifts, codebooks, integer biases."""
    arch: Arch
    act_bits: int                           # feature-map codes: 0 .. 2^act_bits - 1
    shifts: dict[int, int]                  # quantization point -> shift (-1 = input)
    layers: dict[int, LayerCodebook]        # weighted layer index -> codebook
    biases: dict[int, np.ndarray]           # weighted layer index -> int64 bias on the accumulator grid
    class_names: list[str]
    meta: dict = field(default_factory=dict)  # method, seed, dataset, accuracies ... (JSON-serialisable)
    input_bits: int | None = None           # input image codes; None = act_bits
    point_widths: dict[int, int] = field(default_factory=dict)  # feature-map point -> its own code width

    def __post_init__(self):
        if self.input_bits is None:
            self.input_bits = self.act_bits

    def bits_at(self, point: int) -> int:
        """Code width at a quantization point (-1 = the input image)."""
        return point_bits(point, self.act_bits, self.input_bits, self.point_widths)

    def accumulator_exponent(self, index: int) -> int:
        """acc of layer `index` is its real pre-activation times 2^(s_in + e)."""
        return self.shifts[input_point_of(self.arch, index)] + self.layers[index].exponent

    def weights_bytes(self) -> int:
        """Flash for weights: packed indices ceil(N*b/8) per layer plus the codebooks, whose entries are int8 or,
        when any value needs more than 8 bits, int16 (one C type for the whole model)."""
        entry = codebook_entry_bytes([lc.codebook for lc in self.layers.values()])
        return sum((lc.indices.size * lc.bits + 7) // 8 + entry * lc.codebook.size for lc in self.layers.values())


def quantize_biases(arch: Arch, net: Net, shifts: dict[int, int], layers: dict[int, LayerCodebook]):
    out = {}
    for i in arch.weighted_layers():
        scale = 2.0 ** (shifts[input_point_of(arch, i)] + layers[i].exponent)
        b = net.layers[i].bias.detach().to(torch.float64).numpy()
        if not np.all(np.isfinite(b)):
            raise SiqError(f"bias of layer {i} is not finite (NaN/Inf): the model diverged; retrain it")
        out[i] = round_half_up(b * scale).astype(np.int64)
    return out


# ---------------------------------------------------------------- quantized model files

def save_quantized(path, qm: QuantizedModel) -> None:
    meta = {"arch": qm.arch.to_dict(), "act_bits": qm.act_bits, "input_bits": qm.input_bits,
            "point_widths": {str(k): v for k, v in sorted(qm.point_widths.items())},
            "shifts": {str(k): v for k, v in qm.shifts.items()}, "class_names": qm.class_names,
            "layers": {str(i): {"bits": lc.bits, "exponent": lc.exponent} for i, lc in qm.layers.items()},
            "meta": qm.meta}
    tensors = {}
    for i, lc in qm.layers.items():
        tensors[f"codebook.{i}"] = torch.from_numpy(lc.codebook.astype(np.int64))
        tensors[f"indices.{i}"] = torch.from_numpy(lc.indices.astype(np.uint8))
        tensors[f"bias.{i}"] = torch.from_numpy(qm.biases[i].astype(np.int64))
    save_torch(path, "quantized", meta, tensors)


def load_quantized(path) -> QuantizedModel:
    meta, tensors = load_torch(path, "quantized")
    try:
        arch = Arch.from_dict(meta["arch"])
        layers, biases = {}, {}
        for key, info in meta["layers"].items():
            i = int(key)
            lc = LayerCodebook(check_bits(info["bits"], f"{path}: weight bits of layer {i}"),
                               tensors[f"codebook.{i}"].numpy().astype(np.int64), int(info["exponent"]),
                               tensors[f"indices.{i}"].numpy().astype(np.uint8))
            if lc.codebook.ndim not in (1, 2) or lc.codebook.size == 0 or lc.entries > 2**lc.bits:
                raise SiqError(f"{path}: layer {i} codebook of shape {tuple(lc.codebook.shape)} for {lc.bits}-bit "
                               "indices (corrupt file)")
            if lc.per_channel and lc.codebook.shape[0] != lc.indices.shape[0]:
                raise SiqError(f"{path}: layer {i} has {lc.codebook.shape[0]} codebook rows for "
                               f"{lc.indices.shape[0]} output channels (corrupt file)")
            if lc.indices.size and int(lc.indices.max()) >= lc.entries:
                raise SiqError(f"{path}: layer {i} has weight indices beyond its codebook (corrupt file)")
            layers[i] = lc
            biases[i] = tensors[f"bias.{i}"].numpy().astype(np.int64)
        qm = QuantizedModel(arch, check_bits(meta["act_bits"], f"{path}: activation bits"),
                            {int(k): int(v) for k, v in meta["shifts"].items()}, layers, biases,
                            list(meta["class_names"]), meta.get("meta", {}),
                            check_bits(meta.get("input_bits", meta["act_bits"]), f"{path}: input bits"),
                            {int(k): check_bits(v, f"{path}: activation bits of point {k}")
                             for k, v in meta.get("point_widths", {}).items()})
    except (KeyError, TypeError, ValueError) as exc:
        raise SiqError(f"{path}: corrupt quantized model ({type(exc).__name__}: {exc})") from None
    if sorted(layers) != arch.weighted_layers():
        raise SiqError(f"{path}: quantized layers {sorted(layers)} do not match the architecture")
    points = [-1] + quantization_points(arch)
    stray = sorted(set(qm.point_widths) - set(points) | ({-1} & set(qm.point_widths)))
    if stray:
        raise SiqError(f"{path}: activation widths for {stray}, which are not feature-map points (corrupt file)")
    missing = [p for p in points if p not in qm.shifts]
    if missing:
        raise SiqError(f"{path}: no activation shift for quantization point(s) {missing} (corrupt file)")
    outside = {p: s for p, s in qm.shifts.items() if s not in SHIFT_RANGE}
    if outside:
        raise SiqError(f"{path}: activation shifts {outside} outside {SHIFT_RANGE.start}..{SHIFT_RANGE.stop - 1} "
                       "(corrupt file)")
    if len(qm.class_names) != arch.num_classes:
        raise SiqError(f"{path}: {len(qm.class_names)} class names for {arch.num_classes} classes (corrupt file)")
    for i, lc in layers.items():
        raw = (tensors[f"codebook.{i}"], tensors[f"bias.{i}"])
        if any(t.is_floating_point() for t in raw):
            raise SiqError(f"{path}: layer {i} codebook/bias must be integers (corrupt file)")
        if lc.indices.shape != arch.weight_shape(i) or biases[i].shape != (arch.weight_shape(i)[0],):
            raise SiqError(f"{path}: layer {i} weights {lc.indices.shape} do not match the architecture "
                           f"{arch.weight_shape(i)} (corrupt file)")
    return qm

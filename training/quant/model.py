"""The quantized model (everything the client needs), its integer biases, and its file format."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..arch import Arch
from ..errors import SiqError
from ..fileio import load_torch, save_torch
from ..nets import Net
from .codebook import (MAX_CODEBOOK_BITS, ROW_OFFSET_BYTES, LayerCodebook, channel_octave_limit,
                       codebook_entry_bytes, shared_rows)
from .fixedpoint import (SHIFT_RANGE, aligned_channel_points, channel_step_points, check_bits, input_point_of,
                         point_bits, quantization_points, round_half_up)

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
    # point -> per channel, how many octaves finer than 2^-shifts[point] the channel's step is (only at
    # channel_step_points; lowering folds them into the codebook rows around the point, or at the points that
    # pointwise convs read requantizes per channel and aligns them by shifts: output_octaves, input_shifts)
    channel_octaves: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        if self.input_bits is None:
            self.input_bits = self.act_bits

    def bits_at(self, point: int) -> int:
        """Code width at a quantization point (-1 = the input image)."""
        return point_bits(point, self.act_bits, self.input_bits, self.point_widths)

    def accumulator_exponent(self, index: int) -> int:
        """acc of layer `index` is its real pre-activation times 2^(s_in + e); s_in is the input point's finest
        channel step where it has a step per channel."""
        return accumulator_exponent(self.arch, self.shifts, self.layers, self.channel_octaves, index)

    def folded_codebook(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Layer i's integer codebook and bias with the channel steps around it folded in (channel_octaves at
        folded_points), as the integer model runs them: one requantization shift per op, its kernels unchanged.

        Output side: channel o of the point after layer i is on step 2^-(shift + octaves[o]), so row o and bias o
        are scaled by 2^octaves[o]: (acc * 2^octaves[o]) >> (acc_exp - shift) is acc on channel o's step, rounded
        half up alike. Input side (a depthwise conv: channel_step_points admits no other reader): input channel
        c's codes are 2^(finest - octaves[c]) times too coarse for the accumulator grid of the finest channel,
        which accumulator_exponent and the bias already use, so each row reading channel c is scaled by that.
        Either way the scaled entries stay in the signed MAX_CODEBOOK_BITS range (channel_octave_limit; checked).
        Without channel steps around it: the layer's codebook ([K] or [C_OUT, K]) and bias as they are."""
        lc, bias = self.layers[i], self.biases[i].astype(np.int64)
        out_channels = lc.indices.shape[0]
        scale = np.zeros(out_channels, dtype=np.int64)
        folded = self.folded_points()
        if i + 1 in folded:  # the relu right after layer i (channel_step_points)
            scale += self.channel_octaves[i + 1]
            bias = bias << self.channel_octaves[i + 1]
        source = input_point_of(self.arch, i)
        if source in folded:
            octaves = self.channel_octaves[source]
            scale += int(octaves.max()) - np.repeat(octaves, out_channels // len(octaves))
        if not scale.any():
            return lc.codebook, bias
        rows = lc.codebook if lc.per_channel else np.tile(lc.codebook, (out_channels, 1))
        codebook = rows.astype(np.int64) << scale[:, None]
        top = 2 ** (MAX_CODEBOOK_BITS - 1)
        if codebook.min() < -top or codebook.max() >= top:
            raise SiqError(f"layer {i}: its codebook scaled by its channels' steps exceeds {MAX_CODEBOOK_BITS}-bit "
                           "values; use fewer codebook bits")
        return codebook, bias

    def folded_points(self) -> set[int]:
        """The points with a step per channel that folded_codebook folds into codebook rows (those only depthwise
        convs read); the others (aligned_channel_points) are requantized per channel and aligned by shifts."""
        return set(self.channel_octaves) - set(aligned_channel_points(self.arch))

    def output_octaves(self, i: int) -> np.ndarray | None:
        """Per output channel of layer i (a depthwise conv), how many octaves finer than the relu's step its
        channel's step is, where that relu is an aligned point: the conv requantizes channel o with a shift smaller
        by output_octaves[o]. None where layer i's output has one step (or folds its steps into rows)."""
        point = i + 1
        if point in self.channel_octaves and point not in self.folded_points():
            return self.channel_octaves[point]
        return None

    def input_shifts(self, i: int) -> np.ndarray | None:
        """Per input channel of layer i (a pointwise conv reading an aligned point), the left shift that puts the
        channel's codes on its finest channel's step, the step the accumulator and the bias are on
        (accumulator_exponent). None where the input has one step (or folds its steps into rows)."""
        point = input_point_of(self.arch, i)
        if point in self.channel_octaves and point not in self.folded_points():
            octaves = self.channel_octaves[point]
            return int(octaves.max()) - octaves
        return None

    def weights_bytes(self) -> int:
        """Flash for weights, as the C lays it out: packed indices ceil(N*b/8) per layer plus the codebooks (with
        the channel steps folded in: folded_codebook), whose entries are int8 or, when any value needs more than
        8 bits, int16 (one C type for the whole model); a conv's per-channel codebook whose channels share rows
        stores each distinct row once plus a row offset per channel where that is smaller (shared_rows)."""
        books = {i: np.asarray(self.folded_codebook(i)[0]) for i in self.layers}
        entry = codebook_entry_bytes(list(books.values()))
        total = 0
        for i, lc in self.layers.items():
            layout = shared_rows(books[i], entry) if lc.indices.ndim > 2 else None
            table = entry * books[i].size if layout is None else \
                entry * layout[0].size + ROW_OFFSET_BYTES * len(layout[1])
            total += (lc.indices.size * lc.bits + 7) // 8 + table
        return total


def accumulator_exponent(arch: Arch, shifts: dict[int, int], layers: dict[int, LayerCodebook],
                         channel_octaves: dict, index: int) -> int:
    point = input_point_of(arch, index)
    finest = int(np.max(channel_octaves[point])) if point in channel_octaves else 0
    return shifts[point] + finest + layers[index].exponent


def quantize_biases(arch: Arch, net: Net, shifts: dict[int, int], layers: dict[int, LayerCodebook],
                    channel_octaves: dict | None = None):
    out = {}
    for i in arch.weighted_layers():
        scale = 2.0 ** accumulator_exponent(arch, shifts, layers, channel_octaves or {}, i)
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
            **({"channel_octaves": {str(p): [int(o) for o in octaves] for p, octaves in
                                    sorted(qm.channel_octaves.items())}} if qm.channel_octaves else {}),
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
                             for k, v in meta.get("point_widths", {}).items()},
                            {int(k): np.array([int(o) for o in v], dtype=np.int64)
                             for k, v in meta.get("channel_octaves", {}).items()})
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
    _check_channel_octaves(path, qm)
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


def _check_channel_octaves(path, qm: QuantizedModel) -> None:
    eligible, shapes = set(channel_step_points(qm.arch, "separable")), qm.arch.shapes()
    for p, octaves in qm.channel_octaves.items():
        if p not in eligible:
            raise SiqError(f"{path}: a step per channel at layer {p}, which cannot have one (corrupt file)")
        # the codebook width is not recorded: the widest limit any width allows here, lowering checks the rest
        if octaves.shape != (shapes[p][0],) or octaves.min() < 0 or octaves.max() > channel_octave_limit(2):
            raise SiqError(f"{path}: the channel steps of point {p} do not fit its {shapes[p][0]} channels "
                           "(corrupt file)")

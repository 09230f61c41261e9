"""Fixed-point semantics shared by the fake-quant PyTorch model, the numpy integer reference and the C.

Numbers (all steps are powers of two, so every scaling is a shift and float64 holds every value exactly):
  * input:        x = pixel * 2^-8;  code = clamp(floor(x * 2^s + 1/2), 0, 2^a - 1);  value = code * 2^-s
  * feature maps: the output of every relu and lrn layer is quantized the same way with its own shift s
                  (unsigned, a bits; the relu makes them non-negative, the clamp is the relu).
  * weights:      each conv/dense layer has an integer codebook c_k in [-2^(B-1), 2^(B-1) - 1] (B = codebook
                  bits, 8 by default) and an exponent e: weight = c_k * 2^-e; each weight is an index k (b bits).
                  A per-channel layer has one codebook row c_{o,k} per output channel o (same e for all rows).
  * biases:       integers on the accumulator grid: bias = bias_int * 2^-(s_in + e).
  * accumulator:  acc = bias_int + sum(code * c_k) is the pre-activation times 2^(s_in + e), an int32.
  * requantize:   out = clamp(floor(acc * 2^-(s_in + e - s_out) + 1/2), 0, 2^a - 1)  (Eq. 5, round half up).
  * lrn:          out = clamp(floor(q * m[S >> t] * 2^-F + 1/2), 0, 2^a - 1) with S the windowed sum of q^2 and
                  m a table of fixed-point reciprocals (lrn_table); the float model uses the very same table.
Calibration rule: each tensor's shift s is the one (from -8 to 24) minimising the mean squared quantization
error on calibration images from the training split, measured on the float network's tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .arch import LRN, Arch, Conv, Dense, ReLU
from .errors import SiqError
from .nets import Hooks, Net, images_to_input

SHIFT_RANGE = range(-8, 25)
LRN_TABLE_BITS = 8  # the lrn reciprocal table has at most 2^8 entries
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
    """Layer indices whose outputs are stored quantized: every relu and lrn (the input is point -1)."""
    return [i for i, layer in enumerate(arch.layers) if isinstance(layer, (ReLU, LRN))]


def input_point_of(arch: Arch, index: int) -> int:
    """The quantization point feeding layer `index` (-1 = the input image)."""
    points = [p for p in quantization_points(arch) if p < index]
    return points[-1] if points else -1


CALIBRATION_SAMPLES = 2_000_000   # activations scored per quantization point


def best_shift(values: torch.Tensor, bits: int) -> int:
    """Calibration rule: the power-of-two step minimising the mean squared quantization error."""
    v = values.detach().flatten()
    if v.numel() > CALIBRATION_SAMPLES:
        # evenly spaced indices in exact integer arithmetic: a float32 linspace rounds n - 1 up past the end
        # once n > 2**24 (paper-office on 6,000 Fashion images has 24.6 M activations at one point)
        v = v[torch.arange(CALIBRATION_SAMPLES, dtype=torch.int64) * (v.numel() - 1) // (CALIBRATION_SAMPLES - 1)]
    v = v.to(torch.float64)
    errors = [(torch.mean((quantize_activation(v, s, bits) - v) ** 2).item(), s) for s in SHIFT_RANGE]
    return min(errors)[1]


CALIBRATION_RULES = ("float", "sequential")


def calibrate_shifts(net: Net, images: np.ndarray, bits: int, rule: str = "float",
                     input_bits: int | None = None) -> dict[int, int]:
    """Shift per quantization point (-1 = input) on calibration images, by best_shift on each point's tensor
    (`bits` wide; the input `input_bits` wide, default `bits`).

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
            hooks = _SequentialCalibration(bits, input_bits)
            net(x, hooks)
            return hooks.shifts
        collect: list = []
        net(x, collect=collect)
    shifts = {-1: best_shift(x, point_bits(-1, bits, input_bits))}
    for p in quantization_points(net.arch):
        shifts[p] = best_shift(collect[p], bits)
    return shifts


class _SequentialCalibration(Hooks):
    """Chooses each point's shift on the tensor reaching it, then hands on that tensor quantized."""

    def __init__(self, bits: int, input_bits: int | None = None):
        self.bits = bits
        self.input_bits = input_bits
        self.shifts: dict[int, int] = {}

    def _calibrate(self, point: int, x: torch.Tensor) -> torch.Tensor:
        bits = point_bits(point, self.bits, self.input_bits)
        self.shifts[point] = best_shift(x, bits)
        return quantize_activation(x, self.shifts[point], bits)

    def input(self, x):
        return self._calibrate(-1, x)

    def activation(self, index, x):
        return self._calibrate(index, x)


# ---------------------------------------------------------------- codebooks on the firmware's fixed-point grid

@dataclass
class LayerCodebook:
    """One weighted layer's quantized weights: value = codebook[indices] * 2^-exponent, or, per channel,
    value[o, ...] = codebook[o, indices[o, ...]] * 2^-exponent."""
    bits: int                 # index width b: 1..8; at most 2^b entries per codebook (row)
    codebook: np.ndarray      # int64 within the signed codebook_bits range: [K] sorted and unique (per layer),
    #                           or [C_OUT, K] per output channel, each row sorted (a row with fewer distinct
    #                           values repeats its last one: entries no index refers to)
    exponent: int
    indices: np.ndarray       # uint8, the weight tensor's shape

    @property
    def per_channel(self) -> bool:
        return self.codebook.ndim == 2

    @property
    def entries(self) -> int:
        """Codebook entries per output channel (per channel) or for the layer (the row length in the C)."""
        return int(self.codebook.shape[-1])

    def integer_weights(self) -> np.ndarray:
        """The weights as integers on the 2^-exponent grid (int64, the weight tensor's shape)."""
        return codebook_weights(self.codebook, self.indices)

    def values(self) -> np.ndarray:
        return self.integer_weights().astype(np.float64) * 2.0 ** -self.exponent


def codebook_weights(codebook: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """codebook[indices] for one codebook; codebook[o, indices[o, ...]] for a codebook row per output channel."""
    codebook = np.asarray(codebook, dtype=np.int64)
    indices = np.asarray(indices).astype(np.intp)
    if codebook.ndim == 1:
        return codebook[indices]
    rows = np.arange(indices.shape[0]).reshape((-1,) + (1,) * (indices.ndim - 1))
    return codebook[rows, indices]


# Codebook values are int8 in the C, or int16 when any needs more than 8 bits; 15 bits at most, so that the DSP
# kernels' lane pairing (hi + 1) * 65536 + lo stays inside int32.
MAX_CODEBOOK_BITS = 15


def check_codebook_bits(bits) -> int:
    """Fixed-point bits of codebook values: 2..MAX_CODEBOOK_BITS (a sign and at least one magnitude bit)."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= MAX_CODEBOOK_BITS:
        raise SiqError(f"codebook bits must be a whole number from 2 to {MAX_CODEBOOK_BITS}, got {bits!r}")
    return int(bits)


def codebook_entry_bytes(codebooks) -> int:
    """Bytes per codebook entry in the C: 1 (int8) when every value of every codebook fits, else 2 (int16).
    Refuses values outside the signed MAX_CODEBOOK_BITS range."""
    values = [int(v) for book in codebooks for v in np.asarray(book).reshape(-1)]
    low, high = -2 ** (MAX_CODEBOOK_BITS - 1), 2 ** (MAX_CODEBOOK_BITS - 1) - 1
    if values and (min(values) < low or max(values) > high):
        raise SiqError(f"codebook values {min(values)}..{max(values)} exceed {low}..{high}: "
                       f"use --codebook-bits {MAX_CODEBOOK_BITS} or fewer")
    return 1 if not values or (min(values) >= -128 and max(values) <= 127) else 2


def snap_codebook(centroids: np.ndarray, assignment: np.ndarray, bits: int, codebook_bits: int) -> LayerCodebook:
    """Snap float centroids to the signed fixed-point grid (power-of-two scale chosen so the largest |centroid|
    uses the full range), merge centroids that land on the same integer, and re-index. centroids [K] with
    assignment (any shape) indexing it, or [C_OUT, K] with assignment [C_OUT, ...] indexing each channel's row
    (one exponent for the whole layer: the accumulator grid stays one per layer)."""
    centroids = np.asarray(centroids, dtype=np.float64)
    if not np.all(np.isfinite(centroids)):
        raise SiqError("quantization produced non-finite weights (NaN/Inf): the model diverged; retrain it")
    top = 2 ** (codebook_bits - 1) - 1
    largest = float(np.max(np.abs(centroids)))
    exponent = 0 if largest == 0.0 else int(math.floor(math.log2(top / largest)))
    snapped = np.clip(round_half_up(centroids * 2.0 ** exponent), -top - 1, top).astype(np.int64)
    assignment = np.asarray(assignment)
    if snapped.ndim == 1:
        codebook, remap = np.unique(snapped, return_inverse=True)
        indices = remap.reshape(-1)[assignment.reshape(-1)].reshape(assignment.shape)
        return LayerCodebook(bits, codebook, exponent, indices.astype(np.uint8))
    rows, indices = [], np.empty(assignment.shape, np.uint8)
    for o, row in enumerate(snapped):
        values, remap = np.unique(row, return_inverse=True)
        rows.append(values)
        indices[o] = remap.reshape(-1)[assignment[o].reshape(-1)].reshape(assignment.shape[1:])
    return LayerCodebook(bits, pad_rows(rows), exponent, indices)


def pad_rows(rows) -> np.ndarray:
    """Sorted rows of different lengths as one [len(rows), longest] array, each row padded with its last value."""
    width = max(len(r) for r in rows)
    return np.stack([np.concatenate([r, np.repeat(r[-1:], width - len(r))]) for r in rows])


# ---------------------------------------------------------------- the quantized model

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

    def __post_init__(self):
        if self.input_bits is None:
            self.input_bits = self.act_bits

    def bits_at(self, point: int) -> int:
        """Code width at a quantization point (-1 = the input image)."""
        return point_bits(point, self.act_bits, self.input_bits)

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


# ---------------------------------------------------------------- lrn in integers

@dataclass(frozen=True)
class LRNTable:
    index_shift: int          # t: table index = S >> t
    table: tuple[int, ...]    # m[i] ~ 2^F * 2^(s_out - s_in) / (k + alpha/size * S_mid * 2^(-2 s_in))^beta
    frac_bits: int            # F
    window_before: int        # channels c - before .. c + after enter S (PyTorch's window)
    window_after: int


def lrn_table(layer: LRN, shift_in: int, shift_out: int, bits: int) -> LRNTable:
    """Fixed-point reciprocal table for lrn on a-bit codes; every number here is computed once, in Python."""
    max_code = 2**bits - 1
    max_sum = layer.size * max_code * max_code
    index_shift = max(0, max_sum.bit_length() - LRN_TABLE_BITS)
    entries = (max_sum >> index_shift) + 1
    gain = 2.0 ** (shift_out - shift_in) / layer.k ** layer.beta  # the largest multiplier / 2^F
    frac_bits = 30
    while frac_bits > 1 and max_code * round_half_up(gain * 2.0**frac_bits) + 2.0 ** (frac_bits - 1) > INT32_MAX:
        frac_bits -= 1
    table = []
    for i in range(entries):
        s_mid = i * 2**index_shift + (2**index_shift - 1) / 2.0
        denominator = (layer.k + layer.alpha / layer.size * s_mid * 2.0 ** (-2 * shift_in)) ** layer.beta
        table.append(int(round_half_up(2.0 ** (frac_bits + shift_out - shift_in) / denominator)))
    if max_code * table[0] + 2 ** (frac_bits - 1) > INT32_MAX:
        raise SiqError(f"lrn: output step 2^-{shift_out} too fine for input step 2^-{shift_in}: "
                       "the fixed-point multiplier overflows int32")
    return LRNTable(index_shift, tuple(table), frac_bits, layer.size // 2, (layer.size - 1) // 2)


def lrn_window_sum(codes: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """S[c] = sum of q[c']^2 over c - before <= c' <= c + after (zero outside), along dim 1."""
    sq = torch.nn.functional.pad(codes * codes, (0, 0, 0, 0, before, after))
    channels = codes.shape[1]
    return sum(sq[:, j:j + channels] for j in range(before + after + 1))


# ---------------------------------------------------------------- hooks: exact evaluation and STE training

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
                self.tables[i] = lrn_table(layer, qm.shifts[input_point_of(qm.arch, i)], qm.shifts[i], qm.act_bits)

    def input(self, x):
        return quantize_activation(x, self.qm.shifts[-1], self.qm.input_bits)

    def weight(self, index, w):
        return self.weights[index]

    def bias(self, index, b):
        return self.bias_values[index]

    def activation(self, index, x):
        return quantize_activation(x, self.qm.shifts[index], self.qm.act_bits)

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


def ste(x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: forward the quantized value, backward the identity."""
    return x + (quantized - x).detach()


class TrainingHooks(Hooks):
    """float32 quantization-aware training: STE fake quantization of activations (and of weights, through a
    per-layer callable mapping a weight tensor to its quantized value)."""

    def __init__(self, act_bits: int | None, shifts: dict[int, int] | None, weight_quantizers: dict | None = None,
                 input_bits: int | None = None):
        self.act_bits = act_bits
        self.input_bits = input_bits
        self.shifts = shifts or {}
        self.weight_quantizers = weight_quantizers or {}

    def _act(self, point, x):
        if self.act_bits is None:
            return x
        bits = point_bits(point, self.act_bits, self.input_bits)
        scale = 2.0 ** self.shifts[point]
        clipped = torch.clamp(x, 0.0, (2**bits - 1) / scale)
        return ste(clipped, torch.floor(clipped * scale + 0.5) / scale)

    def input(self, x):
        return self._act(-1, x)

    def activation(self, index, x):
        return self._act(index, x)

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


def relu_follows(arch: Arch, index: int) -> bool:
    return index + 1 < len(arch.layers) and isinstance(arch.layers[index + 1], ReLU)


def quantizable(arch: Arch) -> None:
    """The fixed-point scheme needs every conv/dense but the last followed directly by relu."""
    weighted = arch.weighted_layers()
    for i in weighted[:-1]:
        if not relu_follows(arch, i):
            kind = "conv" if isinstance(arch.layers[i], Conv) else "dense"
            raise SiqError(f"layer {i} ({kind}) must be followed by relu: the client stores unsigned feature maps")
    if not isinstance(arch.layers[weighted[-1]], Dense) or weighted[-1] != len(arch.layers) - 1:
        raise SiqError("the network must end with a dense layer (the class scores)")


# ---------------------------------------------------------------- quantized model files

def save_quantized(path, qm: QuantizedModel) -> None:
    from .fileio import save_torch
    meta = {"arch": qm.arch.to_dict(), "act_bits": qm.act_bits, "input_bits": qm.input_bits,
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
    from .fileio import load_torch
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
                            check_bits(meta.get("input_bits", meta["act_bits"]), f"{path}: input bits"))
    except (KeyError, TypeError, ValueError) as exc:
        raise SiqError(f"{path}: corrupt quantized model ({type(exc).__name__}: {exc})") from None
    if sorted(layers) != arch.weighted_layers():
        raise SiqError(f"{path}: quantized layers {sorted(layers)} do not match the architecture")
    points = [-1] + quantization_points(arch)
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

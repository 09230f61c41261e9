"""Weight quantizers (server side): uniform, k-means (adaptive) and supervised iterative quantization (SIQ).

Every method returns, per weighted layer, float centroids and an assignment; snap_codebook then puts the
centroids on the firmware's fixed-point grid. Methods live in a registry so new ones plug in without touching
the callers:

    @register("name")
    def my_method(net, bits, context) -> dict[layer_index, (centroids, assignment)]
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

from .arch import LRN, Conv, Dense
from .errors import SiqError
from .nets import Net
from .quant import (SHIFT_RANGE, QuantizedModel, TrainingHooks, calibrate_shifts, check_bits, check_codebook_bits,
                    input_point_of, pad_rows, point_bits, quantizable, quantize_biases, relu_follows, round_half_up,
                    snap_codebook)
from .train import TrainConfig, fit, seed_everything

METHODS: dict = {}


def register(name: str):
    def wrap(fn):
        METHODS[name] = fn
        return fn
    return wrap


@dataclass
class SIQConfig:
    """The paper's alternation, Split-Bregman style: retraining carries a penalty alpha_r * ||w - Q(w)||^2 / ||w||^2
    whose weight grows by `growth` each round (continuation), so the weights settle onto the codebook.
    Converged when fewer than `tolerance` of the weights change codebook entry during a round's retraining, or
    after `rounds` rounds; the result is the codebook of the last retraining."""
    rounds: int = 4
    epochs_per_round: int = 2
    lr: float = 3e-4
    alpha: float = 0.1
    growth: float = 4.0
    tolerance: float = 0.005
    quantize_fc: bool = False  # the paper retrains conv kernels only; FC layers get k-means at their bits after
    # Data augmentation during retraining (the float recipe's random shifts and flips; off = the paper's plain
    # retraining). At these neutral values a config means what it meant before they existed (SIQ_NEUTRAL).
    augment_shift: int = 0
    augment_flip: bool = False
    # Dropout rate during retraining (None = the architecture's). A float network trained at another rate (e.g.
    # --dropout 0.2) is otherwise retrained at the architecture's 0.5.
    dropout: float | None = None

    def train_config(self, batch_size: int, seed: int) -> TrainConfig:
        """One round's retraining schedule."""
        return TrainConfig(epochs=self.epochs_per_round, batch_size=batch_size, lr=self.lr, seed=seed,
                           augment_shift=self.augment_shift, augment_flip=self.augment_flip, dropout=self.dropout)


# Config fields added after results were cached, at the values that change nothing (left out of cache keys)
SIQ_NEUTRAL = {"augment_shift": 0, "augment_flip": False, "dropout": None}
RETRAINING_METHODS = ("siq", "siq+")  # the methods that retrain, so SIQConfig applies to them
QUANTIZE_NEUTRAL = {"calibration": "float", "per_channel": "none", "input_bits": None}
# Which weighted layers get one codebook per output channel instead of one per layer
PER_CHANNEL_CHOICES = ("none", "conv", "all")


@dataclass
class SIQPlusConfig:
    """Beyond the paper (issue 7): what `siq+` adds to SIQ, each switchable for ablation.
    quantize_fc: SIQ on the FC layers too (the paper leaves them at post-training 8 bits).
    finetune_centroids: the codebook values are trained too, each by the summed gradient of its weights
        (Deep Compression's shared-weight fine-tuning), and re-assignment warm-starts from them.
    distill: weight of the distillation term (KL divergence to the float model's softened outputs at
        `temperature`); 0 turns it off.
    progressive: the first rounds run at more bits (target + rounds - 1 - round, at most 8), lowering one bit
        a round, so the network adapts gradually to the final width.
    learn_act_steps: the power-of-two step of the input and of every feature map is trained (LSQ with a
        rounded log2 step and straight-through estimators), starting from the calibrated shifts; `step_lr` is
        the Adam learning rate of the log2 steps (units: bits of shift).
    real_steps: the feature-map steps (not the input's) are trained as real numbers, not rounded to powers of two;
        at the end each point's step c 2^-s (s its nearest shift, 2^-1/2 <= c <= 2^1/2) is made 2^-s by folding
        c into the layers around the point (fold_step_scales), which leaves every code unchanged, so the firmware
        stays shift-only. Off by default (the cache keys of earlier cells stay as they were).
    progressive_acts: the activations (input included, unless it has its own width) start this many bits above
        the target in round 1 and lose one bit a round until they reach it; each lowering widens the learned steps
        so the clipped range stays the same. 0 (default): the target width from round 1."""
    quantize_fc: bool = True
    finetune_centroids: bool = True
    distill: float = 0.5
    temperature: float = 4.0
    progressive: bool = True
    learn_act_steps: bool = True
    step_lr: float = 0.01
    real_steps: bool = False
    progressive_acts: int = 0

    def without(self, ingredients) -> "SIQPlusConfig":
        """This config with the named ingredients (PLUS_INGREDIENTS keys) turned off, for ablations."""
        unknown = sorted(set(ingredients) - set(PLUS_INGREDIENTS))
        if unknown:
            raise SiqError(f"unknown siq+ ingredient(s) {', '.join(unknown)} (known: {', '.join(PLUS_INGREDIENTS)})")
        off = {PLUS_INGREDIENTS[name]: (0.0 if name == "distill" else False) for name in ingredients}
        if "steps" in ingredients:
            off["real_steps"] = False  # a mode of the learned steps
        if "steps" in ingredients or "progressive" in ingredients:
            off["progressive_acts"] = 0  # lowers the learned steps' width
        return replace(self, **off)


# SIQPlusConfig fields added after results were cached, at the values that change nothing (left out of cache keys)
PLUS_NEUTRAL = {"real_steps": False, "progressive_acts": 0}
# siq+ ingredients by their short name (CLI --plus-off, sweep method variants like "siq+-distill")
PLUS_INGREDIENTS = {"fc": "quantize_fc", "centroids": "finetune_centroids", "distill": "distill",
                    "progressive": "progressive", "steps": "learn_act_steps"}


def method_variant(name: str) -> tuple[str, list[str]]:
    """"siq+-distill-steps" -> ("siq+", ["distill", "steps"]): a method with siq+ ingredients turned off."""
    base, *off = name.split("-")
    if base not in METHODS:
        raise SiqError(f"unknown quantization method {base!r} (known: {', '.join(sorted(METHODS))})")
    if off and base != "siq+":
        raise SiqError(f"{name!r}: only siq+ has ingredients to turn off")
    SIQPlusConfig().without(off)  # refuses unknown ingredient names
    return base, off


@dataclass
class QuantizeConfig:
    method: str = "siq"
    conv_bits: int = 4
    fc_bits: int = 8
    layer_bits: dict = field(default_factory=dict)  # weighted layer index -> bits, overrides conv/fc bits
    act_bits: int = 4
    input_bits: int | None = None  # the input image's code width; None = act_bits (the paper: one width for all)
    codebook_bits: int = 8
    seed: int = 0
    calibration_images: int = 2000
    calibration: str = "float"  # activation-shift rule (quant.CALIBRATION_RULES): "float" or "sequential"
    per_channel: str = "none"   # codebooks per output channel (PER_CHANNEL_CHOICES): none, conv layers, all layers
    batch_size: int = 64
    siq: SIQConfig = field(default_factory=SIQConfig)
    plus: SIQPlusConfig = field(default_factory=SIQPlusConfig)

    def bits_per_layer(self, net: Net) -> dict[int, int]:
        bits = {}
        for i in net.arch.weighted_layers():
            default = self.conv_bits if isinstance(net.arch.layers[i], Conv) else self.fc_bits
            bits[i] = check_bits(self.layer_bits.get(i, default), f"weight bits of layer {i}")
        return bits

    def per_channel_layers(self, net: Net) -> set[int]:
        """Weighted layers whose codebooks are per output channel."""
        check_per_channel(self.per_channel)
        return {i for i in net.arch.weighted_layers()
                if self.per_channel == "all" or (self.per_channel == "conv" and isinstance(net.arch.layers[i], Conv))}


def check_per_channel(choice) -> str:
    if choice not in PER_CHANNEL_CHOICES:
        raise SiqError(f"per-channel codebooks must be one of {', '.join(PER_CHANNEL_CHOICES)}, got {choice!r}")
    return choice


# ---------------------------------------------------------------- per-layer codebooks

def uniform_codebook(w: np.ndarray, bits: int):
    """Eq. 5 with a per-layer step: q = floor(w / step + 1/2), clamped to the symmetric levels -L..L,
    L = 2^(b-1) - 1. The step is the one minimising the mean squared weight error among 200 candidates from
    max|w|/(10 L) to max|w|/L (covering the whole range makes outliers drag the step: at 2 bits nearly every
    weight becomes 0). One bit has no zero level: the levels are +-step, chosen by sign, step = mean|w|."""
    w = w.reshape(-1).astype(np.float64)
    if bits == 1:
        step = float(np.mean(np.abs(w)))
        return np.array([-step, step]), (w >= 0).astype(np.int64)
    levels = 2 ** (bits - 1) - 1
    largest = float(np.max(np.abs(w)))
    if largest == 0.0:
        return np.array([0.0]), np.zeros(w.size, np.int64)

    candidates = largest / levels * np.linspace(0.1, 1.0, 200)
    errors = [float(np.mean((uniform_codes(w, step, levels) * step - w) ** 2)) for step in candidates]
    step = float(candidates[int(np.argmin(errors))])
    return np.arange(-levels, levels + 1) * step, uniform_codes(w, step, levels) + levels


def uniform_codes(w: np.ndarray, step: float, levels: int) -> np.ndarray:
    """Eq. 5: clamp(floor(w / step + 1/2), -levels, levels)."""
    return np.clip(round_half_up(w / step), -levels, levels).astype(np.int64)


def kmeans_codebook(w: np.ndarray, bits: int, seed: int, init: np.ndarray | None = None):
    """1-D k-means with 2^b centroids (scikit-learn, fixed seed; warm-started from `init` when given).
    A layer with no more distinct values than centroids keeps its values exactly; empty clusters are dropped."""
    w = w.reshape(-1).astype(np.float64)
    distinct = np.unique(w)
    k = 2 ** bits
    if len(distinct) <= k:
        return distinct, np.searchsorted(distinct, w)
    if init is not None and len(init) == k and len(np.unique(init)) == k:
        km = KMeans(n_clusters=k, init=np.sort(init).reshape(-1, 1), n_init=1, random_state=seed)
    else:
        km = KMeans(n_clusters=k, n_init=3, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = km.fit_predict(w.reshape(-1, 1))
    centers = km.cluster_centers_.reshape(-1)
    used = np.unique(labels)
    centers = centers[used]
    labels = np.searchsorted(used, labels)
    order = np.argsort(centers, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return centers[order], rank[labels]


def per_row(codebook_fn, w: np.ndarray, per_channel: bool, init: np.ndarray | None = None):
    """codebook_fn(weights, init) -> (centroids, assignment) for the whole layer, or, per channel, for each output
    channel's weights w[o]: centroids [C_OUT, K] (rows padded with their last value, quant.pad_rows) and the
    assignment in w's flat order (row o's indices refer to centroids[o])."""
    if not per_channel:
        return codebook_fn(w, init)
    rows = w.reshape(w.shape[0], -1)
    books = [codebook_fn(row, None if init is None else init[o]) for o, row in enumerate(rows)]
    return pad_rows([c for c, _ in books]), np.concatenate([a for _, a in books])


def centroid_values(centroids: np.ndarray, assignment: np.ndarray, shape) -> np.ndarray:
    """Each weight's centroid: centroids[assignment] (per layer) or centroids[o, assignment[o]] (per channel)."""
    centroids = np.asarray(centroids)
    if centroids.ndim == 1:
        return centroids[assignment].reshape(shape)
    return np.take_along_axis(centroids, np.asarray(assignment).reshape(centroids.shape[0], -1), 1).reshape(shape)


def _nearest_index(values: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the sorted `values` ([K], or [C_OUT, K] per output channel) to each weight, in
    w's flat order per row: ties between two centroids go to the lower one (searchsorted on the midpoints)."""
    mids = (values[..., 1:] + values[..., :-1]) / 2
    if values.ndim == 1:
        return torch.bucketize(w.reshape(-1), mids)
    return torch.searchsorted(mids.contiguous(), w.reshape(values.shape[0], -1).contiguous())


def _gather(values: torch.Tensor, index: torch.Tensor, shape) -> torch.Tensor:
    return (values[index] if values.ndim == 1 else torch.gather(values, 1, index)).reshape(shape)


def nearest(centroids: np.ndarray):
    """w -> the nearest centroid of each weight (torch, differentiable only through the STE around it).
    centroids [K] for the layer or [C_OUT, K] per output channel."""
    c = torch.as_tensor(np.sort(centroids, axis=-1), dtype=torch.float32)

    def quantize(w: torch.Tensor) -> torch.Tensor:
        values = c.to(w.dtype)
        return _gather(values, _nearest_index(values, w.detach()), w.shape)
    return quantize


def nearest_assignment(centroids: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted centroids, index of each weight's nearest centroid), with the tie rule of nearest()."""
    c = np.sort(np.asarray(centroids, dtype=np.float64), axis=-1)
    index = _nearest_index(torch.as_tensor(c, dtype=torch.float32), torch.as_tensor(w, dtype=torch.float32))
    return c, index.reshape(-1).numpy().astype(np.int64)


def _weights(net: Net, i: int) -> np.ndarray:
    return net.layers[i].weight.detach().double().numpy()


def _load_quantized_weights(net: Net, books: dict) -> None:
    with torch.no_grad():
        for i, (centroids, assignment) in books.items():
            weight = net.layers[i].weight
            weight.copy_(torch.from_numpy(centroid_values(centroids, assignment, weight.shape)))


def _continuation_penalty(net: Net, quantizers: dict, alpha: float):
    """alpha * sum over layers of ||w - Q(w)||^2 / ||w||^2 (norms taken at the start of the round)."""
    norms = {i: float(torch.mean(net.layers[i].weight.detach() ** 2)) + 1e-12 for i in quantizers}

    def penalty(model):
        total = 0.0
        for i, quantize in quantizers.items():
            w = model.layers[i].weight
            total = total + torch.mean((w - quantize(w).detach()) ** 2) / norms[i]
        return alpha * total
    return penalty


# ---------------------------------------------------------------- methods

def _kmeans(net: Net, i: int, bits: int, context: dict, init: np.ndarray | None = None):
    """k-means codebook of layer i, per output channel when the config asks for it."""
    return per_row(lambda w, start: kmeans_codebook(w, bits, context["seed"], init=start), _weights(net, i),
                   i in context["per_channel"], init)


@register("uniform")
def uniform(net: Net, bits: dict[int, int], context: dict):
    return {i: per_row(lambda w, _: uniform_codebook(w, b), _weights(net, i), i in context["per_channel"])
            for i, b in bits.items()}


@register("kmeans")
def kmeans(net: Net, bits: dict[int, int], context: dict):
    return {i: _kmeans(net, i, b, context) for i, b in bits.items()}


@register("siq")
def siq(net: Net, bits: dict[int, int], context: dict):
    """Supervised iterative quantization (§3.2): alternate (1) fix w, solve Q by k-means and (2) fix Q, solve w by
    backprop started from the quantized weights, with fake-quantized activations and weights in the forward pass
    (straight-through) and a growing pull of w toward Q(w). `net` is retrained in place."""
    cfg: QuantizeConfig = context["config"]
    scfg = cfg.siq
    x, y = context["train"]
    arch = net.arch
    retrained = [i for i in bits if isinstance(arch.layers[i], Conv) or scfg.quantize_fc]
    books = {i: _kmeans(net, i, bits[i], context) for i in retrained}
    history = []
    alpha = scfg.alpha
    rounds = scfg.rounds            # >= 1: check_siq_config refused anything else before training
    for round_index in range(rounds):
        _load_quantized_weights(net, books)  # retraining starts from the quantized weights
        quantizers = {i: nearest(books[i][0]) for i in retrained}
        hooks = TrainingHooks(cfg.act_bits, context["shifts"], quantizers, cfg.input_bits)
        penalty = _continuation_penalty(net, quantizers, alpha)
        train_cfg = scfg.train_config(cfg.batch_size, seed=cfg.seed + 1000 * (round_index + 1))
        log = fit(net, x, y, train_cfg, hooks, penalty, desc=f"siq round {round_index + 1}")
        # Q(w) as the network was just trained: the same codebook, each weight at its nearest centroid
        trained = {i: nearest_assignment(books[i][0], _weights(net, i)) for i in retrained}
        changed = sum(int(np.sum(trained[i][1] != books[i][1])) for i in retrained)
        total = sum(books[i][1].size for i in retrained)
        history.append({"round": round_index + 1, "alpha": alpha, "loss": log[-1]["loss"],
                        "assignment_change": changed / total})
        alpha *= scfg.growth
        if changed / total < scfg.tolerance or round_index == rounds - 1:
            # The alternation ends on a retraining step: the result is the codebook the network was trained
            # with. (Re-clustering the latent weights once more would hand back a codebook never trained with:
            # on Fashion W3A4 after one round that was 48 % against 85 % for the trained one.)
            books = trained
            break
        books = {i: _kmeans(net, i, bits[i], context, init=books[i][0]) for i in retrained}
    context["history"] = history
    rest = {i: _kmeans(net, i, b, context) for i, b in bits.items() if i not in retrained}
    return {**books, **rest}


class TrainableCodebook(torch.nn.Module):
    """A layer's codebook as parameters ([K], or [C_OUT, K] per output channel): forward value of a weight = the
    (sorted) centroid nearest to it. Gradients reach each centroid summed over the weights assigned to it, and the
    weights through the straight-through estimator."""

    def __init__(self, centroids: np.ndarray):
        super().__init__()
        self.centroids = torch.nn.Parameter(torch.as_tensor(np.sort(centroids, axis=-1), dtype=torch.float32))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        values, _ = torch.sort(self.centroids, dim=-1)
        chosen = _gather(values, _nearest_index(values.detach(), w.detach()), w.shape)
        return w + (chosen - w).detach() + (chosen - chosen.detach())

    def assignment(self, w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        values, _ = torch.sort(self.centroids.detach(), dim=-1)
        return values.double().numpy(), _nearest_index(values, w.detach()).reshape(-1).numpy()


class LearnedSteps(torch.nn.Module):
    """Trainable power-of-two activation steps: per quantization point a real log2 scale t; the forward pass uses
    the shift s = floor(t + 1/2) (clamped to SHIFT_RANGE), so the firmware stays shift-only.

    quantize(x) = clamp(floor(x 2^s + 1/2), 0, 2^a - 1) 2^-s, with straight-through estimators for both roundings
    (of x 2^s and of t): the gradient reaching t is LSQ's step gradient (round(v) - v inside the range,
    2^a - 1 above it) times d(2^-s)/dt.

    real=True: the feature maps' steps are 2^-t itself (t clamped to SHIFT_RANGE, not rounded); the input's stays
    a power of two (the firmware quantizes raw pixels with a shift). scales() gives what fold_step_scales needs."""

    def __init__(self, shifts: dict[int, int], bits: int, input_bits: int | None = None, real: bool = False):
        super().__init__()
        self.bits = bits
        self.input_bits = input_bits
        self.real = real
        self.log2_scale = torch.nn.ParameterDict(
            {str(p): torch.nn.Parameter(torch.tensor(float(s))) for p, s in shifts.items()})

    def _log2_scale(self, point: int) -> torch.Tensor:
        t = self.log2_scale[str(point)]
        if self.real and point != -1:
            return torch.clamp(t, float(SHIFT_RANGE.start), float(SHIFT_RANGE.stop - 1))
        rounded = torch.clamp(torch.floor(t.detach() + 0.5), SHIFT_RANGE.start, SHIFT_RANGE.stop - 1)
        return t + (rounded - t).detach()

    def _nearest_shift(self, point: int) -> int:
        t = float(self._log2_scale(point).detach())
        return int(np.clip(np.floor(t + 0.5), SHIFT_RANGE.start, SHIFT_RANGE.stop - 1))

    def quantize(self, point: int, x: torch.Tensor) -> torch.Tensor:
        scale = 2.0 ** self._log2_scale(point)
        top = 2 ** point_bits(point, self.bits, self.input_bits) - 1
        v = torch.clamp(x * scale, 0.0, float(top))
        return (v + (torch.floor(v + 0.5) - v).detach()) / scale

    def set_bits(self, bits: int) -> None:
        """Change the activation width, keeping each point's clipped range (2^w - 1) step: a point going from
        w to w' bits gets a step (2^w - 1) / (2^w' - 1) times as large (rounded to a power of two where steps are).
        The input keeps its own width where it has one."""
        with torch.no_grad():
            for p, t in self.log2_scale.items():
                old = point_bits(int(p), self.bits, self.input_bits)
                new = point_bits(int(p), bits, self.input_bits)
                t += float(np.log2((2**new - 1) / (2**old - 1)))
        self.bits = bits

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
                books[i] = (np.asarray(centroids, dtype=np.float64) * (c_in / c_out), assignment)
        elif isinstance(layer, LRN):
            r = (scales.get(i, 1.0) / c_in) ** (1.0 / layer.beta)
            layers[i] = replace(layer, k=layer.k * r, alpha=layer.alpha * c_in**2 * r)
            net.layers[i].k, net.layers[i].alpha = layers[i].k, layers[i].alpha
    net.arch = replace(arch, layers=tuple(layers))


class _Hooks(TrainingHooks):
    """TrainingHooks whose weight quantizers already carry their own straight-through estimator, and whose
    activation steps may be trained (LearnedSteps)."""

    def __init__(self, act_bits, shifts, weight_quantizers, steps: LearnedSteps | None = None,
                 input_bits: int | None = None):
        super().__init__(act_bits, shifts, weight_quantizers, input_bits)
        self.steps = steps

    def weight(self, index, w):
        quantizer = self.weight_quantizers.get(index)
        return w if quantizer is None else quantizer(w)

    def _act(self, point, x):
        return super()._act(point, x) if self.steps is None else self.steps.quantize(point, x)


@register("siq+")
def siq_plus(net: Net, bits: dict[int, int], context: dict):
    """SIQ plus centroid fine-tuning, distillation from the float model, progressive bit lowering and FC layers
    (SIQPlusConfig). Same alternation and convergence rule as `siq`; `net` is retrained in place."""
    cfg: QuantizeConfig = context["config"]
    scfg, pcfg = cfg.siq, cfg.plus
    x, y = context["train"]
    arch = net.arch
    teacher = copy.deepcopy(net).eval()
    retrained = [i for i in bits if isinstance(arch.layers[i], Conv) or pcfg.quantize_fc]
    rounds = scfg.rounds            # >= 1: check_siq_config refused anything else before training

    def round_bits(round_index: int) -> dict[int, int]:
        extra = rounds - 1 - round_index if pcfg.progressive else 0
        return {i: min(8, bits[i] + extra) for i in retrained}

    width = round_bits(0)
    books = {i: _kmeans(net, i, width[i], context) for i in retrained}
    temperature = pcfg.temperature

    def loss_fn(batch, logits, labels):
        loss = torch.nn.functional.cross_entropy(logits, labels)
        if pcfg.distill <= 0:
            return loss
        with torch.no_grad():
            target = torch.softmax(teacher(batch) / temperature, dim=1)
        soft = torch.nn.functional.kl_div(torch.log_softmax(logits / temperature, dim=1), target,
                                          reduction="batchmean") * temperature**2
        return (1 - pcfg.distill) * loss + pcfg.distill * soft

    def round_act_bits(round_index: int) -> int:
        # one bit a round from target + progressive_acts down to the target, reached by the last round at the latest
        extra = min(max(0, pcfg.progressive_acts - round_index), rounds - 1 - round_index)
        return min(8, cfg.act_bits + extra)

    steps = (LearnedSteps(context["shifts"], cfg.act_bits, cfg.input_bits, pcfg.real_steps)
             if pcfg.learn_act_steps else None)
    history, alpha = [], scfg.alpha
    for round_index in range(rounds):
        if steps is not None:
            steps.set_bits(round_act_bits(round_index))
        _load_quantized_weights(net, books)
        codebooks = {i: TrainableCodebook(books[i][0]) for i in retrained}
        if not pcfg.finetune_centroids:
            for book in codebooks.values():
                book.centroids.requires_grad_(False)
        hooks = _Hooks(cfg.act_bits, context["shifts"], codebooks, steps, cfg.input_bits)
        penalty = _continuation_penalty(net, codebooks, alpha)
        train_cfg = scfg.train_config(cfg.batch_size, seed=cfg.seed + 1000 * (round_index + 1))
        params = [b.centroids for b in codebooks.values() if b.centroids.requires_grad]
        if steps is not None:
            params.append({"params": list(steps.parameters()), "lr": pcfg.step_lr})
        log = fit(net, x, y, train_cfg, hooks, penalty, desc=f"siq+ round {round_index + 1}",
                  extra_params=params, loss_fn=loss_fn)
        if steps is not None:
            context["shifts"] = steps.shifts()
        previous = {i: books[i][1] for i in retrained}
        tuned = {i: codebooks[i].assignment(net.layers[i].weight) for i in retrained}
        final_round = round_index == rounds - 1
        width = round_bits(min(round_index + 1, rounds - 1))
        if final_round:
            books = tuned
        else:  # re-cluster at the next round's width, warm-started from the tuned centroids when sizes allow
            books = {i: _kmeans(net, i, width[i], context, init=tuned[i][0]) for i in retrained}
        changed = sum(int(np.sum(tuned[i][1] != previous[i])) for i in retrained)
        total = sum(tuned[i][1].size for i in retrained)
        history.append({"round": round_index + 1, "alpha": alpha, "loss": log[-1]["loss"],
                        "bits": {str(i): b for i, b in round_bits(round_index).items()},
                        **({"act_bits": steps.bits} if pcfg.progressive_acts else {}),
                        "shifts": {str(p): s for p, s in context["shifts"].items()},
                        "assignment_change": changed / total})
        alpha *= scfg.growth
        if final_round:
            break
    context["history"] = history
    if steps is not None and steps.real:
        fold_step_scales(net, books, steps.scales())
    rest = {i: _kmeans(net, i, b, context) for i, b in bits.items() if i not in retrained}
    return {**books, **rest}


def check_siq_config(scfg: SIQConfig) -> None:
    """Refuse SIQ schedules that cannot run (before any training starts)."""
    for name in ("rounds", "epochs_per_round"):
        value = getattr(scfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SiqError(f"SIQ {name.replace('_', ' ')} must be a whole number >= 1, got {value!r}")
    for name in ("lr", "growth"):
        value = getattr(scfg, name)
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise SiqError(f"SIQ {name} must be a positive number, got {value!r}")
    shift = scfg.augment_shift
    if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= 8:
        raise SiqError(f"SIQ retraining shift augmentation must be a whole number of pixels 0..8, got {shift!r}")
    rate = scfg.dropout
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0):
        raise SiqError(f"SIQ retraining dropout must be in [0, 1), got {rate!r}")
    if not 0.0 <= scfg.tolerance <= 1.0 or not np.isfinite(scfg.alpha) or scfg.alpha < 0:
        raise SiqError(f"SIQ tolerance must be in [0, 1] and alpha >= 0, got {scfg.tolerance!r}, {scfg.alpha!r}")


def check_plus_config(pcfg: SIQPlusConfig) -> None:
    """Refuse siq+ settings that cannot train (before any training starts)."""
    weight, temperature = pcfg.distill, pcfg.temperature
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
        raise SiqError(f"siq+ distillation weight must be in [0, 1], got {weight!r}")
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not np.isfinite(temperature)
            or temperature <= 0):
        raise SiqError(f"siq+ distillation temperature must be a positive number, got {temperature!r}")
    if not isinstance(pcfg.step_lr, (int, float)) or not np.isfinite(pcfg.step_lr) or pcfg.step_lr <= 0:
        raise SiqError(f"siq+ activation-step learning rate must be a positive number, got {pcfg.step_lr!r}")
    if pcfg.real_steps and not pcfg.learn_act_steps:
        raise SiqError("siq+ real activation steps need the learned steps (they are turned off)")
    lead = pcfg.progressive_acts
    if isinstance(lead, bool) or not isinstance(lead, int) or not 0 <= lead <= 7:
        raise SiqError(f"siq+ progressive activation bits must be a whole number 0..7, got {lead!r}")
    if lead and not pcfg.learn_act_steps:
        raise SiqError("siq+ progressive activation bits need the learned steps (they are turned off)")


def quantize_model(float_net: Net, train_x: np.ndarray, train_y: np.ndarray, cfg: QuantizeConfig,
                   class_names: list[str], meta: dict | None = None) -> tuple[QuantizedModel, Net]:
    """Quantize a trained float network; returns the quantized model and the (possibly retrained) float net."""
    if cfg.method not in METHODS:
        raise SiqError(f"unknown quantization method {cfg.method!r} (known: {', '.join(sorted(METHODS))})")
    act_bits = check_bits(cfg.act_bits, "activation bits")
    input_bits = act_bits if cfg.input_bits is None else check_bits(cfg.input_bits, "input bits")
    check_codebook_bits(cfg.codebook_bits)
    check_per_channel(cfg.per_channel)
    if cfg.method in RETRAINING_METHODS:
        check_siq_config(cfg.siq)
    if cfg.method == "siq+":
        check_plus_config(cfg.plus)
    quantizable(float_net.arch)
    bits = cfg.bits_per_layer(float_net)
    seed_everything(cfg.seed)
    net = copy.deepcopy(float_net).float()
    rng = np.random.default_rng(cfg.seed)
    calib = train_x[rng.permutation(len(train_x))[:cfg.calibration_images]]
    shifts = calibrate_shifts(net, calib, act_bits, cfg.calibration, input_bits)
    context = {"config": cfg, "seed": cfg.seed, "train": (train_x, train_y), "shifts": shifts,
               "per_channel": cfg.per_channel_layers(net)}
    books = METHODS[cfg.method](net, bits, context)
    shifts = context["shifts"]  # a method may have trained them (siq+)
    layers = {i: snap_codebook(c, a.reshape(net.layers[i].weight.shape), bits[i], cfg.codebook_bits)
              for i, (c, a) in books.items()}
    biases = quantize_biases(net.arch, net, shifts, layers)
    info = {"method": cfg.method, "config": _jsonable(asdict(cfg)), "history": context.get("history", []),
            **(meta or {})}
    return QuantizedModel(net.arch, act_bits, shifts, layers, biases, list(class_names), info, input_bits), net


def _jsonable(d):
    if isinstance(d, dict):
        return {str(k): _jsonable(v) for k, v in d.items()}
    return d

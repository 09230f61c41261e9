"""What a quantization run is asked to do: the common settings (QuantizeConfig), SIQ's retraining schedule
(SIQConfig) and siq+'s ingredients (SIQPlusConfig), each refused before any training when it cannot run.

Every field is part of a run's identity (the model file records asdict(QuantizeConfig)), so a field is only
ever added with a default that reproduces what runs did before it existed."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..arch import Conv
from ..errors import SiqError
from ..nets import Net
from ..quant import CHANNEL_STEP_MODES, DEFAULT_CALIBRATION, check_bits, quantization_points
from ..train import TrainConfig

# Which weighted layers get one codebook per output channel instead of one per layer: "depthwise" (the default)
# the grouped convs whose output channels each read one input channel, "none" no layer, "conv" every conv, "all"
# every layer. A depthwise kernel is a handful of weights (9 for 3x3) that its folded batch norm scales per
# channel, so one codebook across channels spends its entries on the ranges of a few channels; a row per channel
# holds at most 9 entries. ds-cnn-28 on Fashion-MNIST (k-means W4A4 without retraining, first 1,000 test images,
# float 91.5 %): 79.3 % with one codebook per layer, 82.7 % with a row per channel for the depthwise convs. A
# network without depthwise convs (the paper's, resnet8) quantizes exactly as with "none".
PER_CHANNEL_CHOICES = ("depthwise", "none", "conv", "all")
DEFAULT_PER_CHANNEL = "depthwise"

# Which feature maps get a power-of-two step per channel instead of one per map (quant.channel_step_points):
# "none" (the default); "depthwise" the relu after a conv that only depthwise convs read, where batch norm leaves
# channels with ranges octaves apart and no op ever has to align two channels (lowering folds each channel's step
# into the codebook rows on both sides of the point); "separable" also the relu after a depthwise conv that only
# pointwise convs read (the depthwise conv requantizes each channel with its own shift, the pointwise conv shifts
# each input channel's codes onto the finest channel's step).
CHANNEL_STEP_CHOICES = ("none", *CHANNEL_STEP_MODES)


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
    # retraining).
    augment_shift: int = 0
    augment_flip: bool = False
    # Dropout rate during retraining (None = the architecture's). A float network trained at another rate (e.g.
    # --dropout 0.2) is otherwise retrained at the architecture's 0.5.
    dropout: float | None = None

    def train_config(self, batch_size: int, seed: int) -> TrainConfig:
        """One round's retraining schedule."""
        return TrainConfig(epochs=self.epochs_per_round, batch_size=batch_size, lr=self.lr, seed=seed,
                           augment_shift=self.augment_shift, augment_flip=self.augment_flip, dropout=self.dropout)


@dataclass
class SIQPlusConfig:
    """Beyond the paper: what `siq+` adds to SIQ, each switchable for ablation.
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
        stays shift-only. Off by default.
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


# siq+ ingredients by their short name (CLI --plus-off, method variants like "siq+-distill")
PLUS_INGREDIENTS = {"fc": "quantize_fc", "centroids": "finetune_centroids", "distill": "distill",
                    "progressive": "progressive", "steps": "learn_act_steps"}


@dataclass
class QuantizeConfig:
    method: str = "siq"
    conv_bits: int = 4
    fc_bits: int = 8
    layer_bits: dict = field(default_factory=dict)  # weighted layer index -> bits, overrides conv/fc bits
    act_bits: int = 4
    input_bits: int | None = None  # the input image's code width; None = act_bits (the paper: one width for all)
    point_widths: dict = field(default_factory=dict)  # feature-map quantization point -> its own code width
    codebook_bits: int = 8
    seed: int = 0
    calibration_images: int = 2000
    calibration: str = DEFAULT_CALIBRATION  # activation-shift rule (quant.CALIBRATION_RULES)
    per_channel: str = DEFAULT_PER_CHANNEL  # codebooks per output channel (PER_CHANNEL_CHOICES)
    channel_layers: list = field(default_factory=list)  # weighted layer indices with codebooks per output channel
    #                                                     besides those per_channel names (siq fit chooses them)
    equalize: bool = False  # cross-layer equalization of the folded float network first (quant/equalize.py)
    channel_steps: str = "none"  # feature maps with a step per channel (CHANNEL_STEP_CHOICES)
    batch_size: int = 64
    siq: SIQConfig = field(default_factory=SIQConfig)
    plus: SIQPlusConfig = field(default_factory=SIQPlusConfig)

    def bits_per_layer(self, net: Net) -> dict[int, int]:
        check_layer_bits(net.arch, self.layer_bits)
        bits = {}
        for i in net.arch.weighted_layers():
            default = self.conv_bits if isinstance(net.arch.layers[i], Conv) else self.fc_bits
            bits[i] = check_bits(self.layer_bits.get(i, default), f"weight bits of layer {i}")
        return bits

    def per_channel_layers(self, net: Net) -> set[int]:
        """Weighted layers whose codebooks are per output channel."""
        check_per_channel(self.per_channel)
        check_layer_indices(net.arch, self.channel_layers, "per-channel codebook layers")
        return {i for i in net.arch.weighted_layers()
                if self.per_channel == "all" or (self.per_channel == "conv" and isinstance(net.arch.layers[i], Conv))
                or (self.per_channel == "depthwise" and depthwise(net.arch, i))
                or i in self.channel_layers}


def check_point_widths(arch, widths: dict) -> dict[int, int]:
    """Per-point activation widths, checked: each key a feature-map quantization point (the input's width is
    input_bits), each width 1..8."""
    points = quantization_points(arch)
    stray = sorted(p for p in widths if p not in points)
    if stray:
        raise SiqError(f"--point-bits: {', '.join(map(str, stray))} of architecture {arch.name!r} "
                       f"{'is not a quantization point' if len(stray) == 1 else 'are not quantization points'}; "
                       f"the points are {', '.join(map(str, points))} (the input's width is --input-bits)")
    return {int(p): check_bits(w, f"activation bits of point {p}") for p, w in sorted(widths.items())}


def depthwise(arch, i: int) -> bool:
    """A grouped conv whose every output channel reads one input channel (weights [C_OUT, 1, KH, KW])."""
    layer = arch.layers[i]
    return isinstance(layer, Conv) and layer.groups > 1 and arch.weight_shape(i)[1] == 1


def check_layer_bits(arch, layer_bits: dict) -> None:
    """Refuse per-layer bits for an index that is not a conv or dense layer: it would be ignored silently."""
    check_layer_indices(arch, layer_bits, "--layer-bits")


def check_layer_indices(arch, indices, what: str) -> None:
    """Refuse a per-layer setting for an index that is not a conv or dense layer: it would be ignored silently."""
    weighted = arch.weighted_layers()
    stray = sorted(i for i in indices if i not in weighted)
    if stray:
        raise SiqError(f"{what}: layer(s) {', '.join(map(str, stray))} of architecture {arch.name!r} carry no "
                       f"weights; the weighted layers are {', '.join(map(str, weighted))}")


def check_per_channel(choice) -> str:
    if choice not in PER_CHANNEL_CHOICES:
        raise SiqError(f"per-channel codebooks must be one of {', '.join(PER_CHANNEL_CHOICES)}, got {choice!r}")
    return choice


def check_channel_steps(cfg: QuantizeConfig, folds_real_steps: bool) -> str:
    """Refuse a choice of channel steps that cannot run: unknown, with a rule that does not make them, or with
    siq+'s real steps (their folding scales a map as one tensor; not measured with steps per channel)."""
    if cfg.channel_steps not in CHANNEL_STEP_CHOICES:
        raise SiqError(f"channel steps must be one of {', '.join(CHANNEL_STEP_CHOICES)}, got {cfg.channel_steps!r}")
    if cfg.channel_steps != "none" and cfg.calibration == "sequential":
        raise SiqError("channel steps need the float or output calibration rule, not sequential")
    if cfg.channel_steps != "none" and folds_real_steps:
        raise SiqError("channel steps: siq+'s real steps fold one factor per feature map; leave out --real-steps")
    return cfg.channel_steps


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

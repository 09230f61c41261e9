"""The option groups subcommands share, the value parsers, and the step from parsed options to config objects.

An option's checks live with the config it feeds (codegen/api.py, training/quantizers/config.py); messages raised here
name the command-line option (--plus-off, --epochs, ...) because only here is it known which one was meant.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import replace

from siq.codegen.api import check_quantize_config, check_schedule, train_config as schedule_for
from siq.codegen.fit.budget import parse_count, parse_size
from siq.codegen.lower import IDENTIFIER
from siq.codegen.preflight import SEED_MAX
from siq.training.data import DATASETS
from siq.training.device import check_device
from siq.training.errors import SiqError
from siq.training.quant import CALIBRATION_RULES, DEFAULT_CALIBRATION, check_codebook_bits
from siq.training.quantizers import (CHANNEL_STEP_CHOICES, DEFAULT_PER_CHANNEL, METHODS, PER_CHANNEL_CHOICES,
                                     QuantizeConfig, SIQConfig, SIQPlusConfig, check_plus_config, check_siq_config)


def bits(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bit width must be a whole number from 1 to 8, got {text!r}") from None
    if not 1 <= value <= 8:
        raise argparse.ArgumentTypeError(f"bit width must be from 1 to 8, got {value}")
    return value


def whole(low: int, high: int | None = None, what: str = "a whole number"):
    """An argparse type: a whole number in [low, high] (high None = no upper bound), else one line naming it."""
    span = f"from {low} to {high}" if high is not None else f">= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number {span}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be a whole number {span}, got {value}")
        return value
    parse.__name__ = what  # argparse names the type in some messages
    return parse


def real(positive: bool = False, what: str = "a number"):
    """An argparse type: a finite number (> 0 when positive); NaN and Inf are refused here because every check
    after this one (v < 1, v >= 0) lets NaN through or treats Inf as a value."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
        return value
    parse.__name__ = what
    return parse


SEED = whole(0, SEED_MAX, "a seed")
COUNT = whole(1)             # epochs, batch size, rounds, images, jobs: at least one
SHIFT = whole(0, 8, "a shift in pixels")
RATE = real(what="a rate")   # ranges that depend on the option are checked with the config (api.check_schedule)
LEARNING_RATE = real(positive=True, what="a learning rate")


def c_prefix(text: str) -> str:
    """The generated C's name prefix, checked by the lowering's own rule before anything trains."""
    if not IDENTIFIER.fullmatch(text):  # fullmatch: "$" alone would let a trailing newline through
        raise argparse.ArgumentTypeError(f"must be a lower-case C identifier (letters, digits, underscores), "
                                         f"got {text!r}")
    return text


def layer_bits(text: str, option: str = "--layer-bits") -> dict[int, int]:
    """'0=4,4=3' -> {0: 4, 4: 3} (architecture layer index = weight bits)."""
    out = {}
    for part in filter(None, text.split(",")):
        try:
            index, value = part.split("=")
            index = int(index)
            if index < 0:
                raise ValueError(index)
            out[index] = bits(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} wants INDEX=BITS[,INDEX=BITS...], got {part!r}") from None
    return out


def point_bits(text: str) -> dict[int, int]:
    """'2=8,5=2' -> {2: 8, 5: 2} (quantization point = its activation bits)."""
    return layer_bits(text, "--point-bits")


def budget_type(parse, what: str):
    """An argparse type for a budget (codegen/fit/budget.py): one line naming the option when it is bad."""
    def convert(text: str) -> int:
        try:
            return parse(text, what)
        except SiqError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{what} ")) from None
    convert.__name__ = what
    return convert


def widths(text: str, option: str = "--widths") -> list[int]:
    """--widths: '1-8', '2,4,8', '1-3,8' -> the sorted index widths the fit may choose."""
    out = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        try:
            span = range(bits(low), bits(high or low) + 1)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{option} wants widths 1..8 like 1-8 or 2,4,8: {exc}") from None
        if not span:
            raise argparse.ArgumentTypeError(f"{option}: empty range {part!r}")
        out.update(span)
    if not out:
        raise argparse.ArgumentTypeError(f"{option} names no width")
    return sorted(out)


def act_widths(text: str) -> list[int]:
    """--act-widths: the activation widths the fit may give a stored feature map, as --widths reads them."""
    return widths(text, "--act-widths")


def option_name(field: str) -> str:
    """The command-line spelling of a config field: label_smoothing -> --label-smoothing."""
    return "--" + field.replace("_", "-")


def device(text: str) -> str:
    """--device: refused at parse time (one line, exit 2) when this machine cannot train there."""
    try:
        return check_device(text)
    except SiqError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---------------------------------------------------------------- option groups

def add_device(p):
    p.add_argument("--device", type=device, default="cpu",
                   help="where float and fake-quant training run: auto (CUDA when present), cpu, cuda or cuda:N; "
                        "the firmware's arithmetic is computed exactly on the CPU either way (default %(default)s)")


def add_backend(p):
    p.add_argument("--backend", choices=("joblib", "ray"), default="joblib",
                   help="where the cells run: local joblib workers, or Ray tasks (pip install 'siq[cluster]') "
                        "(default %(default)s)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (auto = the one `ray start --head` started here; default: a local "
                        "Ray instance for this run)")
    p.add_argument("--max-retries", type=int, default=2,
                   help="times a failed or lost cell is run again before the study reports it (default %(default)s)")


def add_data(p, default_dataset="mnist5k"):
    p.add_argument("--dataset", default=default_dataset, help=f"one of {', '.join(DATASETS)} (default %(default)s)")
    p.add_argument("--data-dir", help="folder holding the dataset's files (fashion, mnist)")
    p.add_argument("--split-seed", type=SEED, default=0, help="seed of the train/test split where the dataset has none")


def add_train(p):
    p.add_argument("--arch", default="paper-mnist", help="preset (paper-mnist, paper-office) or .toml/.json file")
    p.add_argument("--epochs", type=COUNT, help="default: the dataset's documented schedule")
    p.add_argument("--lr", type=LEARNING_RATE)
    p.add_argument("--batch-size", type=COUNT)
    p.add_argument("--augment-shift", type=SHIFT, help="random translation in pixels during training")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="mirror training images left-right at random (default: the dataset's schedule)")
    p.add_argument("--dropout", type=RATE, help="training dropout rate instead of the architecture's")
    p.add_argument("--label-smoothing", type=RATE)
    p.add_argument("--weight-decay", type=RATE, help="decoupled weight decay (AdamW)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--allow-large", action="store_true",
                   help="train networks above siq's size limits (codegen/preflight.py SIZE_LIMITS: 20M parameters, "
                        "2G MACs per inference, 4 GiB of float activations per training batch)")


def add_quant(p):
    p.add_argument("--method", default="siq", choices=sorted(METHODS))
    p.add_argument("--weight-bits", type=bits, default=4, help="conv kernel bits (default %(default)s)")
    p.add_argument("--act-bits", type=bits, default=4, help="input and feature-map bits (default %(default)s)")
    add_input_bits(p)
    p.add_argument("--fc-bits", type=bits, default=8, help="fully connected layer bits (default %(default)s)")
    p.add_argument("--layer-bits", type=layer_bits, default={}, help="per-layer override, e.g. 0=4,4=3")
    add_point_bits(p)
    add_codebook_bits(p)
    add_siq_schedule(p)
    p.add_argument("--siq-fc", action="store_true", help="retrain the FC layers' codebooks too (beyond the paper)")
    add_siq_penalty(p)
    add_siq_augment(p)
    add_calibration(p)
    add_per_channel(p)
    add_channel_steps(p)
    add_equalize(p)
    p.add_argument("--quant-seed", type=SEED, default=0)
    p.add_argument("--plus-off", default="", help="siq+ ingredients to turn off (ablation), from: "
                   "fc,centroids,distill,progressive,steps")
    add_distill(p)


def add_fit(p):
    """siq fit's budgets, search space and the quantization settings it keeps fixed."""
    p.add_argument("--flash", required=True, type=budget_type(parse_size, "the flash budget"),
                   help="bytes of the model's read-only data as linked: 6144, 6KB, 6KiB (K = 1024)")
    p.add_argument("--ram", type=budget_type(parse_size, "the RAM budget"),
                   help="static RAM and worst-case stack of the model as linked (e.g. 2KB)")
    p.add_argument("--insns", type=budget_type(parse_count, "the instruction budget"),
                   help="instructions per inference on --cpu, counted in QEMU (e.g. 300k; k = 1000)")
    p.add_argument("--cpu", default=None, help="Cortex-M core the model is linked and counted for "
                   "(default cortex-m4; needed with --insns)")
    p.add_argument("--method", default="siq+", choices=sorted(METHODS), help="(default %(default)s)")
    p.add_argument("--act-bits", type=bits, default=4, help="input and feature-map bits (default %(default)s)")
    add_input_bits(p)
    add_codebook_bits(p)
    p.add_argument("--widths", type=widths, default=list(range(1, 9)),
                   help="index widths the fit may give a layer (default 1-8)")
    p.add_argument("--act-widths", type=act_widths, default=None,
                   help="activation widths the fit may give each stored feature map, weighed against --ram "
                        "(e.g. 1-8 or 4,8; default: --act-bits everywhere)")
    p.add_argument("--no-per-channel", action="store_true",
                   help="one codebook per layer only (default: per output channel is a choice too)")
    p.add_argument("--solver", choices=("exact", "greedy"), default="exact",
                   help="exact: dynamic programming over the layers; greedy: sensitivity per byte (ablation)")
    p.add_argument("--validation", type=RATE, default=0.1, metavar="FRACTION",
                   help="fraction of the training data held out to measure sensitivity (default %(default)s)")
    add_siq_schedule(p)
    add_siq_penalty(p)
    add_siq_augment(p)
    add_calibration(p)
    add_distill(p)
    p.add_argument("--quant-seed", type=SEED, default=0)


def fit_quant_config(args) -> QuantizeConfig:
    """The settings siq fit keeps fixed while it chooses the widths (its other options at their defaults)."""
    check_codebook_bits(args.codebook_bits)
    cfg = QuantizeConfig(method=args.method, plus=plus_config(args), act_bits=args.act_bits,
                         codebook_bits=args.codebook_bits, seed=args.quant_seed, siq=siq_config(args),
                         calibration=args.calibration, input_bits=args.input_bits)
    return check_quantize_config(cfg)


def add_codebook_bits(p):
    p.add_argument("--codebook-bits", type=int, default=8,
                   help="fixed-point bits of codebook values (2..15; above 8 the C stores them as int16)")


def add_siq_schedule(p):
    p.add_argument("--siq-rounds", type=COUNT, default=4, help="maximum SIQ rounds")
    p.add_argument("--siq-lr", type=LEARNING_RATE, default=3e-4, help="Adam learning rate of SIQ's retraining")
    p.add_argument("--siq-epochs", type=COUNT, default=2, help="retraining epochs per SIQ round")


def add_distill(p):
    p.add_argument("--distill", type=RATE, default=None, metavar="WEIGHT",
                   help="siq+: weight of the distillation term against the float network, in [0, 1] (0 = off; "
                        "default 0.5)")
    p.add_argument("--distill-temperature", type=RATE, default=None, metavar="T",
                   help="siq+: softmax temperature of the distillation term (default 4)")
    p.add_argument("--real-steps", action="store_true",
                   help="siq+: train the feature-map steps as real numbers, then fold them into the layers around "
                        "them so the firmware stays shift-only (default: power-of-two steps throughout)")
    p.add_argument("--progressive-acts", type=int, default=None, metavar="N",
                   help="siq+: start the activations N bits above the target and lower them one bit a round "
                        "(default 0: the target width from the first round)")


def add_input_bits(p):
    p.add_argument("--input-bits", type=bits, default=None,
                   help="input image bits when they differ from --act-bits (e.g. 8: the sensor's pixels as they "
                        "come; default: --act-bits, as in the paper)")


def add_calibration(p):
    p.add_argument("--calibration", choices=CALIBRATION_RULES, default=DEFAULT_CALIBRATION,
                   help="activation-shift rule. output: each feature map's step moved from the float rule's "
                        "while the quantized network's output gets closer to the float network's (KL divergence; "
                        "under a minute on a ResNet-8); float: each tensor's own squared error on the float "
                        "network; sequential: point by point on the tensors the quantized points before it "
                        "produce (default %(default)s)")


def add_per_channel(p):
    p.add_argument("--per-channel", choices=PER_CHANNEL_CHOICES, default=DEFAULT_PER_CHANNEL,
                   help="one codebook per output channel (a row of 2^bits values each, same fixed-point exponent) "
                        "for the depthwise convs, no layer, the conv layers or all layers, instead of one per layer "
                        "(default %(default)s)")


def add_channel_steps(p):
    p.add_argument("--channel-steps", choices=CHANNEL_STEP_CHOICES, default="none",
                   help="depthwise: a power-of-two step per channel (not one per feature map) at every map only "
                        "depthwise convs read, where batch norm leaves channels octaves apart; separable: also at "
                        "every depthwise conv output only pointwise convs read (they align its channels by shifts); "
                        "`siq arch` lists the maps (default %(default)s)")


def add_point_bits(p):
    p.add_argument("--point-bits", type=point_bits, default={},
                   help="per-point activation bits overriding --act-bits, e.g. 2=8,5=2 (the points: the layers "
                        "whose outputs are stored, `siq arch` lists them)")


def add_equalize(p):
    p.add_argument("--equalize", action="store_true",
                   help="rescale the channels between ReLU-joined convs so that their weights span equal ranges on "
                        "both sides (the same float function; helps post-training k-means and uniform)")


def add_siq_penalty(p):
    p.add_argument("--siq-alpha", type=RATE, default=None,
                   help="weight of the continuation penalty ||w - Q(w)||^2 / ||w||^2 in the first retraining round "
                        "(default 0.1)")
    p.add_argument("--siq-growth", type=RATE, default=None,
                   help="factor by which that penalty's weight grows each round (default 4)")


def add_siq_augment(p):
    p.add_argument("--siq-augment-shift", type=SHIFT, default=0,
                   help="random translation in pixels during SIQ retraining (default: none, as in the paper)")
    p.add_argument("--siq-flip", action="store_true", help="random left-right flips during SIQ retraining")
    p.add_argument("--siq-dropout", type=RATE, default=None,
                   help="dropout rate during SIQ retraining (default: the architecture's, whatever --dropout the "
                        "float network was trained with)")


# ---------------------------------------------------------------- parsed options -> configs

def siq_config(args) -> SIQConfig:
    penalty = {k: getattr(args, a) for k, a in (("alpha", "siq_alpha"), ("growth", "siq_growth"))
               if getattr(args, a) is not None}
    cfg = SIQConfig(rounds=args.siq_rounds, epochs_per_round=args.siq_epochs, lr=args.siq_lr,
                    quantize_fc=getattr(args, "siq_fc", False), augment_shift=args.siq_augment_shift,
                    augment_flip=args.siq_flip, dropout=args.siq_dropout, **penalty)
    check_siq_config(cfg)
    return cfg


_SCHEDULE_OPTIONS = (("epochs", "epochs"), ("lr", "lr"), ("batch_size", "batch_size"),
                     ("augment_shift", "augment_shift"), ("augment_flip", "flip"), ("dropout", "dropout"),
                     ("label_smoothing", "label_smoothing"), ("weight_decay", "weight_decay"))


def train_config(args):
    """The dataset's documented schedule with the options given on the command line."""
    overrides = {field: getattr(args, option) for field, option in _SCHEDULE_OPTIONS
                 if getattr(args, option) is not None}
    check_schedule(overrides, option_name)
    return schedule_for(args.dataset, seed=args.seed, **overrides)


def plus_config(args, off=()) -> SIQPlusConfig:
    """siq+'s ingredients from --distill / --distill-temperature (and --plus-off where the command has it)."""
    try:
        plus = SIQPlusConfig().without(off)
    except SiqError as exc:
        raise SiqError(f"--plus-off: {exc}") from None
    if args.distill is not None:
        if "distill" in off:
            raise SiqError("--distill: the distillation term is turned off by --plus-off distill")
        plus = replace(plus, distill=args.distill)
    if args.distill_temperature is not None:
        plus = replace(plus, temperature=args.distill_temperature)
    if args.real_steps:
        if "steps" in off:
            raise SiqError("--real-steps: the learned activation steps are turned off by --plus-off steps")
        plus = replace(plus, real_steps=True)
    if args.progressive_acts is not None:
        if args.progressive_acts and ("steps" in off or "progressive" in off):
            raise SiqError("--progressive-acts: the learned activation steps or progressive lowering are turned "
                           "off by --plus-off")
        plus = replace(plus, progressive_acts=args.progressive_acts)
    check_plus_config(plus)
    return plus


def quant_config(args) -> QuantizeConfig:
    check_codebook_bits(args.codebook_bits)
    off = [x.strip() for x in args.plus_off.split(",") if x.strip()]
    cfg = QuantizeConfig(method=args.method, plus=plus_config(args, off), conv_bits=args.weight_bits,
                         fc_bits=args.fc_bits, layer_bits=args.layer_bits, act_bits=args.act_bits,
                         point_widths=args.point_bits,
                         codebook_bits=args.codebook_bits, seed=args.quant_seed, siq=siq_config(args),
                         calibration=args.calibration, per_channel=args.per_channel, input_bits=args.input_bits,
                         equalize=args.equalize, channel_steps=args.channel_steps)
    return check_quantize_config(cfg)


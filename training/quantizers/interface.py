"""The typed contract between quantize_model and the methods, and the registry of methods by name.

A method is a function QuantizerInput -> QuantizerOutput. It reads everything it needs from the input and
writes nothing back into it (retraining methods train input.net, which is their own copy of the network), and
hands back float codebooks per weighted layer plus the activation shifts the model should use; quantize_model
then puts the codebooks on the firmware's fixed-point grid."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple

import numpy as np

from ..errors import SiqError
from ..nets import Net
from .config import PLUS_INGREDIENTS, QuantizeConfig


class FloatCodebook(NamedTuple):
    """One weighted layer's float quantization: every weight is centroids[assignment] (per layer, centroids [K]
    sorted) or centroids[o, assignment[o]] (per output channel, centroids [C_OUT, K], each row sorted).
    assignment is int64 in the weight tensor's flat order."""
    centroids: np.ndarray
    assignment: np.ndarray


@dataclass(frozen=True)
class QuantizerInput:
    """Everything a method may use. `net` is the method's own float32 copy of the trained network: retraining
    methods train it in place (quantize_model hands it back to the caller as the retrained network)."""
    net: Net
    bits: dict[int, int]                 # weighted layer index -> weight index bits
    train_x: np.ndarray                  # uint8 [N, 1, H, W]: retraining data
    train_y: np.ndarray                  # int64 [N]
    config: QuantizeConfig               # the method's own settings are config.siq and config.plus
    seed: int
    act_bits: int                        # feature-map code width (checked)
    input_bits: int                      # input image code width (checked; act_bits unless set apart)
    point_widths: dict[int, int]         # feature-map points with their own code width (checked)
    shifts: dict[int, int]               # calibrated activation shift per quantization point (-1 = input)
    per_channel: frozenset[int]          # weighted layers with one codebook row per output channel
    calibration_images: np.ndarray       # the images the shifts were calibrated on
    channel_octaves: dict = field(default_factory=dict)  # point -> per channel, octaves finer than its shift


@dataclass
class QuantizerOutput:
    """What a method hands back: a codebook for every weighted layer, and the activation shifts to use (the
    calibrated ones unless the method trained them)."""
    books: dict[int, FloatCodebook]
    shifts: dict[int, int]
    history: list[dict] = field(default_factory=list)      # one record per retraining round (JSON-serialisable)
    # Real activation steps c 2^-s folded into the layers around each point (1 where steps are powers of two);
    # empty for methods that keep the calibrated power-of-two steps.
    step_scales: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0                                     # wall-clock time of the method (set by run)


Quantizer = Callable[[QuantizerInput], QuantizerOutput]


@dataclass(frozen=True)
class Method:
    """A registered method. retrains: SIQConfig applies (checked before training). ingredients: SIQPlusConfig
    applies, and variants "name-ingredient-..." turn ingredients off (`off`, resolved by resolve_method)."""
    name: str
    run: Quantizer
    retrains: bool = False
    ingredients: bool = False
    off: tuple[str, ...] = ()

    def configure(self, cfg: QuantizeConfig) -> QuantizeConfig:
        """cfg as this method runs it: a variant's ingredients turned off (cfg itself for a registered name)."""
        return replace(cfg, plus=cfg.plus.without(self.off)) if self.off else cfg


METHODS: dict[str, Method] = {}


def register(name: str, retrains: bool = False, ingredients: bool = False):
    """Decorator: register a Quantizer under `name` ('-' is refused: it separates a variant's ingredients)."""
    if "-" in name:
        raise SiqError(f"method name {name!r}: '-' separates siq+ ingredients in method names")

    def wrap(run: Quantizer) -> Quantizer:
        METHODS[name] = Method(name, run, retrains, ingredients)
        return run
    return wrap


def method_variant(name: str) -> tuple[str, list[str]]:
    """"siq+-distill-steps" -> ("siq+", ["distill", "steps"]): a method with siq+ ingredients turned off."""
    base, *off = name.split("-") if isinstance(name, str) else (name,)
    if base not in METHODS:
        raise SiqError(f"unknown quantization method {base!r} (known: {', '.join(sorted(METHODS))})")
    if off and not METHODS[base].ingredients:
        raise SiqError(f"{name!r}: only siq+ has ingredients to turn off")
    unknown = sorted(set(off) - set(PLUS_INGREDIENTS))
    if unknown:
        raise SiqError(f"unknown siq+ ingredient(s) {', '.join(unknown)} (known: {', '.join(PLUS_INGREDIENTS)})")
    return base, off


def resolve_method(name: str) -> Method:
    """The registered method, or the variant of one, called `name`."""
    base, off = method_variant(name)
    return replace(METHODS[base], name=name, off=tuple(off)) if off else METHODS[base]

"""Weight quantizers (server side): uniform, k-means (adaptive), supervised iterative quantization (SIQ) and siq+.

quantize_model prepares one typed QuantizerInput (a float32 copy of the trained network, the bits per layer, the
training data, the calibrated activation shifts, the configs), runs the method registered under the config's
name (METHODS; siq+ variants with ingredients turned off resolve too, e.g. "siq+-distill"), and turns the
QuantizerOutput's float codebooks into a QuantizedModel on the firmware's fixed-point grid. A new method is a
function QuantizerInput -> QuantizerOutput under @register("name") in a module imported here.

Modules: config (QuantizeConfig, SIQConfig, SIQPlusConfig and their checks), interface (input, output,
registry), codebooks (uniform and k-means codebooks, nearest-centroid rule), uniform, kmeans, siq (the retraining
loop and the paper's SIQ), siq_plus (siq+'s ingredients as hooks into that loop), steps (learned activation
steps and their fold). Every name callers use is re-exported here.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict

import numpy as np

from ..arch import MERGES, Arch, Conv
from ..errors import SiqError
from ..nets import Net, fold_batchnorm
from ..quant import (QuantizedModel, calibrate_steps, channel_octave_limits, check_bits, point_bits,
                     check_codebook_bits, equalize_channels, quantizable, quantize_biases, snap_codebook)
from ..train import seed_everything
from . import kmeans, siq, siq_plus, uniform  # noqa: F401  (each module registers its method on import)
from .codebooks import (TrainableCodebook, centroid_values, gather, kmeans_codebook, layer_kmeans, layer_weights,
                        load_book_weights, nearest, nearest_assignment, nearest_index, per_row, uniform_codebook,
                        uniform_codes)
from .config import (CHANNEL_STEP_CHOICES, DEFAULT_PER_CHANNEL, PER_CHANNEL_CHOICES, PLUS_INGREDIENTS,
                     QuantizeConfig, SIQConfig, SIQPlusConfig, check_channel_steps, check_layer_bits,
                     check_layer_indices, check_per_channel, check_plus_config, check_point_widths, check_siq_config)
from .interface import (METHODS, FloatCodebook, Method, Quantizer, QuantizerInput, QuantizerOutput, method_variant,
                        register, resolve_method)
from .siq import Retraining, continuation_penalty, retrain
from .siq_plus import PlusHooks, PlusRetraining
from .steps import LearnedSteps, fold_step_scales

# the methods whose retraining SIQConfig schedules, in registration order
RETRAINING_METHODS = tuple(name for name, method in METHODS.items() if method.retrains)

__all__ = ["CHANNEL_STEP_CHOICES", "DEFAULT_PER_CHANNEL", "METHODS", "PER_CHANNEL_CHOICES", "PLUS_INGREDIENTS",
           "RETRAINING_METHODS", "FloatCodebook", "LearnedSteps", "Method", "PlusHooks", "PlusRetraining",
           "QuantizeConfig", "Quantizer", "QuantizerInput", "QuantizerOutput", "Retraining", "SIQConfig",
           "SIQPlusConfig", "TrainableCodebook", "centroid_values", "check_channel_steps", "check_channel_steps_for",
           "check_layer_bits", "check_layer_indices", "check_method_fits", "check_per_channel", "check_plus_config", "check_point_widths", "check_siq_config", "continuation_penalty", "fold_step_scales",
           "gather", "kmeans_codebook", "layer_kmeans", "layer_weights", "load_book_weights", "method_variant",
           "nearest", "nearest_assignment", "nearest_index", "per_row", "prepare", "quantize_model", "register",
           "resolve_method", "retrain", "run", "uniform_codebook", "uniform_codes"]


def check_channel_steps_for(methods, cfg: QuantizeConfig) -> None:
    """check_channel_steps for each of a sweep's methods (variants with their ingredients turned off), run with
    cfg's calibration, channel steps and siq+ settings: refused before any float model trains."""
    for name in methods:
        method = resolve_method(name)
        configured = method.configure(cfg)
        check_channel_steps(configured, bool(method.ingredients) and configured.plus.learn_act_steps and
                            configured.plus.real_steps)


def check_method_fits(arch: Arch, cfg: QuantizeConfig) -> None:
    """Refuse, before any training, a configuration with nothing to do on this architecture: per-layer bits for
    a layer without weights, or a retraining method whose layers to retrain (conv only, unless the FC layers are
    retrained too) are none of the network's. Layer and point indices are those of the network with batch norm
    folded (as quantization folds it first)."""
    arch = arch.folded()
    check_layer_bits(arch, cfg.layer_bits)
    check_point_widths(arch, cfg.point_widths)
    check_layer_indices(arch, cfg.channel_layers, "per-channel codebook layers")
    method = resolve_method(cfg.method)
    check_channel_steps_for([cfg.method], cfg)
    if not method.retrains:
        return
    cfg = method.configure(cfg)
    if method.ingredients and cfg.plus.learn_act_steps and cfg.plus.real_steps and \
            any(isinstance(layer, MERGES) for layer in arch.layers):
        # fold_step_scales moves a real step into the layers around its point; an add's inputs would need one
        raise SiqError(f"--method {cfg.method}: real activation steps are not supported on architecture "
                       f"{arch.name!r}, which has add or concat layers; keep power-of-two steps")
    fc = cfg.plus.quantize_fc if method.ingredients else cfg.siq.quantize_fc
    if not fc and not any(isinstance(arch.layers[i], Conv) for i in arch.weighted_layers()):
        raise SiqError(f"--method {cfg.method}: architecture {arch.name!r} has no conv layer, and {cfg.method} "
                       "retrains only the conv layers: pass --siq-fc to retrain its dense layers, or use "
                       "--method kmeans")


def prepare(float_net: Net, train_x: np.ndarray, train_y: np.ndarray, cfg: QuantizeConfig) -> QuantizerInput:
    """Check cfg (before any training starts) and build the method's input: a float32 copy of the network, the
    bits per layer and the activation shifts calibrated on a seeded sample of the training images."""
    method = resolve_method(cfg.method)
    act_bits = check_bits(cfg.act_bits, "activation bits")
    input_bits = act_bits if cfg.input_bits is None else check_bits(cfg.input_bits, "input bits")
    check_codebook_bits(cfg.codebook_bits)
    check_per_channel(cfg.per_channel)
    cfg = method.configure(cfg)
    if method.retrains:
        check_siq_config(cfg.siq)
    if method.ingredients:
        check_plus_config(cfg.plus)
    # batch norm is folded first: calibration, codebooks and retraining all see the folded weights, and the
    # quantized model's layer indices are those of the folded architecture
    float_net = fold_batchnorm(float_net)
    quantizable(float_net.arch)
    if cfg.equalize:  # the same function, its channels' weight ranges balanced pair by pair
        float_net = equalize_channels(float_net)
    check_method_fits(float_net.arch, cfg)
    bits = cfg.bits_per_layer(float_net)
    point_widths = check_point_widths(float_net.arch, cfg.point_widths)
    seed_everything(cfg.seed)
    net = copy.deepcopy(float_net).float()
    rng = np.random.default_rng(cfg.seed)
    calib = train_x[rng.permutation(len(train_x))[:cfg.calibration_images]]
    limits = channel_octave_limits(net.arch, cfg.channel_steps, cfg.codebook_bits,
                                   lambda p: point_bits(p, act_bits, input_bits, point_widths))
    shifts, octaves = calibrate_steps(net, calib, act_bits, cfg.calibration, input_bits, point_widths, limits)
    return QuantizerInput(net=net, bits=bits, train_x=train_x, train_y=train_y, config=cfg, seed=cfg.seed,
                          act_bits=act_bits, input_bits=input_bits, point_widths=point_widths, shifts=shifts,
                          per_channel=frozenset(cfg.per_channel_layers(net)),
                          calibration_images=calib, channel_octaves=octaves)


def run(job: QuantizerInput) -> QuantizerOutput:
    """Run the method job.config names on a prepared input, timed (the time stays out of the model's record:
    it differs from run to run)."""
    start = time.time()
    out = resolve_method(job.config.method).run(job)
    out.seconds = time.time() - start
    return out


def quantize_model(float_net: Net, train_x: np.ndarray, train_y: np.ndarray, cfg: QuantizeConfig,
                   class_names: list[str], meta: dict | None = None) -> tuple[QuantizedModel, Net]:
    """Quantize a trained float network; returns the quantized model and the (possibly retrained) float net."""
    job = prepare(float_net, train_x, train_y, cfg)
    out = run(job)
    net, cfg = job.net, job.config
    missing = sorted(set(job.bits) - set(out.books))
    if missing:
        raise SiqError(f"quantization method {cfg.method!r} left layer(s) {missing} without a codebook")
    layers = {i: snap_codebook(c, a.reshape(net.layers[i].weight.shape), job.bits[i], cfg.codebook_bits)
              for i, (c, a) in out.books.items()}
    biases = quantize_biases(net.arch, net, out.shifts, layers, job.channel_octaves)
    info = {"method": cfg.method, "config": _jsonable(asdict(cfg)), "history": out.history, **(meta or {})}
    return QuantizedModel(net.arch, job.act_bits, out.shifts, layers, biases, list(class_names), info,
                          job.input_bits, dict(job.point_widths), dict(job.channel_octaves)), net


def _jsonable(d):
    if isinstance(d, dict):
        return {str(k): _jsonable(v) for k, v in d.items()}
    return d

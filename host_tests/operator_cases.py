"""Shared by the operator tests: a tiny random model of an architecture, quantized, then checked four ways —
PyTorch fake-quant (float64), the numpy integer reference, and the host C in the default build and under
-DSIQ_REFERENCE_KERNELS — on random uint8 inputs, exactly."""
from __future__ import annotations

import numpy as np
import torch

from siq.codegen.export import write_sources
from siq.codegen.host import build_host
from siq.codegen.lower import lower
from siq.training.arch import Arch
from siq.training.integer import integer_scores
from siq.training.nets import Net
from siq.training.quant import evaluate_exact
from siq.training.quantizers import QuantizeConfig, quantize_model

BUILDS = {"default": [], "reference": ["-DSIQ_REFERENCE_KERNELS"], "dsp": ["-DSIQ_EMULATE_DSP"]}


def random_images(arch: Arch, rng: np.random.Generator, n: int = 24) -> np.ndarray:
    c, h, w = arch.input
    return np.concatenate([rng.integers(0, 256, (n, c, h, w), dtype=np.uint8),
                           (rng.random((4, c, h, w)) ** 4 * 255).astype(np.uint8),
                           np.full((1, c, h, w), 255, np.uint8)])


def random_net(arch: Arch, seed: int) -> Net:
    """Random weights; batch norm layers get random running statistics and affine terms."""
    torch.manual_seed(seed)
    net = Net(arch)
    with torch.no_grad():
        for module in net.layers:
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return net.eval()


def check_four_ways(arch: Arch, seed: int, tmp_path, act_bits: int = 4, weight_bits: int = 4,
                    builds=("default", "reference"), n: int = 24, point_widths: dict | None = None):
    """Quantize a random net of `arch`, lower it, and require torch == numpy == C (each build) on every score.
    Returns the quantized and the lowered model."""
    rng = np.random.default_rng(seed)
    images = random_images(arch, rng, n)
    net = random_net(arch, seed)
    # random weights: no trained function for the output rule to keep; each tensor's squared error sets its step
    cfg = QuantizeConfig(method="kmeans", conv_bits=weight_bits, fc_bits=weight_bits, act_bits=act_bits,
                         calibration_images=len(images), calibration="float", seed=seed % 5,
                         point_widths=point_widths or {})
    classes = net.arch.num_classes
    qm = quantize_model(net, images, np.arange(len(images)) % classes, cfg, [f"c{k}" for k in range(classes)])[0]
    lm = lower(qm)
    expected = integer_scores(lm.integer, images)
    torch_scores = evaluate_exact(qm, Net(qm.arch), images)
    assert np.array_equal(torch_scores, expected), "PyTorch fake-quant differs from the numpy reference"
    write_sources(lm, tmp_path)
    for name in builds:
        host = build_host(tmp_path, lm.prefix, tmp_path / f"build-{name}", extra_flags=BUILDS[name])
        scores, _ = host.infer(images)
        bad = np.flatnonzero(np.any(scores != expected, axis=1))
        assert len(bad) == 0, (f"{name} build: {len(bad)} images differ, first {bad[0]}: "
                               f"expected {expected[bad[0]].tolist()}, got {scores[bad[0]].tolist()}")
    return qm, lm

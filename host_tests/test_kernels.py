"""Optimised kernels against the numpy integer reference, beside the reference kernels on the same data.

Every model is built three ways from one generated source: the default build (optimised kernels, portable C on
the host), -DSIQ_EMULATE_DSP (the dual-16-bit SMLAD code path of Cortex-M4/M7 on portable twins of the
intrinsics) and -DSIQ_REFERENCE_KERNELS (the plain loops). Scores are compared exactly with the numpy reference.
"""
from __future__ import annotations

import numpy as np
import pytest

from siq.codegen.export import render_sources, write_sources
from siq.codegen.host import build_host
from siq.codegen.lower import lower
from siq.training.integer import integer_scores
from siq.training.quantizers import QuantizeConfig, quantize_model

BUILDS = {"fast": [], "dsp": ["-DSIQ_EMULATE_DSP"], "reference": ["-DSIQ_REFERENCE_KERNELS"]}

FAST_KERNELS = {8: [None, "conv2d_requant_maxpool_k3", "lrn_requant_window", "conv2d_requant_maxpool_k5",
                    "dense_requant_fast", "dense_scores_fast"],
                4: [None, "conv2d_requant_maxpool_k3_o4", "lrn_requant_window_i4", "conv2d_requant_maxpool_k5_i4",
                    "dense_requant_fast", "dense_scores_fast"]}


def _quantize(net, images, wbits, abits, fc_bits=None, codebook_bits=8):
    # kernels against their twins: how the steps were chosen plays no part, so the seconds-fast tensor rule
    cfg = QuantizeConfig(method="kmeans", conv_bits=wbits, fc_bits=fc_bits or wbits, act_bits=abits,
                         calibration_images=100, calibration="float", codebook_bits=codebook_bits)
    labels = np.arange(len(images)) % net.arch.num_classes
    return quantize_model(net, images, labels, cfg, [f"c{i}" for i in range(net.arch.num_classes)])[0]


def _check_builds(qm, images, tmp_path, builds=tuple(BUILDS)):
    lm = lower(qm)
    write_sources(lm, tmp_path)
    expected = integer_scores(lm.integer, images)
    for name in builds:
        host = build_host(tmp_path, lm.prefix, tmp_path / f"build-{name}", extra_flags=BUILDS[name])
        scores, classes = host.infer(images)
        bad = np.flatnonzero(np.any(scores != expected, axis=1))
        assert len(bad) == 0, (f"{name} build: {len(bad)} images differ, first {bad[0]}: "
                               f"expected {expected[bad[0]].tolist()}, got {scores[bad[0]].tolist()}")
        np.testing.assert_array_equal(classes, expected.argmax(axis=1))
    return lm


@pytest.mark.parametrize("act_bits", [1, 2, 4, 8])
@pytest.mark.parametrize("weight_bits", range(1, 9))
def test_fast_kernels_every_width(weight_bits, act_bits, fast_setup, tmp_path):
    net, images = fast_setup
    lm = _check_builds(_quantize(net, images, weight_bits, act_bits), images, tmp_path)
    assert [op.fast_kernel for op in lm.ops] == FAST_KERNELS[8 if act_bits > 4 else 4]


@pytest.mark.parametrize("codebook_bits", [9, 15])
@pytest.mark.parametrize("weight_bits, act_bits", [(2, 4), (8, 8)])
def test_int16_codebooks_in_every_build(weight_bits, act_bits, codebook_bits, fast_setup, tmp_path):
    """Codebook values wider than int8 (up to 15 bits: the DSP lane pairing's limit) through the same kernels."""
    net, images = fast_setup
    qm = _quantize(net, images, weight_bits, act_bits, codebook_bits=codebook_bits)
    widest = max(int(np.max(np.abs(lc.codebook))) for lc in qm.layers.values())
    assert 2 ** (codebook_bits - 2) <= widest < 2 ** (codebook_bits - 1)
    lm = _check_builds(qm, images, tmp_path)
    assert lm.codebook_type == "int16_t"
    assert "static const int16_t layer0_codebook[" in (tmp_path / "siq_model.c").read_text()


@pytest.mark.parametrize("preset", ["paper-mnist", "paper-office"])
def test_presets_fast_and_reference(preset, preset_nets, rng, tmp_path):
    net = preset_nets[preset]
    c, h, w = net.arch.input
    images = (rng.random((48, c, h, w)) ** 3 * 255).astype(np.uint8)
    lm = _check_builds(_quantize(net, images, 4, 4, fc_bits=8), images, tmp_path)
    fast = [op.fast_kernel for op in lm.ops if op.kernel == "conv2d_requant_maxpool"]
    # paper-office pads its convs: those keep the reference kernel (the fast conv needs pad 0)
    assert fast == (["conv2d_requant_maxpool_k5_i4_o4", "conv2d_requant_maxpool_k5_i4"] if preset == "paper-mnist"
                    else [None] * 3)
    if preset == "paper-mnist":  # W4A4: input codes, conv1 and LRN1 outputs two a byte; the 1 KB arena goal
        assert [op.out_bits for op in lm.ops] == [4, 4, 4, 8, 8, 8, 8] and lm.arena_bytes <= 1024


def test_reference_only_lowering_emits_no_fast_code(fast_setup):
    net, images = fast_setup
    qm = _quantize(net, images, 4, 4)
    plain = render_sources(lower(qm, fast=False))["siq_model.c"]
    assert "conv2d_requant_maxpool_k3" not in plain and "SIQ_DSP" not in plain
    assert "conv2d_requant_maxpool_k3_o4(" in render_sources(lower(qm))["siq_model.c"]


@pytest.mark.parametrize("codebook_bits", [8, 15])
def test_fast_kernels_bit_exact_on_cortex_m4(codebook_bits, preset_nets, rng, tmp_path):
    """The real SMLAD path (ACLE intrinsics, unaligned word loads) on the emulated Cortex-M4, with int8 codebooks
    and with int16 ones at the widest values the lane pairing allows."""
    from siq.codegen import target
    net = preset_nets["paper-mnist"]
    images = (rng.random((64, 1, 28, 28)) ** 3 * 255).astype(np.uint8)
    qm = _quantize(net, images, 4, 4, fc_bits=8, codebook_bits=codebook_bits)
    lm = lower(qm)
    write_sources(lm, tmp_path / "model")
    scores = integer_scores(lm.integer, images)
    result = target.run_self_test(tmp_path / "model", lm.prefix, "cortex-m4", None, images.reshape(64, -1),
                                  scores.argmax(axis=1), scores, "-O2", work_dir=tmp_path / "m4")
    assert result["mismatches"] == 0, result["first_mismatch"]

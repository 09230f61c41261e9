"""An input image wider (or narrower) than the feature maps (`--input-bits`): e.g. 8-bit pixels as a sensor gives
them with 2-bit feature maps. The input point has its own code range 0 .. 2^input_bits - 1 in the fake-quant
model, the numpy integer reference and every C build; the first layer's accumulator bound is proven for it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from siq.codegen.export import render_sources, write_sources
from siq.codegen.lower import lower
from test_per_channel import assert_scores_equal, check_builds, host_scores
from siq.training.integer import accumulator_bound, build_integer_model, integer_scores
from siq.training.quant import evaluate_exact, load_quantized, save_quantized
from siq.training.quantizers import QuantizeConfig, quantize_model


def quantized(net, images, act_bits: int, input_bits: int | None, conv_bits: int = 4, fc_bits: int = 8):
    cfg = QuantizeConfig(method="kmeans", conv_bits=conv_bits, fc_bits=fc_bits, act_bits=act_bits,
                         input_bits=input_bits, calibration_images=100)
    labels = np.arange(len(images)) % net.arch.num_classes
    return quantize_model(net, images, labels, cfg, [f"c{i}" for i in range(net.arch.num_classes)])[0]


# (activation bits, input bits) -> the fast kernels chosen: an 8-bit input is never stored as nibbles, 4-bit
# feature maps still are
CASES = {(2, 8): [None, "conv2d_requant_maxpool_k3_o4", "lrn_requant_window_i4", "conv2d_requant_maxpool_k5_i4",
                  "dense_requant_fast", "dense_scores_fast"],
         (4, 8): [None, "conv2d_requant_maxpool_k3_o4", "lrn_requant_window_i4", "conv2d_requant_maxpool_k5_i4",
                  "dense_requant_fast", "dense_scores_fast"],
         (8, 3): [None, "conv2d_requant_maxpool_k3", "lrn_requant_window", "conv2d_requant_maxpool_k5",
                  "dense_requant_fast", "dense_scores_fast"]}


@pytest.mark.parametrize("act_bits, input_bits", CASES)
def test_every_build_bit_exact(act_bits, input_bits, fast_setup, tmp_path):
    net, images = fast_setup
    qm = quantized(net, images, act_bits, input_bits)
    assert (qm.act_bits, qm.input_bits) == (act_bits, input_bits)
    lm, expected = check_builds(qm, images, tmp_path)
    assert [op.fast_kernel for op in lm.ops] == CASES[(act_bits, input_bits)]
    first = lm.ops[0]
    assert first.kernel == "quantize_input" and first.params.max_code == 2**input_bits - 1
    if input_bits > 4:
        assert first.out_bits == 8  # never nibbles (a fast 3x3 conv reads bytes anyway: the (8, 3) case)
    assert all(op.params.max_code == 2**act_bits - 1 for op in lm.ops[1:] if getattr(op.params, "max_code", 0))
    # the fake-quant float64 model computes the same scores
    assert_scores_equal(evaluate_exact(qm, net, images), expected, "fake-quant model")
    header = render_sources(lm)[f"{lm.prefix}.h"]
    assert f"#define {lm.prefix.upper()}_INPUT_BITS {input_bits}\n" in header
    assert f"#define {lm.prefix.upper()}_ACTIVATION_BITS {act_bits}\n" in header


def test_input_codes_use_their_own_range(fast_setup, tmp_path):
    """8-bit input codes reach 255 (the all-255 image), so a C or reference that clamped the input to the
    feature maps' 2-bit range would compute other scores; the same model with a 2-bit input differs too."""
    net, images = fast_setup
    qm = quantized(net, images, 2, 8)
    model = build_integer_model(qm)
    from siq.training.integer import quantize_input
    codes = quantize_input(images, model.ops[0])
    assert codes.max() > 3
    narrow = quantized(net, images, 2, None)
    assert narrow.input_bits == 2 and narrow.shifts[-1] != qm.shifts[-1]
    assert np.any(integer_scores(model, images) != integer_scores(build_integer_model(narrow), images))
    # the first conv's accumulator bound is proven for 8-bit input codes, the second's for 2-bit feature maps
    first, second = [op for op in model.ops if hasattr(op, "acc_bound")][:2]
    lc0, lc4 = qm.layers[0], qm.layers[4]
    assert first.acc_bound >= accumulator_bound(lc0.codebook, lc0.indices, qm.biases[0], 255)
    assert second.acc_bound >= accumulator_bound(lc4.codebook, lc4.indices, qm.biases[4], 3)
    assert first.acc_bound > accumulator_bound(lc0.codebook, lc0.indices, qm.biases[0], 3)


def test_model_file_keeps_input_bits(fast_setup, tmp_path):
    net, images = fast_setup
    qm = quantized(net, images, 2, 8)
    save_quantized(tmp_path / "q.pt", qm)
    loaded = load_quantized(tmp_path / "q.pt")
    assert (loaded.act_bits, loaded.input_bits) == (2, 8)
    np.testing.assert_array_equal(integer_scores(build_integer_model(loaded), images),
                                  integer_scores(build_integer_model(qm), images))
    same = quantized(net, images, 3, None)
    assert same.input_bits == 3


def test_siq_plus_learns_the_input_step_in_its_range(fast_setup):
    """siq+ trains the activation steps; with an 8-bit input the input point's codes span 0..255."""
    from siq.training.quantizers import LearnedSteps
    steps = LearnedSteps({-1: 8, 1: 2}, bits=2, input_bits=8)
    x = torch.linspace(0, 1, 257)
    assert float(steps.quantize(-1, x).detach().max() * 2**8) == 255
    assert float(steps.quantize(1, x).detach().max() * 2**2) == 3


def test_refused_input_bits(fast_setup):
    from siq.training.errors import SiqError
    net, images = fast_setup
    with pytest.raises(SiqError, match="input bits"):
        quantized(net, images, 2, 9)


def test_corrupt_input_bits_in_a_model_file_are_refused(fast_setup, tmp_path):
    from siq.training.errors import SiqError
    net, images = fast_setup
    qm = quantized(net, images, 2, 8)
    qm.input_bits = 9
    save_quantized(tmp_path / "q.pt", qm)
    with pytest.raises(SiqError, match="input bits"):
        load_quantized(tmp_path / "q.pt")

"""conv2d_general_requant_band (channels-innermost staged rows, two output channels by two pixels a pass) against
its numpy twin conv2d_general_requant, on shapes reaching every path: input channels a multiple of 4 and not
(padding channels), strides 1 and 2 each way, padding on any side, kernel widths 1, 3 and 5, odd output widths
(the unstored extra pixel), groups, a ring of KH rows moved by the stride with several tiles, a band holding every
row staged once for several tiles, and 2/4/8-bit codes in and out; on the host (portable, emulated-DSP and reference
builds) and on emulated Cortex-M4 (SIQ_DSP body) and Cortex-M0 (portable body)."""
from __future__ import annotations

import numpy as np
import pytest

from siq.codegen import kernels
from siq.codegen.export import write_sources
from siq.codegen.lower import lower
from siq.codegen.plan import GreedyPlanner
from siq.codegen.target import run_self_test
from siq.training.arch import Arch
from siq.training.integer import Conv2dGeneralRequant, integer_scores
from siq.training.quantizers import QuantizeConfig, quantize_model

from operator_cases import check_four_ways, random_images, random_net

HEAD = [{"type": "flatten"}, {"type": "dense", "out": 3}]
ARCHS = {
    # 8 channels (whole words) 'same' 3x3 on odd widths; 6 channels, 3x5 kernel, stride 2 rows, asymmetric padding
    # (the ring keeps one row); a 1x1 stride-2 conv of 5 channels (a ResNet shortcut's shape)
    "mixed": ([8, 7, 9], [
        {"type": "conv", "out": 6, "k": 3, "pad": "same"}, {"type": "relu"},
        {"type": "conv", "out": 5, "k": [3, 5], "stride": [2, 1], "pad": [1, 0, 2, 2]}, {"type": "relu"},
        {"type": "conv", "out": 7, "k": 1, "stride": 2}, {"type": "relu"}]),
    # groups of 3 channels, a 1x3 kernel with column stride 2, then a 2x1 kernel with row stride 2
    "grouped": ([6, 6, 5], [
        {"type": "conv", "out": 4, "k": [1, 3], "stride": [1, 2], "pad": [0, 0, 1, 1], "groups": 2},
        {"type": "relu"}, {"type": "conv", "out": 3, "k": [2, 1], "stride": [2, 1]}, {"type": "relu"}]),
    # every row staged once, odd tiles of a group (8 + 8 + 7)
    "wide": ([32, 9, 6], [{"type": "conv", "out": 46, "k": [3, 4], "pad": "same", "groups": 2}, {"type": "relu"}]),
    # a ring of 3 rows restaged by 20 tiles of 2 channels
    "deep": ([64, 12, 7], [{"type": "conv", "out": 40, "k": 3, "pad": 1}, {"type": "relu"}]),
}


def _arch(name: str) -> Arch:
    shape, layers = ARCHS[name]
    return Arch.from_dict({"name": name, "input": shape, "layers": layers + HEAD})


def _bands(lm) -> list:
    return [op.band for op in lm.ops if op.fast_kernel == "conv2d_general_requant_band"]


@pytest.mark.parametrize("name, act_bits, weight_bits", [("mixed", 4, 4), ("mixed", 8, 3), ("mixed", 2, 8),
                                                         ("grouped", 4, 2), ("grouped", 8, 4), ("wide", 4, 4),
                                                         ("deep", 3, 4)])
def test_band_kernel_equals_its_numpy_twin_on_the_host(name, act_bits, weight_bits, tmp_path):
    _, lm = check_four_ways(_arch(name), act_bits, tmp_path, act_bits=act_bits, weight_bits=weight_bits,
                            builds=("default", "reference", "dsp"), n=12)
    general = [op for op in lm.ops if isinstance(op.ir, Conv2dGeneralRequant)]
    assert {op.fast_kernel for op in general} == {"conv2d_general_requant_band"}
    assert all(op.params.tile_channels == op.band.tile and op.params.band_rows == op.band.rows for op in general)


def test_the_shapes_reach_every_band_layout():
    """What the host and target tests cover: both ring kinds, several tiles, padding channels, odd output widths."""
    def lowered(name):
        arch = _arch(name)
        images = random_images(arch, np.random.default_rng(0), n=4)
        cfg = QuantizeConfig(method="kmeans", conv_bits=4, fc_bits=4, act_bits=4, calibration_images=len(images))
        return lower(quantize_model(random_net(arch, 0), images, np.arange(len(images)) % 3, cfg,
                                    ["a", "b", "c"])[0])
    wide, deep, mixed = _bands(lowered("wide"))[0], _bands(lowered("deep"))[0], _bands(lowered("mixed"))
    assert wide.rows > 3 and wide.tile < 23          # every row staged once, several tiles
    assert deep.rows == 3 and deep.tile < 40         # a ring restaged by each tile
    assert [b.channels for b in mixed] == [8, 8, 8]  # 8, 6 and 5 input channels
    assert [b.rows for b in mixed] == [3, 3, 1]


def test_band_layout_fits_its_budget_and_refuses_when_no_channel_pair_fits():
    """deep: 1,152 bytes of taps a channel, a ring of 3 rows of 10 columns of 64 channels (1,920 bytes)."""
    conv = _conv(_arch("deep"))
    for budget in (2 * 1152 + 1920, 5120, 40000):
        layout = kernels.band_layout(conv, budget)
        assert layout.scratch_bytes <= budget and layout.tile % 2 == 0
    assert kernels.band_layout(conv, 40000).rows == 14  # room for every row read (12 + 2 padding): staged once
    assert kernels.band_layout(conv, 2 * 1152 + 1920 - 1) is None


def test_the_planner_grows_a_buffer_only_into_bytes_the_peak_already_pays_for():
    planner = GreedyPlanner()
    planner.add_buffer("a", 100, 0, 1)
    planner.add_buffer("b", 100, 1, 2)
    scratch = planner.add_buffer("scratch", 40, 2, 2)
    arena = planner.plan()  # a and b alive at step 1
    assert arena == 200
    offers = []
    assert planner.grow(scratch, lambda budget: offers.append(budget) or budget // 30 * 30, arena) == 90
    assert offers == [100]  # b leaves 100 bytes at step 2
    assert planner.plan() == arena and scratch.size == 90
    assert planner.grow(scratch, lambda budget: None, arena) == 90


def _conv(arch: Arch) -> Conv2dGeneralRequant:
    images = random_images(arch, np.random.default_rng(0), n=4)
    cfg = QuantizeConfig(method="kmeans", conv_bits=4, fc_bits=4, act_bits=4, calibration_images=len(images))
    lm = lower(quantize_model(random_net(arch, 0), images, np.arange(len(images)) % 3, cfg, ["a", "b", "c"])[0])
    return next(op.ir for op in lm.ops if isinstance(op.ir, Conv2dGeneralRequant))


@pytest.fixture(scope="module", params=[("mixed", 4), ("grouped", 8), ("wide", 4), ("deep", 4)],
                ids=["mixed-A4", "grouped-A8", "wide-A4", "deep-A4"])
def exported(request, tmp_path_factory):
    name, act_bits = request.param
    arch = _arch(name)
    images = random_images(arch, np.random.default_rng(5), n=12)
    cfg = QuantizeConfig(method="kmeans", conv_bits=4, fc_bits=4, act_bits=act_bits, calibration_images=len(images),
                         seed=1)
    qm = quantize_model(random_net(arch, 5), images, np.arange(len(images)) % 3, cfg, ["a", "b", "c"])[0]
    lm = lower(qm)
    directory = tmp_path_factory.mktemp(f"band-{name}")
    write_sources(lm, directory)
    return lm, directory, images


@pytest.mark.parametrize("cpu", ["cortex-m4", "cortex-m0"])
def test_band_kernel_on_the_target(exported, cpu):
    lm, directory, images = exported
    assert "conv2d_general_requant_band" in {op.fast_kernel for op in lm.ops}
    scores = integer_scores(lm.integer, images)
    result = run_self_test(directory, lm.prefix, cpu, None, images, np.argmax(scores, axis=1), scores, "-O2")
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert np.array_equal(result["scores"], scores)

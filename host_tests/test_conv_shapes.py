"""Generalised conv (kh x kw kernels, row/column strides, valid/same/explicit/asymmetric padding, groups, 1-D
convs) bit-exact four ways on small random shapes, and the architecture grammar that declares them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from siq.codegen.export import model_report
from siq.training.arch import Arch, Conv, load_arch
from siq.training.errors import SiqError
from siq.training.integer import Conv2dGeneralRequant

from operator_cases import check_four_ways

HEAD = [{"type": "flatten"}, {"type": "dense", "out": 3}]


def _random_convs(seed: int) -> tuple[list[int], list[dict]]:
    """1-2 random convs (kernel 1-4 x 1-4, stride 1-3 each way, pad in any spelling, groups dividing both channel
    counts, so depthwise too), each followed by relu, on a 1-4 channel input of 3-9 x 3-9 px."""
    rng = np.random.default_rng(1000 + seed)
    shape = [int(rng.integers(1, 5)), int(rng.integers(3, 10)), int(rng.integers(3, 10))]
    layers, (c, h, w) = [], shape
    for _ in range(int(rng.integers(1, 3))):
        kh, kw = int(rng.integers(1, min(4, h) + 1)), int(rng.integers(1, min(4, w) + 1))
        pad = ["valid", "same", int(rng.integers(0, min(kh, kw))),
               [int(rng.integers(0, kh)), int(rng.integers(0, kw))],
               [int(v) for v in rng.integers(0, [kh, kh, kw, kw])]][int(rng.integers(0, 5))]
        groups = int(rng.choice([g for g in range(1, c + 1) if c % g == 0]))
        layers += [{"type": "conv", "out": groups * int(rng.integers(1, 4)), "k": [kh, kw],
                    "stride": [int(rng.integers(1, 4)), int(rng.integers(1, 4))], "pad": pad, "groups": groups},
                   {"type": "relu"}]
        c, h, w = Arch.from_dict({"name": "probe", "input": shape, "layers": layers + HEAD}).shapes()[-3]
    return shape, layers


@pytest.mark.parametrize("seed", range(8))
def test_random_conv_shapes_bit_exact(seed, tmp_path):
    shape, layers = _random_convs(seed)
    arch = Arch.from_dict({"name": f"random{seed}", "input": shape, "layers": layers + HEAD})
    check_four_ways(arch, seed, tmp_path, act_bits=(2, 4, 8)[seed % 3], weight_bits=1 + seed % 8)


CASES = [
    ([2, 7, 9], [{"type": "conv", "out": 3, "k": [3, 2], "stride": [2, 1], "pad": [1, 0, 0, 1]}]),  # asymmetric
    ([4, 6, 6], [{"type": "conv", "out": 4, "k": 3, "pad": "same", "groups": 4}]),                   # depthwise
    ([4, 8, 5], [{"type": "conv", "out": 6, "k": [1, 3], "stride": 2, "pad": "same", "groups": 2}]),  # grouped
    ([3, 12], [{"type": "conv1d", "out": 4, "k": 5, "stride": 2, "pad": "same"}]),                  # 1-D
    ([2, 10], [{"type": "conv1d", "out": 2, "k": 3, "pad": [2, 0], "groups": 2}]),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_fixed_conv_shapes_bit_exact(case, tmp_path):
    shape, convs = CASES[case]
    layers = [layer for conv in convs for layer in (conv, {"type": "relu"})]
    arch = Arch.from_dict({"name": f"fixed{case}", "input": shape, "layers": layers + HEAD})
    _, lm = check_four_ways(arch, case, tmp_path, act_bits=(4, 8, 2)[case % 3])
    assert any(isinstance(op.ir, Conv2dGeneralRequant) for op in lm.ops)
    assert "conv2d_general_requant" in (tmp_path / "siq_model.c").read_text()
    report = model_report(lm)
    general = [i for i, op in enumerate(lm.ops) if op.kernel == "conv2d_general_requant"]
    assert [f"op{i} conv2d_general_requant" for i in general if not lm.ops[i].fast_kernel] == [
        name for name in report["reference_kernel_ops"] if "conv" in name]
    assert all(report["ops"][i]["default_build_kernel"] == (lm.ops[i].fast_kernel or "conv2d_general_requant")
               for i in general)


def test_grammar_from_a_toml_file(tmp_path):
    path = tmp_path / "kws.toml"
    path.write_text('input = [1, 49, 10]\nlayers = [\n'
                    '  {type = "conv", out = 8, k = [10, 4], stride = [2, 2], pad = "same"}, {type = "relu"},\n'
                    '  {type = "conv", out = 8, k = 3, pad = [1, 1, 1, 1], groups = 8}, {type = "relu"},\n'
                    '  {type = "conv", out = 4, k = 1}, {type = "relu"},\n'
                    '  {type = "flatten"}, {type = "dense", out = 12}]\n')
    arch = load_arch(str(path))
    assert arch.shapes()[0] == (8, 25, 5) and arch.shapes()[2] == (8, 25, 5)
    assert arch.layers[0] == Conv(8, (10, 4), (2, 2), "same")
    assert arch.layers[0].padding(49, 10) == (4, 5, 1, 1)  # TensorFlow's "same": the odd row at the bottom
    assert arch.weight_shape(2) == (8, 1, 3, 3)
    again = Arch.from_dict(json.loads(json.dumps(arch.to_dict())))
    assert again == arch


def test_conv1d_is_a_conv_on_one_row():
    arch = Arch.from_dict({"input": [3, 20], "layers": [
        {"type": "conv1d", "out": 4, "k": 5, "stride": 2, "pad": "same"}, {"type": "relu"}] + HEAD})
    assert arch.input == (3, 1, 20)
    assert arch.layers[0] == Conv(4, (1, 5), (1, 2), "same")
    assert arch.shapes()[0] == (4, 1, 10)


def test_square_convs_keep_their_dict_and_kernel():
    """Files and digests of existing architectures stay the same: groups = 1 is not written."""
    arch = load_arch("paper-mnist")
    assert arch.to_dict()["layers"][0] == {"out": 6, "k": 5, "stride": 1, "pad": 0, "type": "conv"}


@pytest.mark.parametrize("layer, message", [
    ({"type": "conv", "out": 4, "k": 3, "groups": 3}, "groups 3 must divide"),
    ({"type": "conv", "out": 4, "k": [3, 0]}, "conv k must be"),
    ({"type": "conv", "out": 4, "k": 3, "pad": "full"}, "conv pad must be"),
    ({"type": "conv", "out": 4, "k": 3, "pad": [1, 2, 3]}, "conv pad must be"),
    ({"type": "conv", "out": 4, "k": [9, 1]}, "does not fit"),
    ({"type": "conv1d", "out": 4, "k": [3, 3]}, "conv1d k must be"),
])
def test_bad_convs_are_refused_naming_the_layer(layer, message):
    with pytest.raises(SiqError, match=message) as info:
        Arch.from_dict({"input": [2, 6, 6], "layers": [layer, {"type": "relu"}] + HEAD})
    assert "layer 0" in str(info.value)



@pytest.mark.parametrize("act_bits, shape, width", [(4, [3, 5, 6], 6), (8, [3, 5, 6], 6), (4, [5, 5, 5], 5),
                                                    (4, [2, 3, 9], 7), (4, [1, 1, 13], 3)])
def test_pointwise_convs_run_the_fast_1x1_kernel(act_bits, shape, width, tmp_path):
    """1x1 stride-1 unpadded convs take conv2d_requant_1x1 in the default build (bytes and 4-bit packed codes),
    bit-exact with the reference build, the emulated-DSP build and numpy. Odd planes put every other plane on an
    odd nibble; odd channel counts leave a single last input plane and a single last output channel; planes that
    are not a multiple of 8 pixels end in a partial group."""
    arch = Arch.from_dict({"name": "pw", "input": shape, "layers": [
        {"type": "conv", "out": width, "k": 1}, {"type": "relu"},
        {"type": "conv", "out": width, "k": 3, "pad": "same", "groups": width}, {"type": "relu"},
        {"type": "conv", "out": 5, "k": 1}, {"type": "relu"}] + HEAD})
    _, lm = check_four_ways(arch, act_bits, tmp_path, act_bits=act_bits, builds=("default", "reference", "dsp"))
    pointwise = [op for op in lm.ops if op.kernel == "conv2d_requant"]
    assert [op.fast_kernel for op in pointwise] == ["conv2d_requant_1x1"] * 2
    assert {op.in_bits for op in pointwise} == {4 if act_bits == 4 else 8}
    assert model_report(lm)["reference_kernel_ops"] == []  # the depthwise conv runs its fast kernel too


# a stack whose pointwise convs (8 -> 8, 6 -> 6, 5 -> 5 channels) and depthwise convs keep their map's shape, on an
# odd 9x7 plane: a full block of POINTWISE_BLOCK pixels and an odd partial one
IN_PLACE_STACK = [{"type": "conv", "out": 8, "k": 3, "pad": "same"}, {"type": "relu"},
                  {"type": "conv", "out": 8, "k": 3, "pad": "same", "groups": 8}, {"type": "relu"},
                  {"type": "conv", "out": 8, "k": 1}, {"type": "relu"},
                  {"type": "conv", "out": 8, "k": [2, 3], "pad": "same", "groups": 8}, {"type": "relu"},
                  {"type": "conv", "out": 6, "k": 1}, {"type": "relu"},
                  {"type": "conv", "out": 6, "k": 1}, {"type": "relu"},
                  {"type": "conv", "out": 6, "k": 3, "pad": "same", "groups": 6}, {"type": "relu"},
                  {"type": "conv", "out": 5, "k": 1}, {"type": "relu"},
                  {"type": "conv", "out": 5, "k": 1}, {"type": "relu"},
                  {"type": "conv", "out": 5, "k": 3, "pad": "same", "groups": 5}, {"type": "relu"}]


@pytest.mark.parametrize("act_bits", range(1, 9))
def test_pointwise_and_depthwise_convs_run_in_place(act_bits, tmp_path):
    """Pointwise convs with as many output as input channels and depthwise convs keeping their map's shape write
    over their input buffer (the reference build copies that input aside first), bit-exact in every build at
    1-8 bit activations (packed codes up to 4 bits, bytes above) and 1-8 bit weights; the arena then holds the
    stack's one map at a time."""
    arch = Arch.from_dict({"name": "inplace", "input": [2, 9, 7], "layers": IN_PLACE_STACK + HEAD})
    _, lm = check_four_ways(arch, act_bits, tmp_path, act_bits=act_bits, weight_bits=9 - act_bits,
                            builds=("default", "reference", "dsp"))
    in_place = [op.fast_kernel for op in lm.ops if op.in_place]
    # the last depthwise conv too where it writes the layout it reads (its output feeds the dense layer as bytes)
    assert in_place[:6] == ["conv2d_general_requant_depthwise", "conv2d_requant_1x1"] * 3
    assert len(in_place) == 6 + (act_bits > 4)
    assert all(op.output == op.input for op in lm.ops if op.in_place)
    maps = {op.output for op in lm.ops if op.kernel in ("conv2d_requant", "conv2d_general_requant")}
    # the first conv's map (reused in place), the two pointwise convs' that change C, the last conv's bytes
    assert len(maps) == 4 - (act_bits > 4)
    assert "reference_copy" in (tmp_path / "siq_model.c").read_text()


@pytest.mark.parametrize("act_bits, pad, stride", [(4, "same", 1), (8, [2, 0, 1, 2], [2, 1]), (2, "valid", 2)])
def test_general_convs_run_the_fast_kernel(act_bits, pad, stride, tmp_path):
    """Depthwise convs of any kernel, stride and padding take conv2d_general_requant_depthwise, grouped convs
    conv2d_general_requant_band, in the default build, bit-exact with the reference and emulated-DSP builds."""
    arch = Arch.from_dict({"name": "dw", "input": [4, 7, 6], "layers": [
        {"type": "conv", "out": 4, "k": [3, 2], "stride": stride, "pad": pad, "groups": 4}, {"type": "relu"},
        {"type": "conv", "out": 4, "k": 3, "pad": 1, "groups": 2}, {"type": "relu"}] + HEAD})
    _, lm = check_four_ways(arch, act_bits, tmp_path, act_bits=act_bits, builds=("default", "reference", "dsp"))
    general = [op for op in lm.ops if op.kernel == "conv2d_general_requant"]
    assert [op.fast_kernel for op in general] == ["conv2d_general_requant_depthwise", "conv2d_general_requant_band"]


def test_general_convs_with_many_taps_run_the_band_kernel_in_tiles(tmp_path):
    """A grouped conv whose taps exceed the band kernel's scratch (46 x 16 x 3 x 4 taps of 2 bytes beside the staged
    rows > BAND_SCRATCH_BYTES, and the model's arena leaves no more) decodes them a tile of output channels at a
    time: three tiles a group of 23, the last odd (8 + 8 + 7), bit-exact with the reference and emulated-DSP
    builds."""
    arch = Arch.from_dict({"name": "wide", "input": [32, 5, 6], "layers": [
        {"type": "conv", "out": 46, "k": [3, 4], "pad": "same", "groups": 2}, {"type": "relu"}] + HEAD})
    _, lm = check_four_ways(arch, 3, tmp_path, act_bits=4, builds=("default", "reference", "dsp"))
    (op,) = [op for op in lm.ops if op.kernel == "conv2d_general_requant"]
    assert (op.fast_kernel, op.params.tile_channels) == ("conv2d_general_requant_band", 8)


def test_general_convs_whose_channel_taps_exceed_the_band_scratch_run_the_per_channel_fast_kernel(tmp_path):
    """A general conv where not even a pair of output channels' taps fit the band kernel's scratch (64 x 8 x 8 taps
    of 2 bytes > BAND_SCRATCH_BYTES) decodes one output channel at a time (conv2d_general_requant_fast), bit-exact with the
    reference and emulated-DSP builds."""
    arch = Arch.from_dict({"name": "deep", "input": [64, 9, 8], "layers": [
        {"type": "conv", "out": 3, "k": 8}, {"type": "relu"}] + HEAD})
    _, lm = check_four_ways(arch, 3, tmp_path, act_bits=4, builds=("default", "reference", "dsp"))
    assert [op.fast_kernel for op in lm.ops if op.kernel == "conv2d_general_requant"] == [
        "conv2d_general_requant_fast"]

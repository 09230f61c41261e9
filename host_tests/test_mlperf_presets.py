"""The MLPerf Tiny presets that need no residual add (DS-CNN, MobileNetV1 0.25) and the DS-CNN sized for 28x28
images: their shapes (MACs as the anchors count them) and random-weight bit-exactness four ways (PyTorch
fake-quant, numpy, host C default and reference builds, and for ds-cnn-28 Cortex-M4 in QEMU)."""
from __future__ import annotations

import numpy as np
import pytest

from siq.training.arch import PRESETS, BatchNorm
from siq.training.integer import check_lowerable

from siq.codegen.target import run_self_test
from siq.training.arch import Conv, GlobalAvgPool
from siq.training.integer import integer_scores

from operator_cases import check_four_ways, random_images


def _macs(arch) -> int:
    shapes = [arch.input] + arch.shapes()
    return sum(int(np.prod(arch.weight_shape(i))) * int(np.prod(shapes[i + 1][1:])) for i in arch.weighted_layers())


@pytest.mark.parametrize("name, macs, classes", [("ds-cnn", 2_656_768, 12), ("mobilenet-v1-0.25", 7_489_664, 2),
                                                 ("ds-cnn-28", 3_776_384, 10)])
def test_preset_shapes(name, macs, classes):
    arch = PRESETS[name]
    assert _macs(arch) == macs and arch.num_classes == classes
    check_lowerable(arch)  # trainable and runnable in C
    assert any(isinstance(l, BatchNorm) for l in arch.layers)


def test_ds_cnn_bit_exact_four_ways(tmp_path):
    qm, lm = check_four_ways(PRESETS["ds-cnn"], 0, tmp_path, act_bits=4, weight_bits=4)
    assert lm.macs == 2_656_768
    assert not any(isinstance(l, BatchNorm) for l in qm.arch.layers)


def test_mobilenet_bit_exact_four_ways(tmp_path):
    _, lm = check_four_ways(PRESETS["mobilenet-v1-0.25"], 1, tmp_path, act_bits=4, weight_bits=4)
    assert lm.macs == 7_489_664


def test_ds_cnn_28_is_the_keyword_network_shaped_for_28x28_pictures():
    arch = PRESETS["ds-cnn-28"]
    assert arch.input == (1, 28, 28) and arch.shapes()[0] == (64, 14, 14)  # conv 64@3x3 stride 2 'same'
    convs = [l for l in arch.layers if isinstance(l, Conv)]
    assert [c.groups for c in convs] == [1] + [64, 1] * 4  # four depthwise-separable blocks
    assert sum(isinstance(l, BatchNorm) for l in arch.layers) == 9
    assert isinstance(arch.layers[-3], GlobalAvgPool)
    assert sum(int(np.prod(arch.weight_shape(i))) + arch.weight_shape(i)[0] for i in arch.weighted_layers()) == 20_490


def test_ds_cnn_28_bit_exact_four_ways_and_on_cortex_m4(tmp_path):
    qm, lm = check_four_ways(PRESETS["ds-cnn-28"], 2, tmp_path, act_bits=4, weight_bits=4)
    assert lm.macs == 3_776_384 and qm.arch.input == (1, 28, 28)
    images = random_images(qm.arch, np.random.default_rng(2), n=4)
    scores = integer_scores(lm.integer, images)
    result = run_self_test(tmp_path, lm.prefix, "cortex-m4", None, images, np.argmax(scores, axis=1), scores, "-O2")
    assert result["mismatches"] == 0 and np.array_equal(result["scores"], scores), result["first_mismatch"]

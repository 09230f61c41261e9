"""The MLPerf Tiny presets that need no residual add (DS-CNN, MobileNetV1 0.25): their reference shapes (MACs as
the anchors count them) and random-weight bit-exactness four ways."""
from __future__ import annotations

import numpy as np
import pytest

from siq.training.arch import PRESETS, BatchNorm
from siq.training.integer import check_lowerable

from operator_cases import check_four_ways


def _macs(arch) -> int:
    shapes = [arch.input] + arch.shapes()
    return sum(int(np.prod(arch.weight_shape(i))) * int(np.prod(shapes[i + 1][1:])) for i in arch.weighted_layers())


@pytest.mark.parametrize("name, macs, classes", [("ds-cnn", 2_656_768, 12), ("mobilenet-v1-0.25", 7_489_664, 2)])
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

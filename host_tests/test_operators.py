"""Batch norm (folded before quantization), relu6/clip (the upper clamp inside requantization) and average /
global average pooling (integer mean, round half up): semantics and bit-exactness four ways."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from siq.training.arch import Arch, AvgPool, BatchNorm, Clip
from siq.training.errors import SiqError
from siq.training.integer import AvgPool2d, avgpool2d, check_lowerable
from siq.training.nets import Net, fold_batchnorm
from siq.training.quant import point_max_code, pool_rounding, quantize_activation
from siq.training.quant.hooks import rounded_mean

from operator_cases import check_four_ways, random_net

HEAD = [{"type": "flatten"}, {"type": "dense", "out": 3}]


def _arch(shape, layers, head=HEAD) -> Arch:
    return Arch.from_dict({"name": "ops", "input": shape, "layers": layers + head})


BN_ARCH = [{"type": "conv", "out": 4, "k": 3, "pad": 1}, {"type": "batchnorm"}, {"type": "relu"},
           {"type": "conv", "out": 4, "k": 3, "groups": 4}, {"type": "batchnorm", "eps": 1e-3}, {"type": "relu"},
           {"type": "flatten"}, {"type": "dense", "out": 6}, {"type": "batchnorm"}, {"type": "relu"}]


def test_folded_net_equals_the_batch_norm_net_in_eval_mode():
    arch = _arch([2, 7, 7], BN_ARCH, [{"type": "dense", "out": 3}])
    net = random_net(arch, seed=3).double()
    folded = fold_batchnorm(net)
    assert not any(isinstance(l, BatchNorm) for l in folded.arch.layers)
    assert len(folded.arch.layers) == len(arch.layers) - 3
    x = torch.rand(16, 2, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-5, rtol=0)


def test_a_channel_constant_in_training_folds_to_zero_weights_and_the_same_function():
    """A depthwise channel reading a dead channel: its batch norm variance is float noise, and the formula would
    fold its weights to about g / sqrt(eps). They multiply zeros, so the fold zeroes them and keeps the bias."""
    arch = _arch([2, 7, 7], BN_ARCH, [{"type": "dense", "out": 3}])
    net = random_net(arch, seed=3).double()
    eps = net.layers[4].eps
    with torch.no_grad():
        net.layers[0].weight[1] = 0.0                # conv channel 1 computes its bias, 0 ...
        net.layers[0].bias[1] = 0.0
        net.layers[1].running_mean[1] = 0.0
        net.layers[1].bias[1] = -5.0                 # ... normalized to -5: its relu never opens
        net.layers[4].running_var[1] = 1e-9          # the depthwise channel reading it was constant
        net.layers[4].running_var[2] = 2e-3 * eps    # a small but live variance folds by the formula
    folded = fold_batchnorm(net)
    dw = folded.layers[2].weight
    assert torch.all(dw[1] == 0) and torch.all(dw[[0, 2, 3]] != 0)
    scale = net.layers[4].weight[2] / torch.sqrt(net.layers[4].running_var[2] + eps)
    assert torch.allclose(dw[2], net.layers[3].weight[2] * scale)
    x = torch.rand(16, 2, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-9, rtol=0)


def test_a_net_without_batch_norm_is_not_refolded():
    net = Net(_arch([1, 5, 5], [{"type": "conv", "out": 2, "k": 3}, {"type": "relu"}]))
    assert fold_batchnorm(net) is net


def test_batch_norm_is_folded_before_quantization_and_absent_from_the_c(tmp_path):
    arch = _arch([2, 7, 7], BN_ARCH, [{"type": "dense", "out": 3}])
    _, lm = check_four_ways(arch, 5, tmp_path)
    source = (tmp_path / "siq_model.c").read_text()
    assert "batch" not in source.lower()
    # layer indices are those of the folded architecture: conv, relu, conv, relu, flatten, dense, relu, dense
    assert [op.ir.layer_index for op in lm.ops if hasattr(op.ir, "indices")] == [1, 3, 6, 7]


@pytest.mark.parametrize("layer", [{"type": "batchnorm"}, {"type": "relu"}])
def test_batch_norm_must_follow_a_weighted_layer(layer):
    with pytest.raises(SiqError, match="batchnorm must directly follow"):
        _arch([1, 6, 6], [{"type": "conv", "out": 2, "k": 3}, layer, {"type": "batchnorm"}])


def test_clip_max_code_rule_is_exact_for_any_clip_value():
    """quantize(min(x, M)) == min(quantize(x), round_half_up(M * 2^s)) for every x, M, step: rounding is monotone."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random(5000) * 10)
    for clip in (6.0, 1.0, 0.3, 2.7, 100.0):
        arch = _arch([1, 4, 4], [{"type": "conv", "out": 2, "k": 3}, {"type": "clip", "max": clip}])
        for shift in (-2, 0, 1, 3, 5):
            for bits in (2, 4, 8):
                top = point_max_code(arch, 1, shift, bits)
                codes = quantize_activation(torch.clamp(x, 0, clip), shift, bits) * 2.0**shift
                assert torch.equal(codes, torch.clamp(torch.floor(x * 2.0**shift + 0.5), 0, top))


@pytest.mark.parametrize("act_bits", [4, 8])
def test_relu6_and_clip_bit_exact(act_bits, tmp_path):
    arch = _arch([2, 6, 6], [{"type": "conv", "out": 4, "k": 3, "pad": 1}, {"type": "relu6"},
                             {"type": "conv", "out": 3, "k": [3, 1], "stride": [1, 2]}, {"type": "clip", "max": 0.4},
                             {"type": "flatten"}, {"type": "dense", "out": 5}, {"type": "clip", "max": 1.5}])
    assert arch.layers[1] == Clip(6.0)
    qm, lm = check_four_ways(arch, act_bits, tmp_path, act_bits=act_bits)
    clamps = {op.ir.layer_index: op.ir.max_code for op in lm.ops if hasattr(op.ir, "indices") and op.ir.max_code}
    assert sorted(clamps) == [1, 3, 6]
    for point, code in clamps.items():
        clip = qm.arch.layers[point].max
        assert code == min(2**act_bits - 1, int(np.floor(clip * 2.0**qm.shifts[point] + 0.5)))


@pytest.mark.parametrize("kernel, stride, pad", [((2, 2), None, 0), ((3, 3), (2, 2), 1), ((3, 2), (1, 2), 1),
                                                 ((1, 3), (1, 1), 0)])
@pytest.mark.parametrize("shift_in, shift_out, out_bits", [(3, 3, 8), (3, 5, 8), (3, 6, 4), (3, 1, 4)])
def test_torch_rounded_mean_equals_the_numpy_twin(kernel, stride, pad, shift_in, shift_out, out_bits):
    """The pool's mean rounded half up onto its own step: finer than its input's, the same, or coarser, and
    clamped where the finer step overflows the output's codes."""
    rng = np.random.default_rng(sum(kernel) + pad)
    codes = rng.integers(0, 256, (3, 4, 7, 9))
    layer = AvgPool(list(kernel), None if stride is None else list(stride), pad)
    arch = _arch([4, 7, 9], [{"type": "avgpool", "k": list(kernel), "stride": stride, "pad": pad}])
    out_shape = arch.shapes()[0]
    count = layer.kernel[0] * layer.kernel[1]
    up, divisor, half = pool_rounding(count, shift_in, shift_out)
    max_code = 2**out_bits - 1
    op = AvgPool2d((4, 7, 9), out_shape, layer.kernel, layer.strides, pad, up, divisor, max_code,
                   (count * 255 << up) + half, 0)
    expected = avgpool2d(codes, op)
    module = Net(arch).layers[0]
    got = rounded_mean(module, torch.from_numpy(codes).double() * 2.0**-shift_in, shift_in, shift_out)
    assert np.array_equal(np.minimum(got.numpy() * 2.0**shift_out, max_code), expected)
    sums = torch.nn.functional.avg_pool2d(torch.from_numpy(codes).double(), kernel, layer.strides, pad,
                                          count_include_pad=True, divisor_override=1).numpy()
    # the float quotient is correctly rounded: never across a half, which lies 1 / (2 count) or more from it
    mean_on_output_step = sums / count * 2.0**(shift_out - shift_in)
    assert np.array_equal(expected, np.minimum(np.floor(mean_on_output_step + 0.5), max_code))  # round half up
    assert (up > 0) == (shift_out > shift_in) and (divisor > count) == (shift_out < shift_in)


@pytest.mark.parametrize("pool, act_bits", [
    ({"type": "avgpool", "k": 2}, 4),                                  # power-of-two count: a shift in the C
    ({"type": "avgpool", "k": 3, "stride": 2, "pad": 1}, 8),           # 9: an integer division
    ({"type": "avgpool", "k": [1, 3], "stride": [1, 2]}, 2),
    ({"type": "globalavgpool"}, 4),                                    # 5 x 5 = 25
])
def test_average_pooling_bit_exact(pool, act_bits, tmp_path):
    arch = _arch([2, 7, 7], [{"type": "conv", "out": 4, "k": 3, "pad": "same"}, {"type": "relu"}, pool,
                             {"type": "conv", "out": 3, "k": 1}, {"type": "relu"}])
    qm, lm = check_four_ways(arch, 11, tmp_path, act_bits=act_bits)
    pools = [op.ir for op in lm.ops if op.kernel == "avgpool2d"]
    assert len(pools) == 1 and 2 in qm.shifts  # the pool (layer 2) stores its mean on a step of its own
    assert pools[0].max_code == 2**act_bits - 1


def test_global_average_pool_shape():
    arch = _arch([3, 5, 6], [{"type": "conv", "out": 4, "k": 3}, {"type": "relu"}, {"type": "globalavgpool"}])
    assert arch.shapes()[2] == (4, 1, 1)


def test_a_layer_the_c_cannot_run_is_refused_before_training():
    arch = _arch([1, 7, 7], [{"type": "conv", "out": 2, "k": 2}, {"type": "relu"}, {"type": "maxpool", "k": 4}])
    with pytest.raises(SiqError, match=r"layer 2 \(maxpool\): pool 4 does not divide the 6x6 map"):
        check_lowerable(arch)
    bn_then_dense = _arch([1, 6, 6], [{"type": "conv", "out": 2, "k": 3}, {"type": "batchnorm"}])
    with pytest.raises(SiqError, match=r"layer 0 \(conv\) must be followed by relu"):
        check_lowerable(bn_then_dense)
    check_lowerable(_arch([2, 7, 7], BN_ARCH, [{"type": "dense", "out": 3}]))


def test_training_refuses_an_architecture_the_c_cannot_run():
    from siq.training.train import TrainConfig, train_float
    arch = _arch([1, 7, 7], [{"type": "conv", "out": 2, "k": 2}, {"type": "relu"}, {"type": "maxpool", "k": 4}])
    x, y = np.zeros((4, 1, 7, 7), np.uint8), np.zeros(4, np.int64)
    with pytest.raises(SiqError, match=r"layer 2 \(maxpool\)"):
        train_float(arch, x, y, TrainConfig(epochs=1))

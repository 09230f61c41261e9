"""A power-of-two step per channel at feature maps of separable blocks (QuantizeConfig.channel_steps): the maps
only depthwise convs read ("depthwise") and also the depthwise convs' outputs that pointwise convs read
("separable"). Which maps qualify, how each channel's step is chosen, and the quantized model through the numpy
reference, the host C (default, reference and emulated-DSP builds) and the Cortex-M4, exactly, with its file round
trip and the settings refused before any training."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from operator_cases import BUILDS, random_images, random_net
from siq.codegen.export import write_sources
from siq.codegen.host import build_host
from siq.codegen.lower import lower
from siq.codegen.verify import host_op_outputs, torch_op_outputs
from siq.codegen.target import run_self_test
from siq.training.arch import PRESETS, Arch, BatchNorm, Conv, Dense, Flatten, GlobalAvgPool, ReLU
from siq.training.errors import SiqError
from siq.training.integer import (Conv2dGeneralRequant, Conv2dRequant, build_integer_model, first_mismatch,
                                  integer_scores, run_integer)
from siq.training.nets import Net
from siq.training.quant import (channel_octave_limit, channel_octave_limits, channel_step_points, evaluate_exact,
                                load_quantized, save_quantized)
from siq.training.quant.calibrate import channel_shifts
from siq.training.quantizers import QuantizeConfig, SIQConfig, SIQPlusConfig, quantize_model


def separable(size: int = 12, channels: int = 8) -> Arch:
    """conv -> relu -> dw -> relu -> pw -> relu -> dw stride 2 -> relu -> pool -> dense, batch norm after every
    conv; folded, the relus are layers 1, 3, 5 and 7: 1 and 5 are read by depthwise convs alone, 3 by a pointwise
    conv alone, 7 by the pool."""
    return Arch("separable", (1, size, size), (
        Conv(channels, 3, 2, "same"), BatchNorm(), ReLU(),
        Conv(channels, 3, 1, "same", channels), BatchNorm(), ReLU(), Conv(channels, 1), BatchNorm(), ReLU(),
        Conv(channels, 3, 2, "same", channels), BatchNorm(), ReLU(), GlobalAvgPool(), Flatten(), Dense(4)))


SEPARABLE = separable()
POINTS = {"depthwise": [1, 5], "separable": [1, 3, 5]}


def spread_net(seed: int, arch: Arch = SEPARABLE) -> Net:
    """Random weights whose batch norms scale each channel by a power of two from 2^-4 to 2^1 and shift none:
    channel ranges octaves apart, as trained batch-norm networks have them, none of them pinned by its bias."""
    net = random_net(arch, seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.layers:
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(2.0 ** torch.randint(-4, 2, module.weight.shape, generator=generator).float())
                module.bias.zero_()
                module.running_mean.zero_()
    return net


def quantized(seed: int = 0, arch: Arch = SEPARABLE, **overrides):
    images = random_images(arch, np.random.default_rng(seed), 40)
    cfg = QuantizeConfig(**{"method": "kmeans", "conv_bits": 4, "fc_bits": 4, "act_bits": 4, "codebook_bits": 12,
                            "calibration_images": len(images), "calibration": "float", "channel_steps": "depthwise",
                            **overrides})
    qm = quantize_model(spread_net(seed, arch), images, np.arange(len(images)) % 4, cfg, list("abcd"))[0]
    return qm, images


def test_only_maps_that_depthwise_convs_alone_read_take_channel_steps():
    assert channel_step_points(SEPARABLE.folded()) == [1, 5]
    assert channel_step_points(PRESETS["ds-cnn-28"].folded()) == [1, 5, 9, 13]
    assert channel_step_points(PRESETS["resnet8"].folded()) == []  # adds read every map across channels
    assert channel_step_points(PRESETS["paper-mnist"].folded()) == []
    # the first map also read by a pointwise conv: its channels meet in one sum, so it keeps one step
    both = Arch("both", (1, 8, 8), (Conv(4, 3, 1, "same"), ReLU(name="r"), Conv(4, 3, 1, "same", 4), ReLU(),
                                    Conv(4, 1, input="r"), ReLU(), GlobalAvgPool(), Flatten(), Dense(2)))
    assert channel_step_points(both) == []


def test_separable_adds_the_depthwise_outputs_that_pointwise_convs_alone_read():
    assert channel_step_points(SEPARABLE.folded(), "separable") == [1, 3, 5]  # 7 is read by the pool
    assert channel_step_points(PRESETS["ds-cnn-28"].folded(), "separable") == [1, 3, 5, 7, 9, 11, 13, 15]
    assert channel_step_points(PRESETS["resnet8"].folded(), "separable") == []
    # a depthwise output also read by a 3x3 conv, or by a pointwise conv with a stride, is summed unaligned
    for reader in (Conv(4, 3, 1, "same", input="r"), Conv(4, 1, 2, input="r")):
        other = Arch("other", (1, 8, 8), (Conv(4, 3, 1, "same"), ReLU(), Conv(4, 3, 1, "same", 4), ReLU(name="r"),
                                          Conv(4, 1), ReLU(), reader, ReLU(), GlobalAvgPool(), Flatten(), Dense(2)))
        assert 3 not in channel_step_points(other, "separable")
    # an aligned point's octaves also keep its codes inside a 16-bit lane: 15 - 8 at 8-bit maps
    limits = channel_octave_limits(SEPARABLE.folded(), "separable", 2, lambda p: 8 if p == 3 else 4)
    assert limits == {1: 13, 3: 7, 5: 13}
    assert channel_octave_limits(SEPARABLE.folded(), "none", 12, lambda p: 4) == {}


def test_each_channel_takes_its_own_step_within_the_octave_limit():
    rng = np.random.default_rng(0)
    ranges = [8.0, 1.0, 0.25, 2.0 ** -9, 0.0]  # the last channel is dead
    values = torch.from_numpy(np.stack([rng.random((50, 6, 6)) * r for r in ranges], axis=1))
    shift, octaves = channel_shifts(values, 4, 3)
    assert shift == 1  # 4-bit codes on step 1/2 cover the widest channel's 0..8 best
    assert octaves.tolist() == [0, 3, 3, 3, 0]  # 1.0 wants 3 octaves finer; 0.25 and below hit the limit of 3
    assert channel_shifts(values, 4, 5)[1].tolist() == [0, 3, 5, 5, 0]
    assert channel_octave_limit(12) == 3 and channel_octave_limit(8) == 7


@pytest.mark.parametrize("mode, size, channels, widths", [
    ("depthwise", 12, 8, {}), ("separable", 12, 8, {}),
    ("separable", 14, 7, {}),       # an odd plane, an odd channel count
    ("separable", 12, 8, {3: 8})])  # the aligned map in bytes: the pointwise kernel's general staging
def test_channel_steps_are_exact_four_ways(tmp_path, mode, size, channels, widths):
    arch = separable(size, channels)
    qm, images = quantized(arch=arch, channel_steps=mode, point_widths=widths)
    assert sorted(qm.channel_octaves) == POINTS[mode]
    assert all(o.max() > 0 for o in qm.channel_octaves.values()), "the spread channels took no step of their own"
    lm = lower(qm)
    expected = integer_scores(lm.integer, images)
    assert np.array_equal(evaluate_exact(qm, Net(qm.arch), images), expected)
    # every op's codes, not only the scores: a random net's later layers can hide a wrong map
    reference = run_integer(lm.integer, images)
    assert first_mismatch(torch_op_outputs(qm, lm, images), reference, lm.integer.ops) is None
    # the same model with one step per map computes something else at each such map: the steps per channel are
    # in the reference
    for point in qm.channel_octaves:
        one_step = type(qm)(**{**qm.__dict__, "channel_octaves": {p: o for p, o in qm.channel_octaves.items()
                                                                  if p != point}})
        changed = run_integer(build_integer_model(one_step), images)
        producer = next(k for k, op in enumerate(lm.integer.ops) if op.layer_index == point)
        assert not np.array_equal(changed[producer], reference[producer]), point
    if mode == "separable":  # the depthwise conv requantizes per channel, the pointwise conv aligns its input
        assert any(isinstance(op, Conv2dGeneralRequant) and op.channel_shifts is not None for op in lm.integer.ops)
        assert any(isinstance(op, Conv2dRequant) and op.in_shifts is not None for op in lm.integer.ops)
    # the channel steps scale rows of one codebook: few distinct rows, stored once each, counted alike both sides
    assert qm.weights_bytes() == lm.weights_bytes()
    assert any(op.weights and op.weights.row_offsets for op in lm.ops)
    write_sources(lm, tmp_path)
    for name, flags in BUILDS.items():
        host = build_host(tmp_path, lm.prefix, tmp_path / f"build-{name}", extra_flags=flags)
        assert np.array_equal(host.infer(images)[0], expected), f"{name} build differs from the numpy reference"
        # op by op too, each build's own kernels (the scores alone hid a wrong lane of aligned codes)
        profile = build_host(tmp_path, lm.prefix, tmp_path / f"profile-{name}", profile=True, extra_flags=flags)
        for image in (0, 7, len(images) - 1):
            got = host_op_outputs(profile, lm, images[image])
            ops = sorted(got)
            assert first_mismatch([reference[k][image:image + 1] for k in ops], [got[k][None] for k in ops],
                                  [lm.integer.ops[k] for k in ops], ops) is None, (name, image)
    result = run_self_test(tmp_path, lm.prefix, "cortex-m4", None, images, np.argmax(expected, axis=1), expected,
                           "-O2")
    assert result["mismatches"] == 0, result["first_mismatch"]


def test_aligned_codes_that_would_leave_a_16_bit_lane_are_refused_at_lowering():
    qm, _ = quantized(channel_steps="separable")
    octaves = qm.channel_octaves[3].copy()
    octaves[0] = 12  # 4-bit codes shifted 12 octaves reach 15 * 2^12 >= 2^15
    with pytest.raises(SiqError, match=r"layer 4 \(conv\): .* leave the fast kernels' 16-bit lanes"):
        lower(type(qm)(**{**qm.__dict__, "channel_octaves": {**qm.channel_octaves, 3: octaves}}))


@pytest.mark.parametrize("method, mode", [("siq", "depthwise"), ("siq+", "separable")])
def test_output_calibration_and_retraining_keep_the_channel_steps(method, mode):
    """SIQ retrains with every channel on its own step; siq+ learns each map's step with its channels' octaves
    riding on it. Either way the model stays exact op by op."""
    qm, images = quantized(1, method=method, calibration="output", calibration_images=40, channel_steps=mode,
                           siq=SIQConfig(rounds=2, epochs_per_round=1))
    assert sorted(qm.channel_octaves) == POINTS[mode]
    lm = lower(qm)
    assert first_mismatch(torch_op_outputs(qm, lm, images), run_integer(lm.integer, images), lm.integer.ops) is None


def test_the_model_file_keeps_the_channel_steps(tmp_path):
    qm, images = quantized(channel_steps="separable")
    save_quantized(tmp_path / "q.pt", qm)
    loaded = load_quantized(tmp_path / "q.pt")
    assert {p: o.tolist() for p, o in loaded.channel_octaves.items()} == \
        {p: o.tolist() for p, o in qm.channel_octaves.items()}
    assert np.array_equal(integer_scores(build_integer_model(loaded), images),
                          integer_scores(build_integer_model(qm), images))
    wrong = type(qm)(**{**qm.__dict__, "channel_octaves": {7: qm.channel_octaves[1]}})  # a map the pool reads
    save_quantized(tmp_path / "bad.pt", wrong)
    with pytest.raises(SiqError, match="cannot have one"):
        load_quantized(tmp_path / "bad.pt")


@pytest.mark.parametrize("overrides, message", [
    ({"calibration": "sequential"}, "not sequential"),
    ({"method": "siq+", "plus": SIQPlusConfig(real_steps=True)}, "real steps fold one factor per feature map"),
    ({"channel_steps": "all"}, "must be one of none, depthwise, separable"),
    ({"channel_steps": "separable", "calibration": "sequential"}, "not sequential"),
])
def test_settings_that_cannot_make_channel_steps_are_refused_before_training(overrides, message):
    with pytest.raises(SiqError, match=message):
        quantized(**overrides)


def test_learned_steps_quantize_each_channel_on_its_own_step():
    """siq+'s learned step of a map carries its channels' octaves: the same codes as the exact quantizer."""
    from siq.training.quant import quantize_activation
    from siq.training.quantizers import LearnedSteps
    octaves = np.array([0, 1, 3])
    x = torch.rand(5, 3, 4, 4, dtype=torch.float64) * torch.tensor([4.0, 1.0, 0.3]).reshape(1, 3, 1, 1)
    steps = LearnedSteps({1: 2}, bits=4, channel_octaves={1: octaves}).double()
    assert torch.equal(steps.quantize(1, x), quantize_activation(x, 2, 4, octaves))
    assert not torch.equal(steps.quantize(1, x), quantize_activation(x, 2, 4))


def test_a_sweep_gives_its_cells_channel_steps(tmp_path):
    """channel_steps (study option): a quantized cell equals quantize_model with the option, a float-weight cell
    with quantized feature maps scores the folded network with every channel on its own step; both say so in
    their records, and with float feature maps nothing changes."""
    import json
    from siq.training.data import load_dataset
    from siq.training.experiments import sweep
    from siq.training.nets import fold_batchnorm
    from siq.training.quant import TrainingHooks, calibrate_steps
    from siq.training.train import TrainConfig, accuracy, load_checkpoint, predict_scores
    arch = {"name": "tiny-separable", "input": [1, 8, 8], "layers": [
        {"type": "conv", "out": 6, "k": 3, "pad": "same"}, {"type": "batchnorm"}, {"type": "relu"},
        {"type": "conv", "out": 6, "k": 3, "pad": "same", "groups": 6}, {"type": "batchnorm"}, {"type": "relu"},
        {"type": "globalavgpool"}, {"type": "flatten"}, {"type": "dense", "out": 10}]}
    path = tmp_path / "tiny-separable.json"
    path.write_text(json.dumps(arch))
    grid = dict(methods=["uniform"], weight_bits=[4, None], act_bits=[4, None], calibration="float",
                codebook_bits=12, train_cfg=TrainConfig(epochs=2, batch_size=32, lr=3e-2), fc_bits=4,
                calibration_images=200, progress=False, threads=1, cache_dir=tmp_path / "cache")
    plain = sweep.run_sweep("digits", str(path), out=tmp_path / "plain.jsonl", **grid)
    steps = sweep.run_sweep("digits", str(path), out=tmp_path / "steps.jsonl", channel_steps="depthwise", **grid)
    for p, s in zip(plain, steps):
        quantized_maps = s["act_bits"] is not None
        assert (s["cell"] != p["cell"]) == quantized_maps and (s.get("channel_steps") == "depthwise") == \
            quantized_maps, s
    ds = load_dataset("digits", seed=0)
    net = fold_batchnorm(load_checkpoint(tmp_path / "cache" / "models" / f"{steps[0]['model']}.pt")[0])
    cfg = QuantizeConfig(method="uniform", conv_bits=4, fc_bits=4, act_bits=4, seed=0, calibration_images=200,
                         calibration="float", codebook_bits=12, channel_steps="depthwise")
    with sweep.torch_threads(1):
        qm = quantize_model(net, ds.train_x, ds.train_y, cfg, ds.class_names)[0]
    assert sorted(qm.channel_octaves) == [1]
    quantized = next(s for s in steps if s["conv_bits"] == 4 and s["act_bits"] == 4)
    assert accuracy(integer_scores(build_integer_model(qm), ds.test_x), ds.test_y) == quantized["accuracy"]
    calibration = ds.train_x[np.random.default_rng(0).permutation(len(ds.train_x))[:200]]
    shifts, octaves = calibrate_steps(net, calibration, 4, "float", None, {}, {1: channel_octave_limit(12)})
    assert octaves[1].tolist() == qm.channel_octaves[1].tolist()
    float_weights = next(s for s in steps if s["conv_bits"] is None and s["act_bits"] == 4)
    hooks = TrainingHooks(4, shifts, channel_octaves=octaves)
    assert accuracy(predict_scores(net, ds.test_x, hooks), ds.test_y) == float_weights["accuracy"]
    # the steps per channel show in the score (the check above could not tell otherwise)
    assert accuracy(predict_scores(net, ds.test_x, TrainingHooks(4, shifts)), ds.test_y) != float_weights["accuracy"]

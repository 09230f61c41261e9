"""siq+'s ingredients: progressive bits, learned and real activation steps (LSQ gradient, set_bits, the fold),
progressive activation widths, and the ablation variants."""
import numpy as np
import pytest
import torch

from siq.training.errors import SiqError
from siq.training.integer import build_integer_model, run_integer
from siq.training.quant import quantize_activation
from siq.training.quantizers import (LearnedSteps, QuantizeConfig, SIQConfig, SIQPlusConfig, check_plus_config,
                                     method_variant, quantize_model)

def test_siq_plus_progressive_bits_end_at_the_target(tiny_nets, digits):
    cfg = QuantizeConfig(method="siq+", conv_bits=2, fc_bits=4, act_bits=4, siq=SIQConfig(rounds=3, epochs_per_round=1))
    qm, _ = quantize_model(tiny_nets[False], digits.train_x, digits.train_y, cfg, digits.class_names)
    conv = str(qm.arch.weighted_layers()[0])
    assert [h["bits"][conv] for h in qm.meta["history"]] == [4, 3, 2]
    assert all(len(lc.codebook) <= 2 ** lc.bits for lc in qm.layers.values())


def test_learned_step_forward_is_the_firmware_quantizer_and_its_gradient_is_lsq():
    """Forward: the shift-only quantizer at the rounded log2 step. Backward: LSQ's step gradient
    (round(v) - v inside the range, 2^a - 1 above it, 0 below) times d(2^-s)/dt = -ln2 2^-s."""
    steps = LearnedSteps({-1: 2}, bits=3)  # step 1/4, codes 0..7
    with torch.no_grad():
        steps.log2_scale["-1"].fill_(2.4)  # rounds to shift 2
    x = torch.tensor([0.125, 0.375, 0.3, -0.3, 5.0], dtype=torch.float32, requires_grad=True)
    y = steps.quantize(-1, x)
    assert torch.equal(y.detach().double(), quantize_activation(x.detach().double(), 2, 3))
    y.sum().backward()
    v = torch.clamp(x.detach() * 4, 0, 7)
    lsq = torch.where(x.detach() * 4 > 7, torch.tensor(7.0),
                      torch.where(x.detach() < 0, torch.tensor(0.0), torch.floor(v + 0.5) - v))
    expected = float(torch.sum(lsq) * -np.log(2) * 0.25)
    assert steps.log2_scale["-1"].grad.item() == pytest.approx(expected, rel=1e-5)
    assert x.grad.tolist() == [1, 1, 1, 0, 0]  # straight through inside the range
    with torch.no_grad():
        steps.log2_scale["-1"].fill_(2.5)  # round half up
    assert steps.shifts() == {-1: 3}


def test_siq_plus_trains_activation_steps_into_the_model(tiny_nets, digits):
    """With learned steps, the model's shifts are the trained ones and the integer model still runs them exactly
    (every code in range); without, they stay the calibrated ones."""
    base = dict(method="siq+", conv_bits=2, fc_bits=4, act_bits=2, siq=SIQConfig(rounds=2, epochs_per_round=2))
    learned, _ = quantize_model(tiny_nets[True], digits.train_x, digits.train_y,
                                QuantizeConfig(**base, plus=SIQPlusConfig(step_lr=0.2)), digits.class_names)
    fixed, _ = quantize_model(tiny_nets[True], digits.train_x, digits.train_y,
                              QuantizeConfig(**base, plus=SIQPlusConfig().without(["steps"])), digits.class_names)
    assert learned.shifts == {int(p): s for p, s in learned.meta["history"][-1]["shifts"].items()}
    assert learned.shifts != fixed.shifts  # a large step learning rate moves at least one of them
    outputs = run_integer(build_integer_model(learned), digits.test_x[:100])
    assert all(0 <= out.min() and out.max() <= 3 for out in outputs[:-1])


def test_folding_real_steps_leaves_every_code_unchanged(tiny_nets, digits):
    """A network run with real feature-map steps c_p 2^-s_p and the folded network run with the power-of-two
    steps 2^-s_p produce the same codes at every point (so the same predictions), up to float64 rounding of
    the scaled weights; the folded lrn constants and codebook centroids are the ones the fold scaled."""
    import copy

    from siq.training.nets import images_to_input
    from siq.training.quant import TrainingHooks, quantization_points
    from siq.training.quantizers import PlusHooks, fold_step_scales
    net = copy.deepcopy(tiny_nets[True]).double().eval()
    arch = net.arch
    points = quantization_points(arch)
    shifts = {-1: 4, **{p: 2 for p in points}}
    steps = LearnedSteps(shifts, bits=3, real=True).double()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for p in points:  # real log2 scales t; nearest shifts 1..3, factors c = 2^(s - t) in [2^-0.45, 2^0.45]
            steps.log2_scale[str(p)].fill_(2 + rng.uniform(-0.95, 0.95))
    scales = steps.scales()
    assert scales[-1] == 1.0 and all(abs(np.log2(scales[p])) <= 0.5 for p in points)
    assert any(abs(np.log2(scales[p])) > 0.1 for p in points)
    x = images_to_input(digits.test_x[:300], torch.float64)
    before, after = [], []
    with torch.no_grad():
        logits = net(x, PlusHooks(3, shifts, {}, steps), collect=before)
    conv = arch.weighted_layers()[0]
    books = {conv: (np.array([-0.5, 0.25, 1.0]), np.zeros(net.layers[conv].weight.numel(), dtype=np.int64))}
    folded = copy.deepcopy(net)
    fold_step_scales(folded, books, scales)
    with torch.no_grad():
        folded_logits = folded(x, TrainingHooks(3, steps.shifts()), collect=after)
    for p in points:  # collect holds every layer's output: point p's codes are its tensor over its step
        codes = before[p] / scales[p] * 2.0 ** steps.shifts()[p]
        folded_codes = after[p] * 2.0 ** steps.shifts()[p]
        assert torch.allclose(codes, torch.floor(codes + 0.5), atol=1e-9)
        assert torch.equal(torch.floor(codes + 0.5), folded_codes), f"point {p}"
    assert torch.allclose(logits, folded_logits, rtol=0, atol=1e-9)
    lrn = [i for i, layer in enumerate(arch.layers) if layer.type == "lrn"][0]
    r = (scales[lrn] / scales[lrn - 2]) ** (1 / arch.layers[lrn].beta)  # conv, relu, pool, lrn
    assert folded.arch.layers[lrn].k == pytest.approx(arch.layers[lrn].k * r)
    assert folded.layers[lrn].alpha == pytest.approx(arch.layers[lrn].alpha * scales[lrn - 2] ** 2 * r)
    assert np.allclose(books[conv][0], np.array([-0.5, 0.25, 1.0]) / scales[conv + 1])  # the input's c is 1


def test_average_pools_keep_their_inputs_real_factor_so_the_fold_leaves_their_codes(digits):
    """An average pool is a point with no weights to fold a factor into: with real steps it keeps its input's
    factor and learns whole octaves beside it, and the folded network's pool codes equal the trained ones."""
    import copy

    from operator_cases import random_net

    from siq.training.arch import Arch
    from siq.training.graph import POOL_POINTS
    from siq.training.nets import images_to_input
    from siq.training.quant import TrainingHooks, input_point_of, quantization_points
    from siq.training.quantizers import PlusHooks, fold_step_scales
    arch = Arch.from_dict({"name": "pools", "input": [1, 8, 8], "layers": [
        {"type": "conv", "out": 4, "k": 3, "pad": "same"}, {"type": "relu"}, {"type": "avgpool", "k": 2},
        {"type": "conv", "out": 6, "k": 3, "pad": "same"}, {"type": "relu"}, {"type": "globalavgpool"},
        {"type": "flatten"}, {"type": "dense", "out": 10}]})
    net = random_net(arch, 3).double().eval()
    points = quantization_points(arch)
    tied = {p: input_point_of(arch, p) for p in points if isinstance(arch.layers[p], POOL_POINTS)}
    assert tied == {2: 1, 5: 4}
    shifts = {-1: 4, **{p: 2 for p in points}}
    steps = LearnedSteps(shifts, bits=3, real=True, tied=tied).double()
    rng = np.random.default_rng(1)
    with torch.no_grad():
        for p in points:  # in order: a pool's own t is set 0.6 to 2.4 octaves above its input's
            own = 2 + rng.uniform(-0.95, 0.95)
            t = float(steps.log2_scale[str(tied[p])]) + rng.uniform(0.6, 2.4) if p in tied else own
            steps.log2_scale[str(p)].fill_(t)
    scales = steps.scales()
    assert all(scales[p] == pytest.approx(scales[q], rel=1e-12) for p, q in tied.items())
    assert all(steps.shifts()[p] > steps.shifts()[q] for p, q in tied.items())  # whole octaves finer
    x = images_to_input(digits.test_x[:300], torch.float64)
    before, after = [], []
    with torch.no_grad():
        logits = net(x, PlusHooks(3, shifts, {}, steps), collect=before)
    folded = copy.deepcopy(net)
    fold_step_scales(folded, {}, scales)
    with torch.no_grad():
        folded_logits = folded(x, TrainingHooks(3, steps.shifts()), collect=after)
    for p in points:
        codes = before[p] / scales[p] * 2.0 ** steps.shifts()[p]
        assert torch.equal(torch.floor(codes + 0.5), after[p] * 2.0 ** steps.shifts()[p]), f"point {p}"
    assert torch.allclose(logits, folded_logits, rtol=0, atol=1e-9)


def test_siq_plus_real_steps_give_a_shift_only_bit_exact_model(tiny_nets, digits, tmp_path):
    """--real-steps trains steps off the power-of-two grid, then folds them: the quantized model has integer
    shifts and folded lrn constants, and the fake-quant model, the numpy reference and the C agree exactly."""
    from test_per_channel import assert_scores_equal, check_builds

    from siq.training.quant import evaluate_exact
    base = dict(method="siq+", conv_bits=2, fc_bits=4, act_bits=2, siq=SIQConfig(rounds=2, epochs_per_round=2))
    qm, net = quantize_model(tiny_nets[True], digits.train_x, digits.train_y,
                             QuantizeConfig(**base, plus=SIQPlusConfig(real_steps=True, step_lr=0.2)),
                             digits.class_names)
    assert all(isinstance(s, int) for s in qm.shifts.values())
    lrn = [i for i, layer in enumerate(qm.arch.layers) if layer.type == "lrn"][0]
    assert (qm.arch.layers[lrn].k, qm.arch.layers[lrn].alpha) != \
        (tiny_nets[True].arch.layers[lrn].k, tiny_nets[True].arch.layers[lrn].alpha)
    images = digits.test_x[:100]
    _, expected = check_builds(qm, images, tmp_path, builds=("reference",))
    assert_scores_equal(evaluate_exact(qm, net, images), expected, "fake-quant model")
    accuracy = np.mean(expected.argmax(1) == digits.test_y[:100])
    assert accuracy > 0.5, accuracy
    with pytest.raises(SiqError, match="learned steps"):
        check_plus_config(SIQPlusConfig(real_steps=True, learn_act_steps=False))
    assert not SIQPlusConfig(real_steps=True).without(["steps"]).real_steps


def test_lowering_the_activation_width_keeps_each_clipped_range():
    """set_bits: a point going from w to w' bits gets a step (2^w - 1) / (2^w' - 1) as large, so the top code still
    sits at the same value (exactly with real steps; at the nearest power of two otherwise). An input with its
    own width is left alone."""
    steps = LearnedSteps({-1: 3, 1: 2, 3: 3}, bits=4, input_bits=None, real=True)
    top = {p: (2**4 - 1) * 2.0 ** -float(t.detach()) for p, t in steps.log2_scale.items()}
    steps.set_bits(2)
    assert steps.bits == 2
    for p, t in steps.log2_scale.items():
        if p != "-1":  # the input's step stays a power of two
            assert (2**2 - 1) * 2.0 ** -float(t.detach()) == pytest.approx(top[p])
    assert steps.shifts()[-1] == 3 - 2  # 15/3 = 5 times the step: log2 5 = 2.32 -> 2 shifts coarser
    own = LearnedSteps({-1: 3, 1: 2}, bits=4, input_bits=8)
    own.set_bits(3)
    assert own.shifts() == {-1: 3, 1: 1}


def test_siq_plus_progressive_acts_lower_the_activations_to_a_bit_exact_model(tiny_nets, digits, tmp_path):
    """--progressive-acts 2 at A2 over 3 rounds trains the activations at 4, 3, then 2 bits; the result is an
    ordinary A2 model: fake-quant model, numpy reference and C agree exactly."""
    from test_per_channel import assert_scores_equal, check_builds

    from siq.training.quant import evaluate_exact
    base = dict(method="siq+", conv_bits=2, fc_bits=4, act_bits=2, siq=SIQConfig(rounds=3, epochs_per_round=1))
    qm, net = quantize_model(tiny_nets[True], digits.train_x, digits.train_y,
                             QuantizeConfig(**base, plus=SIQPlusConfig(progressive_acts=2, real_steps=True)),
                             digits.class_names)
    assert [r["act_bits"] for r in qm.meta["history"]] == [4, 3, 2]
    assert qm.act_bits == 2 and all(isinstance(s, int) for s in qm.shifts.values())
    images = digits.test_x[:100]
    _, expected = check_builds(qm, images, tmp_path, builds=("reference",))
    assert_scores_equal(evaluate_exact(qm, net, images), expected, "fake-quant model")
    assert np.mean(expected.argmax(1) == digits.test_y[:100]) > 0.5
    # fewer rounds than extra bits: the last round is still at the target width
    short = QuantizeConfig(**{**base, "siq": SIQConfig(rounds=2, epochs_per_round=1)},
                           plus=SIQPlusConfig(progressive_acts=3))
    qm, _ = quantize_model(tiny_nets[True], digits.train_x, digits.train_y, short, digits.class_names)
    assert [r["act_bits"] for r in qm.meta["history"]] == [3, 2]
    for bad in (-1, 8, 1.5, True):
        with pytest.raises(SiqError, match="progressive activation bits"):
            check_plus_config(SIQPlusConfig(progressive_acts=bad))
    with pytest.raises(SiqError, match="learned steps"):
        check_plus_config(SIQPlusConfig(progressive_acts=1, learn_act_steps=False))
    assert SIQPlusConfig(progressive_acts=2).without(["progressive"]).progressive_acts == 0


def test_siq_plus_variants_parse_and_refuse_unknown_ingredients():
    assert method_variant("siq+-distill-steps") == ("siq+", ["distill", "steps"])
    assert method_variant("kmeans") == ("kmeans", [])
    off = SIQPlusConfig().without(["distill", "steps", "fc"])
    assert off.distill == 0.0 and not off.learn_act_steps and not off.quantize_fc and off.finetune_centroids
    for bad in ("siq+-nonsense", "siq-distill", "nope"):
        with pytest.raises(SiqError):
            method_variant(bad)

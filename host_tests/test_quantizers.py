"""Server-side quantization: Eq. 5 rounding, codebook sizes, SIQ's codebook property, activation ranges
(siq+'s own ingredients: test_siq_plus.py; the quantizer interface: test_quantizer_interface.py)."""
import copy

import numpy as np
import pytest
import torch

from siq.training.errors import SiqError
from siq.training.integer import build_integer_model, run_integer
from siq.training.quant import CALIBRATION_SAMPLES, best_shift, quantize_activation, round_half_up, snap_codebook
from siq.training.quantizers import (METHODS, QuantizeConfig, SIQConfig, kmeans_codebook, quantize_model,
                                     uniform_codebook, uniform_codes)


def test_round_half_up_on_exact_halves_and_negatives():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, -0.49, 0.49])
    assert round_half_up(x).tolist() == [-2, -1, 0, 1, 2, 3, 0, 0]
    t = torch.tensor(x)
    assert round_half_up(t).tolist() == [-2, -1, 0, 1, 2, 3, 0, 0]
    # np.round would give half-to-even here; the quantizers must not
    assert np.round(x).tolist() != round_half_up(x).tolist()


def test_activation_quantization_rounds_half_up_and_clamps():
    step_shift, bits = 2, 3  # step 1/4, codes 0..7
    x = torch.tensor([0.125, 0.375, 0.625, -0.3, 1.875, 5.0], dtype=torch.float64)  # 0.5, 1.5, 2.5 steps ...
    codes = quantize_activation(x, step_shift, bits) * 4
    assert codes.tolist() == [1, 2, 3, 0, 7, 7]


def test_calibration_samples_a_point_with_more_activations_than_float32_counts_exactly():
    # 2**24 + 4 activations: a float32 linspace of sample indices rounds the last one past the end
    n = 2 ** 24 + 4
    values = torch.zeros(n, dtype=torch.float32)
    values[-1] = 100.0                       # the last activation is sampled, and drives the step up
    assert CALIBRATION_SAMPLES < n
    assert best_shift(values, 4) == best_shift(torch.tensor([0.0] * 7 + [100.0]), 4)


def _identity_lrn_net():
    """input -> conv 1x1 (weight 1, bias 0) -> relu -> lrn -> dense: the relu passes the input through, lrn
    scales it by about k^-beta = 2^-0.75."""
    from siq.training.arch import LRN, Arch, Conv, Dense, Flatten, ReLU
    from siq.training.nets import Net
    net = Net(Arch("identity-lrn", (1, 4, 4), (Conv(1, 1), ReLU(), LRN(), Flatten(), Dense(2))))
    with torch.no_grad():
        net.layers[0].weight.fill_(1.0)
        net.layers[0].bias.zero_()
    return net


def test_sequential_calibration_keeps_lrn_codes_apart_at_two_bits():
    """On float tensors MSE gives lrn the step of its input, so that relu codes 1 and 2 (x 0.59 -> 0.59, 1.19
    steps) round to the same lrn code; calibrated on the quantized relu codes, lrn gets half that step and
    keeps the four codes apart."""
    from siq.training.quant import calibrate_shifts
    net = _identity_lrn_net()
    images = np.arange(256, dtype=np.uint8).repeat(16).reshape(256, 1, 4, 4)
    plain = calibrate_shifts(net, images, 2, "float")
    sequential = calibrate_shifts(net, images, 2, "sequential")
    assert plain[1] == sequential[1] and plain[2] == plain[1]       # relu: same tensor either way
    assert sequential[2] == sequential[1] + 1
    relu_codes = torch.arange(4, dtype=torch.float64) * 2.0 ** -sequential[1]
    lrn_out = net.layers[2](relu_codes.reshape(1, 4, 1, 1).float()).double().reshape(-1)
    for shifts, distinct in ((plain, 3), (sequential, 4)):
        codes = quantize_activation(lrn_out, shifts[2], 2) * 2.0 ** shifts[2]
        assert len(set(codes.tolist())) == distinct


@pytest.mark.parametrize("which", ["identity-lrn", "tiny"])
def test_sequential_calibration_scores_each_point_on_the_quantized_points_before_it(tiny_nets, digits, which):
    from siq.training.nets import images_to_input
    from siq.training.quant import TrainingHooks, calibrate_shifts, quantization_points
    if which == "tiny":
        net, images = tiny_nets[True], digits.train_x[:300]
    else:
        net, images = _identity_lrn_net(), np.arange(256, dtype=np.uint8).repeat(16).reshape(256, 1, 4, 4)
    shifts = calibrate_shifts(net, images, 2, "sequential")
    x = images_to_input(images)
    assert shifts[-1] == best_shift(x, 2)
    for p in quantization_points(net.arch):
        collect = []
        with torch.no_grad():
            net(x, TrainingHooks(2, shifts), collect=collect)
            # the tensor entering point p's quantizer: its relu or lrn applied to the layer before it
            assert shifts[p] == best_shift(net.layers[p](collect[p - 1]), 2)
    with pytest.raises(SiqError, match="calibration rule"):
        calibrate_shifts(net, images, 2, "median")


def _wide_and_narrow_net():
    """2-channel 1x1 input -> conv 1x1 -> relu -> dense 2. The relu's channel 0 is 4a (up to 3.75, ignored by the
    dense layer), channel 1 is b / 4 (up to 15/64); the class is b / 4 > 7/128, scored 40 (b / 4 - 7/128) either
    way. Inputs are whole sixteenths, exact on the input's 4-bit step."""
    from siq.training.arch import Arch, Conv, Dense, Flatten, ReLU
    from siq.training.nets import Net
    net = Net(Arch("wide-and-narrow", (2, 1, 1), (Conv(2, 1), ReLU(), Flatten(), Dense(2))))
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[4.0, 0.0], [0.0, 0.25]]).reshape(2, 2, 1, 1))
        net.layers[0].bias.zero_()
        net.layers[3].weight.copy_(torch.tensor([[0.0, 40.0], [0.0, -40.0]]))
        net.layers[3].bias.copy_(torch.tensor([-40 * 7 / 128, 40 * 7 / 128]))
    images = 16 * np.random.default_rng(0).integers(0, 16, (1024, 2, 1, 1), dtype=np.uint8)
    return net, images


def test_output_calibration_gives_a_narrow_channel_the_step_its_consumer_needs():
    """MSE on the relu's tensor fits the wide channel (step 1/4) and rounds the narrow one's b / 4 = 4/64 .. 7/64
    to 0, a quarter of the inputs on the wrong side; the output rule refines the step until the narrow channel is
    exact (1/64), and the quantized network agrees with the float one."""
    from siq.training.nets import images_to_input
    from siq.training.quant import TrainingHooks, calibrate_shifts
    net, images = _wide_and_narrow_net()
    mse = calibrate_shifts(net, images, 4, "float")
    output = calibrate_shifts(net, images, 4, "output")
    assert mse == {-1: 4, 1: 2} and output == {-1: 4, 1: 6}
    x = images_to_input(images)
    with torch.no_grad():
        truth = net(x).argmax(1)
        agree = {rule: float((net(x, TrainingHooks(4, s)).argmax(1) == truth).float().mean())
                 for rule, s in (("float", mse), ("output", output))}
    assert agree["float"] < 0.8 and agree["output"] == 1.0
    assert calibrate_shifts(net, images, 4, "output") == output   # deterministic


def test_the_output_rule_is_the_default_of_the_api_the_cli_and_the_studies():
    """A quantization left at its defaults takes the output rule's steps, not the tensors' MSE steps."""
    from siq.codegen.cli.main import build_parser
    from siq.training.experiments.study import Run
    net, images = _wide_and_narrow_net()
    labels = np.zeros(len(images), np.int64)
    default = QuantizeConfig(method="kmeans", conv_bits=8, fc_bits=8)
    assert quantize_model(copy.deepcopy(net), images, labels, default, ["a", "b"])[0].shifts == {-1: 4, 1: 6}
    mse = QuantizeConfig(method="kmeans", conv_bits=8, fc_bits=8, calibration="float")
    assert quantize_model(copy.deepcopy(net), images, labels, mse, ["a", "b"])[0].shifts == {-1: 4, 1: 2}
    required = {"quantize": ["x.pt", "--out", "q.pt"], "pipeline": [], "sweep": [], "fit": ["--flash", "6KB"]}
    for command, rest in required.items():
        assert build_parser().parse_args([command, *rest]).calibration == "output", command
    options = {"dataset": "digits", "methods": ["siq"], "weight_bits": "4", "act_bits": "4"}
    assert Run(1, options, "test", "r.jsonl").sweep_arguments()["calibration"] == "output"


def test_output_calibration_never_ends_worse_than_the_mse_steps(tiny_nets, digits):
    from siq.training.nets import images_to_input
    from siq.training.quant import TrainingHooks, calibrate_shifts
    from siq.training.quant.calibrate import OUTPUT_RULE_IMAGES, OUTPUT_RULE_OCTAVES, OUTPUT_RULE_SWEEPS
    net, images = tiny_nets[True], digits.train_x[:600]
    mse = calibrate_shifts(net, images, 2, "float")
    output = calibrate_shifts(net, images, 2, "output")
    assert mse.keys() == output.keys()
    assert all(abs(output[p] - mse[p]) <= OUTPUT_RULE_OCTAVES * OUTPUT_RULE_SWEEPS for p in mse)
    x = images_to_input(images[:OUTPUT_RULE_IMAGES])
    with torch.no_grad():
        reference = torch.log_softmax(net(x), 1)

        def divergence(shifts):
            out = torch.log_softmax(net(x, TrainingHooks(2, shifts)), 1)
            return float(torch.sum(reference.exp() * (reference - out)))
        assert divergence(output) <= divergence(mse)


def test_wider_codebook_values_keep_small_centroids_apart_beside_an_outlier():
    # one large first-layer weight sets the power-of-two scale: on the int8 grid (step 2^-4 here) the small
    # centroids merge; 12-bit values (int16 in the C) keep them
    centroids = np.array([-5.07, -0.1, -0.03, 0.02, 0.05, 0.3])
    assignment = np.arange(6)
    narrow = snap_codebook(centroids, assignment, 3, 8)
    wide = snap_codebook(centroids, assignment, 3, 12)
    assert len(narrow.codebook) < 6 == len(wide.codebook)
    assert np.max(np.abs(wide.values() - centroids)) < np.max(np.abs(narrow.values() - centroids)) / 8


def test_uniform_quantizer_eq5_halves():
    # step 1: w/step sits exactly on halves; levels -3..3 clamp the ends
    w = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.7, -4.0])
    assert uniform_codes(w, 1.0, 3).tolist() == [-2, -1, 0, 1, 2, 3, 3, -3]
    # the chosen step keeps the levels symmetric and the codebook within 2^b - 1 values
    centroids, assignment = uniform_codebook(w, 3)
    assert len(centroids) == 7 and np.allclose(centroids, -centroids[::-1])
    assert set(assignment.tolist()) <= set(range(7))


def test_snap_codebook_rounds_half_up_onto_the_int8_grid():
    # largest |c| = 1 -> exponent 6 (127 / 1 -> 2^6), so c * 64 lands on halves for these values
    centroids = np.array([-1.0, -0.5 / 64, 0.5 / 64, 1.5 / 64, 1.0])
    lc = snap_codebook(centroids, np.arange(5), 3, 8)
    assert lc.exponent == 6
    assert lc.codebook.tolist() == [-64, 0, 1, 2, 64]  # -0.5 -> 0, 0.5 -> 1, 1.5 -> 2
    assert lc.codebook[lc.indices].tolist() == [-64, 0, 1, 2, 64]


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("method", ["uniform", "kmeans"])
def test_codebook_size_at_most_two_to_the_bits(method, bits, rng):
    w = rng.normal(size=(6, 3, 5, 5)) * 0.2
    centroids, assignment = (uniform_codebook(w, bits) if method == "uniform" else kmeans_codebook(w, bits, 0))
    lc = snap_codebook(centroids, assignment.reshape(w.shape), bits, 8)
    assert len(lc.codebook) <= 2**bits
    assert lc.indices.shape == w.shape and int(lc.indices.max()) < len(lc.codebook)
    assert np.all(np.diff(lc.codebook) > 0)  # sorted, unique


def test_kmeans_edge_cases():
    constant = np.full(50, 0.3)
    c, a = kmeans_codebook(constant, 4, 0)
    assert c.tolist() == [0.3] and set(a.tolist()) == {0}
    few = np.array([0.1, -0.2, 0.1, 0.5])  # 3 distinct values, 8 centroids allowed: kept exactly
    c, a = kmeans_codebook(few, 3, 0)
    assert np.array_equal(c[a], few)
    one_bit = np.linspace(-1, 1, 101)
    c, a = kmeans_codebook(one_bit, 1, 0)
    assert len(c) == 2 and c[0] < 0 < c[1]
    lc = snap_codebook(np.zeros(1), np.zeros(4, np.int64), 2, 8)  # all-zero layer
    assert lc.codebook.tolist() == [0]


def test_non_finite_centroids_refused():
    with pytest.raises(SiqError, match="non-finite"):
        snap_codebook(np.array([0.1, np.nan]), np.array([0, 1]), 1, 8)


def test_methods_registered():
    assert {"uniform", "kmeans", "siq", "siq+"} <= set(METHODS)
    with pytest.raises(SiqError, match="unknown quantization method"):
        quantize_model(None, None, None, QuantizeConfig(method="nope"), [])


@pytest.mark.parametrize("method", ["uniform", "kmeans", "siq", "siq+"])
def test_quantized_codes_and_codebooks(method, tiny_nets, digits):
    net = tiny_nets[True]
    cfg = QuantizeConfig(method=method, conv_bits=2, fc_bits=3, act_bits=3,
                         siq=SIQConfig(rounds=2, epochs_per_round=1))
    qm, retrained = quantize_model(net, digits.train_x, digits.train_y, cfg, digits.class_names)
    for i, lc in qm.layers.items():
        bits = 2 if net.arch.layers[i].type == "conv" else 3
        assert lc.bits == bits and len(lc.codebook) <= 2**bits
        # every quantized weight is a codebook value on the fixed-point grid
        values = lc.values() * 2.0**lc.exponent
        assert set(np.unique(values)) <= set(lc.codebook.tolist())
    outputs = run_integer(build_integer_model(qm), digits.test_x[:200])
    for out in outputs[:-1]:  # every feature map's codes stay in [0, 2^a - 1]
        assert out.min() >= 0 and out.max() <= 2**3 - 1
    if method.startswith("siq"):
        history = qm.meta["history"]
        assert 1 <= len(history) <= 2 and all(0 <= h["assignment_change"] <= 1 for h in history)
        # the retrained conv weights sit near their codebook (the continuation penalty pulled them there)
        for i in net.arch.weighted_layers()[:2]:
            w = retrained.layers[i].weight.detach().double().numpy().ravel()
            centroids = np.unique(qm.layers[i].codebook) * 2.0 ** -qm.layers[i].exponent
            distance = np.min(np.abs(w[:, None] - centroids[None]), axis=1)
            assert np.mean(distance) < 0.25 * np.mean(np.abs(w))


def test_training_augmentations_and_dropout_override():
    from siq.training.arch import load_arch
    from siq.training.nets import Net
    from siq.training.train import dropout_rate, random_flip, random_shift
    g = torch.Generator().manual_seed(0)
    batch = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)
    flipped = random_flip(batch.repeat(50, 1, 1, 1), g)
    mirrored = [bool(torch.equal(f, b.flip(2))) for f, b in zip(flipped, batch.repeat(50, 1, 1, 1))]
    kept = [bool(torch.equal(f, b)) for f, b in zip(flipped, batch.repeat(50, 1, 1, 1))]
    assert all(m != k for m, k in zip(mirrored, kept)) and 20 < sum(mirrored) < 80
    shifted = random_shift(batch, 1, g)
    assert shifted.shape == batch.shape and set(shifted.unique().tolist()) <= set(batch.unique().tolist()) | {0.0}
    net = Net(load_arch("paper-mnist"))
    rates = lambda: [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]  # noqa: E731
    assert rates() == [0.5]
    with dropout_rate(net, 0.2):
        assert rates() == [0.2]
    assert rates() == [0.5]
    with pytest.raises(SiqError, match="dropout"):
        with dropout_rate(net, 1.0):
            pass


def test_siq_returns_the_codebook_its_last_retraining_used(tiny_nets, digits, monkeypatch):
    """The alternation ends on retraining: the result is the codebook the last round trained with (each weight
    at its nearest centroid), not a re-clustering of the latent weights that the network never saw."""
    from siq.training import quantizers
    from siq.training.quantizers import siq as loop
    used = []
    real_nearest = loop.nearest
    monkeypatch.setattr(loop, "nearest", lambda c: used.append(np.sort(c)) or real_nearest(c))
    cfg = QuantizeConfig(method="siq", conv_bits=2, fc_bits=4, act_bits=4,
                         siq=SIQConfig(rounds=2, epochs_per_round=1, tolerance=0.0))
    qm, retrained = quantize_model(tiny_nets[True], digits.train_x, digits.train_y, cfg, digits.class_names)
    convs = retrained.arch.weighted_layers()[:2]
    assert len(used) == 2 * len(convs)  # every round's quantizers come from the loop's nearest()
    last_round = used[-len(convs):]
    for i, centroids in zip(convs, last_round):
        w = retrained.layers[i].weight.detach().double().numpy()
        expected = snap_codebook(*quantizers.nearest_assignment(centroids, w), 2, 8)
        assert np.array_equal(qm.layers[i].codebook, expected.codebook)
        assert np.array_equal(qm.layers[i].indices.reshape(-1), expected.indices.reshape(-1))


@pytest.mark.parametrize("method", ["siq", "siq+"])
def test_siq_retraining_takes_the_configured_augmentation(tiny_nets, digits, monkeypatch, method):
    """SIQConfig.augment_shift/augment_flip/dropout reach every round's retraining (off / the architecture's
    dropout by default, as in the paper). Both methods train through the one loop in quantizers/siq.py."""
    from siq.training.quantizers import siq as loop
    seen = []
    real_fit = loop.fit
    monkeypatch.setattr(loop, "fit", lambda net, x, y, cfg, *a, **k: seen.append(cfg) or real_fit(
        net, x, y, cfg, *a, **k))
    for siq in (SIQConfig(rounds=2, epochs_per_round=1, tolerance=0.0),
                SIQConfig(rounds=2, epochs_per_round=1, tolerance=0.0, augment_shift=2, augment_flip=True,
                          dropout=0.2)):
        cfg = QuantizeConfig(method=method, conv_bits=2, fc_bits=4, act_bits=4, siq=siq)
        quantize_model(tiny_nets[True], digits.train_x, digits.train_y, cfg, digits.class_names)
    plain, augmented = seen[:2], seen[2:]
    assert [(c.augment_shift, c.augment_flip, c.dropout) for c in plain] == [(0, False, None)] * 2
    assert [(c.augment_shift, c.augment_flip, c.dropout) for c in augmented] == [(2, True, 0.2)] * 2


@pytest.mark.parametrize("bad", [dict(rounds=0), dict(epochs_per_round=0), dict(lr=0.0), dict(lr=float("nan")),
                                 dict(tolerance=2.0), dict(augment_shift=-1), dict(augment_shift=1.5),
                                 dict(dropout=1.0), dict(dropout=-0.1), dict(dropout=True)])
def test_siq_schedule_checked_before_training(tiny_nets, digits, bad):
    cfg = QuantizeConfig(method="siq", siq=SIQConfig(**bad))
    with pytest.raises(SiqError, match="SIQ"):
        quantize_model(tiny_nets[True], digits.train_x, digits.train_y, cfg, digits.class_names)


@pytest.mark.parametrize("method", ["uniform", "kmeans", "siq", "siq+"])
def test_per_channel_codebooks_give_each_output_channel_its_own_row(method, tiny_nets, digits):
    """--per-channel conv: each conv output channel has its own row of <= 2^b values (padded with its last value,
    never indexed there), the dense layers keep one codebook; the integer reference computes with the rows."""
    import copy

    from siq.training.quant import evaluate_exact
    net = tiny_nets[True]
    cfg = QuantizeConfig(method=method, conv_bits=1, fc_bits=3, act_bits=3, per_channel="conv",
                         siq=SIQConfig(rounds=2, epochs_per_round=1))
    qm, _ = quantize_model(net, digits.train_x, digits.train_y, cfg, digits.class_names)
    for i, lc in qm.layers.items():
        if net.arch.layers[i].type != "conv":
            assert not lc.per_channel and len(lc.codebook) <= 8
            continue
        out_channels = net.arch.weight_shape(i)[0]
        assert lc.per_channel and lc.codebook.shape == (out_channels, lc.entries) and lc.entries <= 2
        assert np.all(np.diff(lc.codebook, axis=1) >= 0)
        for o in range(out_channels):
            used = np.unique(lc.indices[o])
            assert set(lc.integer_weights()[o].ravel()) == set(lc.codebook[o, used])
            assert used.max() < len(np.unique(lc.codebook[o]))  # padding entries are never indexed
        # the rows differ: per channel is not one codebook written out C_OUT times
        assert len({tuple(row) for row in lc.codebook}) > 1
    scores = run_integer(build_integer_model(qm), digits.test_x[:200])[-1]
    assert np.array_equal(scores, evaluate_exact(qm, copy.deepcopy(net), digits.test_x[:200]))


def test_per_channel_kmeans_beats_one_codebook_at_one_bit(tiny_nets):
    """One sign-split pair of values per output channel fits each channel's scale: lower weight error than one
    pair for the layer (the reason to pay a row of codebook per channel)."""
    from siq.training.quantizers import centroid_values, per_row
    w = tiny_nets[True].layers[0].weight.detach().double().numpy()
    errors = {}
    for per_channel in (False, True):
        c, a = per_row(lambda x, init: kmeans_codebook(x, 1, 0, init), w, per_channel)
        errors[per_channel] = float(np.mean((centroid_values(c, a, w.shape) - w) ** 2))
    assert errors[True] < errors[False]


def test_per_channel_choice_refused_before_training(tiny_nets, digits):
    with pytest.raises(SiqError, match="per-channel codebooks must be one of"):
        quantize_model(tiny_nets[True], digits.train_x, digits.train_y,
                       QuantizeConfig(method="siq", per_channel="dense"), digits.class_names)


def test_per_channel_snap_keeps_one_exponent_and_pads_rows():
    centroids = np.array([[-1.0, 0.5], [0.25, 0.25]])  # row 1 merges into one value
    assignment = np.array([[0, 1, 1], [0, 1, 0]])
    lc = snap_codebook(centroids, assignment, 1, 8)
    assert lc.exponent == 6 and lc.codebook.tolist() == [[-64, 32], [16, 16]]
    assert lc.indices.tolist() == [[0, 1, 1], [0, 0, 0]]
    assert lc.integer_weights().tolist() == [[-64, 32, 32], [16, 16, 16]]


@pytest.mark.parametrize("method", ["siq", "siq+"])
def test_retraining_keeps_an_all_zero_channel_at_zero(tiny_nets, digits, method):
    """A pruned output channel (or one batch norm folding found constant) with its own codebook row: the forward
    pass sees only the row's one value 0, so without the gradient mask the straight-through estimator moves its
    latent weights unseen and the next round's k-means brings the channel back with them. (siq+ also trains each
    row's centroids through the forward pass, which the loss does see: there only the latent weights are held.)"""
    net = copy.deepcopy(tiny_nets[True])
    conv = net.arch.weighted_layers()[0]
    with torch.no_grad():
        net.layers[conv].weight[1] = 0.0
        net.layers[conv].bias[1] = 1.0    # a live constant: what follows reads it, so its gradient is not 0
    cfg = QuantizeConfig(method=method, conv_bits=2, fc_bits=4, act_bits=4, per_channel="all",
                         siq=SIQConfig(rounds=2, epochs_per_round=1, tolerance=0.0, lr=1e-2))
    qm, retrained = quantize_model(net, digits.train_x, digits.train_y, cfg, digits.class_names)
    assert torch.all(retrained.layers[conv].weight[1] == 0)
    assert torch.any(retrained.layers[conv].weight[0] != 0)
    if method == "siq":
        assert np.all(qm.layers[conv].codebook[1] == 0)

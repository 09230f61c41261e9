"""Cross-layer equalization (training/quant/equalize.py): which pairs it touches, that the float function stays,
that the two sides' ranges end equal, and that --equalize reaches the quantizer."""
import numpy as np
import pytest
import torch

from siq.training.arch import PRESETS, Arch
from siq.training.nets import Net, fold_batchnorm
from siq.training.quant import equalizable_pairs, equalize_channels

# conv -> bn -> relu -> depthwise -> bn -> relu -> grouped 1x1 (2 groups) -> relu -> 1x1 -> clip -> 1x1 -> relu
# -> global average -> dense: the pairs are (0, 2), (2, 4) and (4, 6); the clip keeps (6, 8) apart, and the
# global average and flatten keep the dense layer apart.
MIXED = Arch.from_dict({"name": "mixed", "input": [2, 10, 10], "layers": [
    {"type": "conv", "out": 8, "k": 3, "pad": 1}, {"type": "batchnorm"}, {"type": "relu"},
    {"type": "conv", "out": 8, "k": 3, "pad": 1, "groups": 8}, {"type": "batchnorm"}, {"type": "relu"},
    {"type": "conv", "out": 6, "k": 1, "groups": 2}, {"type": "relu"},
    {"type": "conv", "out": 6, "k": 1}, {"type": "clip", "max": 6.0},
    {"type": "conv", "out": 4, "k": 1}, {"type": "relu"},
    {"type": "globalavgpool"}, {"type": "flatten"}, {"type": "dense", "out": 3}]})


def folded_mixed(seed: int = 0) -> Net:
    """MIXED with random weights and batch-norm statistics that spread the channels apart, folded."""
    torch.manual_seed(seed)
    net = Net(MIXED)
    with torch.no_grad():
        for module in net.layers:
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.copy_(torch.logspace(-3, 1, module.num_features))
                module.weight.uniform_(0.5, 2.0)
    return fold_batchnorm(net.eval())


def test_pairs_are_relu_joined_convs_whose_tensors_have_one_reader():
    assert equalizable_pairs(MIXED.folded()) == [(0, 2), (2, 4), (4, 6)]
    assert equalizable_pairs(PRESETS["ds-cnn-28"].folded()) == [(i, i + 2) for i in range(0, 16, 2)]
    assert equalizable_pairs(PRESETS["paper-mnist"]) == []  # max pool and LRN between its convs
    resnet = PRESETS["resnet8"].folded()
    pairs = equalizable_pairs(resnet)
    assert pairs  # the two convs inside each residual block
    readers = {}
    for layer, sources in enumerate(resnet.sources):
        for source in sources:
            readers.setdefault(source, []).append(layer)
    for first, second in pairs:  # never a tensor that a shortcut reads too
        assert all(readers[k] == [k + 1] for k in range(first, second))


def test_the_float_function_stays_and_both_sides_end_with_one_range():
    net = folded_mixed()
    x = torch.rand(16, 2, 10, 10)
    equalized = equalize_channels(net)
    with torch.no_grad():
        np.testing.assert_allclose(equalized(x).numpy(), net(x).numpy(), rtol=1e-4, atol=1e-5)
    for first, second in equalizable_pairs(equalized.arch):
        w1 = equalized.layers[first].weight.detach().double()
        w2 = equalized.layers[second].weight.detach().double()
        out_range = w1.reshape(w1.shape[0], -1).abs().amax(1)
        if equalized.arch.layers[second].groups == w2.shape[0]:           # depthwise: channel c's own row
            in_range = w2.reshape(w2.shape[0], -1).abs().amax(1)
        else:                                                             # every row of channel c's group
            groups = equalized.arch.layers[second].groups
            per_group = w2.reshape(groups, w2.shape[0] // groups, w2.shape[1], -1).abs().amax(dim=(1, 3))
            in_range = per_group.reshape(-1)
        np.testing.assert_allclose(out_range.numpy(), in_range.numpy(), rtol=1e-3)
    # the layers no pair touches are left as they were
    for i in (8, 12):
        assert torch.equal(equalized.layers[i].weight, net.layers[i].weight)
    assert not torch.equal(equalized.layers[2].weight, net.layers[2].weight)


def test_before_equalization_the_folded_ranges_differ():
    """The test above can fail: folding spreads the channels apart (the statistics above span four decades of
    variance), and the first pair's two ranges start several times apart, differently for each channel."""
    net = folded_mixed()
    w1 = net.layers[0].weight.detach().reshape(8, -1).abs().amax(1)
    w2 = net.layers[2].weight.detach().reshape(8, -1).abs().amax(1)
    assert float((w1 / w2).max() / (w1 / w2).min()) > 5


def test_a_dead_channel_keeps_its_zero_weights():
    net = folded_mixed()
    with torch.no_grad():
        net.layers[0].weight[3] = 0.0
    equalized = equalize_channels(net)
    assert torch.count_nonzero(equalized.layers[0].weight[3]) == 0
    assert torch.isfinite(equalized.layers[2].weight).all()


def test_the_option_reaches_the_quantizer(digits):
    """quantize with equalize=True quantizes the equalized network: its config says so, its codebooks differ
    from the plain run's, and the integer model it gives scores as the plain one does within a few images."""
    from siq.codegen.api import quantize_config
    from siq.training.quant import evaluate_exact
    from siq.training.quantizers import quantize_model
    from siq.training.train import TrainConfig, accuracy, train_float
    arch = Arch.from_dict({"name": "chain", "input": [1, 8, 8], "layers": [
        {"type": "conv", "out": 6, "k": 3, "pad": 1}, {"type": "batchnorm"}, {"type": "relu"},
        {"type": "conv", "out": 6, "k": 3, "pad": 1, "groups": 6}, {"type": "batchnorm"}, {"type": "relu"},
        {"type": "conv", "out": 8, "k": 1}, {"type": "relu"},
        {"type": "globalavgpool"}, {"type": "flatten"}, {"type": "dense", "out": 10}]})
    net, _ = train_float(arch, digits.train_x, digits.train_y, TrainConfig(epochs=3, lr=0.01, batch_size=64))
    runs = {}
    for equalize in (False, True):
        cfg = quantize_config(method="kmeans", conv_bits=8, act_bits=8, equalize=equalize)
        qm, reference = quantize_model(net, digits.train_x, digits.train_y, cfg, digits.class_names)
        runs[equalize] = qm, accuracy(evaluate_exact(qm, reference, digits.test_x), digits.test_y)
    (plain, plain_accuracy), (equalized, equalized_accuracy) = runs[False], runs[True]
    assert equalized.meta["config"]["equalize"] is True and plain.meta["config"]["equalize"] is False
    assert any(not np.array_equal(equalized.layers[i].codebook, plain.layers[i].codebook) for i in equalized.layers)
    assert abs(equalized_accuracy - plain_accuracy) < 0.05  # W8A8: both close to the float network


def test_the_command_line_option_reaches_the_config():
    from siq.codegen.cli import build_parser
    from siq.codegen.cli.options import quant_config
    from siq.codegen.experiments import sweep_run_options
    parser = build_parser()
    for argv in (["quantize", "x.pt"], ["pipeline"]):
        assert quant_config(parser.parse_args(argv)).equalize is False
        assert quant_config(parser.parse_args(argv + ["--equalize"])).equalize is True
    # siq sweep: a study option, left out (so the cache keys stay) unless asked for
    assert "equalize" not in sweep_run_options(parser.parse_args(["sweep"]))
    assert sweep_run_options(parser.parse_args(["sweep", "--equalize"]))["equalize"] is True

"""Branching architectures: `name` / `input` on any layer, residual add and channel concat. The grammar and its
refusals, the resnet8 preset's shape, and bit-exactness four ways (PyTorch fake-quant, numpy, host C default and
reference builds, Cortex-M4 in QEMU) on a tiny residual + concat network and on resnet8 with random weights."""
from __future__ import annotations

import numpy as np
import pytest

from siq.codegen.lower import lower
from siq.codegen.target import run_self_test
from siq.codegen.verify import torch_op_outputs
from siq.training.arch import PRESETS, Arch
from siq.training.errors import SiqError
from siq.training.integer import check_lowerable, integer_scores, run_integer
from siq.training.quantizers import QuantizeConfig, SIQPlusConfig, check_method_fits, quantize_model

from operator_cases import check_four_ways, random_images, random_net

INPUT = [3, 6, 6]
HEAD = [{"type": "globalavgpool"}, {"type": "flatten"}, {"type": "dense", "out": 4}]
# Every case of the C kernels: an add of a signed conv output and a relu'd tensor (fused relu), an add of two
# signed outputs over an odd count (45 codes), an add of unsigned codes with no relu (the add is its own point)
# reading a byte buffer (a max-pool's) and a packed one, and a concat read by a conv (packed at 4 bits).
TINY = {"name": "tiny-graph", "input": INPUT, "layers": [
    {"type": "conv", "out": 4, "k": 3, "pad": 1}, {"type": "relu", "name": "a"},
    {"type": "conv", "out": 4, "k": 3, "pad": 1}, {"type": "batchnorm", "name": "m"},
    {"type": "add", "inputs": ["m", "a"]}, {"type": "relu", "name": "r"},
    {"type": "conv", "out": 3, "k": 1, "input": "a"}, {"type": "relu", "name": "b"},
    {"type": "concat", "inputs": ["r", "b"]},
    {"type": "conv", "out": 6, "k": 1}, {"type": "relu", "name": "d"},
    {"type": "conv", "out": 5, "k": 3, "stride": 2, "pad": 1}, {"type": "batchnorm", "name": "u"},
    {"type": "conv", "out": 5, "k": 1, "stride": 2, "input": "d"}, {"type": "batchnorm", "name": "v"},
    {"type": "add", "inputs": ["u", "v"]}, {"type": "relu", "name": "w"},
    {"type": "conv", "out": 5, "k": 1, "input": "input"}, {"type": "relu"}, {"type": "maxpool", "k": 2, "name": "q"},
    {"type": "add", "inputs": ["w", "q"]},
] + HEAD}


def _arch(layers, shape=INPUT) -> Arch:
    return Arch.from_dict({"name": "probe", "input": shape, "layers": layers + HEAD})


CONV = {"type": "conv", "out": 4, "k": 3, "pad": 1}


@pytest.mark.parametrize("layers, message", [
    ([dict(CONV, input="nope"), {"type": "relu"}], r"layer 0 \(conv\): unknown input name 'nope'"),
    ([dict(CONV, input="later"), {"type": "relu", "name": "later"}], r"reads 'later' before it is defined"),
    ([CONV, {"type": "relu", "name": "x"}, CONV, {"type": "relu", "name": "x"}], r"layer 3 .*duplicate name 'x'"),
    ([CONV, {"type": "relu", "name": "input"}], r"'input' is reserved"),
    ([CONV, {"type": "relu", "name": "a"}, {"type": "conv", "out": 5, "k": 1}, {"type": "relu", "name": "b"},
      {"type": "add", "inputs": ["a", "b"]}], r"layer 4 \(add\): add needs inputs of one shape, got 'a' \[4, 6, 6\], "
                                              r"'b' \[5, 6, 6\]"),
    ([dict(CONV, stride=2), {"type": "relu", "name": "a"}, {"type": "concat", "inputs": ["a", "input"]}],
     r"concat needs \(C, H, W\) inputs of equal height and width"),
    ([CONV, {"type": "relu", "name": "a"}, {"type": "add", "inputs": ["a"]}], r"add needs inputs = \[two or more"),
    ([CONV, {"type": "relu", "name": "a"}, {"type": "batchnorm", "input": "a"}], r"layer 2 \(batchnorm\): batchnorm must directly follow a conv or dense layer and read"),
    ([dict(CONV, name="c"), {"type": "batchnorm"}, {"type": "relu", "name": "a"},
      {"type": "add", "inputs": ["a", "c"]}], r"layer 3 also reads the conv/dense output this batchnorm normalizes"),
])
def test_malformed_graphs_are_refused_naming_the_layer(layers, message):
    with pytest.raises(SiqError, match=message):
        _arch(layers)


@pytest.mark.parametrize("layers, message", [
    # a signed sum with no relu after it cannot be stored as unsigned codes
    ([CONV, {"type": "relu", "name": "a"}, CONV, {"type": "batchnorm", "name": "m"},
      {"type": "add", "inputs": ["m", "a"]}], r"layer 3 \(add\) reads the signed output of layer 2 .*follow the add "
                                              r"with relu"),
    ([CONV, {"type": "relu", "name": "a"}, CONV, {"type": "batchnorm", "name": "m"},
      {"type": "concat", "inputs": ["m", "a"]}], r"layer 2 \(conv\) must be followed by relu, relu6 or clip \(or "
                                                 r"feed only add layers\)"),
    ([CONV, {"type": "relu", "name": "a"}, {"type": "add", "inputs": ["a", "a", "a"]}, {"type": "relu"}],
     r"layer 2 \(add\) sums 3 tensors"),
    ([dict(CONV, name="c"), {"type": "relu", "name": "a"}, {"type": "add", "inputs": ["a", "c"]}, {"type": "relu"}],
     r"layer 0 \(conv\) is read by its relu and by layer 2"),
    ([CONV, {"type": "relu", "name": "a"}, {"type": "concat", "inputs": ["a", "a"]}, {"type": "relu"}],
     r"layer 3 \(relu\): relu must directly follow a conv, dense or add"),
])
def test_graphs_the_integer_client_cannot_run_are_refused_before_training(layers, message):
    with pytest.raises(SiqError, match=message):
        check_lowerable(_arch(layers))


def test_names_survive_files_and_sequential_files_are_unchanged():
    arch = Arch.from_dict(TINY)
    assert Arch.from_dict(arch.to_dict()) == arch
    assert arch.to_dict()["layers"][4] == {"inputs": ["m", "a"], "type": "add"}
    assert arch.to_dict()["layers"][6] == {"out": 3, "k": 1, "stride": 1, "pad": 0, "type": "conv", "input": "a"}
    for preset in ("paper-mnist", "ds-cnn"):
        assert not any({"name", "input"} & set(layer) for layer in PRESETS[preset].to_dict()["layers"])
    assert arch.shapes()[8] == (7, 6, 6) and arch.shapes()[15] == (5, 3, 3)


def test_folding_batch_norm_moves_its_name_to_the_conv():
    folded = Arch.from_dict(TINY).folded()
    assert [(l.type, l.name) for l in folded.layers[2:4]] == [("conv", "m"), ("add", None)]
    assert folded.sources[3] == (2, 1)


def test_resnet8_has_the_mlperf_tiny_shape():
    arch = PRESETS["resnet8"]
    shapes = arch.shapes()
    macs = sum(int(np.prod(arch.weight_shape(i))) * int(np.prod(shapes[i][1:])) for i in arch.weighted_layers())
    assert macs == 12_501_632 and arch.num_classes == 10 and arch.input == (3, 32, 32)
    assert sum(l.type == "add" for l in arch.layers) == 3 and shapes[-4] == (64, 8, 8)
    check_lowerable(arch)


def _no_live_overlap(lm) -> None:
    """Every op's input buffers and output buffer are disjoint in the arena (they are alive at once), but for an op
    that writes over its input (LoweredOp.in_place): there they are one buffer."""
    for op in lm.ops:
        assert op.in_place == (op.output in op.inputs), op.comment
        spans = [lm.buffers[b] for b in dict.fromkeys(op.inputs + [op.output]) if b in lm.buffers]
        spans = sorted((offset, offset + size) for offset, size in spans)
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), op.comment


# other activation widths (1-8) and random branching shapes: host_tests/test_graph_properties.py
@pytest.mark.parametrize("act_bits, seed", [(4, 0), (8, 1)])
def test_tiny_graph_is_bit_exact_four_ways(act_bits, seed, tmp_path):
    qm, lm = check_four_ways(Arch.from_dict(TINY), seed, tmp_path, act_bits=act_bits, weight_bits=4,
                             builds=("default", "reference", "dsp"))
    adds = [op for op in lm.ops if op.kernel == "add_requant"]
    assert len(adds) == 3 and all(op.fast_kernel == "add_requant_fast" for op in adds)
    assert sum(op.kernel == "concat_requant" for op in lm.ops) == 2
    if act_bits == 4:  # both layouts reach the add kernels
        assert {(op.in_bits, op.other_bits, op.out_bits) for op in adds} >= {(4, 4, 4), (4, 8, 4)}
        assert [op.out_bits for op in lm.ops if op.kernel == "concat_requant"] == [4, 4]
    _no_live_overlap(lm)
    if seed == 0:  # the same firmware on emulated Cortex-M4 and M7
        images = random_images(qm.arch, np.random.default_rng(seed))
        scores = integer_scores(lm.integer, images)
        for cpu in ("cortex-m4", "cortex-m7"):
            result = run_self_test(tmp_path, lm.prefix, cpu, None, images, np.argmax(scores, axis=1), scores, "-O2")
            assert result["mismatches"] == 0 and np.array_equal(result["scores"], scores), (cpu,
                                                                                           result["first_mismatch"])


def test_resnet8_is_bit_exact_four_ways_and_refused_on_cortex_m0(tmp_path):
    qm, lm = check_four_ways(PRESETS["resnet8"], 0, tmp_path, act_bits=4, weight_bits=4, n=4)
    assert lm.macs == 12_501_632
    _no_live_overlap(lm)
    # the first stack's shortcut (s1) stays alive across its two convs: three buffers live at its add
    add = next(op for op in lm.ops if op.kernel == "add_requant")
    assert len({add.input, add.other, add.output}) == 3
    images = random_images(qm.arch, np.random.default_rng(0), n=1)
    scores = integer_scores(lm.integer, images)
    result = run_self_test(tmp_path, lm.prefix, "cortex-m4", None, images, np.argmax(scores, axis=1), scores, "-O2")
    assert result["mismatches"] == 0 and np.array_equal(result["scores"], scores), result["first_mismatch"]
    with pytest.raises(SiqError, match=rf"^the model needs {lm.arena_bytes + 2048:,} B of RAM .*cortex-m0"):
        run_self_test(tmp_path, lm.prefix, "cortex-m0", None, images, np.argmax(scores, axis=1), scores, "-O2")


def test_real_activation_steps_are_refused_on_branching_networks():
    cfg = QuantizeConfig(method="siq+", plus=SIQPlusConfig(real_steps=True))
    with pytest.raises(SiqError, match="real activation steps are not supported on architecture 'tiny-graph'"):
        check_method_fits(Arch.from_dict(TINY), cfg)
    check_method_fits(PRESETS["paper-mnist"], cfg)  # a sequential net keeps them


def test_pytorch_op_outputs_match_every_integer_op():
    """The mismatch locator's per-op PyTorch codes (pools on their input's step, signed points with their zero
    point) equal the numpy reference at every op of a branching net."""
    arch = Arch.from_dict(TINY)
    images = random_images(arch, np.random.default_rng(5))
    qm = quantize_model(random_net(arch, 5), images, np.arange(len(images)) % 4, QuantizeConfig(method="kmeans"),
                        list("abcd"))[0]
    lm = lower(qm)
    for k, (expected, got) in enumerate(zip(run_integer(lm.integer, images), torch_op_outputs(qm, lm, images))):
        assert np.array_equal(expected.reshape(len(images), -1), got.reshape(len(images), -1)), k


def test_a_pass_resumed_at_any_layer_equals_the_whole_pass():
    """prefix() then resume() computes what forward() does, bit for bit, split at every layer of a branching net
    (tensors kept across the split for later adds and concats), with the hooks from the split on changed (the
    output calibration's use: one prefix, then a candidate step for the point at the split or after it)."""
    import torch
    from siq.training.nets import fold_batchnorm, images_to_input
    from siq.training.quant import TrainingHooks, calibrate_shifts
    net = fold_batchnorm(random_net(Arch.from_dict(TINY), 3))
    images = random_images(net.arch, np.random.default_rng(3))
    x = images_to_input(images)
    shifts = calibrate_shifts(net, images, 4, "float")
    with torch.no_grad():
        for stop in range(len(net.arch.layers) + 1):
            before = net.prefix(x, TrainingHooks(4, shifts), stop)
            for point in [p for p in shifts if p >= stop] or [None]:
                hooks = TrainingHooks(4, shifts if point is None else {**shifts, point: shifts[point] + 1})
                assert torch.equal(net.resume(before, hooks), net(x, hooks)), (stop, point)


def test_dense_residuals_are_bit_exact(tmp_path):
    """Adds of dense outputs: a batch-normed signed dense added to a relu'd one, two signed denses under relu6."""
    arch = Arch.from_dict({"name": "dense-res", "input": [1, 4, 4], "layers": [
        {"type": "flatten"}, {"type": "dense", "out": 8}, {"type": "relu", "name": "h"},
        {"type": "dense", "out": 8}, {"type": "batchnorm", "name": "d"},
        {"type": "add", "inputs": ["h", "d"]}, {"type": "relu"},
        {"type": "dense", "out": 7, "name": "e"}, {"type": "dense", "out": 7, "input": "h", "name": "f"},
        {"type": "add", "inputs": ["e", "f"]}, {"type": "relu6"}, {"type": "dense", "out": 3}]})
    _, lm = check_four_ways(arch, 3, tmp_path, act_bits=3, weight_bits=3)
    assert [op.ir.zero_point for op in lm.ops if op.kernel == "dense_requant"] == [0, 4, 4, 4]

"""Client side: packing, lowering, overflow proof, generated C (strict flags), four-way bit-exactness."""
import json
import re
import subprocess

import numpy as np
import pytest

from siq.codegen.export import model_report, render_sources, write_sources
from siq.codegen.host import STRICT_FLAGS, build_host
from siq.codegen.lower import lower
from siq.codegen.pack import pack_indices, packed_size, read_index, unpack_indices
from siq.codegen.verify import verify
from conftest import tiny_arch
from siq.training.arch import Arch
from siq.training.errors import SiqError
from siq.training.integer import build_integer_model, integer_scores
from siq.training.quant import LayerCodebook, QuantizedModel, evaluate_exact
from siq.training.quantizers import QuantizeConfig, quantize_model
from siq.training.nets import Net


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("count", [1, 7, 13, 150])
def test_packing_round_trip(bits, count, rng):
    indices = rng.integers(0, 2**bits, size=count)
    packed = pack_indices(indices, bits)
    assert len(packed) == packed_size(count, bits) == (count * bits + 7) // 8
    assert unpack_indices(packed, count, bits).tolist() == indices.tolist()
    assert [read_index(packed, i, bits) for i in range(count)] == indices.tolist()


def test_packing_bit_order_is_lsb_first():
    assert pack_indices(np.array([1, 2, 3]), 2) == bytes([0b00111001])
    assert pack_indices(np.array([5, 3]), 3) == bytes([0b00011101])
    with pytest.raises(ValueError):
        pack_indices(np.array([4]), 2)


def _quantized(net, data, wbits, abits, method="kmeans", fc_bits=None):
    """Every width's bit-exactness: how the steps were chosen plays no part, so the seconds-fast tensor rule."""
    cfg = QuantizeConfig(method=method, conv_bits=wbits, fc_bits=fc_bits or wbits, act_bits=abits,
                         calibration_images=300, calibration="float")
    return quantize_model(net, data.train_x, data.train_y, cfg, data.class_names)[0]


def _check_four_way(qm, images, labels, tmp_path, prefix="siq_model"):
    lm = lower(qm, prefix)
    write_sources(lm, tmp_path)
    result = verify(qm, lm, tmp_path, images, labels, build_dir=tmp_path / "build")
    assert result["mismatches"] == {"torch_quant": 0, "host_c": 0, "host_c_class": 0}, result["first_mismatch"]
    return lm, result


@pytest.mark.parametrize("act_bits", [1, 2, 4, 8])
@pytest.mark.parametrize("weight_bits", range(1, 9))
def test_every_width_torch_equals_integer_reference(weight_bits, act_bits, tiny_nets, digits):
    """PyTorch fake-quant = numpy reference for every width pair; the host C builds of the same pairs are
    checked against the numpy reference in test_kernels.py (optimised, DSP-emulated and reference kernels)."""
    qm = _quantized(tiny_nets[True], digits, weight_bits, act_bits)
    reference = integer_scores(build_integer_model(qm), digits.test_x)
    torch_scores = evaluate_exact(qm, Net(qm.arch), digits.test_x)
    assert np.array_equal(torch_scores, reference)


@pytest.mark.parametrize("weight_bits, act_bits", [(1, 8), (3, 3), (8, 1)])
def test_four_way_bit_exact(weight_bits, act_bits, tiny_nets, digits, tmp_path):
    qm = _quantized(tiny_nets[True], digits, weight_bits, act_bits)
    _check_four_way(qm, digits.test_x, digits.test_y, tmp_path)


@pytest.mark.parametrize("lrn", [True, False])
def test_lrn_on_and_off(lrn, tiny_nets, digits, tmp_path):
    qm = _quantized(tiny_nets[lrn], digits, 3, 5)
    lm, result = _check_four_way(qm, digits.test_x, digits.test_y, tmp_path)
    assert ("lrn_requant" in [op.kernel for op in lm.ops]) == lrn
    assert result["accuracy"]["host_c"] > 0.5  # a briefly trained net, still far above chance


@pytest.mark.parametrize("preset", ["paper-mnist", "paper-office"])
def test_presets_bit_exact(preset, preset_nets, rng, tmp_path):
    net = preset_nets[preset]
    c, h, w = net.arch.input
    # images with structure (not only noise) so deeper layers see varied codes
    images = (rng.random((64, c, h, w)) ** 3 * 255).astype(np.uint8)
    labels = rng.integers(0, net.arch.num_classes, 64)

    class Data:
        train_x, train_y, class_names = images, labels, [f"class {i}" for i in range(net.arch.num_classes)]
    qm = _quantized(net, Data, 4, 4, fc_bits=8)
    lm, _ = _check_four_way(qm, images, labels, tmp_path)
    kernels = [op.kernel for op in lm.ops]
    assert kernels.count("conv2d_requant_maxpool") == (2 if preset == "paper-mnist" else 3)
    if preset == "paper-mnist":
        assert lm.macs == 221_800


@pytest.mark.parametrize("codebook_bits, entry_bytes", [(8, 1), (12, 2)])
def test_weights_bytes_in_report(codebook_bits, entry_bytes, tiny_nets, digits):
    cfg = QuantizeConfig(method="kmeans", conv_bits=3, fc_bits=3, act_bits=4, calibration_images=300,
                         codebook_bits=codebook_bits)
    qm = quantize_model(tiny_nets[True], digits.train_x, digits.train_y, cfg, digits.class_names)[0]
    report = model_report(lower(qm))
    expected = 0
    for i in qm.arch.weighted_layers():
        n = int(np.prod(qm.arch.weight_shape(i)))
        expected += (n * 3 + 7) // 8 + entry_bytes * len(qm.layers[i].codebook)
    assert report["footprint"]["weights_bytes"] == expected == qm.weights_bytes()
    for layer in report["footprint"]["layers"]:
        assert layer["packed_bytes"] == (layer["count"] * layer["bits"] + 7) // 8


def _one_weight_model(bias: int) -> QuantizedModel:
    """input 1x1x1 (8-bit codes up to 255) -> dense 2 with codebook [127]: |acc| <= |bias| + 255 * 127."""
    arch = Arch.from_dict({"name": "edge", "input": [1, 1, 1],
                           "layers": [{"type": "flatten"}, {"type": "dense", "out": 2}]})
    layer = LayerCodebook(1, np.array([127]), 0, np.zeros((2, 1), np.uint8))
    return QuantizedModel(arch, 8, {-1: 8}, {1: layer}, {1: np.array([bias, 0])}, ["a", "b"])


def test_codebook_values_beyond_15_bits_refused():
    wide = _one_weight_model(0)
    wide.layers[1] = LayerCodebook(1, np.array([2**14 - 1]), 0, np.zeros((2, 1), np.uint8))
    assert lower(wide).codebook_type == "int16_t"
    wide.layers[1] = LayerCodebook(1, np.array([2**14]), 0, np.zeros((2, 1), np.uint8))
    with pytest.raises(SiqError, match="codebook values 16384..16384 exceed -16384..16383"):
        lower(wide)
    with pytest.raises(SiqError, match="codebook bits must be a whole number from 2 to 15"):
        quantize_model(None, None, None, QuantizeConfig(codebook_bits=16), [])  # refused before any work


def test_overflow_bound_proven_and_one_past_refused():
    limit = 2**31 - 1
    at_bound = _one_weight_model(limit - 255 * 127)
    assert build_integer_model(at_bound).ops[-1].acc_bound == limit
    with pytest.raises(SiqError, match="accumulator can reach 2147483648"):
        build_integer_model(_one_weight_model(limit - 255 * 127 + 1))
    with pytest.raises(SiqError, match="accumulator"):
        lower(_one_weight_model(limit))


def test_numpy_reference_asserts_the_bound(tiny_nets, digits):
    model = build_integer_model(_quantized(tiny_nets[False], digits, 4, 4))
    conv = next(op for op in model.ops if op.name == "conv2d_requant")
    conv.acc_bound = 1  # pretend the proof said so: the reference must notice the real accumulators
    with pytest.raises(AssertionError, match="exceeds the proven bound"):
        integer_scores(model, digits.test_x[:10])


def test_generated_c_compiles_with_strict_flags(tiny_nets, digits, tmp_path):
    lm = lower(_quantized(tiny_nets[True], digits, 5, 6))
    write_sources(lm, tmp_path)
    for defines in ([], ["-DSIQ_PROFILE"]):
        result = subprocess.run(["gcc", *STRICT_FLAGS, *defines, "-c", str(tmp_path / "siq_model.c"),
                                 "-o", str(tmp_path / "m.o")], capture_output=True, text=True)
        assert result.returncode == 0 and result.stderr == "", result.stderr
    code = re.sub(r"/\*.*?\*/", "", (tmp_path / "siq_model.c").read_text(), flags=re.S)
    assert not re.search(r"\b(float|double|malloc|free|printf)\b", code)
    includes = {l.split()[1] for l in (tmp_path / "siq_model.h").read_text().splitlines() if l.startswith("#include")}
    assert includes == {"<stddef.h>", "<stdint.h>"}


def test_generated_c_is_deterministic(tiny_nets, digits):
    a = render_sources(lower(_quantized(tiny_nets[True], digits, 4, 4)))
    b = render_sources(lower(_quantized(tiny_nets[True], digits, 4, 4)))
    assert a == b


def test_class_names_are_escaped(tiny_nets, digits, tmp_path):
    qm = _quantized(tiny_nets[False], digits, 4, 4)
    qm.class_names[0] = 'say "hi" \\ ??= é'
    lm = lower(qm)
    write_sources(lm, tmp_path)
    build_host(tmp_path, "siq_model", tmp_path / "build")  # compiles with -Werror


def test_unsupported_configurations_refused_at_lowering(tiny_nets, digits):
    qm = _quantized(tiny_nets[False], digits, 4, 4)
    with pytest.raises(SiqError, match="prefix"):
        lower(qm, "Bad-Prefix")
    arch = Arch.from_dict({"name": "oddpool", "input": [1, 7, 7], "layers": [
        {"type": "conv", "out": 2, "k": 2}, {"type": "relu"}, {"type": "maxpool", "k": 4}, {"type": "flatten"},
        {"type": "dense", "out": 3}]})
    net = Net(arch)
    images = np.random.default_rng(0).integers(0, 255, (20, 1, 7, 7), dtype=np.uint8)
    odd = quantize_model(net, images, np.zeros(20, np.int64), QuantizeConfig(method="kmeans"), ["a", "b", "c"])[0]
    with pytest.raises(SiqError, match="does not divide"):
        lower(odd)
    no_relu = Arch.from_dict({"name": "norelu", "input": [1, 4, 4], "layers": [
        {"type": "flatten"}, {"type": "dense", "out": 3}, {"type": "dense", "out": 2}]})
    with pytest.raises(SiqError, match="must be followed by relu"):
        quantize_model(Net(no_relu), images[:, :, :4, :4], np.zeros(20, np.int64), QuantizeConfig(), ["a", "b"])


def test_weight_bit_positions_must_fit_uint32(tiny_nets, digits, monkeypatch):
    """The C addresses index i at bit i * bits in a uint32_t: a layer past 2^32 - 1 bits is refused when lowered
    (shown with the limit lowered to the size of the tiny net's largest layer)."""
    import siq.codegen.lower as lowering
    qm = _quantized(tiny_nets[False], digits, 4, 4)
    largest = max(lc.indices.size * lc.bits for lc in qm.layers.values())
    monkeypatch.setattr(lowering, "MAX_WEIGHT_BITS", largest)
    lower(qm)  # exactly at the limit: fine
    monkeypatch.setattr(lowering, "MAX_WEIGHT_BITS", largest - 1)
    with pytest.raises(SiqError, match="32-bit bit positions"):
        lower(qm)


def test_exact_model_matches_host_on_a_trained_net(mnist5k, tmp_path):
    """A real (briefly trained) paper-mnist at W4A4 FC8 on real MNIST digits."""
    from siq.training.arch import load_arch
    from siq.training.train import TrainConfig, train_float
    net, _ = train_float(load_arch("paper-mnist"), mnist5k.train_x[:1000], mnist5k.train_y[:1000],
                         TrainConfig(epochs=1))
    qm = _quantized(net, mnist5k, 4, 4, fc_bits=8)
    lm, result = _check_four_way(qm, mnist5k.test_x, mnist5k.test_y, tmp_path)
    assert result["n_test"] == 1000
    assert abs(result["accuracy"]["host_c"] - result["accuracy"]["int_reference"]) == 0
    report = json.loads(json.dumps(model_report(lm)))
    assert report["macs"] == 221_800 and report["footprint"]["arena_bytes"] == lm.arena_bytes


@pytest.mark.parametrize("k, size", [(1, 12), (3, 14)])
def test_conv_filter_scratch_fits_the_decoded_filter(k, size):
    """The arena scratch of a fast conv holds C_IN * K rows of the decoded filter's row words: lane pairs where a
    dual-MAC body exists for (K, input code bits), one word per tap otherwise (K = 1; K = 3 on 4-bit codes).
    Found by the long hypothesis profile: K = 1 had no entry and K = 3 on 4-bit codes got 2 words a row, not 3."""
    from siq.codegen.lower import filter_row_words
    arch = Arch.from_dict({"name": f"k{k}", "input": [1, size, size], "layers": [
        {"type": "conv", "out": 2, "k": k}, {"type": "relu"}, {"type": "maxpool", "k": 2},
        {"type": "conv", "out": 3, "k": k}, {"type": "relu"}, {"type": "maxpool", "k": 2}, {"type": "flatten"},
        {"type": "dense", "out": 2}]})
    images = np.random.default_rng(0).integers(0, 255, (20, 1, size, size), dtype=np.uint8)
    qm = quantize_model(Net(arch), images, np.zeros(20, np.int64), QuantizeConfig(method="kmeans", act_bits=4),
                        ["a", "b"])[0]
    lm = lower(qm)
    convs = [op for op in lm.ops if op.scratch]
    assert len(convs) == 2
    for op in convs:
        rows = op.params.in_channels * k
        assert lm.buffers[op.scratch][1] == 4 * rows * filter_row_words(k, op.params.in_bits)
    assert filter_row_words(3, 4) == 3 and filter_row_words(1, 8) == 1

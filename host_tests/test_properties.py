"""Property-based differential tests: random small architectures x per-layer weight bits 1-8 x activation bits
1-8 x random (possibly scaled) weights and random uint8 inputs -> PyTorch fake-quant (float64), the numpy integer
reference and the host C agree exactly; packing round-trips for any width and length.

Profiles (host_tests/conftest.py): the default runs 15 examples of the C-building test; --hypothesis-profile=long
runs 300. A configuration the generator refuses (SiqError: an accumulator that could leave int32, an LRN step
too fine) is a correct answer, not a failure; hypothesis is told to look elsewhere."""
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import assume, given, note
from hypothesis import strategies as st

from siq.codegen.export import write_sources
from siq.codegen.host import build_host
from siq.codegen.lower import lower
from siq.codegen.pack import pack_indices, packed_size, read_index, unpack_indices
from siq.training.arch import Arch
from siq.training.errors import SiqError
from siq.training.integer import integer_scores
from siq.training.nets import Net
from siq.training.quant import evaluate_exact
from siq.training.quantizers import QuantizeConfig, quantize_model


@st.composite
def architectures(draw) -> Arch:
    """Input 1-3 channels of 4-12 px; 1-2 conv blocks (k 1-4, stride 1-2, pad < k, 1-6 channels, relu, a max-pool
    where its size divides the map, lrn on or off); 0-1 hidden dense layers of 1-16; 2-5 classes."""
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(4, 12)), draw(st.integers(4, 12))
    shape_in = [c, h, w]
    layers = []
    for _ in range(draw(st.integers(1, 2))):
        k = draw(st.integers(1, min(4, h, w)))
        stride = draw(st.integers(1, 2))
        pad = draw(st.integers(0, k - 1))
        h, w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        layers += [{"type": "conv", "out": draw(st.integers(1, 6)), "k": k, "stride": stride, "pad": pad},
                   {"type": "relu"}]
        pools = [p for p in (2, 3) if h % p == 0 and w % p == 0]
        if pools and draw(st.booleans()):
            p = draw(st.sampled_from(pools))
            layers.append({"type": "maxpool", "k": p})
            h, w = h // p, w // p
        if draw(st.booleans()):
            layers.append({"type": "lrn", "size": draw(st.integers(1, 5)),
                           "alpha": draw(st.sampled_from([1e-4, 0.1, 1.0])),
                           "beta": draw(st.sampled_from([0.5, 0.75])), "k": draw(st.sampled_from([1.0, 2.0]))})
    layers.append({"type": "flatten"})
    if draw(st.booleans()):
        layers += [{"type": "dense", "out": draw(st.integers(1, 16))}, {"type": "relu"}]
    layers.append({"type": "dense", "out": draw(st.integers(2, 5))})
    return Arch.from_dict({"name": "random", "input": shape_in, "layers": layers})


@given(arch=architectures(), data=st.data())
def test_torch_numpy_and_c_agree(arch, data):
    weighted = arch.weighted_layers()
    layer_bits = {i: data.draw(st.integers(1, 8), label=f"bits of layer {i}") for i in weighted}
    act_bits = data.draw(st.integers(1, 8), label="act_bits")
    method = data.draw(st.sampled_from(["kmeans", "uniform"]), label="method")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    scale = data.draw(st.sampled_from([0.25, 1.0, 4.0]), label="weight scale")
    torch.manual_seed(seed)
    net = Net(arch)
    with torch.no_grad():
        for i in weighted:
            net.layers[i].weight.mul_(scale)
            net.layers[i].bias.mul_(scale)
    rng = np.random.default_rng(seed)
    c, h, w = arch.input
    images = np.concatenate([
        rng.integers(0, 256, (24, c, h, w), dtype=np.uint8),
        (rng.random((6, c, h, w)) ** 4 * 255).astype(np.uint8),  # mostly dark, a few bright pixels
        np.zeros((1, c, h, w), np.uint8), np.full((1, c, h, w), 255, np.uint8)])
    note(f"arch {arch.to_dict()}")
    cfg = QuantizeConfig(method=method, layer_bits=layer_bits, act_bits=act_bits, calibration_images=len(images),
                         seed=seed % 7)
    try:
        qm = quantize_model(net, images, rng.integers(0, arch.num_classes, len(images)), cfg,
                            [f"class {k}" for k in range(arch.num_classes)])[0]
        lm = lower(qm)
    except SiqError as exc:  # refused at quantization or lowering, with a reason: fine, but not what we test
        note(f"refused: {exc}")
        assume(False)
    expected = integer_scores(lm.integer, images)
    torch_scores = evaluate_exact(qm, Net(arch), images)
    assert np.array_equal(torch_scores, expected), "PyTorch fake-quant differs from the numpy reference"
    with tempfile.TemporaryDirectory(prefix="siq-prop-") as tmp:
        write_sources(lm, Path(tmp))
        host = build_host(Path(tmp), lm.prefix, Path(tmp) / "build")
        scores, classes = host.infer(images)
    differing = np.flatnonzero(np.any(scores != expected, axis=1))
    assert len(differing) == 0, (f"host C differs on {len(differing)} images; first {differing[0]}: "
                                 f"expected {expected[differing[0]].tolist()}, got {scores[differing[0]].tolist()}")
    assert np.array_equal(classes, np.argmax(expected, axis=1))


@given(bits=st.integers(1, 8), data=st.data())
def test_packing_round_trips(bits, data):
    indices = data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=0, max_size=300))
    packed = pack_indices(np.array(indices, dtype=np.int64), bits)
    assert len(packed) == packed_size(len(indices), bits) == (len(indices) * bits + 7) // 8
    assert unpack_indices(packed, len(indices), bits).tolist() == indices
    assert [read_index(packed, i, bits) for i in range(len(indices))] == indices
    if len(indices) * bits % 8:  # the unused high bits of the last byte are zero
        assert packed[-1] >> (len(indices) * bits % 8) == 0

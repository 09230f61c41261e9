"""Shared fixtures: small real data and small networks, built once per session."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from siq.training.arch import Arch, load_arch
from siq.training.data import load_dataset
from siq.training.nets import Net
from siq.training.quant import save_quantized
from siq.training.quantizers import QuantizeConfig, quantize_model
from siq.training.train import TrainConfig, save_checkpoint, train_float


def tiny_arch(lrn: bool = True, input_shape=(1, 8, 8), classes: int = 10) -> Arch:
    """conv 4@3x3 pad 1 -> relu -> pool 2 [-> lrn] -> conv 6@3x3 -> relu -> flatten -> dense 12 -> relu -> dense."""
    layers = [{"type": "conv", "out": 4, "k": 3, "pad": 1}, {"type": "relu"}, {"type": "maxpool", "k": 2}]
    if lrn:
        layers.append({"type": "lrn", "size": 3, "alpha": 0.5, "beta": 0.75, "k": 1.0})
    layers += [{"type": "conv", "out": 6, "k": 3}, {"type": "relu"}, {"type": "flatten"},
               {"type": "dense", "out": 12}, {"type": "relu"}, {"type": "dropout", "p": 0.2},
               {"type": "dense", "out": classes}]
    return Arch.from_dict({"name": "tiny" + ("-lrn" if lrn else ""), "input": list(input_shape), "layers": layers})


def write_model_files(root, digits, method: str = "kmeans", calibration_images: int = 200):
    """An untrained (seeded) tiny checkpoint on digits (root/float.pt) and its W4A4 quantized model
    (root/quantized.pt): real siq files for the tests of loading, checking and exporting them."""
    torch.manual_seed(0)
    net = Net(tiny_arch())
    meta = {"spec": "digits", "data_dir": None, "seed": 0, "class_names": list(digits.class_names)}
    save_checkpoint(root / "float.pt", net, meta, TrainConfig(epochs=1), {"float_accuracy": 0.1})
    cfg = QuantizeConfig(method=method, calibration_images=calibration_images, calibration="float")  # untrained
    qm = quantize_model(net, digits.train_x, digits.train_y, cfg, digits.class_names, {"dataset": meta})[0]
    save_quantized(root / "quantized.pt", qm)
    return root


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def mnist5k():
    return load_dataset("mnist5k", seed=0)


@pytest.fixture(scope="session")
def tiny_nets(digits):
    """Briefly trained tiny nets on sklearn digits, with and without LRN."""
    cfg = TrainConfig(epochs=10, batch_size=32, lr=1e-2)
    return {lrn: train_float(tiny_arch(lrn), digits.train_x, digits.train_y, cfg)[0] for lrn in (True, False)}


@pytest.fixture(scope="session")
def preset_nets():
    """Untrained (seeded) paper presets: bit-exactness does not depend on training."""
    torch.manual_seed(0)
    return {name: Net(load_arch(name)) for name in ("paper-mnist", "paper-office")}


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)


# conv 3x3 (fast k3, one input channel) -> pool -> lrn -> conv 5x5 (fast k5, 4 input channels) -> pool ->
# dense 12 -> relu -> dense 10 on an 18x18 input: every optimised kernel and DSP body (test_kernels.py,
# test_per_channel.py). Activations of at most 4 bits are stored two a byte (the input codes stay bytes: k3 reads
# bytes only), so the same net also runs the nibble-writing conv, the nibble LRN and the nibble-reading conv; at
# 8-bit indices the dense layers run 3 and 2 row quads (+ 2 single rows).
FAST_ARCH = {"name": "fast-kernels", "input": [1, 18, 18], "layers": [
    {"type": "conv", "out": 4, "k": 3}, {"type": "relu"}, {"type": "maxpool", "k": 2},
    {"type": "lrn", "size": 3, "alpha": 0.5, "beta": 0.75, "k": 1.0},
    {"type": "conv", "out": 6, "k": 5}, {"type": "relu"}, {"type": "maxpool", "k": 2},
    {"type": "flatten"}, {"type": "dense", "out": 12}, {"type": "relu"}, {"type": "dense", "out": 10}]}


@pytest.fixture(scope="module")
def fast_setup():
    """The untrained (seeded) FAST_ARCH net and 120 random images, two of them all 0 and all 255."""
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    images = (rng.random((120, 1, 18, 18)) ** 2 * 255).astype(np.uint8)
    images[0] = 0
    images[1] = 255
    return Net(Arch.from_dict(FAST_ARCH)), images


# ---------------------------------------------------------------- hypothesis profiles (host_tests/test_properties.py)
# "default": CI-sized (each differential example builds C, ~1 s); "long": --hypothesis-profile=long.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("default", max_examples=15, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("default")


def readme_python_block(section: str) -> str:
    """The one ```python block of a README.md section (## section), which a test runs as written."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```$", body, re.S | re.M)
    assert len(blocks) == 1, f"the {section} section should hold exactly one python block"
    return blocks[0]

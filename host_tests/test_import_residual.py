"""A custom module with a residual add (`x + y`) and a channel concat (`torch.cat`) imports as the architecture's
`add` and `concat` layers (named inputs), exactly, the same through ONNX, and runs SIQ W4A4 on a Cortex-M4 with
0 mismatches. Needs the add/concat layers of the architecture (the graph syntax): see conftest.collect_ignore."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import siq
from import_models import as_input, train_briefly, write_npz
from siq.training.importers import siq_input
from siq.training.quantizers import SIQConfig

quiet = dict(log=lambda *a: None)


class ResidualNet(nn.Module):
    """stem conv + bn + relu; a residual block (conv, bn, relu, conv, bn, + stem, relu); two branches (1x1 and
    3x3 conv + relu) concatenated; max pool, global average pool, linear."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.narrow = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU())
        self.wide = nn.Sequential(nn.Conv2d(8, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.body(x) + x)
        x = torch.cat([self.narrow(x), self.wide(x)], dim=1)
        return self.fc(self.pool(x).mean((2, 3)))


@pytest.fixture(scope="module")
def residual(digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("residual")
    torch.manual_seed(0)
    module = train_briefly(ResidualNet(), as_input(digits.train_x), digits.train_y)
    dataset = write_npz(folder / "data.npz", digits.train_x, digits.train_y, digits.test_x, digits.test_y)
    imported = siq.from_torch(module, as_input(digits.test_x[:8]), dataset=dataset, out=folder / "float.pt",
                              **quiet)
    return module, imported, folder, as_input(digits.test_x)


def test_residual_add_and_concat_import_as_named_add_and_concat_layers(residual):
    module, imported, _, test_input = residual
    layers = imported.arch.to_dict()["layers"]
    add = next(layer for layer in layers if layer["type"] == "add")
    concat = next(layer for layer in layers if layer["type"] == "concat")
    names = {layer.get("name") for layer in layers}
    assert len(add["inputs"]) == 2 and set(add["inputs"]) <= names
    assert len(concat["inputs"]) == 2 and set(concat["inputs"]) <= names
    assert any(layer.get("input") for layer in layers)  # the second branch reads the block's output by name
    with torch.no_grad():
        expected, got = module(test_input), imported.net(siq_input(test_input))
    assert float((expected - got).abs().max() / expected.abs().max()) <= 1e-5


def test_residual_model_through_onnx_gives_the_same_architecture(residual):
    module, imported, folder, test_input = residual
    path = folder / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (test_input[:2],), str(path), dynamo=False)
    onnx = siq.load_onnx(path, **quiet)
    assert [(l.type, s) for l, s in zip(onnx.arch.folded().layers, onnx.arch.folded().shapes())] == \
        [(l.type, s) for l, s in zip(imported.arch.folded().layers, imported.arch.folded().shapes())]
    with torch.no_grad():
        x = siq_input(test_input)
        assert float((imported.net(x) - onnx.net(x)).abs().max() / imported.net(x).abs().max()) <= 1e-5


def test_residual_model_runs_siq_w4a4_bit_exact_on_a_cortex_m4(residual):
    _, imported, folder, _ = residual
    qm = siq.quantize(imported, method="siq", conv_bits=4, act_bits=4, siq=SIQConfig(rounds=2, epochs_per_round=1),
                      **quiet)
    siq.export(qm, folder / "firmware", vectors=20, **quiet)
    assert siq.verify(folder / "firmware", **quiet)["mismatches"] == {"torch_quant": 0, "host_c": 0,
                                                                      "host_c_class": 0}
    assert siq.target(folder / "firmware", cpu="cortex-m4", images=20, **quiet)["mismatches"] == 0

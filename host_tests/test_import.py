"""Bring your own model: PyTorch modules trained in plain PyTorch, imported (torch.export, .pt2 files and ONNX),
give the source's float outputs within 1e-5, the same architecture both ways, and then quantize (SIQ W4A4),
export, verify and run on a Cortex-M4 with 0 mismatches. What siq cannot run is refused at import, one line."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import siq
from import_models import (SeparableNet, as_input, sequential_cnn, signal_cnn, signals, train_briefly,
                           write_npz)
from siq.codegen.cli import main
from siq.training.importers import siq_input
from siq.training.integer import integer_scores
from siq.training.quantizers import SIQConfig
from siq.codegen.lower import lower

QUICK_SIQ = SIQConfig(rounds=2, epochs_per_round=1)  # a short retraining: exactness does not need accuracy
quiet = dict(log=lambda *a: None)


@dataclass
class Case:
    module: torch.nn.Module
    dataset: str                # the npz spec the checkpoint records
    test_input: torch.Tensor    # the test split as the source model takes it
    folder: Path


def _relative_error(expected: torch.Tensor, got: torch.Tensor) -> float:
    return float((expected - got).abs().max() / expected.abs().max())


@pytest.fixture(scope="module", params=["sequential", "separable", "signal-1d"])
def case(request, digits, tmp_path_factory) -> Case:
    folder = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    if request.param == "signal-1d":
        x, y = signals()
        train_x, train_y, test_x, test_y = x[:360], y[:360], x[360:], y[360:]
        module, one_d = signal_cnn(), True
    else:
        train_x, train_y, test_x, test_y = digits.train_x, digits.train_y, digits.test_x, digits.test_y
        module, one_d = (sequential_cnn() if request.param == "sequential" else SeparableNet()), False
    dataset = write_npz(folder / "data.npz", train_x, train_y, test_x, test_y)
    train_briefly(module, as_input(train_x, one_d), train_y)
    return Case(module, dataset, as_input(test_x, one_d), folder)


@pytest.fixture(scope="module")
def imported(case):
    return siq.from_torch(case.module, case.test_input[:8], dataset=case.dataset, out=case.folder / "float.pt",
                          name="model", **quiet)


def _onnx_import(case, name: str, fold: bool):
    """The module through torch.onnx.export (TorchScript exporter): its constant folding also folds batch norm
    into the conv before it, in float32; without it the file keeps BatchNormalization nodes."""
    path = case.folder / name / "model.onnx"
    path.parent.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(case.module, (case.test_input[:2],), str(path), dynamo=False, do_constant_folding=fold)
    return siq.load_onnx(path, dataset=case.dataset, out=path.parent / "float.pt", **quiet)


@pytest.fixture(scope="module")
def onnx_imported(case):
    return _onnx_import(case, "folded", fold=True)


@pytest.fixture(scope="module")
def onnx_unfolded(case):
    return _onnx_import(case, "unfolded", fold=False)


def test_imported_float_outputs_equal_the_modules_on_the_test_split(case, imported):
    with torch.no_grad():
        expected, got = case.module(case.test_input), imported.net(siq_input(case.test_input))
    assert _relative_error(expected, got) <= 1e-5
    assert imported.accuracy > 0.5  # trained briefly, and the checkpoint records it on the same data
    reloaded, meta = siq.load_float(imported.checkpoint)
    assert reloaded.arch == imported.arch and meta["dataset"]["spec"] == case.dataset
    assert meta["source"]["parameters"] == imported.mapping


def test_the_report_lists_every_source_node_and_the_mapping_every_parameter(case, imported):
    program = torch.export.export(case.module, (case.test_input[:2],))
    nodes = [n.name for n in program.graph.nodes if n.op == "call_function"]
    assert [row["node"] for row in imported.report] == nodes
    params = {name for name, _ in case.module.named_parameters()}
    buffers = {name for name, _ in case.module.named_buffers() if not name.endswith("num_batches_tracked")}
    assert set(imported.mapping) == params | buffers
    state = imported.net.state_dict()
    source = dict(case.module.state_dict())
    for name, key in imported.mapping.items():
        assert torch.equal(state[key].reshape(source[name].shape), source[name]), name


def _without_dropout(layers) -> list:
    """Layers (specs or modules) except dropout, which ONNX exports leave out (it is the identity in eval)."""
    return [layer for layer in layers if getattr(layer, "type", None) != "dropout"
            and not isinstance(layer, torch.nn.Dropout)]


def _ops_and_shapes(arch):
    """The network as quantization sees it (batch norm folded), dropout aside (ONNX exports drop it)."""
    folded = arch.folded()
    return [(layer, shape) for layer, shape in zip(folded.layers, folded.shapes()) if layer.type != "dropout"]


def test_onnx_import_gives_the_same_architecture_and_outputs(case, imported, onnx_imported):
    assert _ops_and_shapes(onnx_imported.arch) == _ops_and_shapes(imported.arch)
    x = siq_input(case.test_input)
    with torch.no_grad():
        assert _relative_error(imported.net(x), onnx_imported.net(x)) <= 1e-5


def test_pt2_file_imports_through_the_command_line_as_from_torch_does(case, imported, capsys):
    path = case.folder / "model.pt2"
    torch.export.save(torch.export.export(case.module, (case.test_input[:2],)), path)
    out = case.folder / "pt2.pt"
    assert main(["import", str(path), "--dataset", case.dataset, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "-> layer 0: conv" in printed and "float test accuracy" in printed
    net, _ = siq.load_float(out)
    assert net.arch.layers == imported.arch.layers
    for key, value in imported.net.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key


def test_siq_w4a4_export_verify_and_cortex_m4_agree_bit_for_bit(case, imported):
    qm = siq.quantize(imported, method="siq", conv_bits=4, act_bits=4, siq=QUICK_SIQ,
                      out=case.folder / "quantized.pt", **quiet)
    firmware = case.folder / "firmware"
    siq.export(qm, firmware, vectors=20, **quiet)
    report = siq.verify(firmware, **quiet)
    assert report["mismatches"] == {"torch_quant": 0, "host_c": 0, "host_c_class": 0}
    assert report["accuracy"]["int_reference"] > 0.5
    target = siq.target(firmware, cpu="cortex-m4", images=20, **quiet)
    assert target["mismatches"] == 0


def test_onnx_without_batch_norm_folding_gives_the_same_weights_and_the_same_c(case, imported, onnx_unfolded):
    assert _without_dropout(onnx_unfolded.arch.layers) == _without_dropout(imported.arch.layers)
    for ours, theirs in zip(_without_dropout(imported.net.layers), _without_dropout(onnx_unfolded.net.layers)):
        for (key, value), (_, other) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert torch.equal(value, other), key
    test_x = np.load(case.dataset[len("npz:"):])["x_test"]
    c_files, scores = [], []
    for source in (imported, onnx_unfolded):
        qm = siq.quantize(source, method="kmeans", conv_bits=4, act_bits=4, **quiet)
        scores.append(integer_scores(lower(qm).integer, test_x))
        out = source.checkpoint.parent / "c"
        siq.export(qm, out, vectors=0, **quiet)
        c_files.append((out / "siq_model.c").read_bytes())
    assert np.array_equal(scores[0], scores[1])
    # the C names its arrays by layer index, and ONNX files leave the module's dropout layers out (SIQ's
    # retraining uses them): byte for byte where the module has none
    if len(imported.arch.layers) == len(onnx_unfolded.arch.layers):
        assert c_files[0] == c_files[1]
    else:
        assert any(isinstance(m, torch.nn.Dropout) for m in case.module.modules())


def test_onnx_with_batch_norm_prefolded_predicts_the_same_after_quantization(case, imported, onnx_imported):
    """The exporter folded batch norm in float32 (siq folds in float64): weights differ in the last bits, so
    the same post-training quantization is compared by its predictions on the test split."""
    test_x = np.load(case.dataset[len("npz:"):])["x_test"]
    predictions = []
    for source in (imported, onnx_imported):
        qm = siq.quantize(source, method="kmeans", conv_bits=4, act_bits=4, **quiet)
        predictions.append(np.argmax(integer_scores(lower(qm).integer, test_x), 1))
    same = predictions[0] == predictions[1]
    assert same.mean() >= 0.999, f"{(~same).sum()} of {len(same)} test predictions differ"

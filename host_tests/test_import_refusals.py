"""What siq cannot run is refused at import: one line naming the node, its op type and why, exit 2, nothing
written. A foreign torch file where a siq file is expected says how to bring the model in."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper, save
from torch import nn

import siq
from siq.codegen.cli import main


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(8, 4, batch_first=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):  # x [N, C, L]: the LSTM reads the L steps of C features
        return self.fc(self.rnn(x.transpose(1, 2))[0][:, -1])


class SigmoidBetween(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.sigmoid(self.conv(x)).flatten(1))


class NotAFlatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(36, 3)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.fc(x.view(x.size(0), x.size(1), -1)).mean(1)


def flatten_view_model() -> nn.Module:
    class FlattenView(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 6 * 6, 3)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            return self.fc(x.view(x.size(0), -1))
    return FlattenView()


IMAGE, SIGNAL = torch.rand(2, 1, 8, 8), torch.rand(2, 8, 5)
# model, example input, what the one line must name
REFUSED = {
    "lstm": (Recurrent, SIGNAL, ["'rnn'", "torch.nn.LSTM", "recurrent layers"]),
    "sigmoid between layers": (SigmoidBetween, IMAGE, ["'sigmoid'", "aten.sigmoid", "between layers"]),
    "sigmoid at the output": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 3), nn.Sigmoid()), IMAGE,
                              ["'sigmoid'", "class scores"]),
    "reshape that is not a flatten": (NotAFlatten, IMAGE, ["'view'", "aten.view", "not a flatten"]),
    "reflect padding": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
                                              nn.Flatten(), nn.Linear(128, 3)), IMAGE,
                        ["'pad'", "aten.pad", "reflect"]),
    "dilated conv": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.ReLU(), nn.Flatten(),
                                           nn.Linear(32, 3)), IMAGE, ["'conv2d'", "dilated"]),
    "1-D max pool": (lambda: nn.Sequential(nn.Conv1d(8, 4, 1), nn.ReLU(), nn.MaxPool1d(5), nn.Flatten(),
                                           nn.Linear(4, 3)), SIGNAL, ["'max_pool1d'", "square k x k"]),
}


def one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("siq: error: "), lines
    return lines[0]


@pytest.mark.parametrize("case", REFUSED)
def test_from_torch_refuses_naming_the_node_its_op_and_why(case, tmp_path):
    make, example, words = REFUSED[case]
    with pytest.raises(siq.SiqError) as refused:
        siq.from_torch(make(), example, dataset="digits", out=tmp_path / "float.pt", log=lambda *a: None)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("cannot import node ")
    for word in words:
        assert word in message, message
    assert not (tmp_path / "float.pt").exists()


def test_a_flatten_written_as_a_view_imports(tmp_path):
    imported = siq.from_torch(flatten_view_model(), IMAGE, log=lambda *a: None)
    assert [layer.type for layer in imported.arch.layers] == ["conv", "relu", "flatten", "dense"]


def _export_onnx(model, example, path, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, input_names=["x"], **options)
    return path


@pytest.mark.parametrize("case, options, words", [
    ("dynamic reshape", {"dynamic_axes": {"x": {0: "batch"}}}, ["'/Reshape'", "(Reshape)", "dynamic reshape"]),
    ("sigmoid between layers", {}, ["(Sigmoid)", "between layers"]),
    ("lstm", {}, ["(LSTM)", "recurrent layers"]),
])
def test_siq_import_refuses_onnx_in_one_line_and_writes_nothing(case, options, words, tmp_path, capsys):
    model, example = {"dynamic reshape": (flatten_view_model(), IMAGE),
                      "sigmoid between layers": (SigmoidBetween(), IMAGE), "lstm": (Recurrent(), SIGNAL)}[case]
    path = _export_onnx(model, example, tmp_path / "model.onnx", **options)
    out = tmp_path / "out" / "float.pt"
    assert main(["import", str(path), "--dataset", "digits", "--out", str(out)]) == 2
    line = one_line(capsys)
    for word in words:
        assert word in line, line
    assert not out.exists() and not out.parent.exists()


def test_siq_import_refuses_a_pt2_lstm_and_names_the_module(tmp_path, capsys):
    path = tmp_path / "rnn.pt2"
    torch.export.save(torch.export.export(Recurrent().eval(), (SIGNAL,)), path)
    assert main(["import", str(path), "--dataset", "digits", "--out", str(tmp_path / "float.pt")]) == 2
    assert "'rnn' (torch.nn.LSTM): recurrent layers" in one_line(capsys)
    assert not (tmp_path / "float.pt").exists()


def test_siq_import_names_the_file_kinds_it_reads(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    assert main(["import", str(path), "--dataset", "digits", "--out", str(tmp_path / "float.pt")]) == 2
    assert ".onnx" in (line := one_line(capsys)) and ".pt2" in line and "siq.from_torch" in line


def test_a_state_dict_or_pickled_module_where_a_checkpoint_is_expected_points_to_import(tmp_path, capsys):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    torch.save(model.state_dict(), tmp_path / "state_dict.pt")
    torch.save(model, tmp_path / "module.pt")
    for name, words in (("state_dict.pt", ["is a PyTorch state_dict (2 tensors, no architecture)"]),
                        ("module.pt", ["is a pickled Python object (a whole nn.Module?)"])):
        assert main(["quantize", str(tmp_path / name), "--out", str(tmp_path / "q.pt")]) == 2
        line = one_line(capsys)
        for word in words + ["siq.from_torch(module, example_input)", "siq import model.pt2", "siq import model.onnx"]:
            assert word in line, line
    assert not (tmp_path / "q.pt").exists()


def test_an_imported_model_without_a_dataset_is_not_saved_and_cannot_be_quantized(tmp_path):
    with pytest.raises(siq.SiqError, match="pass dataset"):
        siq.from_torch(flatten_view_model(), IMAGE, out=tmp_path / "float.pt", log=lambda *a: None)
    imported = siq.from_torch(flatten_view_model(), IMAGE, log=lambda *a: None)
    with pytest.raises(siq.SiqError, match="no checkpoint yet"):
        siq.quantize(imported, log=lambda *a: None)
    with pytest.raises(siq.SiqError, match="3 outputs, dataset 'digits' has 10 classes"):
        siq.from_torch(flatten_view_model(), IMAGE, dataset="digits", out=tmp_path / "f.pt", log=lambda *a: None)
    assert not list(tmp_path.iterdir())
    assert np.isfinite(imported.net(IMAGE).detach().numpy()).all()


def test_zero_padding_before_a_conv_joins_the_conv_both_ways(tmp_path):
    model = nn.Sequential(nn.ZeroPad2d((1, 0, 2, 1)), nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 9 * 7, 3)).eval()
    imported = siq.from_torch(model, IMAGE, log=lambda *a: None)
    assert imported.arch.layers[0].pad == (2, 1, 1, 0) and len(imported.arch.layers) == 4
    onnx = siq.load_onnx(_export_onnx(model, IMAGE, tmp_path / "pad.onnx"), log=lambda *a: None)
    assert onnx.arch.layers == imported.arch.layers
    with torch.no_grad():
        assert torch.allclose(onnx.net(IMAGE), model(IMAGE), rtol=1e-5, atol=1e-6)


def test_onnx_matmul_plus_bias_and_gemm_without_transpose_are_dense_layers(tmp_path):
    """MatMul + Add (how exporters write a linear layer on some opsets) and Gemm with B as [in, out]."""
    rng = np.random.default_rng(0)
    w1, b1, w2, b2 = (rng.normal(size=s).astype(np.float32) for s in ((64, 12), (12,), (12, 3), (3,)))
    nodes = [helper.make_node("Flatten", ["x"], ["flat"]), helper.make_node("MatMul", ["flat", "w1"], ["mm"]),
             helper.make_node("Add", ["mm", "b1"], ["biased"]), helper.make_node("Relu", ["biased"], ["h"]),
             helper.make_node("Gemm", ["h", "w2", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"),
                                                                          (b2, "b2"))])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "mlp.onnx"))
    imported = siq.load_onnx(tmp_path / "mlp.onnx", log=lambda *a: None)
    assert [layer.type for layer in imported.arch.layers] == ["flatten", "dense", "relu", "dense"]
    assert imported.mapping == {"w1": "layers.1.weight", "b1": "layers.1.bias", "w2": "layers.3.weight",
                                "b2": "layers.3.bias"}
    x = torch.rand(4, 1, 8, 8)
    expected = torch.relu(x.flatten(1) @ torch.from_numpy(w1) + torch.from_numpy(b1)) @ torch.from_numpy(w2) + \
        torch.from_numpy(b2)
    with torch.no_grad():
        assert torch.allclose(imported.net(x), expected, rtol=1e-5, atol=1e-5)

"""The Python API: the README's example runs as written, help(siq) shows the API, the CLI goes through it."""
from __future__ import annotations

import ast
import json
import pydoc
import re
import subprocess
import sys

import pytest

import siq
from siq.codegen import api
from siq.codegen.cli import main

from conftest import readme_python_block

API = ("from_torch", "load_onnx", "import_model", "train", "quantize", "export", "verify", "target", "fit")


def readme_example() -> str:
    """The ```python block of the README's "Python API" section."""
    return readme_python_block("Python API")


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """The README's example, run as written in an empty folder: (folder, what it printed)."""
    code = readme_example()
    assert len(code.strip().splitlines()) <= 15
    for name in ("siq.train(", "siq.quantize(", "siq.export(", "siq.verify("):
        assert name in code
    folder = tmp_path_factory.mktemp("readme")
    result = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder, result.stdout


def test_readme_example_trains_quantizes_exports_and_verifies(readme_run):
    folder, stdout = readme_run
    printed = dict(re.findall(r"^(float accuracy|W4A4 integer accuracy|mismatches) (.*)$", stdout, re.M))
    assert 0.5 < float(printed["float accuracy"]) <= 1.0, stdout
    assert 0.5 < float(printed["W4A4 integer accuracy"]) <= 1.0, stdout
    assert ast.literal_eval(printed["mismatches"]) == {"torch_quant": 0, "host_c": 0, "host_c_class": 0}
    for name in ("float.pt", "quantized.pt", "firmware/siq_model.c", "firmware/siq_model.h",
                 "firmware/siq_model_test_vectors.h", "firmware/report.json"):
        assert (folder / "out" / name).is_file(), name


def test_target_checks_the_readme_export_on_a_cortex_m0(readme_run):
    """siq.target, as the README's prose says: the export on the emulated core, bit for bit, with a report."""
    folder, _ = readme_run
    lines = []
    result = siq.target(folder / "out" / "firmware", cpu="cortex-m0", images=20, log=lines.append)
    assert (result["board"], result["n_images"], result["mismatches"]) == ("microbit", 20, 0)
    assert result["instructions"]["total"] > 0 and result["footprint"]["code_bytes"] > 0
    saved = json.loads((folder / "out" / "firmware" / "target-microbit" / "target.json").read_text())
    assert saved["mismatches"] == 0 and saved["instructions"] == result["instructions"]
    assert "20 test images, 0 mismatches" in lines[0]


def test_help_shows_the_api():
    text = pydoc.render_doc(siq, renderer=pydoc.plaintext)
    for name in API:
        assert re.search(rf"^\s*{name}\(", text, re.M), name
        assert getattr(siq, name).__doc__, name


@pytest.mark.parametrize("command, function", [
    (["train", "--dataset", "digits", "--epochs", "3", "--out", "{tmp}/f.pt"], "train"),
    (["quantize", "f.pt", "--method", "kmeans", "--weight-bits", "2", "--out", "{tmp}/q.pt"], "quantize"),
    (["export", "q.pt", "--out", "{tmp}/fw", "--vectors", "5"], "export"),
    (["verify", "fw"], "verify"),
    (["target", "fw", "--cpu", "cortex-m0"], "target"),
    (["eval", "q.pt"], "evaluate"),
    (["fit", "--dataset", "digits", "--flash", "6KB", "--ram", "2 KiB", "--insns", "300k", "--cpu", "cortex-m4",
      "--method", "kmeans", "--widths", "2,4", "--out", "{tmp}/fit"], "fit"),
    (["import", "m.onnx", "--dataset", "npz:d.npz", "--out", "{tmp}/f.pt"], "import_model"),
    (["arch", "ds-cnn"], "model_size"),
])
def test_every_command_calls_the_api(command, function, monkeypatch, tmp_path, capsys):
    """The CLI is thin: each command hands its parsed options to the API function of the same job."""
    calls = []
    returned = {"mismatches": {"torch_quant": 0, "host_c": 0}} if function == "verify" else \
        {"mismatches": 0} if function == "target" else {"table": "t"} if function == "model_size" else \
        {"kind": "integer", "accuracy": 0.9, "n_test": 10, "dataset": "digits", "float_accuracy": 0.95}
    monkeypatch.setattr(api, function, lambda *args, **kwargs: calls.append((args, kwargs)) or returned)
    assert main([part.replace("{tmp}", str(tmp_path)) for part in command]) == 0
    assert len(calls) == 1
    args, kwargs = calls[0]
    if function == "train":
        assert args == ("digits",) and kwargs["config"].epochs == 3
    if function == "quantize":
        config = args[1]
        assert (config.method, config.conv_bits, config.act_bits) == ("kmeans", 2, 4)
    if function == "target":
        assert kwargs["cpu"] == "cortex-m0"
    if function == "fit":
        assert (kwargs["flash"], kwargs["ram"], kwargs["insns"], kwargs["cpu"]) == (6144, 2048, 300_000, "cortex-m4")
        assert kwargs["method"] == "kmeans" and kwargs["widths"] == [2, 4] and kwargs["per_channel"] == (False, True)
    if function == "import_model":
        assert args == ("m.onnx",) and kwargs["dataset"] == "npz:d.npz"
    if function == "model_size":
        assert args == ("ds-cnn",) and capsys.readouterr().out == "t\n"


def test_bad_values_are_refused_before_any_work(tmp_path):
    out = tmp_path / "float.pt"
    with pytest.raises(siq.SiqError, match="epochs must be at least 1"):
        siq.train("digits", epochs=0, out=out)
    with pytest.raises(siq.SiqError, match="unknown training option"):
        siq.train("digits", epoch=3, out=out)
    with pytest.raises(siq.SiqError, match="unknown quantization option"):
        siq.quantize(tmp_path / "missing.pt", weight_bits=4)
    with pytest.raises(siq.SiqError, match="codebook bits must be a whole number from 2 to 15"):
        siq.quantize(tmp_path / "missing.pt", codebook_bits=16)
    with pytest.raises(siq.SiqError, match="holds no quantized.pt"):
        siq.verify(tmp_path)
    assert not out.exists()


def test_train_config_is_the_documented_schedule_with_overrides():
    assert siq.train_config("mnist5k") == api.default_schedule("mnist5k")
    config = siq.train_config("mnist5k", epochs=2, seed=3)
    assert (config.epochs, config.seed, config.lr) == (2, 3, api.default_schedule("mnist5k").lr)
    assert siq.quantize_config(conv_bits=2).conv_bits == 2 and siq.quantize_config().method == "siq"

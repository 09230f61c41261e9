"""The command line: the main job end to end, and bad input refused with one line, a non-zero exit, no files.
The commands run as real processes (`python -m siq.codegen.cli`); the tables of bad input run in process
(codegen.cli.main, what that process runs) to save a Python start per case."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from siq.codegen.cli import main

ROOT = Path(__file__).resolve().parents[1]


def siq(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "siq.codegen.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, stdin=subprocess.DEVNULL)


def in_process(capsys, *args):
    """codegen.cli.main, what `python -m siq.codegen.cli` runs, without a Python start: its exit status and
    stderr as a process would give them."""
    code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, "", capsys.readouterr().err)


def assert_refused(result, message):
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("siq: error:") and message in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def pipeline_out(tmp_path_factory):
    """The main job on a short schedule, with the Cortex-M4 step."""
    out = tmp_path_factory.mktemp("pipeline") / "out"
    result = siq("pipeline", "--out", out, "--epochs", 2, "--siq-rounds", 1, "--siq-epochs", 1,
                 "--target-images", 200)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_pipeline_report(pipeline_out):
    report = json.loads((pipeline_out / "report.json").read_text())
    for key in ("float", "torch_quant", "int_reference", "host_c"):
        assert 0.5 < report["accuracy"][key] <= 1.0
    assert report["mismatches"]["torch_quant"] == 0 and report["mismatches"]["host_c"] == 0
    assert report["n_test"] == 1000 and report["macs"] == 221_800
    assert report["footprint"]["weights_bytes"] > 0 and report["footprint"]["arena_bytes"] > 0
    target = report["target"]
    assert (target["cpu"], target["board"], target["n_images"], target["mismatches"]) == \
        ("cortex-m4", "mps2-an386", 200, 0)
    for key in ("instructions_per_inference", "code_bytes", "weights_bytes", "ram_bytes"):
        assert target[key] > 0
    # per op: the kernel the default build runs, MACs, parameters, bytes and instructions on the target
    ops = report["model"]["ops"]
    assert [op["instructions"] for op in ops] == target["instructions"]["per_op"]
    assert [(op["default_build_kernel"], op["macs"]) for op in ops] == \
        [(op["kernel"], op["macs"]) for op in target["ops"]]
    assert sum(op["macs"] for op in ops) == 221_800 and report["model"]["parameters"] == 22_278
    assert all(op["output_bytes"] > 0 for op in ops[:-1]) and report["model"]["reference_kernel_ops"] == []
    assert sum(op["weights_bytes"] for op in ops) <= report["footprint"]["weights_bytes"]
    firmware = pipeline_out / "firmware"
    for name in ("siq_model.c", "siq_model.h", "siq_model_test_vectors.h", "quantized.pt"):
        assert (firmware / name).is_file()
    assert (pipeline_out / target["firmware"] / "firmware.elf").is_file()
    assert "host_c" in (pipeline_out / "report.md").read_text()


def test_arch_prints_every_layer_with_its_macs_and_parameters():
    result = siq("arch", "ds-cnn")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ds-cnn: input 1x49x10" and len(lines) == 2 + 30 + 1 + 4
    assert lines[2].split()[-3:] == ["64x25x5", "320,000", "2,624"]  # conv 64 10x4/2: 64 * 25 * 5 * 40 MACs
    assert lines[-5].split() == ["total", "2,656,768", "22,604"]
    # the indices --layer-bits, --point-bits and --channel-steps use are those of the network with its batch
    # norms folded
    folded = "(indices of the network with batch norm folded)"
    assert lines[-4] == f"weighted layers (--layer-bits) {folded}: 0, 2, 4, 6, 8, 10, 12, 14, 16, 20"
    assert lines[-3] == f"stored feature maps (--point-bits) {folded}: 1, 3, 5, 7, 9, 11, 13, 15, 17, 18"
    assert lines[-2] == ("feature maps only depthwise convs read (a step per channel with --channel-steps depthwise "
                         f"or separable) {folded}: 1, 5, 9, 13")
    assert lines[-1] == ("depthwise outputs only pointwise convs read (a step per channel with --channel-steps "
                         f"separable) {folded}: 3, 7, 11, 15")
    listing = siq("arch")
    assert listing.returncode == 0 and "paper-mnist" in listing.stdout and "221,800 MACs" in listing.stdout
    assert_refused(siq("arch", "nope"), "unknown architecture 'nope'")


def test_verify_export_and_eval_commands(pipeline_out, tmp_path):
    result = siq("verify", pipeline_out / "firmware")
    assert result.returncode == 0 and "host C" in result.stdout, result.stderr
    result = siq("eval", pipeline_out / "quantized.pt")
    assert result.returncode == 0 and "integer reference test accuracy" in result.stdout
    export = tmp_path / "export"
    result = siq("export", pipeline_out / "quantized.pt", "--out", export, "--vectors", 5)
    assert result.returncode == 0, result.stderr
    first = (export / "siq_model.c").read_bytes()
    # same model -> byte-identical C; an existing export of ours may be replaced
    assert siq("export", pipeline_out / "quantized.pt", "--out", export, "--vectors", 5).returncode == 0
    assert (export / "siq_model.c").read_bytes() == first
    assert first == (pipeline_out / "firmware" / "siq_model.c").read_bytes()


def test_per_channel_codebooks_and_input_bits_quantize_export_and_verify(pipeline_out, tmp_path):
    """--per-channel conv with --input-bits 8 and 2-bit feature maps through the commands: one codebook row per
    conv output channel in the model file, both widths in the header, and the exported firmware bit-exact on the
    host."""
    quantized = tmp_path / "q.pt"
    result = siq("quantize", pipeline_out / "float.pt", "--method", "kmeans", "--weight-bits", 2,
                 "--per-channel", "conv", "--act-bits", 2, "--input-bits", 8, "--out", quantized)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "W2A2 input 8 bits" in result.stdout + result.stderr
    from siq.training.quant import load_quantized
    qm = load_quantized(quantized)
    convs = [i for i in qm.arch.weighted_layers() if qm.arch.layers[i].type == "conv"]
    assert all(qm.layers[i].per_channel == (i in convs) for i in qm.layers)
    assert (qm.act_bits, qm.input_bits) == (2, 8)
    export = tmp_path / "export"
    result = siq("export", quantized, "--out", export, "--vectors", 20)
    assert result.returncode == 0, result.stderr[-2000:]
    header = (export / "siq_model.h").read_text()
    assert "#define SIQ_MODEL_INPUT_BITS 8\n" in header and "#define SIQ_MODEL_ACTIVATION_BITS 2\n" in header
    result = siq("verify", export)
    assert result.returncode == 0 and "host C" in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["train", "--arch", "nope"], "unknown architecture 'nope'"),
    (["quantize", "x.pt", "--method", "nope"], "invalid choice: 'nope'"),
    (["quantize", "x.pt", "--weight-bits", "0"], "from 1 to 8"),
    (["quantize", "x.pt", "--weight-bits", "9"], "from 1 to 8"),
    (["quantize", "x.pt", "--act-bits", "4.5"], "whole number"),
    (["quantize", "x.pt", "--input-bits", "9"], "from 1 to 8"),
    (["train", "--dataset", "fashion", "--data-dir", "{empty}"], "apt-get install dataset-fashion-mnist"),
    (["train", "--dataset", "mnist"], "--data-dir"),
    (["target", "{empty}", "--cpu", "cortex-a53"], "cortex-a53"),
    (["train", "--dataset", "digits", "--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["train", "--dataset", "digits", "--label-smoothing", "-0.1"], "--label-smoothing"),
    (["train", "--dataset", "digits", "--weight-decay", "-1"], "--weight-decay"),
    (["quantize", "x.pt", "--plus-off", "magic"], "unknown siq+ ingredient(s) magic"),
    (["quantize", "x.pt", "--distill", "1.5"], "distillation weight must be in [0, 1]"),
    (["quantize", "x.pt", "--plus-off", "distill", "--distill", "0.5"], "turned off by --plus-off distill"),
    (["quantize", "x.pt", "--plus-off", "steps", "--real-steps"], "turned off by --plus-off steps"),
    (["quantize", "x.pt", "--progressive-acts", "9"], "progressive activation bits must be a whole number 0..7"),
    (["quantize", "x.pt", "--plus-off", "progressive", "--progressive-acts", "2"], "turned off by --plus-off"),
    (["sweep", "--dataset", "digits", "--distill-temperature", "0"], "distillation temperature must be a positive"),
    (["quantize", "x.pt", "--siq-growth", "0"], "SIQ growth must be a positive number"),
    (["sweep", "--dataset", "digits", "--siq-alpha", "-1"], "alpha >= 0"),
    (["quantize", "x.pt", "--siq-alpha", "nan"], "argument --siq-alpha: must be a finite number"),
    (["quantize", "x.pt", "--codebook-bits", "16"], "codebook bits must be a whole number from 2 to 15"),
    (["quantize", "x.pt", "--per-channel", "dense"], "invalid choice: 'dense'"),
    (["sweep", "--dataset", "digits", "--codebook-bits", "1"], "codebook bits must be a whole number from 2 to 15"),
    (["sweep", "--dataset", "digits", "--methods", "siq+-magic"], "unknown siq+ ingredient(s) magic"),
    (["sweep", "--dataset", "digits", "--validation", "1.5", "--weight-bits", "float", "--act-bits", "float"],
     "validation fraction"),
    (["sweep", "--dataset", "digits", "--train-size", "3", "--weight-bits", "float", "--act-bits", "float"],
     "one sample per class"),
])
def test_bad_input_refused(args, message, tmp_path, capsys):
    """In process (what `siq` runs, without a Python start per case): the tests above and below take the
    refusals through a real process."""
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "result.pt"
    args = [a.replace("{empty}", str(empty)) for a in args]
    result = in_process(capsys, *args, "--out", out) if args[0] in ("train", "quantize", "sweep") else \
        in_process(capsys, *args)
    assert_refused(result, message)
    assert not out.exists()


def test_corrupt_and_truncated_checkpoints_refused(pipeline_out, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((pipeline_out / "float.pt").read_bytes()[:5000])
    for path in (garbage, truncated, tmp_path / "missing.pt"):
        out = tmp_path / "q.pt"
        result = siq("quantize", path, "--out", out)
        assert_refused(result, str(path.name))
        assert not out.exists()
    # a quantized model is not a checkpoint
    assert_refused(siq("quantize", pipeline_out / "quantized.pt", "--out", tmp_path / "q.pt"), "not a siq checkpoint")


def test_malformed_architecture_files_refused(tmp_path, capsys):
    cases = {
        "broken.toml": "input = [1, 28, 28\n",
        "nolayers.json": json.dumps({"input": [1, 28, 28]}),
        "badtype.json": json.dumps({"input": [1, 28, 28], "layers": [{"type": "transformer"}]}),
        "toolarge.json": json.dumps({"input": [1, 4, 4], "layers": [{"type": "conv", "out": 2, "k": 5},
                                                                   {"type": "flatten"}, {"type": "dense", "out": 2}]}),
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        out = tmp_path / "float.pt"
        assert_refused(in_process(capsys, "train", "--arch", path, "--epochs", 1, "--out", out), "")
        assert not out.exists()


def test_export_refuses_a_foreign_folder(pipeline_out, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "main.c").write_text("int main(void) { return 0; }\n")
    assert_refused(siq("export", pipeline_out / "quantized.pt", "--out", foreign), "--force")
    assert sorted(p.name for p in foreign.iterdir()) == ["main.c"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".foreign")]  # no temp left behind


def test_continuation_penalty_options_reach_the_siq_config():
    """--siq-alpha / --siq-growth set SIQ's continuation penalty for quantize, pipeline and sweep alike; left out,
    the paper-style defaults (0.1, x4 a round) stay, so earlier cache keys stay valid."""
    from siq.codegen.cli import build_parser, siq_config
    from siq.training.quantizers import SIQConfig
    parser = build_parser()
    for argv in (["quantize", "x.pt"], ["pipeline"], ["sweep"]):
        default = siq_config(parser.parse_args(argv))
        assert (default.alpha, default.growth) == (SIQConfig().alpha, SIQConfig().growth)
        tuned = siq_config(parser.parse_args(argv + ["--siq-alpha", "0.05", "--siq-growth", "2"]))
        assert (tuned.alpha, tuned.growth) == (0.05, 2.0)

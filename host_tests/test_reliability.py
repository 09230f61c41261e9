"""Reliability: bad model files and output paths refused in one line with nothing half-written, robust
quantizers (divergence, degenerate layers, 1-bit codebooks), and byte-identical artifacts for equal runs.

The CLI runs in-process here (codegen.cli.main), which is what `siq` runs: an uncaught exception fails the
test, so "no traceback" is checked by construction; test_cli.py covers the subprocess path."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from siq.codegen.cli import main
from siq.codegen.export import write_sources
from siq.codegen.lower import lower
from siq.codegen.pipeline import OUTPUT_MARKER, step_train
from siq.codegen.verify import verify
from conftest import tiny_arch, write_model_files
from siq.training.errors import SiqError
from siq.training.fileio import atomic_directory, atomic_write_bytes, content_hash
from siq.training.nets import Net
from siq.training.quantizers import QuantizeConfig, SIQConfig, quantize_model
from siq.training.train import TrainConfig, fit


def run(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err


def refused(capsys, *args, message: str = "") -> str:
    code, err = run(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("siq: error:") and message in lines[0], lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary siblings an interrupted write would leave (".name.xxxx")."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != OUTPUT_MARKER)


# ---------------------------------------------------------------- model files

@pytest.fixture(scope="module")
def files(tmp_path_factory, digits):
    """An untrained (seeded) tiny checkpoint on digits, its k-means W4A4 quantized model and an export of it."""
    return write_model_files(tmp_path_factory.mktemp("files"), digits)


def rewrite(src: Path, dst: Path, change) -> Path:
    """Copy a siq torch file, letting change(meta, tensors) corrupt it, with its content hash recomputed: these
    files stand for what a faulty writer could produce, so the checks behind the hash are what is tested (a
    changed byte under an intact hash is test_integrity.py's)."""
    blob = torch.load(src, weights_only=True)
    meta = json.loads(blob["meta"])
    change(meta, blob["tensors"])
    blob["meta"] = json.dumps(meta)
    blob["sha256"] = content_hash(blob["format"].removeprefix("siq-"), blob["meta"], blob["tensors"])
    torch.save(blob, dst)
    return dst


def _set(mapping, key, value):
    mapping[key] = value


CHECKPOINTS = {  # corruption -> what the one line must say
    "nan weight": (lambda m, t: t["layers.0.weight"].view(-1).__setitem__(0, float("nan")), "holds NaN/Inf"),
    "inf bias": (lambda m, t: t["layers.0.bias"].__setitem__(0, float("inf")), "holds NaN/Inf"),
    "more channels than weights": (lambda m, t: _set(m["arch"]["layers"][0], "out", 5), "do not match the arch"),
    "missing tensor": (lambda m, t: t.pop("layers.0.bias"), "do not match the arch"),
    "tensor of the wrong shape": (lambda m, t: _set(t, "layers.7.weight", t["layers.7.weight"][:, :3]),
                                  "do not match the arch"),
    "not a tensor": (lambda m, t: _set(t, "layers.0.weight", "weights"), "do not match the arch"),
    "unknown layer type": (lambda m, t: _set(m["arch"]["layers"][0], "type", "attention"), "unknown type"),
    "no dataset recorded": (lambda m, t: m.pop("dataset"), "does not record its dataset"),
}


@pytest.mark.parametrize("command", ["quantize", "eval"])
@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_bad_checkpoints_refused(case, command, files, tmp_path, capsys):
    change, message = CHECKPOINTS[case]
    bad = rewrite(files / "float.pt", tmp_path / "bad.pt", change)
    out = tmp_path / "q.pt"
    if command == "quantize":
        refused(capsys, "quantize", bad, "--method", "uniform", "--out", out, message=message)
    else:
        refused(capsys, "eval", bad, message=message)
    assert not out.exists() and not leftovers(tmp_path)


def _beyond_codebook(meta, tensors):
    tensors["indices.0"] = torch.full_like(tensors["indices.0"], len(tensors["codebook.0"]))


QUANTIZED = {
    "index beyond its codebook": (_beyond_codebook, "beyond its codebook"),
    "indices of the wrong shape": (lambda m, t: _set(t, "indices.0", t["indices.0"][:2]), "do not match the arch"),
    "bias of the wrong shape": (lambda m, t: _set(t, "bias.0", t["bias.0"][:1]), "do not match the arch"),
    "weight bits 9": (lambda m, t: _set(m["layers"]["0"], "bits", 9), "from 1 to 8"),
    "activation bits 0": (lambda m, t: _set(m, "act_bits", 0), "from 1 to 8"),
    "missing layer": (lambda m, t: m["layers"].pop("0"), "do not match the architecture"),
    "missing tensor": (lambda m, t: t.pop("codebook.4"), "corrupt quantized model"),
    "codebook beyond 15 bits": (lambda m, t: _set(t, "codebook.0", t["codebook.0"] * 1000), "exceed -16384..16383"),
    "bias past int32": (lambda m, t: _set(t, "bias.0", t["bias.0"] + 2**40), "accumulator can reach"),
    "input shape": (lambda m, t: _set(m["arch"], "input", [1, 8, 8, 8]), "[channels, height, width]"),
    "not a model at all": (None, "not a readable siq quantized file"),
    "truncated": ("truncate", "not a readable siq quantized file"),
    "a checkpoint": ("checkpoint", "not a siq quantized file"),
}


def _bad_quantized(case, files, path: Path) -> Path:
    change, _ = QUANTIZED[case]
    if change is None:
        path.write_bytes(b"PK\x03\x04 garbage")
    elif change == "truncate":
        path.write_bytes((files / "quantized.pt").read_bytes()[:3000])
    elif change == "checkpoint":
        path.write_bytes((files / "float.pt").read_bytes())
    else:
        rewrite(files / "quantized.pt", path, change)
    return path


@pytest.fixture(scope="module")
def export_dir(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "firmware"
    assert main(["export", str(files / "quantized.pt"), "--out", str(out), "--vectors", "0"]) == 0
    return out


@pytest.mark.parametrize("command", ["export", "verify", "target"])
@pytest.mark.parametrize("case", list(QUANTIZED))
def test_bad_quantized_models_refused(case, command, files, export_dir, tmp_path, capsys):
    message = QUANTIZED[case][1]
    if command == "export":
        bad = _bad_quantized(case, files, tmp_path / "bad.pt")
        refused(capsys, "export", bad, "--out", tmp_path / "fw", "--vectors", 0, message=message)
        assert not (tmp_path / "fw").exists() and not leftovers(tmp_path)
    else:  # an export folder whose quantized.pt went bad
        folder = tmp_path / "fw"
        folder.mkdir()
        for name in ("siq_model.c", "siq_model.h"):
            (folder / name).write_bytes((export_dir / name).read_bytes())
        _bad_quantized(case, files, folder / "quantized.pt")
        args = ["target", folder, "--cpu", "cortex-m4"] if command == "target" else ["verify", folder]
        refused(capsys, *args, message=message)
        assert sorted(p.name for p in folder.iterdir()) == ["quantized.pt", "siq_model.c", "siq_model.h"]


def test_quantized_model_missing_a_shift_refused(files, tmp_path, capsys):
    bad = rewrite(files / "quantized.pt", tmp_path / "bad.pt", lambda m, t: m["shifts"].pop("1"))
    refused(capsys, "export", bad, "--out", tmp_path / "fw", "--vectors", 0, message="shift")


def test_quantized_model_with_too_few_class_names_refused(files, tmp_path, capsys):
    bad = rewrite(files / "quantized.pt", tmp_path / "bad.pt", lambda m, t: _set(m, "class_names", ["zero"]))
    refused(capsys, "export", bad, "--out", tmp_path / "fw", "--vectors", 0, message="class")


# ---------------------------------------------------------------- output paths

def test_output_paths_that_cannot_be_written(files, tmp_path, capsys):
    regular = tmp_path / "regular-file"
    regular.write_text("not a folder")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    q = files / "quantized.pt"
    cases = [
        (["quantize", files / "float.pt", "--method", "uniform", "--out", regular / "q.pt"], "is a file, not a folder"),
        (["quantize", files / "float.pt", "--method", "uniform", "--out", folder], "is a folder"),
        (["train", "--dataset", "digits", "--arch", "paper-mnist", "--out", regular / "deeper" / "f.pt"],
         "is a file, not a folder"),
        (["export", q, "--out", regular / "fw", "--vectors", 0], "is a file, not a folder"),
        (["export", q, "--out", regular, "--vectors", 0], "is not a folder"),
        (["pipeline", "--dataset", "digits", "--out", regular / "out", "--no-target"], "is a file, not a folder"),
        # root can write almost anywhere, but not create files in /proc or /sys
        (["export", q, "--out", "/proc/siq-firmware", "--vectors", 0], "cannot write /proc"),
        (["quantize", files / "float.pt", "--method", "uniform", "--out", "/sys/siq.pt"], "cannot write /sys"),
    ]
    for args, message in cases:
        refused(capsys, *args, message=message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder", "regular-file"]
    assert regular.read_text() == "not a folder" and not any(folder.iterdir())


def test_output_folder_holding_a_different_model(files, digits, tmp_path, capsys):
    q = files / "quantized.pt"
    fw = tmp_path / "fw"
    assert run(capsys, "export", q, "--out", fw, "--vectors", 0)[0] == 0
    first = {p.name: p.read_bytes() for p in fw.iterdir()}
    assert run(capsys, "export", q, "--out", fw, "--vectors", 0)[0] == 0  # the same model: replaced in place
    assert {p.name: p.read_bytes() for p in fw.iterdir()} == first
    other = rewrite(q, tmp_path / "other.pt", lambda m, t: _set(t, "bias.10", t["bias.10"] + 1))
    refused(capsys, "export", other, "--out", fw, "--vectors", 0, message="holds a different siq output")
    assert {p.name: p.read_bytes() for p in fw.iterdir()} == first and not leftovers(tmp_path)
    assert run(capsys, "export", other, "--out", fw, "--vectors", 0, "--force")[0] == 0
    assert (fw / "siq_model.c").read_bytes() != first["siq_model.c"]
    # an export must not replace a pipeline's output folder (float.pt, report, firmware/) either
    pipeline_out = tmp_path / "out"
    pipeline_out.mkdir()
    (pipeline_out / "float.pt").write_bytes(b"...")
    (pipeline_out / OUTPUT_MARKER).write_text("siq pipeline 0123456789abcdef\n")
    refused(capsys, "export", q, "--out", pipeline_out, "--vectors", 0, message="holds a different siq output")
    assert (pipeline_out / "float.pt").read_bytes() == b"..."


def test_failed_block_leaves_nothing_and_keeps_the_old_output(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out, marker=OUTPUT_MARKER, identity="job a") as tmp:
        (tmp / "result").write_text("a")
    with pytest.raises(RuntimeError):
        with atomic_directory(out, marker=OUTPUT_MARKER, identity="job a") as tmp:
            (tmp / "result").write_text("half")
            raise RuntimeError("interrupted")
    assert (out / "result").read_text() == "a" and (out / OUTPUT_MARKER).read_text() == "job a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(SiqError, match="is a folder"):
        atomic_write_bytes(out, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_image_folders_refused_through_the_cli(tmp_path, capsys):
    from PIL import Image
    empty = tmp_path / "empty"
    empty.mkdir()
    one = tmp_path / "one" / "cat"
    one.mkdir(parents=True)
    noimg = tmp_path / "noimg"
    for name in ("a", "b"):
        (noimg / name).mkdir(parents=True)
        (noimg / name / "notes.txt").write_text("not an image")
    for i in range(3):
        Image.fromarray(np.full((40, 40), 60 * i, np.uint8)).save(one / f"{i}.png")
    out = tmp_path / "f.pt"
    for folder in (empty, one.parent, noimg):
        line = refused(capsys, "train", "--dataset", f"folder:{folder}", "--out", out)
        assert str(folder) in line
    assert not out.exists()


# ---------------------------------------------------------------- robust quantizers

def test_siq_divergence_is_a_clear_error_and_writes_nothing(digits, tmp_path):
    from siq.codegen.pipeline import step_quantize
    torch.manual_seed(0)
    net = Net(tiny_arch())
    cfg = QuantizeConfig(method="siq", calibration_images=100, siq=SIQConfig(rounds=2, epochs_per_round=1, lr=1e30))
    with pytest.raises(SiqError, match="diverged"):
        step_quantize(net, {}, digits, cfg, tmp_path / "q.pt", log=lambda *a: None)
    assert not list(tmp_path.iterdir())


def test_weights_blown_up_by_the_last_step_are_caught(digits):
    """One step per epoch: the loss is finite when computed, the step then makes the weights NaN/Inf."""
    torch.manual_seed(0)
    net = Net(tiny_arch())
    cfg = TrainConfig(epochs=1, batch_size=len(digits.train_x), lr=float("inf"), lr_schedule="constant")
    with pytest.raises(SiqError, match="weights became NaN/Inf"):
        fit(net, digits.train_x, digits.train_y, cfg)


def _degenerate_net(kind: str) -> Net:
    torch.manual_seed(1)
    net = Net(tiny_arch(lrn=False))
    with torch.no_grad():
        for i in net.arch.weighted_layers():
            w = net.layers[i].weight
            if kind == "constant":
                w.fill_(0.05)
            elif kind == "few distinct":  # 3 distinct values, fewer than 2^b for b >= 2
                w.copy_(torch.tensor([-0.2, 0.0, 0.3])[torch.arange(w.numel()) % 3].reshape(w.shape))
            elif kind == "zero":
                w.zero_()
    return net


@pytest.mark.parametrize("kind, method, bits", [
    ("constant", "kmeans", 4), ("constant", "uniform", 3), ("few distinct", "kmeans", 3),
    ("few distinct", "uniform", 2), ("zero", "kmeans", 2), ("zero", "uniform", 4),
    ("seeded", "kmeans", 1), ("seeded", "uniform", 1), ("few distinct", "kmeans", 1),
])
def test_degenerate_layers_and_one_bit_codebooks_bit_exact(kind, method, bits, digits, tmp_path):
    net = _degenerate_net(kind)
    cfg = QuantizeConfig(method=method, conv_bits=bits, fc_bits=bits, act_bits=4, calibration_images=200,
                         calibration="float")  # degenerate weights: the layers, not the steps, are under test
    qm = quantize_model(net, digits.train_x, digits.train_y, cfg, digits.class_names)[0]
    for i, lc in qm.layers.items():
        assert 1 <= len(lc.codebook) <= 2**bits and int(lc.indices.max()) < len(lc.codebook)
        assert np.all(np.diff(lc.codebook) > 0)
        if kind == "few distinct" and bits >= 2:
            assert len(lc.codebook) <= 3
        if kind in ("constant", "zero") and method == "kmeans":
            assert len(lc.codebook) == 1
    lm = lower(qm)
    write_sources(lm, tmp_path)
    images = digits.test_x[:200]
    result = verify(qm, lm, tmp_path, images, digits.test_y[:200], build_dir=tmp_path / "build")
    assert result["mismatches"] == {"torch_quant": 0, "host_c": 0, "host_c_class": 0}, result["first_mismatch"]


# ---------------------------------------------------------------- determinism

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_byte_identical_checkpoints_and_models(tmp_path, capsys):
    """Train, quantize and export twice with one configuration: every artifact is byte-identical."""
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(tiny_arch(lrn=True).to_dict()))
    digests = []
    for run_index in range(2):
        d = tmp_path / f"run{run_index}"
        assert run(capsys, "train", "--dataset", "digits", "--arch", arch, "--epochs", 1, "--seed", 3,
                   "--out", d / "float.pt")[0] == 0
        assert run(capsys, "quantize", d / "float.pt", "--method", "kmeans", "--weight-bits", 3,
                   "--out", d / "q.pt")[0] == 0
        assert run(capsys, "export", d / "q.pt", "--out", d / "fw", "--vectors", 10)[0] == 0
        digests.append({p.relative_to(d).as_posix(): sha256(p) for p in sorted(d.rglob("*")) if p.is_file()})
    assert digests[0] == digests[1]
    assert {"float.pt", "q.pt", "fw/siq_model.c", "fw/quantized.pt", "fw/report.json"} <= set(digests[0])
    # a different seed gives a different checkpoint (the comparison above is not vacuous)
    assert run(capsys, "train", "--dataset", "digits", "--arch", arch, "--epochs", 1, "--seed", 4,
               "--out", tmp_path / "other.pt")[0] == 0
    assert sha256(tmp_path / "other.pt") != digests[0]["float.pt"]


def test_training_gives_the_same_weights_on_any_thread_count():
    """fit pins torch to TRAIN_THREADS: a seed's weights do not depend on how many threads the caller (or the
    machine) gives torch. Without the pin, paper-mnist's conv gradients sum differently on 2 threads than on 1."""
    from siq.training.arch import PRESETS
    from siq.training.train import seed_everything
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(512, 1, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=512)
    weights = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            seed_everything(0)
            net = Net(PRESETS["paper-mnist"])
            fit(net, x, y, TrainConfig(epochs=1, seed=0))
            weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(weights[0], weights[1])
    assert torch.get_num_threads() == previous


def test_step_train_keeps_timings_out_of_the_checkpoint(digits, tmp_path):
    from siq.training.train import load_checkpoint
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(tiny_arch(lrn=False).to_dict()))
    _, _, metrics = step_train("digits", str(arch), TrainConfig(epochs=1), tmp_path / "f.pt", log=lambda *a: None)
    assert metrics["seconds"] > 0  # still reported
    _, meta = load_checkpoint(tmp_path / "f.pt")
    assert "seconds" not in meta["metrics"] and "float_accuracy" in meta["metrics"]

"""The whole run checked before any training: option values at parse time, architecture field types, the
architecture against the C back end, a size cap, the data's splits, output paths; silently accepted values
(per-layer bits of a relu, negative image counts) refused. In-process (codegen.cli.main): an uncaught exception
fails the test, so "no traceback" holds by construction.

test_preflight_refused's table is listed in docs/bad-input.md (host_tests/test_bad_input_doc.py)."""
import gzip
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from siq.codegen.cli import main
from siq.codegen.preflight import SIZE_LIMITS, arch_size, check_backend, preflight
from siq.training.arch import PRESETS, Arch
from siq.training.errors import SiqError
from siq.training.nets import Net
from siq.training.quantizers import QuantizeConfig, quantize_model
from siq.training.train import TrainConfig, save_checkpoint

# architecture files the table refers to as {arch:NAME}
ARCH_FILES = {
    "mlp": 'input = [1, 8, 8]\nlayers = [{type = "flatten"}, {type = "dense", out = 16}, {type = "relu"}, '
           '{type = "dense", out = 10}]\n',
    "huge": 'input = [1, 8, 8]\nlayers = [{type = "conv", out = 100000, k = 3}, {type = "relu"}, '
            '{type = "flatten"}, {type = "dense", out = 10}]\n',
    "pool4": 'input = [1, 8, 8]\nlayers = [{type = "conv", out = 4, k = 3}, {type = "relu"}, '
             '{type = "maxpool", k = 4}, {type = "flatten"}, {type = "dense", out = 10}]\n',
    "norelu": 'input = [1, 8, 8]\nlayers = [{type = "conv", out = 4, k = 3}, {type = "conv", out = 4, k = 3}, '
              '{type = "relu"}, {type = "flatten"}, {type = "dense", out = 10}]\n',
    "signed-add": 'input = [1, 8, 8]\nlayers = [{type = "conv", out = 4, k = 3, pad = 1}, {type = "relu", name = "a"}, '
                  '{type = "conv", out = 4, k = 3, pad = 1}, {type = "batchnorm", name = "m"}, '
                  '{type = "add", inputs = ["m", "a"]}, {type = "flatten"}, {type = "dense", out = 10}]\n',
    "unknown-name": 'input = [1, 8, 8]\nlayers = [{type = "conv", out = 4, k = 3}, {type = "relu", name = "a"}, '
                    '{type = "add", inputs = ["a", "b"]}, {type = "flatten"}, {type = "dense", out = 10}]\n',
    "fraction": 'input = [1, 8, 8]\nlayers = [{type = "conv", out = 4.7, k = 3}, {type = "relu"}, '
                '{type = "flatten"}, {type = "dense", out = 10}]\n',
    "string": 'input = [1, 8, 8]\nlayers = [{type = "conv", out = 4, k = "5"}, {type = "relu"}, '
              '{type = "flatten"}, {type = "dense", out = 10}]\n',
    "fractional-input": 'input = [1, 8.5, 8]\nlayers = [{type = "flatten"}, {type = "dense", out = 10}]\n',
    "boolean": 'input = [1, 8, 8]\nlayers = [{type = "conv", out = true, k = 3}, {type = "relu"}, '
               '{type = "flatten"}, {type = "dense", out = 10}]\n',
}


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "digits", "--lr", "nan"], "argument --lr: must be a finite number"),
    (["train", "--dataset", "digits", "--lr", "-0.1"], "argument --lr: must be > 0"),
    (["train", "--dataset", "digits", "--batch-size", "0"], "argument --batch-size: must be a whole number >= 1"),
    (["train", "--dataset", "digits", "--batch-size", "-4"], "argument --batch-size: must be a whole number >= 1"),
    (["train", "--dataset", "digits", "--epochs", "0"], "argument --epochs: must be a whole number >= 1"),
    (["train", "--dataset", "digits", "--split-seed", "-1"], "argument --split-seed: must be a whole number from 0"),
    (["train", "--dataset", "digits", "--seed", "99999999999999999999"], "argument --seed: must be a whole number"),
    (["train", "--dataset", "digits", "--weight-decay", "inf"], "argument --weight-decay: must be a finite number"),
    (["quantize", "x.pt", "--siq-lr", "0"], "argument --siq-lr: must be > 0"),
    (["train", "--dataset", "digits", "--arch", "{arch:fraction}"], "out must be a whole number, got 4.7"),
    (["train", "--dataset", "digits", "--arch", "{arch:string}"], "k must be a whole number >= 1 or [height, width] of them, got '5'"),
    (["train", "--dataset", "digits", "--arch", "{arch:boolean}"], "out must be a whole number, got True"),
    (["train", "--dataset", "digits", "--arch", "{arch:huge}"], "larger than siq's limits"),
    (["train", "--dataset", "digits", "--arch", "{arch:pool4}"], "pool 4 does not divide the 6x6 map"),
    (["train", "--dataset", "digits", "--arch", "{arch:norelu}"], "must be followed by relu"),
    (["train", "--dataset", "digits", "--arch", "{arch:signed-add}"],
     "layer 3 (add) reads the signed output of layer 2 (a conv without relu): follow the add with relu"),
    (["train", "--dataset", "digits", "--arch", "{arch:unknown-name}"], "layer 2 (add): unknown input name 'b'"),
    (["pipeline", "--dataset", "digits", "--arch", "{arch:mlp}", "--method", "siq", "--no-target"],
     "has no conv layer"),
    (["pipeline", "--dataset", "digits", "--layer-bits", "99=4", "--no-target"],
     "the weighted layers are 0, 4, 9, 12"),
    (["pipeline", "--dataset", "digits", "--layer-bits", "1=4", "--no-target"], "layer(s) 1 of architecture"),
    (["pipeline", "--dataset", "digits", "--target-images", "-1"], "argument --target-images: must be a whole"),
    (["target", "{empty}", "--images", "-5"], "argument --images: must be a whole number >= 1"),
    (["export", "x.pt", "--vectors", "-1"], "argument --vectors: must be a whole number >= 0"),
    (["export", "{model}", "--vectors", "100000"], "--vectors must be from 0 to 360 (the test split's size)"),
    (["target", "{export}", "--images", "100000"], "--images must be from 1 to 360"),
    (["pipeline", "--dataset", "digits", "--target-images", "100000", "--cpu", "cortex-m4"],
     "--target-images must be from 1 to 360"),
    (["train", "--dataset", "mnist", "--data-dir", "{idx:no-test-images}"], "the test split holds no images"),
    (["train", "--dataset", "digits", "--out", "/proc/siq-missing/f.pt"], "cannot write /proc/siq-missing/f.pt"),
    (["sweep", "--dataset", "digits", "--arch", "{arch:mlp}", "--methods", "siq"], "has no conv layer"),
    (["sweep", "--dataset", "digits", "--jobs", "0"], "argument --jobs: must be a whole number >= 1"),
    (["sweep", "--dataset", "digits", "--seeds", "99999999999999999999"], "--seeds must each be from 0 to"),
    (["pipeline", "--dataset", "digits", "--prefix", "My-Model", "--no-target"],
     "argument --prefix: must be a lower-case C identifier"),
    (["train", "--dataset", "digits", "--arch", "{arch:fractional-input}"], "input must be whole numbers"),
    (["quantize", "{model}", "--out", "/proc/siq-missing/q.pt"], "cannot write /proc/siq-missing/q.pt"),
    (["quantize", "{checkpoint}", "--layer-bits", "1=4"], "layer(s) 1 of architecture 'tiny-lrn' carry no weights"),
    (["quantize", "{checkpoint}", "--method", "siq+", "--real-steps", "--channel-steps", "depthwise"],
     "channel steps: siq+'s real steps fold one factor per feature map"),
    (["quantize", "{checkpoint}", "--channel-steps", "depthwise", "--calibration", "sequential"],
     "channel steps need the float or output calibration rule"),
    (["pipeline", "--dataset", "digits", "--channel-steps", "all"], "argument --channel-steps: invalid choice"),
    (["quantize", "{checkpoint}", "--method", "kmeans", "--layer-bits", "0=2,99=4"],
     "the weighted layers are 0, 4, 7, 10"),
    (["fit", "--dataset", "digits", "--flash", "0"], "argument --flash: must be more than zero, got '0'"),
    (["fit", "--dataset", "digits", "--flash=-2KB"], "argument --flash: must be more than zero"),
    (["fit", "--dataset", "digits", "--flash", "6XB"], "argument --flash: must be a number with an optional unit"),
    (["fit", "--dataset", "digits", "--flash", "1.5"], "argument --flash: must come to a whole number"),
    (["fit", "--dataset", "digits", "--flash", "4KB"],
     "flash budget 4,096 B is below the smallest model of 'paper-mnist': 4,761 B of read-only data"),
    (["fit", "--dataset", "digits", "--flash", "8KB", "--ram", "512"],
     "RAM budget 512 B is below the activation arena of 'paper-mnist' at 4-bit activations: 988 B"),
    (["fit", "--dataset", "digits", "--flash", "8KB", "--insns", "0"], "argument --insns: must be more than zero"),
    (["fit", "--dataset", "digits", "--flash", "8KB", "--insns", "300k"], "an instruction budget needs the core"),
    (["fit", "--dataset", "digits", "--flash", "8KB", "--insns", "10k", "--cpu", "cortex-m4"],
     "instruction budget 10,000 is below the fewest instructions 'paper-mnist' can take on cortex-m4"),
    (["fit", "--dataset", "digits", "--flash", "8KB", "--widths", "0-3"], "argument --widths"),
])
def test_preflight_refused(args, message, tmp_path, capsys, model):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = sorted(p.name for p in model.rglob("*"))
    args = [expand(a, tmp_path, model) for a in args]
    if args[0] in ("train", "quantize", "sweep") and "--out" not in args:
        args += ["--out", str(out_dir / "result")]
    elif args[0] in ("pipeline", "export", "fit"):
        args += ["--out", str(out_dir / "result")]
    start = time.time()
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("siq: error:") and message in err[0], err
    assert list(out_dir.iterdir()) == [] and sorted(p.name for p in model.rglob("*")) == before
    assert time.time() - start < 30  # refused before training, not after


@pytest.fixture(scope="module")
def model(tmp_path_factory, digits):
    """An untrained (seeded) tiny model on digits (its float checkpoint too), quantized, and an export of it
    without vectors."""
    from conftest import tiny_arch
    import torch
    from siq.training.quant import save_quantized
    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    meta = {"spec": "digits", "data_dir": None, "seed": 0}
    net = Net(tiny_arch())
    save_checkpoint(root / "float.pt", net, meta, TrainConfig(epochs=1), {"float_accuracy": 0.1})
    cfg = QuantizeConfig(method="uniform", calibration_images=100)
    qm = quantize_model(net, digits.train_x, digits.train_y, cfg, digits.class_names,
                        {"dataset": meta})[0]
    save_quantized(root / "quantized.pt", qm)
    assert main(["export", str(root / "quantized.pt"), "--out", str(root / "fw"), "--vectors", "0"]) == 0
    return root


def expand(arg: str, tmp_path: Path, model: Path) -> str:
    if arg == "{model}":
        return str(model / "quantized.pt")
    if arg == "{checkpoint}":
        return str(model / "float.pt")
    if arg == "{export}":
        return str(model / "fw")
    if arg == "{empty}":
        (tmp_path / "empty").mkdir(exist_ok=True)
        return str(tmp_path / "empty")
    if arg.startswith("{arch:"):
        name = arg[6:-1]
        path = tmp_path / f"{name}.toml"
        path.write_text(ARCH_FILES[name])
        return str(path)
    if arg == "{idx:no-test-images}":
        return str(idx_folder(tmp_path / "idx", n_test=0))
    return arg


def idx_folder(folder: Path, n_train: int = 20, n_test: int = 0) -> Path:
    """MNIST-style IDX files with n_train training and n_test test images of two classes."""
    folder.mkdir()

    def write(name, magic, array):
        header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
        (folder / f"{name}.gz").write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    for split, n in (("train", n_train), ("t10k", n_test)):
        write(f"{split}-images-idx3-ubyte", 0x803, np.zeros((n, 28, 28)))
        write(f"{split}-labels-idx1-ubyte", 0x801, np.arange(n) % 2)
    return folder


# ---------------------------------------------------------------- the checks as functions

def test_siq_on_a_network_without_conv_layers_is_refused_not_a_division_by_zero(digits):
    """The paper's SIQ retrains conv layers only: on an MLP it used to divide by zero changed weights after
    training; quantize_model (what siq quantize runs after loading) refuses it by name."""
    mlp = Arch.from_dict({"name": "mlp", "input": [1, 8, 8], "layers": [
        {"type": "flatten"}, {"type": "dense", "out": 16}, {"type": "relu"}, {"type": "dense", "out": 10}]})
    cfg = QuantizeConfig(method="siq", calibration_images=50)
    with pytest.raises(SiqError, match="has no conv layer"):
        quantize_model(Net(mlp), digits.train_x[:100], digits.train_y[:100], cfg, digits.class_names)


def test_size_of_the_presets_and_the_cap():
    """The paper's numbers (22,278 parameters, 221,800 MACs) and a cap far above every preset at the default
    training batch (64 images)."""
    size = arch_size(PRESETS["paper-mnist"])
    assert size["parameters"] == 22278 and size["macs"] == 221800
    for arch in PRESETS.values():
        big = arch_size(arch, batch_size=64)
        assert all(big[k] * 10 < SIZE_LIMITS[k] for k in SIZE_LIMITS)


def test_allow_large_lifts_the_cap(tmp_path):
    path = tmp_path / "huge.toml"
    path.write_text(ARCH_FILES["huge"])
    with pytest.raises(SiqError, match="--allow-large"):
        preflight("digits", str(path))
    assert preflight("digits", str(path), allow_large=True).size["parameters"] > SIZE_LIMITS["parameters"]


def test_backend_check_runs_the_lowering_on_every_preset():
    for arch in PRESETS.values():
        check_backend(arch)
        check_backend(arch, act_bits=2, input_bits=8)


def test_backend_check_folds_batch_norm_as_quantization_does():
    """A conv -> batchnorm -> relu network is runnable (quantization folds the batch norm into the conv); the same
    network with the batch norm where nothing can absorb it is refused by name (when the file is read)."""
    folded = Arch.from_dict({"name": "bn", "input": [1, 8, 8], "layers": [
        {"type": "conv", "out": 2, "k": 3}, {"type": "batchnorm"}, {"type": "relu"}, {"type": "flatten"},
        {"type": "dense", "out": 3}]})
    check_backend(folded)
    with pytest.raises(SiqError, match="batchnorm must directly follow"):
        check_backend(Arch.from_dict({"name": "bn", "input": [1, 8, 8], "layers": [
            {"type": "conv", "out": 2, "k": 3}, {"type": "relu"}, {"type": "batchnorm"}, {"type": "flatten"},
            {"type": "dense", "out": 3}]}))


def test_data_with_one_class_in_a_split_is_refused(tmp_path):
    folder = idx_folder(tmp_path / "idx", n_train=20, n_test=1)
    with pytest.raises(SiqError, match="the test split holds images of 1 class"):
        preflight("mnist", "paper-mnist", data_dir=str(folder))


def test_eval_of_a_model_whose_test_split_is_now_empty(tmp_path, capsys, digits):
    """A checkpoint trained on IDX files whose test file was later emptied: no "accuracy nan" with numpy
    warnings, but one line naming the split."""
    import torch
    from conftest import tiny_arch
    from siq.training.train import TrainConfig, save_checkpoint
    folder = idx_folder(tmp_path / "idx", n_train=20, n_test=0)
    torch.manual_seed(0)
    meta = {"spec": "mnist", "data_dir": str(folder), "seed": 0, "class_names": ["0", "1"]}
    net = Net(tiny_arch(input_shape=(1, 28, 28), classes=2))
    save_checkpoint(tmp_path / "f.pt", net, meta, TrainConfig(epochs=1), {"float_accuracy": 0.5})
    assert main(["eval", str(tmp_path / "f.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the test split holds no images" in err[0], err

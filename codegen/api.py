"""siq's Python API: the functions the `siq` command itself calls, taking Python values and returning objects.

    import siq
    trained = siq.train("mnist5k", epochs=2, out="out/float.pt")      # -> Trained (net, data, accuracy)
    qm = siq.quantize("out/float.pt", method="siq", conv_bits=4, act_bits=4, out="out/quantized.pt")
    siq.export(qm, "out/firmware")                                     # -> LoweredModel; C sources on disk
    report = siq.verify("out/firmware")                                # -> {"accuracy", "mismatches", ...}
    siq.target("out/firmware", cpu="cortex-m0")                        # -> {"mismatches", "instructions", ...}
    siq.fit("out/fit", flash="6KB", method="siq+")                     # -> FitResult; widths chosen per layer

Training runs where `device` says ("cpu", the default: weights bit-identical to every earlier release;
"cuda[:N]"; or "auto": CUDA when present, logged); calibration, codebooks, the integer reference and export
always run exactly on the CPU (training/device.py). Defaults are the command line's. Every function logs one
line per step through `log` (default print; pass `log=lambda *a: None` for silence) and raises SiqError, with a
message naming the problem and the fix, on bad input. Nothing half-written stays: outputs are written to a
temporary sibling and renamed into place.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

from siq.training.arch import Arch, load_arch
from siq.training.data import Dataset
from siq.training.device import on_device, resolve_device
from siq.training.errors import SiqError
from siq.training.fileio import atomic_write_bytes, check_output_file, load_torch
from siq.training.importers import Imported
from siq.training.importers import from_torch as _from_torch
from siq.training.integer import integer_scores
from siq.training.nets import Net
from siq.training.quant import QuantizedModel, check_codebook_bits
from siq.training.quant import load_quantized as _load_quantized
from siq.training.quantizers import QuantizeConfig, check_method_fits, check_plus_config, check_siq_config
from siq.training.summary import layer_sizes, size_table, totals
from siq.training.train import TrainConfig, accuracy, load_checkpoint, predict_scores

from .fit.budget import Budget, parse_count, parse_size
from .fit.job import run_fit
from .fit.run import FitResult
from .imports import load_model_file, save_import
from .lower import LoweredModel, lower
from .preflight import check_backend, check_splits, preflight, probe_output_file
from .pipeline import (default_schedule, load_for_model, run_pipeline, step_export, step_quantize, step_train,
                       step_verify)
from .target.boards import DEFAULT_CPU, resolve_target
from .target.build import model_macros
from .target.step import run_target_step
from .target.toolchain import check_opt

Log = Callable[[str], object]
DEFAULT_TARGET_IMAGES = 1000


def _check_count(option: str, value: int, available: int) -> int:
    """A count of test images within 1..available (0 allowed for vectors), else SiqError stating the maximum:
    never clamped silently."""
    low = 0 if option == "vectors" else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= available:
        raise SiqError(f"--{option} must be from {low} to {available} (the test split's size), got {value!r}")
    return value

# Checked schedule overrides: (TrainConfig field, test, what the value must be).
_SCHEDULE_RULES = (
    ("epochs", lambda v: v >= 1, "must be at least 1"),
    ("dropout", lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
    ("label_smoothing", lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
    ("weight_decay", lambda v: v >= 0.0, "must be >= 0"),
)


@dataclass
class Trained:
    """What train() made: the float network, the dataset as prepared for it, the checkpoint file, test accuracy."""
    net: Net
    data: Dataset
    checkpoint: Path
    accuracy: float
    metrics: dict


def check_schedule(overrides: dict, name: Callable[[str], str] = str) -> None:
    """SiqError when a schedule override is out of range; name(field) spells the option in the message."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SiqError(f"unknown training option(s) {', '.join(unknown)}: choose from {', '.join(sorted(known))}")
    for field, ok, rule in _SCHEDULE_RULES:
        if overrides.get(field) is not None and not ok(overrides[field]):
            raise SiqError(f"{name(field)} {rule}, got {overrides[field]}")


def train_config(dataset: str = "mnist5k", **overrides) -> TrainConfig:
    """The dataset's documented schedule with TrainConfig fields overridden (epochs=2, lr=1e-3, seed=1, ...)."""
    check_schedule(overrides)
    return replace(default_schedule(dataset), **overrides)


def check_quantize_config(config: QuantizeConfig) -> QuantizeConfig:
    """The config, or SiqError naming its first out-of-range value (codebook bits, SIQ and siq+ settings)."""
    check_codebook_bits(config.codebook_bits)
    if not isinstance(config.equalize, bool):
        raise SiqError(f"equalize must be True or False, got {config.equalize!r}")
    check_siq_config(config.siq)
    check_plus_config(config.plus)
    return config


def quantize_config(config: QuantizeConfig | None = None, **overrides) -> QuantizeConfig:
    """QuantizeConfig (the command line's defaults: siq, W4A4, FC 8 bits) with fields overridden, checked."""
    known = {f.name for f in fields(QuantizeConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SiqError(f"unknown quantization option(s) {', '.join(unknown)}: choose from {', '.join(sorted(known))}")
    return check_quantize_config(replace(config or QuantizeConfig(), **overrides))


def load_float(path: str | Path) -> tuple[Net, dict]:
    """(network, metadata) of a checkpoint written by train()."""
    return load_checkpoint(path)


def load_quantized(path: str | Path) -> QuantizedModel:
    """The QuantizedModel in a file written by quantize() (or an export's quantized.pt)."""
    return _load_quantized(path)


def model_size(arch: str | Arch = "paper-mnist") -> dict:
    """An architecture's size: {"arch", "input", "layers": [{"index", "layer", "out_shape", "macs", "params"}],
    "macs", "parameters", "table"} (MACs per inference, parameters as deployed: batch norm folded; "table" is
    what `siq arch` prints). arch: a preset name, a .toml/.json file or an Arch."""
    arch = arch if isinstance(arch, Arch) else load_arch(arch)
    return {"arch": arch.name, "input": list(arch.input), "layers": [asdict(row) for row in layer_sizes(arch)],
            **totals(arch), "table": size_table(arch)}


def train(dataset: str = "mnist5k", *, arch: str = "paper-mnist", out: str | Path = "out/float.pt",
          config: TrainConfig | None = None, data_dir: str | None = None, split_seed: int = 0, log: Log = print,
          device: str = "cpu", allow_large: bool = False, **overrides) -> Trained:
    """Train the float network and save its checkpoint to `out`.

    dataset: mnist5k, fashion, mnist, digits, folder:PATH or npz:PATH; arch: a preset (paper-mnist,
    paper-office, ds-cnn, mobilenet-v1-0.25) or a .toml/.json file. config defaults to the dataset's documented
    schedule; keyword overrides are TrainConfig fields (epochs, lr, batch_size, augment_shift, augment_flip,
    dropout, label_smoothing, weight_decay, seed).
    device: where the network trains (auto, cpu, cuda, cuda:N).
    The whole run is checked first (preflight.py); networks above preflight.SIZE_LIMITS need allow_large=True.
    """
    check_output_file(out)  # before training, not after
    check_schedule(overrides)
    cfg = replace(config or default_schedule(dataset), **overrides)
    check_schedule({f.name: getattr(cfg, f.name) for f in fields(cfg)})
    preflight(dataset, arch, data_dir=data_dir, split_seed=split_seed, batch_size=cfg.batch_size, outputs=[out],
              allow_large=allow_large)
    with on_device(resolve_device(device, log)):
        net, data, metrics = step_train(dataset, arch, cfg, Path(out), data_dir, split_seed, log)
    return Trained(net, data, Path(out), metrics["float_accuracy"], metrics)


def quantize(checkpoint: str | Path | Trained, config: QuantizeConfig | None = None, *,
             out: str | Path | None = None, log: Log = print, device: str = "cpu", **overrides) -> QuantizedModel:
    """Quantize a trained float network; returns the QuantizedModel (meta["int_accuracy"]: its test accuracy).

    checkpoint: a file written by train() or an import, or the Trained / Imported they returned. config defaults to
    QuantizeConfig() (the command line's defaults); keyword overrides are its fields (method="kmeans", conv_bits=2,
    act_bits=2, fc_bits, layer_bits, input_bits, point_widths ({point: bits}), codebook_bits, per_channel, calibration, siq=SIQConfig(...),
    plus=SIQPlusConfig(...), seed). out, if given, receives the model file. device: where SIQ's fake-quant
    retraining runs (auto, cpu, cuda, cuda:N); everything the firmware is made of is computed on the CPU.
    """
    if out is not None:
        probe_output_file(out)
    cfg = quantize_config(config, **overrides)  # every option is checked before the checkpoint and data load
    training_device = resolve_device(device, log)
    path = _checkpoint_path(checkpoint)
    net, meta = load_checkpoint(path)
    check_method_fits(net.arch, cfg)  # --layer-bits naming a layer without weights, before the data loads
    check_backend(net.arch, cfg.act_bits, cfg.input_bits, cfg.point_widths)  # before retraining, not after it
    data = load_for_model(meta, net.arch)
    check_splits(data)
    with on_device(training_device):
        return step_quantize(net, meta, data, cfg, None if out is None else Path(out), log)


def _checkpoint_path(checkpoint: str | Path | Trained | Imported) -> Path:
    if isinstance(checkpoint, Imported):
        if checkpoint.checkpoint is None:
            raise SiqError("this imported model has no checkpoint yet: import it with dataset=... and out=... "
                           "(the data it is quantized and verified on, e.g. dataset=\"npz:data.npz\")")
        return checkpoint.checkpoint
    return checkpoint.checkpoint if isinstance(checkpoint, Trained) else Path(checkpoint)


def _saved(imported: Imported, dataset: str | None, out: str | Path | None, data_dir: str | None,
           split_seed: int, log: Log) -> Imported:
    log(imported.report_text())
    if out is None:
        return imported
    if dataset is None:
        raise SiqError("an imported model is saved with the dataset it is quantized and verified on: pass "
                       "dataset (npz:PATH, folder:PATH, digits, ...) with out")
    return save_import(imported, out, dataset, data_dir, split_seed, log)


def from_torch(module, example_input, *, dataset: str | None = None, out: str | Path | None = None,
               data_dir: str | None = None, split_seed: int = 0, name: str | None = None,
               log: Log = print) -> Imported:
    """Import a trained PyTorch nn.Module: traced in eval mode with torch.export on `example_input`
    ([N, C, H, W] images or [N, C, L] signals), mapped layer by layer onto siq's architecture with its weights.

    The imported network's outputs on `example_input` equal the module's within 1e-5 (relative), or SiqError.
    Anything siq cannot run (an LSTM, a sigmoid between layers, a reshape that is not a flatten, ...) is refused
    with one line naming the node, its op type and why. With `out`, the checkpoint is written there, recording
    `dataset` (npz:PATH, folder:PATH, digits, ...: the data quantize, export, verify and target use); siq feeds
    the network a uint8 code q as q / 256. Returns the Imported (arch, net, mapping: source parameter -> siq
    state key, report: each source node and the siq layer it became, checkpoint, accuracy), which quantize()
    takes like a checkpoint path.
    """
    return _saved(_from_torch(module, example_input, name), dataset, out, data_dir, split_seed, log)


def import_model(path: str | Path, *, dataset: str | None = None, out: str | Path | None = None,
                 data_dir: str | None = None, split_seed: int = 0, log: Log = print) -> Imported:
    """Import an ONNX file (.onnx) or a saved torch.export program (.pt2, torch.export.save); as from_torch."""
    return _saved(load_model_file(path), dataset, out, data_dir, split_seed, log)


def load_onnx(path: str | Path, *, dataset: str | None = None, out: str | Path | None = None,
              data_dir: str | None = None, split_seed: int = 0, log: Log = print) -> Imported:
    """Import an ONNX file (Conv, BatchNormalization, Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, Add,
    Concat, Flatten, Gemm/MatMul, Reshape as a flatten; initializers are the weights); as from_torch. The
    imported network is checked against the ONNX reference evaluator within 1e-5 (relative)."""
    if Path(path).suffix.lower() != ".onnx":
        raise SiqError(f"{path}: load_onnx reads .onnx files (import_model also reads .pt2 programs)")
    return import_model(path, dataset=dataset, out=out, data_dir=data_dir, split_seed=split_seed, log=log)


def _quantized(model: str | Path | QuantizedModel) -> QuantizedModel:
    return model if isinstance(model, QuantizedModel) else _load_quantized(model)


def export(model: str | Path | QuantizedModel, out: str | Path = "out/firmware", *, prefix: str = "siq_model",
           vectors: int = 100, force: bool = False, log: Log = print) -> LoweredModel:
    """Write the C sources (<prefix>.c/.h), build files, `vectors` test vectors and a report into `out`.

    model: a QuantizedModel or its file. Returns the LoweredModel (ops, arena and weight bytes, MACs). A folder
    holding other files is refused unless force=True.
    """
    qm = _quantized(model)
    data = load_for_model(qm.meta.get("dataset", {}), qm.arch) if vectors else None
    if data is not None:
        _check_count("vectors", vectors, len(data.test_x))
    return step_export(qm, Path(out), prefix, data, vectors, force, log)


def _export_folder(directory: Path, prefix: str) -> QuantizedModel:
    quantized = directory / "quantized.pt"
    if not quantized.is_file():
        raise SiqError(f"{directory} holds no quantized.pt: pass a folder written by siq export or siq pipeline")
    return _load_quantized(quantized)


def verify(directory: str | Path = "out/firmware", *, prefix: str = "siq_model", log: Log = print) -> dict:
    """Build an export on the host and check it bit for bit against PyTorch and numpy on the whole test split.

    Returns {"accuracy": {"torch_quant", "int_reference", "host_c"}, "mismatches": {"torch_quant", "host_c",
    "host_c_class"}, "first_mismatch", "n_test", "seconds"}; every mismatch count is 0 when all agree.
    """
    directory = Path(directory)
    qm = _export_folder(directory, prefix)
    lm = lower(qm, prefix)
    if not (directory / f"{prefix}.c").is_file():
        raise SiqError(f"{directory} holds no {prefix}.c: pass the folder written by siq export (or --prefix)")
    data = load_for_model(qm.meta.get("dataset", {}), qm.arch)
    check_splits(data)
    return step_verify(qm, lm, directory, data, log)


def target(directory: str | Path = "out/firmware", *, cpu: str = DEFAULT_CPU, board: str | None = None,
           prefix: str = "siq_model", opt: str = "-O2", images: int | None = None, log: Log = print) -> dict:
    """Cross-build an export for a Cortex-M core, run it in QEMU on `images` test images (default: all).

    Returns the target report (also written to <directory>/target-<board>/target.json): "mismatches" against
    the integer reference, "instructions" per inference (total, per op), "footprint" (code, weights, RAM bytes).
    """
    resolve_target(cpu, board)  # a wrong core or board is named before anything is read
    check_opt(opt)
    directory = Path(directory)
    model_macros(directory, prefix)
    qm = _export_folder(directory, prefix)
    data = load_for_model(qm.meta.get("dataset", {}), qm.arch)
    n_images = _check_count("images", images, len(data.test_x)) if images is not None else len(data.test_x)
    result = run_target_step(directory, prefix, lower(qm, prefix), data, cpu, board, n_images, log, opt)
    atomic_write_bytes(directory / f"target-{result['board']}" / "target.json",
                       (json.dumps(result, indent=2) + "\n").encode())
    return result


def pipeline(out: str | Path = "out", *, dataset: str = "mnist5k", arch: str = "paper-mnist",
             train_cfg: TrainConfig | None = None, quant_cfg: QuantizeConfig | None = None,
             prefix: str = "siq_model", data_dir: str | None = None, split_seed: int = 0, force: bool = False,
             cpu: str | None = DEFAULT_CPU, board: str | None = None, target_images: int | None = None,
             log: Log = print, device: str = "cpu", allow_large: bool = False) -> dict:
    """The main job into `out`: train -> quantize -> export -> verify (-> Cortex-M unless cpu is None).

    Returns the report also written to out/report.json (accuracy of every leg, mismatches, footprint, target).
    target_images: test images the Cortex-M step runs (default: the first 1000, or the whole split if smaller).
    device: where float training and SIQ's retraining run (auto, cpu, cuda, cuda:N).
    """
    tcfg = train_cfg or default_schedule(dataset)
    check_schedule({f.name: getattr(tcfg, f.name) for f in fields(tcfg)})
    qcfg = check_quantize_config(quant_cfg or QuantizeConfig())
    checked = preflight(dataset, arch, data_dir=data_dir, split_seed=split_seed, batch_size=tcfg.batch_size,
                        quant_cfg=qcfg, allow_large=allow_large)
    if target_images is None:
        target_images = DEFAULT_TARGET_IMAGES  # at most: a smaller test split runs whole
    elif cpu is not None:
        _check_count("target-images", target_images, len(checked.data.test_x))
    with on_device(resolve_device(device, log)):
        return run_pipeline(Path(out), dataset, arch, qcfg, tcfg, prefix, data_dir, split_seed, force, cpu,
                            board, target_images, log)


def model_kind(path: str | Path) -> str:
    """"checkpoint" (written by train) or "quantized" (written by quantize), else SiqError."""
    try:
        load_torch(path, "checkpoint")
        return "checkpoint"
    except SiqError as first:
        try:
            load_torch(path, "quantized")
            return "quantized"
        except SiqError as second:  # a quantized file that fails its own checks: say what is wrong with it
            raise (second if "format 'siq-quantized'" in str(first) else first) from None


def evaluate(model: str | Path) -> dict:
    """Test accuracy of a checkpoint (float network) or a quantized model (integer reference).

    Returns {"kind": "float" or "integer", "accuracy", "n_test", "dataset", "float_accuracy" (quantized only)}.
    """
    path = Path(model)
    if model_kind(path) == "checkpoint":
        net, meta = load_checkpoint(path)
        data = load_for_model(meta, net.arch)
        check_splits(data)  # an empty test split has no accuracy (NaN): say so instead
        acc = accuracy(predict_scores(net, data.test_x), data.test_y, data.test_groups)
        return {"kind": "float", "accuracy": acc, "n_test": len(data.test_x), "dataset": data.name}
    qm = _load_quantized(path)
    data = load_for_model(qm.meta.get("dataset", {}), qm.arch)
    check_splits(data)
    scores = integer_scores(lower(qm).integer, data.test_x)
    return {"kind": "integer", "accuracy": accuracy(scores, data.test_y, data.test_groups),
            "n_test": len(data.test_x), "dataset": data.name, "float_accuracy": qm.meta.get("float_accuracy")}


def fit(out: str | Path = "out/fit", *, flash: int | str, ram: int | str | None = None,
        insns: int | str | None = None, cpu: str | None = None, dataset: str = "mnist5k", arch: str = "paper-mnist",
        method: str = "siq+", quant_cfg: QuantizeConfig | None = None, train_cfg: TrainConfig | None = None,
        widths=range(1, 9), per_channel=(False, True), solver: str = "exact", validation: float = 0.1,
        data_dir: str | None = None, split_seed: int = 0, cache_dir: str | Path | None = ".siq_cache",
        force: bool = False, link: bool = True, log: Log = print, device: str = "cpu",
        allow_large: bool = False, act_widths=None) -> FitResult:
    """The most accurate per-layer configuration within a flash (and RAM, instruction) budget, into `out`.

    flash: bytes of the model's read-only data as linked (6144, "6KB", "6 KiB"); ram: its static RAM and stack
    ("2KB"); insns: instructions per inference on `cpu` ("300k"). Bad budgets, and budgets below the smallest
    model the architecture allows (the message says how small that is), are refused before anything trains.
    The float network trains on the training split less a `validation` fraction; each weighted layer's
    sensitivity to widths `widths` (one codebook, or one per output channel when per_channel holds True) is
    measured there; the exact solver (solver="greedy": the ablation) picks the widths; the configuration is
    retrained with `method` (quant_cfg gives its other settings) on the whole training split, linked for the
    core (cortex-m4 unless cpu; link=False or no toolchain: flash is the cost model's upper bound), counted in
    QEMU when insns is given, and replaced by the next candidate while over a budget. act_widths (e.g. [4, 8]):
    activation widths each stored feature map may take, weighed against the RAM (and instruction) budget; by
    default every point keeps quant_cfg's act_bits.

    Writes out/float.pt, quantized.pt, fit-config.json (for `siq quantize float.pt --config`), report.md and
    fit.json. Returns the FitResult (config, model, measured sizes, accuracy, allocation, greedy ablation).
    """
    budget = Budget(parse_size(flash, "the flash budget") if isinstance(flash, str) else flash,
                    parse_size(ram, "the RAM budget") if isinstance(ram, str) else ram,
                    parse_count(insns, "the instruction budget") if isinstance(insns, str) else insns, cpu)
    if cpu is not None:
        resolve_target(cpu, None)
    tcfg = train_cfg or default_schedule(dataset)
    check_schedule({f.name: getattr(tcfg, f.name) for f in fields(tcfg)})
    base = check_quantize_config(replace(quant_cfg or QuantizeConfig(), method=method))
    with on_device(resolve_device(device, log)):
        return run_fit(Path(out), dataset, arch, budget, base, tcfg, validation=validation, widths=widths,
                       per_channel=per_channel, solver=solver, data_dir=data_dir, split_seed=split_seed,
                       cache_dir=cache_dir, force=force, link=link, allow_large=allow_large,
                       act_widths=None if act_widths is None else sorted(set(act_widths)), log=log)

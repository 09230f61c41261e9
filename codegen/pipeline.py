"""The steps behind the CLI: train -> quantize -> export -> verify (-> target), each usable on its own."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from siq.training.arch import Arch, load_arch
from siq.training.data import Dataset, load_dataset
from siq.training.errors import SiqError
from siq.training.fileio import atomic_directory
from siq.training.integer import integer_scores
from siq.training.nets import Net
from siq.training.quant import QuantizedModel, save_quantized
from siq.training.quantizers import QuantizeConfig, quantize_model
from siq.training.summary import totals
from siq.training.train import (TrainConfig, accuracy, load_checkpoint, predict_scores, save_checkpoint,
                            train_float)

from .export import json_default, model_report, report_markdown, with_instructions, write_sources
from .lower import LoweredModel, lower
from .render import render
from .target.step import run_target_step
from .vectors import write_test_vectors
from .verify import describe_mismatch, verify

# Documented short schedules (chosen on the validation split carved from siq.training data, see README).
SCHEDULES = {
    "mnist5k": TrainConfig(epochs=30, batch_size=64, lr=3e-3, augment_shift=2),
    "fashion": TrainConfig(epochs=15, batch_size=64, lr=2e-3, augment_shift=1),
    "mnist": TrainConfig(epochs=15, batch_size=64, lr=2e-3, augment_shift=1),
    "digits": TrainConfig(epochs=40, batch_size=32, lr=3e-3, augment_shift=0),
    "folder": TrainConfig(epochs=20, batch_size=64, lr=2e-3, augment_shift=0),
}
OUTPUT_MARKER = ".siq-output"
TIMING_KEYS = ("seconds", "seconds_per_epoch")  # reported, never saved in model files (they would differ per run)


def default_schedule(dataset_spec: str) -> TrainConfig:
    return SCHEDULES.get(dataset_spec.split(":")[0], TrainConfig())


def fit_arch_to_data(arch: Arch, data: Dataset) -> tuple[Arch, Dataset]:
    """Resize the class layer to the dataset, zero-pad smaller images to the architecture's input and replicate
    gray pictures for a 3-channel one (Dataset.with_channels)."""
    _, h, w = arch.input
    data = data.with_channels(arch.input[0])
    _, dh, dw = data.image_shape
    if (dh, dw) != (h, w):
        if dh > h or dw > w:
            raise SiqError(f"dataset images are {dh}x{dw}, larger than the architecture's {h}x{w} input")
        data = data.padded(h, w)
    return arch.with_classes(data.num_classes), data


def dataset_meta(data: Dataset, spec: str, data_dir, seed: int) -> dict:
    return {"spec": spec, "data_dir": data_dir, "seed": seed, "class_names": list(data.class_names),
            "image_shape": list(data.image_shape), "n_train": int(len(data.train_x)),
            "n_test": int(len(data.test_x))}


def load_for_model(meta: dict, arch: Arch) -> Dataset:
    """The dataset a checkpoint was trained on, prepared the same way."""
    ds = meta.get("dataset", meta)
    if not isinstance(ds, dict) or not isinstance(ds.get("spec"), str):
        raise SiqError("the model file does not record its dataset (corrupt or foreign file): "
                       "re-run siq train / siq quantize to write a complete one")
    data = load_dataset(ds["spec"], ds.get("data_dir"), ds.get("seed", 0))
    return fit_arch_to_data(arch, data)[1]


def step_train(dataset: str, arch_spec: str, cfg: TrainConfig, out: Path, data_dir=None, split_seed: int = 0,
               log=print) -> tuple[Net, Dataset, dict]:
    data = load_dataset(dataset, data_dir, split_seed)
    arch, data = fit_arch_to_data(load_arch(arch_spec), data)
    size = totals(arch)
    log(f"training {arch.name} on {data.name}: {len(data.train_x)} train / {len(data.test_x)} test images, "
        f"{cfg.epochs} epochs")
    log(f"{arch.name}: {size['parameters']:,} parameters, {size['macs']:,} MACs per inference "
        "(per layer: siq arch)")
    start = time.time()
    net, history = train_float(arch, data.train_x, data.train_y, cfg)
    seconds = time.time() - start
    acc = accuracy(predict_scores(net, data.test_x), data.test_y, data.test_groups)
    metrics = {"float_accuracy": acc, "seconds": seconds, "seconds_per_epoch": seconds / max(1, cfg.epochs),
               "history": history}
    # timings stay out of the file: the same seed and configuration give a byte-identical checkpoint
    saved = {k: v for k, v in metrics.items() if k not in TIMING_KEYS}
    save_checkpoint(out, net, dataset_meta(data, dataset, data_dir, split_seed), cfg, saved)
    log(f"float test accuracy {acc:.4f} ({seconds:.1f} s); checkpoint {out.name}")
    return net, data, metrics


def step_quantize(net: Net, meta: dict, data: Dataset, cfg: QuantizeConfig, out: Path | None, log=print
                  ) -> QuantizedModel:
    start = time.time()
    info = {"arch": net.arch.name, "dataset": meta.get("dataset", {}),
            "float_accuracy": meta.get("metrics", {}).get("float_accuracy")}
    qm, _ = quantize_model(net, data.train_x, data.train_y, cfg, data.class_names, info)
    qm.meta["seconds"] = time.time() - start
    scores = integer_scores(lower(qm).integer, data.test_x)
    qm.meta["int_accuracy"] = accuracy(scores, data.test_y, data.test_groups)
    if out is not None:
        save_quantized(out, without_timings(qm))
    log(f"{cfg.method} W{cfg.conv_bits}A{cfg.act_bits}{_input_label(cfg)} (FC {cfg.fc_bits} bits): "
        f"integer test accuracy {qm.meta['int_accuracy']:.4f}, weights {qm.weights_bytes()} bytes "
        f"({qm.meta['seconds']:.1f} s)"
        + (f"; model {out.name}" if out else ""))
    return qm


def write_export(qm: QuantizedModel, directory: Path, prefix: str, vectors: tuple | None) -> LoweredModel:
    """Sources, test vectors, quantized model copy and report into `directory` (already a temp dir)."""
    lm = lower(qm, prefix)
    write_sources(lm, directory)
    context = {"prefix": prefix, "upper": prefix.upper(), "version": lm.version, "config_hash": lm.config_hash}
    (directory / f"{prefix}.mk").write_text(render("bundle/model.mk.j2", **context))
    (directory / f"{prefix}.cmake").write_text(render("bundle/model.cmake.j2", **context))
    if vectors is not None:
        images, classes, scores = vectors
        write_test_vectors(directory / f"{prefix}_test_vectors.h", prefix, images, classes, scores)
    save_quantized(directory / "quantized.pt", without_timings(qm))
    return lm


def without_timings(qm: QuantizedModel) -> QuantizedModel:
    """The model as saved: its meta without wall-clock times, so equal runs write byte-identical files."""
    return replace(qm, meta={k: v for k, v in qm.meta.items() if k not in TIMING_KEYS})


def step_export(qm: QuantizedModel, out: Path, prefix: str, data: Dataset | None, n_vectors: int, force: bool,
                log=print) -> LoweredModel:
    lm = lower(qm, prefix)
    with atomic_directory(out, force=force, marker=OUTPUT_MARKER, identity=f"siq export {lm.config_hash}") as tmp:
        lm = _export_with_vectors(qm, lm, tmp, data, n_vectors)
        report = {"title": f"{qm.arch.name} {qm.meta.get('method', '')}", "model": model_report(lm),
                  "config": qm.meta.get("config", {})}
        _write_reports(tmp, report)
    _log_export(lm, out, log)
    return lm


def _export_with_vectors(qm: QuantizedModel, lm: LoweredModel, directory: Path, data: Dataset | None,
                         n_vectors: int) -> LoweredModel:
    """The sources plus the first n_vectors test images with the integer reference's classes and scores."""
    vectors = None
    if data is not None and n_vectors > 0:
        images = data.test_x[:n_vectors]
        scores = integer_scores(lm.integer, images)
        vectors = (images, np.argmax(scores, axis=1), scores)
    return write_export(qm, directory, lm.prefix, vectors)


def _log_export(lm: LoweredModel, out: Path, log) -> None:
    log(f"exported {lm.prefix}.c/.h to {out}: weights {lm.weights_bytes()} bytes, arena {lm.arena_bytes} bytes, "
        f"{lm.macs} MACs")


def _write_reports(directory: Path, report: dict) -> None:
    (directory / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=json_default) + "\n")
    (directory / "report.md").write_text(report_markdown(report))


def step_verify(qm: QuantizedModel, lm: LoweredModel, model_dir: Path, data: Dataset, log=print) -> dict:
    start = time.time()
    result = verify(qm, lm, model_dir, data.test_x, data.test_y, data.test_groups)
    result["seconds"] = time.time() - start
    acc, mism = result["accuracy"], result["mismatches"]
    log(f"verify on {result['n_test']} test images: torch fake-quant {acc['torch_quant']:.4f}, "
        f"integer reference {acc['int_reference']:.4f}, host C {acc['host_c']:.4f}; mismatches torch "
        f"{mism['torch_quant']}, host C {mism['host_c']}")
    for leg, detail in result["first_mismatch"].items():
        log(describe_mismatch(leg, detail))
    return result


PIPELINE_VECTORS = 100  # test images in the pipeline's firmware/<prefix>_test_vectors.h (on-target self tests)


def run_pipeline(out: Path, dataset: str, arch: str, qcfg: QuantizeConfig, tcfg: TrainConfig, prefix: str,
                 data_dir=None, split_seed: int = 0, force: bool = False, cpu: str | None = None,
                 board: str | None = None, target_images: int = 1000, log=print) -> dict:
    """The main job: train -> quantize -> export -> verify (-> Cortex-M), all into `out` at once."""
    identity = "siq pipeline " + _config_hash(dataset, arch, qcfg, tcfg, prefix, data_dir, split_seed, cpu, board,
                                              target_images)
    with atomic_directory(out, force=force, marker=OUTPUT_MARKER, identity=identity) as tmp:
        net, data, metrics = step_train(dataset, arch, tcfg, tmp / "float.pt", data_dir, split_seed, log)
        _, meta = load_checkpoint(tmp / "float.pt")
        qm = step_quantize(net, meta, data, qcfg, tmp / "quantized.pt", log)
        firmware = tmp / "firmware"
        firmware.mkdir()
        lm = _export_with_vectors(qm, lower(qm, prefix), firmware, data, min(len(data.test_x), PIPELINE_VECTORS))
        _log_export(lm, out / "firmware", log)
        result = step_verify(qm, lm, firmware, data, log)
        report = {
            "title": f"{qm.arch.name} on {dataset}, {qcfg.method} "
                     f"W{qcfg.conv_bits}A{qcfg.act_bits}{_input_label(qcfg)} FC{qcfg.fc_bits}",
            "dataset": dataset, "arch": qm.arch.name, "method": qcfg.method,
            "accuracy": {"float": metrics["float_accuracy"], **result["accuracy"]},
            "mismatches": result["mismatches"], "first_mismatch": result["first_mismatch"],
            "n_test": result["n_test"], "n_test_images": result["n_test_images"],
            "footprint": model_report(lm)["footprint"], "macs": lm.macs,
            "model": model_report(lm), "config": {"train": asdict(tcfg), "quantize": qm.meta.get("config", {})},
            "seconds": {"train": metrics["seconds"], "quantize": qm.meta["seconds"], "verify": result["seconds"]},
        }
        if cpu is not None:
            target = run_target_step(firmware, prefix, lm, data, cpu, board, target_images, log)
            fp = target["footprint"]
            target.update({"instructions_per_inference": target["instructions"]["total"],
                           "code_bytes": fp["code_bytes"], "weights_bytes": fp["weights_bytes"],
                           "ram_bytes": fp["ram_bytes"],
                           "firmware": str(Path(target["firmware"]).relative_to(tmp))})
            report["target"] = target
            report["model"] = with_instructions(report["model"], target["instructions"]["per_op"])
        _write_reports(tmp, report)
        (firmware / "report.json").write_text(
            json.dumps({"model": report["model"]}, indent=2, sort_keys=True, default=json_default) + "\n")
    return report


def _config_hash(*config) -> str:
    """What a pipeline output folder holds: re-running the same configuration may replace it without --force."""
    text = json.dumps([asdict(c) if hasattr(c, "__dataclass_fields__") else c for c in config], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _input_label(cfg) -> str:
    """" input 8 bits" when the input image's width differs from the feature maps', else ""."""
    return "" if cfg.input_bits in (None, cfg.act_bits) else f" input {cfg.input_bits} bits"

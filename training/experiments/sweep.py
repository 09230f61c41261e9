"""Bit-width sweeps (the paper's Fig. 4, Fig. 5 and Table 1): every method x weight bits x activation bits x seed.

One float model is trained per (dataset, architecture, training config, seed) and kept as a checkpoint; each cell
of the grid then quantizes that model (SIQ retrains a copy) and measures test accuracy. Cells run in parallel with
joblib, and each finished cell is saved on its own, so an interrupted sweep resumes where it stopped.

What a cell evaluates, by its two widths (None = float):

    weight bits  act bits  network                                                   evaluator
    b            a         integer reference (training/integer/) = what the C computes  "integer"
    b            None      quantized codebook weights, float activations (PyTorch)        "torch"
    None         a         float weights, a-bit activations (PyTorch, calibrated shifts)  "torch"
    None         None      the float network                                               "torch"

Weight bits apply to the conv kernels; dense layers get `fc_bits` (the paper fixes 8 for the FC layers). Cells with
float weights do not depend on the method: they are computed once and recorded with method "float". A cell with
quantized weights and float activations still needs activation bits to quantize (calibration, bias grid, and SIQ
retrains with fake-quantized activations): it uses 8 (`quantize_act_bits` in the record).

Caches (default `<folder of out>/.siq_cache/`, or `cache_dir`):
    models/<model key>.pt    float checkpoints; key = hash of the data (digest), architecture, training config, seed
    cells/<cell key>.json    one finished cell (its result record); key = hash of the model key and everything that
                             configures the cell (method, widths, codebook bits, calibration, SIQ config for "siq")
Both keys follow the versioned schema in cache.py. Delete a file to recompute it; unreadable cache files are
recomputed too.

Result records (one JSON object per line in `out`, written atomically at the end), see RECORD_FIELDS:
    dataset, arch, method, weight_bits ({layer index: bits or null}), conv_bits, fc_bits, act_bits (null = float),
    accuracy, error (= 1 - accuracy), weights_bytes (flash for the weights: packed indices + codebooks, or 4 bytes
    per float weight), seed, seconds (time the cell took when it was computed), float_accuracy, n_test (predictions
    scored: images, or source images when the test set has crops grouped per image), evaluator, plus
    quantize_act_bits, history (SIQ rounds), cell and model (cache keys), cached (taken from the cache this run),
    codebook_bits, calibration, per_channel, input_bits (the input image's bits where they differ from act_bits)
    siq_dropout (SIQ retraining's dropout rate where it differs from the architecture's), distill (siq+'s
    distillation [weight, temperature] where they differ from the defaults), real_steps (siq+ trained real
    feature-map steps and folded them into powers of two; null where no steps were learned) and progressive_acts
    (the extra activation bits siq+ started from; null where no steps were learned).

Where cells run (backends.py): local joblib workers (`jobs`), or Ray tasks on a cluster (backend="ray",
address=...), which retries failed or lost cells and caches each result in the driver as it arrives. Training
runs on `device` (training/device.py); a device other than the CPU is part of the cache keys.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from siq.training import quantizers
from siq.training.arch import Arch, load_arch
from siq.training.data import load_dataset
from siq.training.device import on_device, resolve_device
from siq.training.errors import SiqError
from siq.training.graph import has_average_pool
from siq.training.fileio import atomic_write_bytes
from siq.training.integer import build_integer_model, integer_scores
from siq.training.nets import fold_batchnorm
from siq.training.quant import (CALIBRATION_RULES, DEFAULT_CALIBRATION, TrainingHooks, calibrate_steps,
                               channel_octave_limits, check_bits, check_codebook_bits, point_bits)
from siq.training.quantizers import (DEFAULT_PER_CHANNEL, METHODS, QuantizeConfig, SIQConfig, SIQPlusConfig,
                                     check_channel_steps_for, check_per_channel, check_plus_config,
                                     check_point_widths, check_siq_config, method_variant)
from siq.training.train import (TrainConfig, accuracy, load_checkpoint, predict_scores, save_checkpoint,
                                torch_threads, train_float)

from .backends import CellRuns, check_backend, run_cells
from .cache import cell_key, cell_quantize_fields, digest, model_key, quantize_template, read_cached_cell
from .grid import FLOAT_METHOD, Cell, cells_for, check_bit_list, parse_bits
from .records import (RECORD_FIELDS, distillation, learned_steps_setting, ordered_record, read_results,
                      retraining_dropout)

__all__ = ["Cell", "FLOAT_METHOD", "cells_for", "parse_bits", "prepare_data", "evaluate_cell", "run_sweep",
           "read_results", "quantize_template", "RECORD_FIELDS"]

FLOAT_ACT_QUANTIZE_BITS = 8       # activation bits used to quantize weights for a float-activation cell
FLOAT_WEIGHT_BYTES = 4            # float32 weights


# ---------------------------------------------------------------- data, architecture, template

def prepare_data(dataset_spec, arch_spec, data_dir=None, data_seed: int = 0, validation: float | None = None,
                 subset: tuple[int | None, int | None] | None = None):
    """(dataset, arch, data digest): the dataset padded to the architecture's input when smaller (and gray pictures
    replicated for a 3-channel input: Dataset.with_channels), the architecture resized to the dataset's classes and
    (larger) image size. dataset_spec: a load_dataset spec or a Dataset.
    validation: hold out this fraction of the training data (seeded by data_seed) as the scored split instead of
    the test split, for tuning. subset: (train, test) sample counts of a seeded stratified subset (data_seed),
    taken before the validation split."""
    ds = load_dataset(dataset_spec, data_dir=data_dir, seed=data_seed) if isinstance(dataset_spec, str) \
        else dataset_spec
    if subset is not None:
        ds = ds.subset(*subset, seed=data_seed)
    if validation is not None:
        ds = ds.split_validation(validation, data_seed)[0]
    arch = load_arch(arch_spec) if isinstance(arch_spec, str) else arch_spec
    if not isinstance(arch, Arch):
        raise SiqError(f"architecture must be a preset name, a file path or an Arch, got {type(arch).__name__}")
    ds = ds.with_channels(arch.input[0])
    channels, height, width = ds.image_shape
    target = (max(height, arch.input[1]), max(width, arch.input[2]))
    if target != (height, width):
        ds = ds.padded(*target)
    arch = arch.with_input((channels, *target)).with_classes(ds.num_classes)
    data_digest = digest(ds.train_x, ds.train_y, ds.test_x, ds.test_y,
                     ds.test_groups if ds.test_groups is not None else "no groups", list(ds.class_names))
    return ds, arch, data_digest


# ---------------------------------------------------------------- float models

def _float_model(ds, arch: Arch, data_digest: str, dataset_label: str, train_cfg: TrainConfig, models_dir: Path,
                 device: str = "cpu"):
    """(checkpoint path, model key, float test accuracy), training (on device) and caching the model when needed."""
    key = model_key(data_digest, arch, train_cfg, device)
    path = models_dir / f"{key}.pt"
    if path.is_file():
        try:
            _, meta = load_checkpoint(path)
            return path, key, float(meta["metrics"]["test_accuracy"])
        except (SiqError, KeyError, TypeError, ValueError):
            pass  # unreadable cache entry: train again and overwrite it
    net, history = train_float(arch, ds.train_x, ds.train_y, train_cfg)
    float_acc = accuracy(predict_scores(net, ds.test_x), ds.test_y, ds.test_groups)
    save_checkpoint(path, net, {"spec": dataset_label, "digest": data_digest}, train_cfg,
                    {"test_accuracy": float_acc, "history": history})
    return path, key, float_acc


# ---------------------------------------------------------------- one cell

def _calibration_images(train_x: np.ndarray, seed: int, count: int) -> np.ndarray:
    """The same calibration subset quantize_model draws."""
    return train_x[np.random.default_rng(seed).permutation(len(train_x))[:count]]


def _codebook_quantizers(qm) -> dict:
    """Weight hooks that replace each layer's weights by its fixed-point codebook values."""
    return {i: (lambda w, v=torch.from_numpy(lc.values()).float(): v.to(w.dtype)) for i, lc in qm.layers.items()}


def evaluate_cell(cell: Cell, data: dict, checkpoint: str, fc_bits: int, qcfg: dict, threads: int | None = None,
                  device: str | None = None) -> dict:
    """Quantize (unless the weights stay float) and evaluate one cell; returns the measured part of its record.

    data: train_x, train_y, test_x, test_y, test_groups, class_names. qcfg: the QuantizeConfig fields other than
    the cell's own (see _quantize_template), siq as a dict. device: where retraining runs (None: the one in force)."""
    with torch_threads(threads), on_device(device):
        return _evaluate_cell(cell, data, checkpoint, fc_bits, qcfg)


def _evaluate_cell(cell: Cell, data: dict, checkpoint: str, fc_bits: int, qcfg: dict) -> dict:
    start = time.perf_counter()
    net, _ = load_checkpoint(checkpoint)
    test_x, test_y, groups = data["test_x"], data["test_y"], data["test_groups"]
    history: list = []
    quantize_act_bits = None
    if cell.weight_bits is None:
        weight_bits = {str(i): None for i in net.arch.weighted_layers()}
        weights_bytes = FLOAT_WEIGHT_BYTES * sum(int(np.prod(net.arch.weight_shape(i)))
                                                 for i in net.arch.weighted_layers())
        if cell.act_bits is None:
            hooks = TrainingHooks(None, None)
        else:
            calib = _calibration_images(data["train_x"], cell.seed, qcfg["calibration_images"])
            input_bits, point_widths = qcfg.get("input_bits"), qcfg["point_widths"]
            net = fold_batchnorm(net)  # quantization's points (unfolded, a conv before its batch norm is "signed")
            limits = channel_octave_limits(net.arch, qcfg["channel_steps"], qcfg["codebook_bits"],
                                           lambda p: point_bits(p, cell.act_bits, input_bits, point_widths))
            shifts, octaves = calibrate_steps(net, calib, cell.act_bits, qcfg["calibration"], input_bits,
                                              point_widths, limits)
            hooks = TrainingHooks(cell.act_bits, shifts, input_bits=input_bits, point_widths=point_widths,
                                  channel_octaves=octaves)
        scores = predict_scores(net, test_x, hooks)
        evaluator = "torch"
    else:
        quantize_act_bits = cell.act_bits if cell.act_bits is not None else FLOAT_ACT_QUANTIZE_BITS
        fields = cell_quantize_fields(qcfg, cell.method)
        if cell.act_bits is None:  # float feature maps: no point has a width of its own
            fields = {**fields, "point_widths": {}}
        cfg = QuantizeConfig(**{**fields, "siq": SIQConfig(**fields["siq"]), "plus": SIQPlusConfig(**fields["plus"])},
                             method=method_variant(cell.method)[0],
                             conv_bits=cell.weight_bits, fc_bits=fc_bits, act_bits=quantize_act_bits, seed=cell.seed)
        qm, retrained = quantizers.quantize_model(net, data["train_x"], data["train_y"], cfg, data["class_names"])
        weight_bits = {str(i): lc.bits for i, lc in sorted(qm.layers.items())}
        weights_bytes = qm.weights_bytes()
        history = qm.meta.get("history", [])
        if cell.act_bits is None:
            scores = predict_scores(retrained, test_x, TrainingHooks(None, None, _codebook_quantizers(qm)))
            evaluator = "torch"
        else:
            scores = integer_scores(build_integer_model(qm), test_x)
            evaluator = "integer"
    acc = accuracy(scores, test_y, groups)
    return {"method": cell.method, "weight_bits": weight_bits, "conv_bits": cell.weight_bits,
            "fc_bits": fc_bits if cell.weight_bits is not None else None, "act_bits": cell.act_bits,
            "accuracy": acc, "error": 1.0 - acc, "weights_bytes": int(weights_bytes), "seed": cell.seed,
            "seconds": round(time.perf_counter() - start, 3),
            "n_test": int(len(np.unique(groups)) if groups is not None else len(test_y)),
            "evaluator": evaluator, "quantize_act_bits": quantize_act_bits, "history": history}


def _run_cell(cell: Cell, data: dict, checkpoint: str | bytes, fc_bits: int, qcfg: dict, threads: int | None,
              identity: dict, cell_path: str | None, device: str = "cpu") -> dict:
    """Worker entry point: evaluate, then save the cell so that a later run skips it (cell_path None: the driver
    saves it). checkpoint: the float model's file, or its bytes where the worker may not see the driver's files."""
    if isinstance(checkpoint, bytes):
        with tempfile.TemporaryDirectory(prefix="siq-cell-") as scratch:
            path = Path(scratch) / "float.pt"
            path.write_bytes(checkpoint)
            return _run_cell(cell, data, str(path), fc_bits, qcfg, threads, identity, cell_path, device)
    record = {**identity, **evaluate_cell(cell, data, checkpoint, fc_bits, qcfg, threads, device)}
    if cell_path is not None:
        _save_cell(cell_path, record)
    return record


def _save_cell(cell_path: str, record: dict) -> None:
    atomic_write_bytes(cell_path, (json.dumps(record, sort_keys=True) + "\n").encode())


# ---------------------------------------------------------------- the sweep

def run_sweep(dataset_spec, arch_spec, methods: Sequence[str], weight_bits, act_bits, *,
              out: str | Path, fc_bits: int = 8, seed: int | Sequence[int] = 0,
              train_cfg: TrainConfig | None = None, siq_cfg: SIQConfig | None = None, jobs: int = 1,
              data_dir: str | None = None, cache_dir: str | Path | None = None, data_seed: int = 0,
              codebook_bits: int = 8, calibration_images: int = 2000, threads: int | None = None,
              progress: bool = True, plus_cfg: SIQPlusConfig | None = None, validation: float | None = None,
              subset: tuple[int | None, int | None] | None = None, calibration: str = DEFAULT_CALIBRATION,
              per_channel: str = DEFAULT_PER_CHANNEL, input_bits: int | None = None, equalize: bool = False,
              point_widths: dict | None = None, channel_steps: str = "none", device: str = "cpu",
              backend: str = "joblib",
              address: str | None = None, max_retries: int = 2, log=None) -> list[dict]:
    """Run (or resume) a sweep and write its records as JSON lines to `out`; returns the records in grid order.

    dataset_spec: a training.data.load_dataset spec ("mnist5k", "digits", "folder:PATH", ...) or a Dataset.
    arch_spec: a preset name, a .toml/.json architecture file, or an Arch (resized to the dataset's classes).
    methods: quantization methods (keys of training.quantizers.METHODS), or siq+ with ingredients turned off for
        ablations: "siq+-distill", "siq+-steps-progressive" (names in training.quantizers.PLUS_INGREDIENTS).
    weight_bits, act_bits: lists of widths 1..8 and None (= float), or parse_bits strings like "1-4,8,float".
    fc_bits: weight bits of the dense layers in every quantized cell.
    seed: one seed or a list; each seed trains its own float model (TrainConfig.seed) and seeds the quantizer.
        The train/test split stays the one of `data_seed`, so every seed is scored on the same test images.
    train_cfg: float training (its seed is replaced by each sweep seed); siq_cfg: SIQ schedule; plus_cfg: siq+'s
        ingredients (variants turn some off).
    jobs: joblib n_jobs for the cells (-1 = all cores); the joblib backend only.
    device: where float training and retraining run (auto, cpu, cuda, cuda:N; training/device.py).
    backend: "joblib" (local workers) or "ray" (Ray tasks; address: the cluster, None = a local instance);
        max_retries: times the ray backend runs a failed or lost cell again (backends.py).
    log: where the device choice, retried and failed cells are reported (default: stderr).
    threads: torch intra-op threads for evaluating every cell (restored afterwards); None = one per worker when
        jobs != 1, torch's setting otherwise. Training (float and retraining) always runs on train.TRAIN_THREADS,
        so the weights do not depend on this.
    cache_dir: float checkpoints and finished cells (default: `.siq_cache` beside `out`).
    codebook_bits, calibration_images, calibration (the activation-shift rule), per_channel (which layers get
        a codebook per output channel), input_bits (the input image's width where it differs from each cell's
        activation bits; None = the same), equalize (cross-layer equalization first; cells with quantized
        weights only), point_widths (feature-map point -> its own width, numbered on the network with batch
        norm folded as `siq arch` prints them; cells with quantized feature maps only), channel_steps (feature
        maps with a step per channel; cells with quantized feature maps only): as in QuantizeConfig.
    progress: a tqdm bar over the cells.
    validation: tune instead of test: train on the rest of the training data and score every cell on this held-out
        fraction of it (seeded by data_seed); records say dataset "<spec>/val<fraction>".
    subset: (train, test) sizes of a stratified subset (None = all), for budgeted runs; records say
        dataset "<spec>[train N, test M]".
    """
    if not methods:
        raise SiqError(f"no quantization method given (known: {', '.join(sorted(METHODS))})")
    for m in methods:
        method_variant(m)  # refuses unknown methods and siq+ ingredients
    methods = list(dict.fromkeys(methods))
    weight_bits = check_bit_list(weight_bits, "weight bits")
    act_bits = check_bit_list(act_bits, "activation bits")
    fc_bits = check_bits(fc_bits, "fc bits")
    check_codebook_bits(codebook_bits)
    seeds = [seed] if isinstance(seed, (int, np.integer)) else list(dict.fromkeys(seed))
    if not seeds or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seeds):
        raise SiqError(f"seed must be a whole number or a list of them, got {seed!r}")
    seeds = [int(s) for s in seeds]
    if not isinstance(jobs, int) or jobs == 0:
        raise SiqError(f"jobs must be a non-zero whole number (-1 = all cores), got {jobs!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise SiqError(f"threads must be a whole number >= 1 (or None), got {threads!r}")
    train_cfg = train_cfg or TrainConfig()
    siq_cfg = siq_cfg or SIQConfig()
    plus_cfg = plus_cfg or SIQPlusConfig()
    # refused here, not in the first cell after the float models have trained
    check_siq_config(siq_cfg)
    check_plus_config(plus_cfg)
    check_backend(backend, max_retries, address)
    log = log or (lambda message: print(message, file=sys.stderr))
    training_device = resolve_device(device, log)
    device_type = training_device.type  # what the cache keys name
    out = Path(out)
    cache = Path(cache_dir) if cache_dir is not None else out.parent / ".siq_cache"

    ds, arch, data_digest = prepare_data(dataset_spec, arch_spec, data_dir, data_seed, validation, subset)
    dataset_label = dataset_spec if isinstance(dataset_spec, str) else ds.name
    if subset is not None:
        dataset_label = f"{dataset_label}[train {subset[0] or 'all'}, test {subset[1] or 'all'}]"
    if validation is not None:
        dataset_label = f"{dataset_label}/val{validation:g}"
    if calibration not in CALIBRATION_RULES:
        raise SiqError(f"unknown calibration rule {calibration!r} (known: {', '.join(CALIBRATION_RULES)})")
    check_per_channel(per_channel)
    if input_bits is not None:
        input_bits = check_bits(input_bits, "input bits")
    # numbered on the folded network; refused here, before the float models train
    point_widths = check_point_widths(arch.folded(), point_widths or {})
    check_channel_steps_for(methods, QuantizeConfig(calibration=calibration, channel_steps=channel_steps,
                                                    plus=plus_cfg))
    qcfg = quantize_template(codebook_bits, calibration_images, siq_cfg, plus_cfg, calibration,
                              per_channel, input_bits, equalize, point_widths, channel_steps)
    data = {"train_x": ds.train_x, "train_y": ds.train_y, "test_x": ds.test_x, "test_y": ds.test_y,
            "test_groups": ds.test_groups, "class_names": list(ds.class_names)}

    models = {}
    with torch_threads(threads), on_device(training_device):
        for s in seeds:
            models[s] = _float_model(ds, arch, data_digest, dataset_label, replace(train_cfg, seed=s),
                                     cache / "models", device_type)

    records: dict[int, dict] = {}
    todo = []
    for n, cell in enumerate(cells_for(methods, weight_bits, act_bits, seeds)):
        checkpoint, model, float_acc = models[cell.seed]
        key = cell_key(model, cell, fc_bits, qcfg, device_type, has_average_pool(arch))
        cell_path = cache / "cells" / f"{key}.json"
        identity = {"dataset": dataset_label, "arch": arch.name, "float_accuracy": float_acc, "cell": key,
                    "model": model, "codebook_bits": codebook_bits, "calibration": calibration,
                    "per_channel": per_channel, "input_bits": input_bits if cell.act_bits is not None else None,
                    "siq_dropout": retraining_dropout(cell, qcfg), "distill": distillation(cell, qcfg),
                    "real_steps": learned_steps_setting(cell, qcfg, "real_steps"),
                    "progressive_acts": learned_steps_setting(cell, qcfg, "progressive_acts")}
        if equalize and cell.weight_bits is not None:  # said only where set: earlier records stay as they were
            identity["equalize"] = True
        if point_widths and cell.act_bits is not None:
            identity["point_bits"] = {str(p): w for p, w in point_widths.items()}
        if channel_steps != "none" and cell.act_bits is not None:
            identity["channel_steps"] = channel_steps
        cached = read_cached_cell(cell_path)
        if cached is not None:
            records[n] = {**cached, **identity, "cached": True}
        else:
            todo.append((n, cell, str(checkpoint), identity, str(cell_path)))

    if threads is None and (jobs != 1 or backend == "ray"):
        threads = 1
    bar = tqdm(total=len(records) + len(todo), initial=len(records), desc="sweep", unit="cell",
               disable=None if progress else True)
    # Ray workers may not see the driver's files: they get the checkpoint's bytes and the driver saves the cells
    remote = backend == "ray"
    blobs = {path: Path(path).read_bytes() for path in {c for _, _, c, _, _ in todo}} if remote else {}
    calls = [(n, (cell, data, blobs.get(checkpoint, checkpoint), fc_bits, qcfg, threads, identity,
                  None if remote else path, device_type if remote else str(training_device)))
             for n, cell, checkpoint, identity, path in todo]  # a Ray task's GPU is its own "cuda" (Ray sets it)
    paths = {n: path for n, _, _, _, path in todo}
    runs = CellRuns()
    try:
        for n, record in run_cells(_run_cell, calls, runs, backend=backend, jobs=jobs, address=address,
                                   cpus=threads or 1, gpus=1 if device_type == "cuda" else 0,
                                   max_retries=max_retries,
                                   progress=lambda running, failed: bar.set_postfix(running=running, failed=failed)):
            if remote:
                _save_cell(paths[n], record)
            records[n] = {**record, "cached": False}
            bar.update(1)
    finally:
        bar.close()
    _report_runs(runs, todo, len(records) + len(runs.failed), log)

    ordered = [ordered_record(records[n]) for n in sorted(records)]
    atomic_write_bytes(out, "".join(json.dumps(r, sort_keys=False) + "\n" for r in ordered).encode())
    return ordered


def _report_runs(runs: CellRuns, todo: list, total: int, log) -> None:
    """Say which cells needed another attempt; refuse to write the results while any cell is missing."""
    cells = {n: cell for n, cell, _, _, _ in todo}

    def name(n: int) -> str:
        c = cells[n]
        return f"{c.method} W{c.weight_bits or 'float'}A{c.act_bits or 'float'} seed {c.seed}"
    for n, reasons in sorted(runs.retried.items()):
        log(f"sweep: cell {name(n)} retried {len(reasons)}x after: {'; '.join(reasons)}")
    if runs.failed:
        first = min(runs.failed)
        raise SiqError(f"{len(runs.failed)} of {total} cells failed after every retry (first: {name(first)}: "
                       f"{runs.failed[first]}); the finished cells are cached, run again to retry the others")


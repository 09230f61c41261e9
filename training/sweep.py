"""Bit-width sweeps (the paper's Fig. 4, Fig. 5 and Table 1): every method x weight bits x activation bits x seed.

One float model is trained per (dataset, architecture, training config, seed) and kept as a checkpoint; each cell
of the grid then quantizes that model (SIQ retrains a copy) and measures test accuracy. Cells run in parallel with
joblib, and each finished cell is saved on its own, so an interrupted sweep resumes where it stopped.

What a cell evaluates, by its two widths (None = float):

    weight bits  act bits  network                                                   evaluator
    b            a         integer reference (training/integer.py) = what the C computes  "integer"
    b            None      quantized codebook weights, float activations (PyTorch)        "torch"
    None         a         float weights, a-bit activations (PyTorch, calibrated shifts)  "torch"
    None         None      the float network                                               "torch"

Weight bits apply to the conv kernels; dense layers get `fc_bits` (the paper fixes 8 for the FC layers). Cells with
float weights do not depend on the method: they are computed once and recorded with method "float". A cell with
quantized weights and float activations still needs activation bits to quantize (calibration, bias grid, and SIQ
retrains with fake-quantized activations): it uses 8 (`quantize_act_bits` in the record).

Caches (default `<folder of out>/.siq_cache/`, or `cache_dir`):
    models/<model key>.pt    float checkpoints; key = hash of the data (content digest), architecture, training
                             config and seed
    cells/<cell key>.json    one finished cell (its result record); key = hash of the model key and everything that
                             configures the cell (method, widths, codebook bits, calibration, SIQ config for "siq")
Delete a file to recompute it; unreadable cache files are recomputed too.

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

Running on a cluster: cells go through joblib, so any joblib backend distributes them without code changes. With
Dask (`pip install distributed`)::

    from distributed import Client
    import joblib
    client = Client("scheduler-address:8786")
    with joblib.parallel_config(backend="dask"):
        run_sweep(..., jobs=-1)

With Ray (`pip install ray`)::

    import joblib, ray
    from ray.util.joblib import register_ray
    ray.init(address="auto")
    register_ray()
    with joblib.parallel_config(backend="ray"):
        run_sweep(..., jobs=-1)

The workers need this package installed and must see the cache folder (a shared file system) for finished cells
to be kept; the float models are trained by the calling process before the cells are dispatched.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import joblib
import numpy as np
import torch
from tqdm import tqdm

from . import quantizers
from .arch import Arch, load_arch
from .errors import SiqError
from .fileio import atomic_write_bytes
from .integer import build_integer_model, integer_scores
from .quant import CALIBRATION_RULES, TrainingHooks, calibrate_shifts, check_bits, check_codebook_bits
from .quantizers import (METHODS, RETRAINING_METHODS, QuantizeConfig, SIQConfig, SIQPlusConfig, check_per_channel,
                         check_plus_config, check_siq_config, method_variant)
from .train import (RECIPE_DEFAULTS, TrainConfig, accuracy, load_checkpoint, predict_scores, save_checkpoint,
                    torch_threads, train_float)

CACHE_VERSION = 1
# Config fields left out of cell keys at these values, so that cells keep the keys they had before the fields existed
SIQ_NEUTRAL = {"augment_shift": 0, "augment_flip": False, "dropout": None}
QUANTIZE_NEUTRAL = {"calibration": "float", "per_channel": "none", "input_bits": None}
PLUS_NEUTRAL = {"real_steps": False, "progressive_acts": 0}
# Bumped when a method's algorithm changes, so that its cached cells are recomputed (others keep theirs).
# siq 2: the result is the codebook of the last retraining, not a re-clustering after it.
METHOD_VERSIONS = {"siq": 2, "siq+": 2}
FLOAT_METHOD = "float"            # method recorded for cells with float weights (they do not depend on the method)
FLOAT_ACT_QUANTIZE_BITS = 8       # activation bits used to quantize weights for a float-activation cell
FLOAT_WEIGHT_BYTES = 4            # float32 weights
RECORD_FIELDS = ("dataset", "arch", "method", "weight_bits", "conv_bits", "fc_bits", "act_bits", "accuracy",
                 "error", "weights_bytes", "seed", "seconds", "float_accuracy", "n_test", "evaluator",
                 "quantize_act_bits", "codebook_bits", "history", "cell", "model", "cached")


# ---------------------------------------------------------------- bit lists

def parse_bits(spec: str) -> list[int | None]:
    """A bit-width list from text: comma-separated widths 1..8, ranges "a-b", and "float" (-> None).

    The result is sorted, without repeats, None last:

    >>> parse_bits("1-4,8,float")
    [1, 2, 3, 4, 8, None]
    >>> parse_bits(" 6, 2-3 ,3")
    [2, 3, 6]
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SiqError(f"empty bit-width list {spec!r}: give widths 1..8, ranges like 1-4, or 'float'")
    widths: set[int] = set()
    has_float = False
    for item in spec.split(","):
        item = item.strip()
        if item.lower() == "float":
            has_float = True
            continue
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", item)
        if not match:
            raise SiqError(f"bad bit width {item!r} in {spec!r}: use whole numbers 1..8, ranges like 1-4, "
                           "or 'float'")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if not (1 <= low <= 8 and 1 <= high <= 8):
            raise SiqError(f"bit width {item!r} in {spec!r} is outside 1..8")
        if low > high:
            raise SiqError(f"bit-width range {item!r} in {spec!r} runs backwards: write {high}-{low}")
        widths.update(range(low, high + 1))
    return sorted(widths) + ([None] if has_float else [])


def _check_bit_list(values, what: str) -> list[int | None]:
    if isinstance(values, str):
        return parse_bits(values)
    values = list(values)
    if not values:
        raise SiqError(f"{what}: empty list")
    checked = [check_bits(v, what, allow_float=True) for v in values]
    return sorted({v for v in checked if v is not None}) + ([None] if None in checked else [])


# ---------------------------------------------------------------- data, architecture, keys

def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"{part.dtype}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def prepare_data(dataset_spec, arch_spec, data_dir=None, data_seed: int = 0, validation: float | None = None,
                 subset: tuple[int | None, int | None] | None = None):
    """(dataset, arch, data digest): the dataset padded to the architecture's input when smaller, the architecture
    resized to the dataset's classes and (larger) image size. dataset_spec: a load_dataset spec or a Dataset.
    validation: hold out this fraction of the training data (seeded by data_seed) as the scored split instead of
    the test split, for tuning. subset: (train, test) sample counts of a seeded stratified subset (data_seed),
    taken before the validation split."""
    from .data import load_dataset  # imported here: only the sweep needs the data sources

    ds = load_dataset(dataset_spec, data_dir=data_dir, seed=data_seed) if isinstance(dataset_spec, str) \
        else dataset_spec
    if subset is not None:
        ds = ds.subset(*subset, seed=data_seed)
    if validation is not None:
        ds = ds.split_validation(validation, data_seed)[0]
    arch = load_arch(arch_spec) if isinstance(arch_spec, str) else arch_spec
    if not isinstance(arch, Arch):
        raise SiqError(f"architecture must be a preset name, a file path or an Arch, got {type(arch).__name__}")
    channels, height, width = ds.image_shape
    if arch.input[0] != channels:
        raise SiqError(f"architecture {arch.name!r} takes {arch.input[0]} input channel(s), "
                       f"the dataset {ds.name!r} has {channels}")
    target = (max(height, arch.input[1]), max(width, arch.input[2]))
    if target != (height, width):
        ds = ds.padded(*target)
    arch = arch.with_input((channels, *target)).with_classes(ds.num_classes)
    digest = _digest(ds.train_x, ds.train_y, ds.test_x, ds.test_y,
                     ds.test_groups if ds.test_groups is not None else "no groups", list(ds.class_names))
    return ds, arch, digest


@dataclass(frozen=True)
class Cell:
    """One point of the grid; weight_bits/act_bits None = float."""
    method: str
    weight_bits: int | None
    act_bits: int | None
    seed: int


def cells_for(methods: Sequence[str], weight_bits, act_bits, seeds: Sequence[int]) -> list[Cell]:
    """The grid in a fixed order (seed, method, weight bits, act bits); float-weight cells once, method "float"."""
    cells = []
    for seed in seeds:
        for a in act_bits:
            if None in weight_bits:
                cells.append(Cell(FLOAT_METHOD, None, a, seed))
        for method in methods:
            for w in weight_bits:
                if w is None:
                    continue
                for a in act_bits:
                    cells.append(Cell(method, w, a, seed))
    return cells


def _model_key(digest: str, arch: Arch, train_cfg: TrainConfig) -> str:
    # recipe fields at their neutral defaults are left out, so that models cached before they existed stay valid
    config = {k: v for k, v in asdict(train_cfg).items() if k not in RECIPE_DEFAULTS or v != RECIPE_DEFAULTS[k]}
    return _digest("model", CACHE_VERSION, digest, arch.to_dict(), config)[:24]


# QuantizeConfig fields that a cell sets itself; every other field comes from the sweep's template.
_CELL_FIELDS = ("method", "conv_bits", "fc_bits", "layer_bits", "act_bits", "seed")


def _quantize_template(codebook_bits: int, calibration_images: int, siq_cfg: SIQConfig,
                       plus_cfg: SIQPlusConfig, calibration: str = "float", per_channel: str = "none",
                       input_bits: int | None = None) -> dict:
    """Every QuantizeConfig field (defaults included, so that a changed default changes the cell keys)."""
    template = asdict(QuantizeConfig(codebook_bits=codebook_bits, calibration_images=calibration_images,
                                     calibration=calibration, per_channel=per_channel, siq=siq_cfg, plus=plus_cfg,
                                     input_bits=input_bits))
    return {k: v for k, v in template.items() if k not in _CELL_FIELDS}


def _without_neutral(fields: dict, neutral: dict) -> dict:
    """fields without those added later and left at their neutral values, so that cells keep the keys they had
    before those fields existed."""
    return {k: v for k, v in fields.items() if k not in neutral or v != neutral[k]}


def _cell_key(model_key: str, cell: Cell, fc_bits: int, qcfg: dict) -> str:
    qcfg = _without_neutral(qcfg, QUANTIZE_NEUTRAL)
    if cell.weight_bits is None:
        what = {"method": FLOAT_METHOD, "act_bits": cell.act_bits,
                "calibration_images": qcfg["calibration_images"]}
        if "calibration" in qcfg:
            what["calibration"] = qcfg["calibration"]
        if "input_bits" in qcfg and cell.act_bits is not None:
            what["input_bits"] = qcfg["input_bits"]
    else:
        what = {"method": cell.method, "weight_bits": cell.weight_bits, "act_bits": cell.act_bits,
                "fc_bits": fc_bits, "quantize": qcfg}
        # SIQ settings count only for the methods that use them (siq, siq+), siq+'s own only for siq+ (and its
        # variants, with their ingredients turned off)
        base, off = method_variant(cell.method)
        unused = ({"siq"} if base not in RETRAINING_METHODS else set()) | ({"plus"} if base != "siq+" else set())
        what["quantize"] = {k: v for k, v in _cell_quantize_fields(qcfg, cell.method).items() if k not in unused}
        if "siq" in what["quantize"]:
            what["quantize"]["siq"] = _without_neutral(what["quantize"]["siq"], SIQ_NEUTRAL)
        if "plus" in what["quantize"]:
            what["quantize"]["plus"] = _without_neutral(what["quantize"]["plus"], PLUS_NEUTRAL)
        if METHOD_VERSIONS.get(base, 1) != 1:
            what["version"] = METHOD_VERSIONS[base]
    return _digest("cell", CACHE_VERSION, model_key, what)[:24]


def _retraining_dropout(cell: Cell, qcfg: dict) -> float | None:
    """SIQ retraining's dropout rate for this cell where it was set apart from the architecture's; None otherwise,
    and for cells that are not retrained."""
    if cell.weight_bits is None or method_variant(cell.method)[0] not in RETRAINING_METHODS:
        return None
    return qcfg["siq"].get("dropout")


def _distillation(cell: Cell, qcfg: dict) -> list[float] | None:
    """[weight, temperature] of siq+'s distillation term where it was set apart from the default; None otherwise
    (and for cells that do not distil)."""
    if cell.weight_bits is None:
        return None
    base, off = method_variant(cell.method)
    if base != "siq+":
        return None
    plus = _cell_quantize_fields(qcfg, cell.method)["plus"]
    default = SIQPlusConfig().without(off)
    if (plus["distill"], plus["temperature"]) == (default.distill, default.temperature):
        return None
    return [plus["distill"], plus["temperature"]]


def _learned_steps_setting(cell: Cell, qcfg: dict, name: str):
    """A setting of siq+'s learned activation steps for this cell (real_steps: real feature-map steps folded into
    powers of two; progressive_acts: the extra activation bits it started from); None for cells without them."""
    if cell.weight_bits is None or method_variant(cell.method)[0] != "siq+":
        return None
    plus = _cell_quantize_fields(qcfg, cell.method)["plus"]
    return plus[name] if plus["learn_act_steps"] else None


def _cell_quantize_fields(qcfg: dict, method: str) -> dict:
    """The sweep's QuantizeConfig template as this cell's method uses it (a siq+ variant turns ingredients off)."""
    base, off = method_variant(method)
    if not off:
        return qcfg
    return {**qcfg, "plus": asdict(SIQPlusConfig(**qcfg["plus"]).without(off))}


def _read_json(path: Path) -> dict | None:
    """A cache file's record, or None when it is missing or unreadable (then it is recomputed)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and "accuracy" in record else None


# ---------------------------------------------------------------- float models

def _float_model(ds, arch: Arch, digest: str, dataset_label: str, train_cfg: TrainConfig, models_dir: Path):
    """(checkpoint path, model key, float test accuracy), training and caching the model when needed."""
    key = _model_key(digest, arch, train_cfg)
    path = models_dir / f"{key}.pt"
    if path.is_file():
        try:
            _, meta = load_checkpoint(path)
            return path, key, float(meta["metrics"]["test_accuracy"])
        except (SiqError, KeyError, TypeError, ValueError):
            pass  # unreadable cache entry: train again and overwrite it
    net, history = train_float(arch, ds.train_x, ds.train_y, train_cfg)
    float_acc = accuracy(predict_scores(net, ds.test_x), ds.test_y, ds.test_groups)
    save_checkpoint(path, net, {"spec": dataset_label, "digest": digest}, train_cfg,
                    {"test_accuracy": float_acc, "history": history})
    return path, key, float_acc


# ---------------------------------------------------------------- one cell

def _calibration_images(train_x: np.ndarray, seed: int, count: int) -> np.ndarray:
    """The same calibration subset quantize_model draws."""
    return train_x[np.random.default_rng(seed).permutation(len(train_x))[:count]]


def _codebook_quantizers(qm) -> dict:
    """Weight hooks that replace each layer's weights by its fixed-point codebook values."""
    return {i: (lambda w, v=torch.from_numpy(lc.values()).float(): v.to(w.dtype)) for i, lc in qm.layers.items()}


def evaluate_cell(cell: Cell, data: dict, checkpoint: str, fc_bits: int, qcfg: dict, threads: int | None = None
                  ) -> dict:
    """Quantize (unless the weights stay float) and evaluate one cell; returns the measured part of its record.

    data: train_x, train_y, test_x, test_y, test_groups, class_names. qcfg: the QuantizeConfig fields other than
    the cell's own (see _quantize_template), siq as a dict."""
    with torch_threads(threads):
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
            input_bits = qcfg.get("input_bits")
            shifts = calibrate_shifts(net, calib, cell.act_bits, qcfg["calibration"], input_bits)
            hooks = TrainingHooks(cell.act_bits, shifts, input_bits=input_bits)
        scores = predict_scores(net, test_x, hooks)
        evaluator = "torch"
    else:
        quantize_act_bits = cell.act_bits if cell.act_bits is not None else FLOAT_ACT_QUANTIZE_BITS
        fields = _cell_quantize_fields(qcfg, cell.method)
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


def _run_cell(cell: Cell, data: dict, checkpoint: str, fc_bits: int, qcfg: dict, threads: int | None,
              identity: dict, cell_path: str) -> dict:
    """Worker entry point: evaluate, then save the cell so that a later run skips it."""
    record = {**identity, **evaluate_cell(cell, data, checkpoint, fc_bits, qcfg, threads)}
    atomic_write_bytes(cell_path, (json.dumps(record, sort_keys=True) + "\n").encode())
    return record


# ---------------------------------------------------------------- the sweep

def run_sweep(dataset_spec, arch_spec, methods: Sequence[str], weight_bits, act_bits, *,
              out: str | Path, fc_bits: int = 8, seed: int | Sequence[int] = 0,
              train_cfg: TrainConfig | None = None, siq_cfg: SIQConfig | None = None, jobs: int = 1,
              data_dir: str | None = None, cache_dir: str | Path | None = None, data_seed: int = 0,
              codebook_bits: int = 8, calibration_images: int = 2000, threads: int | None = None,
              progress: bool = True, plus_cfg: SIQPlusConfig | None = None,
              validation: float | None = None, subset: tuple[int | None, int | None] | None = None,
              calibration: str = "float", per_channel: str = "none", input_bits: int | None = None) -> list[dict]:
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
    jobs: joblib n_jobs for the cells (-1 = all cores).
    threads: torch intra-op threads for evaluating every cell (restored afterwards); None = one per worker when
        jobs != 1, torch's setting otherwise. Training (float and retraining) always runs on train.TRAIN_THREADS,
        so the weights do not depend on this.
    cache_dir: float checkpoints and finished cells (default: `.siq_cache` beside `out`).
    codebook_bits, calibration_images, calibration (the activation-shift rule), per_channel (which layers get
        a codebook per output channel), input_bits (the input image's width where it differs from each cell's
        activation bits; None = the same): as in QuantizeConfig.
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
    weight_bits = _check_bit_list(weight_bits, "weight bits")
    act_bits = _check_bit_list(act_bits, "activation bits")
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
    out = Path(out)
    cache = Path(cache_dir) if cache_dir is not None else out.parent / ".siq_cache"

    ds, arch, digest = prepare_data(dataset_spec, arch_spec, data_dir, data_seed, validation, subset)
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
    qcfg = _quantize_template(codebook_bits, calibration_images, siq_cfg, plus_cfg, calibration,
                              per_channel, input_bits)
    data = {"train_x": ds.train_x, "train_y": ds.train_y, "test_x": ds.test_x, "test_y": ds.test_y,
            "test_groups": ds.test_groups, "class_names": list(ds.class_names)}

    models = {}
    with torch_threads(threads):
        for s in seeds:
            models[s] = _float_model(ds, arch, digest, dataset_label, replace(train_cfg, seed=s), cache / "models")

    records: dict[int, dict] = {}
    todo = []
    for n, cell in enumerate(cells_for(methods, weight_bits, act_bits, seeds)):
        checkpoint, model_key, float_acc = models[cell.seed]
        key = _cell_key(model_key, cell, fc_bits, qcfg)
        cell_path = cache / "cells" / f"{key}.json"
        identity = {"dataset": dataset_label, "arch": arch.name, "float_accuracy": float_acc, "cell": key,
                    "model": model_key, "codebook_bits": codebook_bits, "calibration": calibration,
                    "per_channel": per_channel, "input_bits": input_bits if cell.act_bits is not None else None,
                    "siq_dropout": _retraining_dropout(cell, qcfg), "distill": _distillation(cell, qcfg),
                    "real_steps": _learned_steps_setting(cell, qcfg, "real_steps"),
                    "progressive_acts": _learned_steps_setting(cell, qcfg, "progressive_acts")}
        cached = _read_json(cell_path)
        if cached is not None:
            records[n] = {**cached, **identity, "cached": True}
        else:
            todo.append((n, cell, str(checkpoint), identity, str(cell_path)))

    if threads is None and jobs != 1:
        threads = 1
    bar = tqdm(total=len(records) + len(todo), initial=len(records), desc="sweep", unit="cell",
               disable=None if progress else True)
    tasks = [joblib.delayed(_indexed)(n, cell, data, checkpoint, fc_bits, qcfg, threads, identity, path)
             for n, cell, checkpoint, identity, path in todo]
    try:
        for n, record in _parallel(tasks, jobs):
            records[n] = {**record, "cached": False}
            bar.update(1)
    finally:
        bar.close()

    ordered = [_ordered_record(records[n]) for n in sorted(records)]
    atomic_write_bytes(out, "".join(json.dumps(r, sort_keys=False) + "\n" for r in ordered).encode())
    return ordered


def _parallel(tasks: list, jobs: int):
    """Results as the cells finish (progress), or all at the end on backends that cannot stream them (joblib's
    "multiprocessing" and Ray's): finished cells are saved by the workers either way."""
    if not tasks:
        return []
    try:
        return joblib.Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks)
    except ValueError as exc:
        if "return_as" not in str(exc):
            raise
        return joblib.Parallel(n_jobs=jobs)(tasks)


def _indexed(n: int, *args) -> tuple[int, dict]:
    return n, _run_cell(*args)


def _ordered_record(record: dict) -> dict:
    return {k: record.get(k) for k in RECORD_FIELDS} | {k: v for k, v in record.items() if k not in RECORD_FIELDS}


def read_results(paths) -> list[dict]:
    """Records of one or several JSON-lines result files; a cell present twice keeps its last record."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    by_cell: dict = {}
    for path in paths:
        path = Path(path)
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise SiqError(f"cannot read sweep results {path}: {exc.strerror}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SiqError(f"{path}:{number}: not a JSON record ({exc.msg})") from None
            missing = [k for k in ("dataset", "arch", "method", "conv_bits", "act_bits", "error", "seed")
                       if k not in record]
            if missing:
                raise SiqError(f"{path}:{number}: not a sweep record (missing {', '.join(missing)})")
            by_cell[record.get("cell") or (path, number)] = record
    return list(by_cell.values())

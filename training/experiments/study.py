"""A study: one question, asked by a list of sweeps, in one declarative TOML file (docs/studies/<question>.toml).

    question = "Which float recipe quantizes best on Fashion-MNIST?"   # required: what the study asks
    finding = "..."                                                   # optional: what it found (one paragraph)

    [defaults]                    # options every run shares (any run option below)
    dataset = "fashion"
    epochs = 30

    [[run]]                       # one sweep; runs writing the same results file are concatenated in order
    split = "validation"          # "validation" (needs validation = FRACTION) or "test"
    validation = 0.1
    results = "fashion-float-recipe.val.jsonl"   # a file in docs/results
    methods = ["kmeans"]
    weight_bits = "4,float"
    act_bits = "2,4,float"

    [[fit]]                       # optional: siq fit at each budget (codegen/fit/study.py runs it), beside the
    method = "siq+"               #   best single width; FIT_OPTIONS: the float recipe and quantizer options of a
    budgets = ["6KB", "8KB"]      #   run, plus method, act_bits, budgets, solvers (exact, greedy), single_width,
    validation = 0.1              #   widths, cpu, and report (a docs folder for the report with the
    results = "fashion-fit-budgets.jsonl"  # accuracy-vs-flash plot, codegen/fit/study_report.py) and its title

    [[report]]                    # optional: a report (siq report) over committed results files
    results = ["fashion-float-recipe.val.jsonl"]
    out = "fashion-float-recipe"  # a folder in docs
    title = "..."

Run options are those of `siq sweep` (underscores for dashes) and mean the same; a run states its whole float
recipe (no dataset-dependent schedule is applied): options left out take the library defaults (TrainConfig,
SIQConfig, SIQPlusConfig, QuantizeConfig). The same options give the same cache keys, so re-running a study from a
cache that holds its cells reproduces its committed results record for record (test_studies checks the keys).
A bad study is refused in one line (SiqError) before anything is trained. A study holds at least one [[run]]
or [[fit]].
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from siq.training.arch import load_arch
from siq.training.errors import SiqError
from siq.training.fileio import atomic_write_bytes
from siq.training.quant import CALIBRATION_RULES, DEFAULT_CALIBRATION, check_codebook_bits
from siq.training.quantizers import (DEFAULT_PER_CHANNEL, PER_CHANNEL_CHOICES, QuantizeConfig, SIQConfig,
                                     SIQPlusConfig, check_channel_steps_for, check_plus_config, check_point_widths,
                                     check_siq_config, method_variant)
from siq.training.train import TrainConfig

from .grid import parse_bits
from .sweep import run_sweep

# option -> (accepted types, where it goes). Types are checked before anything runs.
_NUMBER = (int, float)
OPTIONS = {
    "dataset": (str,), "arch": (str,), "split_seed": (int,), "data_dir": (str,),
    "epochs": (int,), "lr": _NUMBER, "batch_size": (int,), "augment_shift": (int,), "flip": (bool,),
    "lr_schedule": (str,),
    "dropout": _NUMBER, "label_smoothing": _NUMBER, "weight_decay": _NUMBER,
    "methods": (list,), "weight_bits": (str, int), "act_bits": (str, int), "input_bits": (int,), "fc_bits": (int,),
    "seeds": (list, int), "codebook_bits": (int,), "calibration": (str,), "per_channel": (str,), "equalize": (bool,),
    "channel_steps": (str,),
    "point_bits": (dict,),
    "siq_rounds": (int,), "siq_lr": _NUMBER, "siq_epochs": (int,), "siq_alpha": _NUMBER, "siq_growth": _NUMBER,
    "siq_augment_shift": (int,), "siq_flip": (bool,), "siq_dropout": _NUMBER,
    "distill": _NUMBER, "distill_temperature": _NUMBER, "real_steps": (bool,), "progressive_acts": (int,),
    "train_size": (int,), "test_size": (int,), "validation": _NUMBER,
    "split": (str,), "results": (str,),
}
REQUIRED = ("dataset", "methods", "weight_bits", "act_bits", "split", "results")
SPLITS = ("validation", "test")
TOP_LEVEL = ("question", "finding", "defaults", "run", "fit", "report")
# A [[fit]] (siq fit at each budget, beside the best single width; run by codegen/fit/study.py): the float recipe
# and quantizer options of a run, plus these; [defaults] options that a fit does not take are left to the runs.
FIT_OPTIONS = {key: OPTIONS[key] for key in (
    "dataset", "arch", "split_seed", "data_dir", "epochs", "lr", "batch_size", "augment_shift", "flip", "lr_schedule",
    "dropout", "label_smoothing", "weight_decay", "input_bits", "seeds", "codebook_bits", "calibration",
    "siq_rounds", "siq_lr", "siq_epochs", "siq_alpha", "siq_growth", "siq_augment_shift", "siq_flip", "siq_dropout",
    "distill", "distill_temperature", "real_steps", "progressive_acts", "train_size", "test_size", "validation",
    "results")} | {"method": (str,), "act_bits": (int,), "budgets": (list,), "solvers": (list,),
                   "single_width": (bool,), "widths": (str,), "cpu": (str,), "report": (str,), "title": (str,)}
FIT_REQUIRED = ("dataset", "method", "budgets", "validation", "results")


@dataclass(frozen=True)
class Run:
    """One sweep of a study: its options (defaults merged) and the run_sweep arguments they mean."""
    number: int
    options: dict
    split: str
    results: str

    def sweep_arguments(self) -> dict:
        """Keyword arguments of run_sweep (all but out, cache_dir, jobs, progress)."""
        o = self.options
        train = {k: o[k] for k in ("epochs", "lr", "batch_size", "augment_shift", "dropout", "label_smoothing",
                                   "weight_decay", "lr_schedule") if k in o}
        if "flip" in o:
            train["augment_flip"] = o["flip"]
        siq = {name: o[key] for key, name in (("siq_rounds", "rounds"), ("siq_epochs", "epochs_per_round"),
                                              ("siq_lr", "lr"), ("siq_alpha", "alpha"), ("siq_growth", "growth"),
                                              ("siq_augment_shift", "augment_shift"), ("siq_flip", "augment_flip"),
                                              ("siq_dropout", "dropout")) if key in o}
        plus = {name: o[key] for key, name in (("distill", "distill"), ("distill_temperature", "temperature"),
                                               ("real_steps", "real_steps"),
                                               ("progressive_acts", "progressive_acts")) if key in o}
        seeds = o.get("seeds", [0])
        subset = None if "train_size" not in o and "test_size" not in o else (o.get("train_size"), o.get("test_size"))
        return dict(dataset_spec=o["dataset"], arch_spec=o.get("arch", "paper-mnist"), methods=list(o["methods"]),
                    weight_bits=parse_bits(str(o["weight_bits"])), act_bits=parse_bits(str(o["act_bits"])),
                    fc_bits=o.get("fc_bits", 8), seed=[seeds] if isinstance(seeds, int) else list(seeds),
                    train_cfg=replace(TrainConfig(), **train), siq_cfg=SIQConfig(**siq),
                    plus_cfg=SIQPlusConfig(**plus), codebook_bits=o.get("codebook_bits", 8),
                    calibration=o.get("calibration", DEFAULT_CALIBRATION),
                    per_channel=o.get("per_channel", DEFAULT_PER_CHANNEL), input_bits=o.get("input_bits"),
                    equalize=o.get("equalize", False), channel_steps=o.get("channel_steps", "none"),
                    point_widths={int(p): w for p, w in o.get("point_bits", {}).items()}, data_dir=o.get("data_dir"),
                    data_seed=o.get("split_seed", 0),
                    validation=o.get("validation"), subset=subset)


@dataclass(frozen=True)
class Fit:
    """One [[fit]] of a study: its options ([defaults] merged, FIT_OPTIONS)."""
    number: int
    options: dict
    results: str


@dataclass(frozen=True)
class Report:
    results: list
    out: str
    title: str
    act_bits: int = 4


@dataclass(frozen=True)
class Study:
    path: Path
    question: str
    finding: str
    runs: list = field(default_factory=list)
    reports: list = field(default_factory=list)
    fits: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem

    def results_files(self) -> list[str]:
        """The results files its runs write, in the order they are first written."""
        return list(dict.fromkeys(run.results for run in self.runs))


def _fail(where: str, message: str):
    raise SiqError(f"{where}: {message}")


def _check_options(where: str, options: dict, known: dict = OPTIONS) -> None:
    for key, value in options.items():
        if key not in known:
            _fail(where, f"unknown option {key!r} (known: {', '.join(sorted(known))})")
        kinds = known[key]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            _fail(where, f"option {key!r} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")


def _check_run(where: str, o: dict) -> None:
    missing = [k for k in REQUIRED if k not in o]
    if missing:
        _fail(where, f"missing {', '.join(missing)}")
    if not o["results"].endswith(".jsonl") or "/" in o["results"] or o["results"].startswith("."):
        _fail(where, f"results must be a .jsonl file name (written in the results folder), got {o['results']!r}")
    check_sweep_options(where, o)


def check_sweep_options(where: str, o: dict) -> None:
    """Refuse, in one line, sweep options that run_sweep or the configs would refuse later (after training)."""
    _check_options(where, o)
    if o["split"] not in SPLITS:
        _fail(where, f"split must be one of {', '.join(SPLITS)}, got {o['split']!r}")
    if (o["split"] == "validation") != ("validation" in o):
        _fail(where, "split 'validation' needs validation = FRACTION, and only it" if o["split"] == "validation"
              else "split 'test' scores the test split: remove the validation fraction")
    if "validation" in o and not 0.0 < o["validation"] < 1.0:
        _fail(where, f"validation fraction must be in (0, 1), got {o['validation']}")
    if not o["methods"] or not all(isinstance(m, str) for m in o["methods"]):
        _fail(where, f"methods must be a non-empty list of method names, got {o['methods']!r}")
    seeds = o.get("seeds", [0])
    if isinstance(seeds, list) and (not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                         for s in seeds)):
        _fail(where, f"seeds must be a non-empty list of whole numbers, got {seeds!r}")
    if o.get("calibration", DEFAULT_CALIBRATION) not in CALIBRATION_RULES:
        _fail(where, f"calibration must be one of {', '.join(CALIBRATION_RULES)}, got {o['calibration']!r}")
    if o.get("per_channel", DEFAULT_PER_CHANNEL) not in PER_CHANNEL_CHOICES:
        _fail(where, f"per_channel must be one of {', '.join(PER_CHANNEL_CHOICES)}, got {o['per_channel']!r}")
    if o.get("epochs", 1) < 1:
        _fail(where, f"epochs must be at least 1, got {o['epochs']}")
    point_bits = o.get("point_bits", {})
    if not all(re.fullmatch(r"\d+", p) and isinstance(w, int) and not isinstance(w, bool)
               for p, w in point_bits.items()):
        _fail(where, f"point_bits must map feature-map points to widths ({{ 1 = 8 }}), got {point_bits!r}")
    for key, low, high in (("dropout", 0.0, 1.0), ("label_smoothing", 0.0, 1.0), ("weight_decay", 0.0, None)):
        value = o.get(key)
        if value is not None and not (low <= value and (high is None or value < high)):
            _fail(where, f"{key} must be " + (f"in [{low:g}, {high:g})" if high else f">= {low:g}") + f", got {value}")
    try:
        for m in o["methods"]:
            method_variant(m)
        for key in ("weight_bits", "act_bits"):
            parse_bits(str(o[key]))
        check_codebook_bits(o.get("codebook_bits", 8))
        arguments = Run(0, o, o["split"], o.get("results", "")).sweep_arguments()
        if arguments["point_widths"]:  # numbered on the folded network (`siq arch` prints them)
            check_point_widths(load_arch(arguments["arch_spec"]).folded(), arguments["point_widths"])
        check_siq_config(arguments["siq_cfg"])
        check_plus_config(arguments["plus_cfg"])
        check_channel_steps_for(arguments["methods"], QuantizeConfig(
            calibration=arguments["calibration"], channel_steps=arguments["channel_steps"],
            plus=arguments["plus_cfg"]))
    except SiqError as exc:
        _fail(where, str(exc))
    except TypeError as exc:  # a config dataclass refused a field
        _fail(where, str(exc))


def check_fit_options(where: str, o: dict) -> None:
    """A [[fit]]'s options, refused in one line before anything trains (budgets are read by codegen's fit)."""
    missing = [k for k in FIT_REQUIRED if k not in o]
    if missing:
        _fail(where, f"missing {', '.join(missing)}")
    if not o["results"].endswith(".jsonl") or "/" in o["results"] or o["results"].startswith("."):
        _fail(where, f"results must be a .jsonl file name (written in the results folder), got {o['results']!r}")
    if not o["budgets"] or not all(isinstance(b, (str, int)) and not isinstance(b, bool) for b in o["budgets"]):
        _fail(where, f"budgets must list flash sizes (\"6KB\" or bytes), got {o['budgets']!r}")
    if not set(o.get("solvers", ["exact"])) <= {"exact", "greedy"} or not o.get("solvers", ["exact"]):
        _fail(where, f"solvers must list exact and/or greedy, got {o.get('solvers')!r}")
    if "report" in o and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", o["report"]):
        _fail(where, f"report must be a folder name (made in docs), got {o['report']!r}")
    if not 0.0 < o["validation"] < 1.0:
        _fail(where, f"validation fraction must be in (0, 1), got {o['validation']}")
    try:
        method_variant(o["method"])
        check_codebook_bits(o.get("codebook_bits", 8))
    except SiqError as exc:
        _fail(where, str(exc))


def load_study(path: str | Path) -> Study:
    """Parse and validate a study file; SiqError (one line) on anything wrong."""
    path = Path(path)
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        _fail(where, f"cannot read the study ({exc.strerror})")
    except tomllib.TOMLDecodeError as exc:
        _fail(where, f"not TOML ({exc})")
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        _fail(where, f"unknown key(s) {', '.join(unknown)} (a study has {', '.join(TOP_LEVEL)})")
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        _fail(where, "say what the study asks: question = \"...\"")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        _fail(where, "[defaults] must be a table of run options")
    _check_options(f"{where}: [defaults]", defaults)
    raw_runs = data.get("run", [])
    raw_fits = data.get("fit", [])
    if not isinstance(raw_runs, list) or not isinstance(raw_fits, list) or not (raw_runs or raw_fits):
        _fail(where, "no [[run]] or [[fit]]: a study makes at least one sweep or fit")
    runs = []
    for number, raw in enumerate(raw_runs, 1):
        run_where = f"{where}: run {number}"
        _check_options(run_where, raw)
        options = {**defaults, **raw}
        _check_run(run_where, options)
        runs.append(Run(number, options, options["split"], options["results"]))
    fits = []
    for number, raw in enumerate(raw_fits, 1):
        fit_where = f"{where}: fit {number}"
        _check_options(fit_where, raw, FIT_OPTIONS)
        options = {**{k: v for k, v in defaults.items() if k in FIT_OPTIONS}, **raw}
        check_fit_options(fit_where, options)
        fits.append(Fit(number, options, options["results"]))
    splits = {}
    for run in runs:
        splits.setdefault(run.results, set()).add(run.split)
    reports = []
    for number, raw in enumerate(data.get("report", []), 1):
        rep_where = f"{where}: report {number}"
        if not isinstance(raw, dict) or set(raw) - {"results", "out", "title", "act_bits"} \
                or not {"results", "out", "title"} <= set(raw):
            _fail(rep_where, "a report has results (list of files), out (a docs folder), title and optional act_bits")
        if not isinstance(raw["results"], list) or not raw["results"] or \
                not all(isinstance(r, str) and r.endswith(".jsonl") for r in raw["results"]):
            _fail(rep_where, f"results must list .jsonl file names, got {raw['results']!r}")
        reports.append(Report(list(raw["results"]), str(raw["out"]), str(raw["title"]), int(raw.get("act_bits", 4))))
    return Study(path, question.strip(), str(data.get("finding", "")).strip(), runs, reports, fits)


def find_studies(folder: str | Path) -> list[Study]:
    """Every study file in a folder, by name."""
    return [load_study(p) for p in sorted(Path(folder).glob("*.toml"))]


def run_study(study: Study, results_dir: str | Path, *, cache_dir: str | Path = ".siq_cache", jobs: int = 1,
              progress: bool = True, threads: int | None = None, **where) -> dict[str, list[dict]]:
    """Run every sweep of a study (cells in the cache are only read) and write its results files: the records of
    the runs that share a file, concatenated in run order. Returns {results file name: records}.
    where: run_sweep's device, backend, address, max_retries and log (where training and the cells run)."""
    results_dir = Path(results_dir)
    written: dict[str, list[dict]] = {}
    scratch = results_dir / f".{study.name}.partial.jsonl"
    try:
        for run in study.runs:
            records = run_sweep(**run.sweep_arguments(), out=scratch, cache_dir=cache_dir, jobs=jobs,
                                progress=progress, threads=threads, **where)
            written.setdefault(run.results, []).extend(records)
    finally:
        scratch.unlink(missing_ok=True)
    for name, records in written.items():
        atomic_write_bytes(results_dir / name, "".join(json.dumps(r) + "\n" for r in records).encode())
    return written

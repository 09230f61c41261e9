"""`siq sweep`, `siq report` and `siq study`: thin command wrappers over siq.training.experiments (sweep, report)."""
from __future__ import annotations

from pathlib import Path

from siq.training.errors import SiqError
from siq.training.experiments.backends import check_backend
from siq.training.experiments.records import read_results
from siq.training.experiments.report import paper_reference_for, render_report
from siq.training.experiments.study import Run, check_sweep_options, find_studies, load_study, run_study
from siq.training.experiments.sweep import run_sweep

from siq.training.quantizers import QuantizeConfig, check_method_fits

from .fit.study import preflight_fits, run_fit_entry
from .fit.study_report import read_fit_records, render as render_fit_report
from .pipeline import default_schedule
from .preflight import SEED_MAX, preflight


def preflight_runs(runs, outputs=(), allow_large: bool = False) -> None:
    """Every run of a sweep or study checked (data, architecture, size, back end, methods) before any trains."""
    seen = set()
    for run in runs:
        o = run.options
        key = (o["dataset"], o.get("arch", "paper-mnist"), o.get("data_dir"), o.get("split_seed", 0),
               o.get("batch_size", 64))
        if key not in seen:
            checked = preflight(key[0], key[1], data_dir=key[2], split_seed=key[3], batch_size=key[4],
                                outputs=outputs, allow_large=allow_large)
            seen.add(key)
            for method in o["methods"]:
                check_method_fits(checked.arch, QuantizeConfig(method=method))


def sweep_run_options(args) -> dict:
    """`siq sweep`'s arguments as study run options: a sweep is a one-run study whose float recipe is the
    dataset's documented schedule (pipeline.SCHEDULES) with the given options on top."""
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SiqError(f"--seeds wants whole numbers separated by commas, got {args.seeds!r}") from None
    if not all(0 <= s <= SEED_MAX for s in seeds):
        raise SiqError(f"--seeds must each be from 0 to {SEED_MAX}, got {args.seeds!r}")
    schedule = default_schedule(args.dataset)
    recipe = {"epochs": schedule.epochs, "lr": schedule.lr, "batch_size": schedule.batch_size,
              "augment_shift": schedule.augment_shift, "flip": schedule.augment_flip,
              "dropout": schedule.dropout, "label_smoothing": schedule.label_smoothing,
              "weight_decay": schedule.weight_decay, "lr_schedule": schedule.lr_schedule}
    given = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
             "augment_shift": args.augment_shift, "flip": args.flip, "dropout": args.dropout,
             "label_smoothing": args.label_smoothing, "weight_decay": args.weight_decay}
    recipe.update({k: v for k, v in given.items() if v is not None})
    options = {"dataset": args.dataset, "arch": args.arch, "split_seed": args.split_seed,
               "methods": [m.strip() for m in args.methods.split(",") if m.strip()], "seeds": seeds,
               "weight_bits": args.weight_bits, "act_bits": args.act_bits, "fc_bits": args.fc_bits,
               "codebook_bits": args.codebook_bits, "calibration": args.calibration, "per_channel": args.per_channel,
               "siq_rounds": args.siq_rounds, "siq_lr": args.siq_lr, "siq_epochs": args.siq_epochs,
               "siq_augment_shift": args.siq_augment_shift, "siq_flip": args.siq_flip, "real_steps": args.real_steps,
               "split": "test" if args.validation is None else "validation", **recipe}
    optional = {"data_dir": args.data_dir, "input_bits": args.input_bits, "siq_alpha": args.siq_alpha,
                "siq_growth": args.siq_growth, "siq_dropout": args.siq_dropout, "distill": args.distill,
                "distill_temperature": args.distill_temperature, "progressive_acts": args.progressive_acts,
                "train_size": args.train_size, "test_size": args.test_size, "validation": args.validation,
                "equalize": args.equalize or None,
                "channel_steps": None if args.channel_steps == "none" else args.channel_steps,
                "point_bits": {str(p): w for p, w in args.point_bits.items()} or None}
    options.update({k: v for k, v in optional.items() if v is not None})
    return {k: v for k, v in options.items() if v is not None}


def where_options(args) -> dict:
    """run_sweep's device and backend options from the command line."""
    if args.address is not None and args.backend != "ray":
        raise SiqError("--address joins a Ray cluster: add --backend ray")
    check_backend(args.backend, args.max_retries, args.address)  # before any study file's data is read
    return {"device": args.device, "backend": args.backend, "address": args.address,
            "max_retries": args.max_retries}


def sweep_command(args) -> int:
    options = sweep_run_options(args)
    check_sweep_options("siq sweep", options)
    run = Run(1, options, options["split"], Path(args.out).name)
    preflight_runs([run], [args.out], args.allow_large)
    records = run_sweep(**run.sweep_arguments(), out=Path(args.out), jobs=args.jobs, cache_dir=args.cache_dir,
                        **where_options(args))
    print(f"{len(records)} cells -> {args.out}")
    return 0


def report_command(args) -> int:
    records = read_results(args.results)
    if not records:
        raise SiqError("no results in " + ", ".join(args.results))
    reference = paper_reference_for(records[0]["dataset"], records[0].get("arch"))
    summary = render_report(args.results, Path(args.out), title=args.title, paper_reference=reference,
                            act_bits=args.act_bits)
    print(f"report: {Path(args.out) / 'report.md'}")
    for name, group in summary["groups"].items():
        means = {m: (None if v is None else round(100 * v, 2)) for m, v in group["mean_error_1to4"].items()}
        print(f"{name}: 16-cell mean error % {means}; fewest weight bits reaching float error "
              f"{group['fewest_weight_bits']}")
    return 0


def study_command(args) -> int:
    """`siq study run|list|report`: studies (docs/studies/*.toml) run, listed, or their reports rendered."""
    if args.action == "list":
        folders = args.studies or ["docs/studies"]
        for folder in folders:
            for s in find_studies(folder):
                splits = "+".join(sorted({run.split for run in s.runs}))
                fits = f", {len(s.fits)} fits" if s.fits else ""
                print(f"{s.name}  [{len(s.runs)} runs{fits}, {splits or 'test'}]\n    {s.question}")
        return 0
    paths = args.studies or sorted(str(p) for p in Path("docs/studies").glob("*.toml"))
    if not paths:
        raise SiqError("no study files given and none in docs/studies")
    studies = [load_study(p) for p in paths]  # every file is checked before anything runs
    if args.action == "run":
        preflight_runs([run for s in studies for run in s.runs])
        preflight_fits([entry for s in studies for entry in s.fits])

    def results_dir(s) -> Path:
        return Path(args.results_dir) if args.results_dir else s.path.parent.parent / "results"
    if args.action == "run":
        for s in studies:
            written = run_study(s, results_dir(s), cache_dir=args.cache_dir, jobs=args.jobs, **where_options(args))
            for name, records in written.items():
                print(f"{s.name}: {len(records)} cells -> {results_dir(s) / name}")
            for entry in s.fits:
                records = run_fit_entry(entry, results_dir(s), args.cache_dir)
                print(f"{s.name}: fit {entry.number}: {len(records)} cells -> {results_dir(s) / entry.results}")
    # reports after every run: a study's report may compare its results with another study's
    for s in studies:
        for entry in s.fits:
            if "report" in entry.options:
                records = read_fit_records(results_dir(s) / entry.results)
                path = render_fit_report(records, s.path.parent.parent / entry.options["report"],
                                  entry.options.get("title", s.question))
                print(f"{s.name}: fit {entry.number}: report {path}")
        for report in s.reports:
            files = [results_dir(s) / name for name in report.results]
            records = read_results(files)
            summary = render_report(files, s.path.parent.parent / report.out, title=report.title,
                                    act_bits=report.act_bits,
                                    paper_reference=paper_reference_for(records[0]["dataset"], records[0].get("arch")))
            print(f"{s.name}: report {summary['report']}")
    return 0

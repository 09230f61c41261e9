"""`siq sweep`, `siq report` and `siq study`: thin command wrappers over siq.training.experiments (sweep, report)."""
from __future__ import annotations

from pathlib import Path

from siq.training.errors import SiqError
from siq.training.experiments.records import read_results
from siq.training.experiments.report import paper_reference_for, render_report
from siq.training.experiments.study import find_studies, load_study, run_study


def sweep_command(args) -> int:
    from siq.training.experiments.sweep import parse_bits, run_sweep

    from .cli import plus_config, siq_config, train_config
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SiqError(f"--seeds wants whole numbers separated by commas, got {args.seeds!r}") from None
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    records = run_sweep(args.dataset, args.arch, methods, parse_bits(args.weight_bits), parse_bits(args.act_bits),
                        out=Path(args.out), fc_bits=args.fc_bits, seed=seeds, train_cfg=train_config(args),
                        siq_cfg=siq_config(args), plus_cfg=plus_config(args),
                        codebook_bits=args.codebook_bits, jobs=args.jobs, data_dir=args.data_dir,
                        cache_dir=args.cache_dir, calibration=args.calibration, per_channel=args.per_channel,
                        input_bits=args.input_bits,
                        data_seed=args.split_seed, validation=args.validation,
                        subset=None if args.train_size is None and args.test_size is None
                        else (args.train_size, args.test_size))
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
                print(f"{s.name}  [{len(s.runs)} runs, {splits}]\n    {s.question}")
        return 0
    paths = args.studies or sorted(str(p) for p in Path("docs/studies").glob("*.toml"))
    if not paths:
        raise SiqError("no study files given and none in docs/studies")
    studies = [load_study(p) for p in paths]  # every file is checked before anything runs

    def results_dir(s) -> Path:
        return Path(args.results_dir) if args.results_dir else s.path.parent.parent / "results"
    if args.action == "run":
        for s in studies:
            written = run_study(s, results_dir(s), cache_dir=args.cache_dir, jobs=args.jobs)
            for name, records in written.items():
                print(f"{s.name}: {len(records)} cells -> {results_dir(s) / name}")
    # reports after every run: a study's report may compare its results with another study's
    for s in studies:
        for report in s.reports:
            files = [results_dir(s) / name for name in report.results]
            records = read_results(files)
            summary = render_report(files, s.path.parent.parent / report.out, title=report.title,
                                    act_bits=report.act_bits,
                                    paper_reference=paper_reference_for(records[0]["dataset"], records[0].get("arch")))
            print(f"{s.name}: report {summary['report']}")
    return 0

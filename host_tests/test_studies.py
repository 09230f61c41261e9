"""Studies as data: every study file parses, every committed result loads, and re-running a study regenerates its
committed results (the same cells, with the same cache keys, in the same order); `siq study run` equals `siq sweep`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from siq.codegen.cli import main
from siq.codegen.fit.study_report import read_fit_records
from siq.training.arch import load_arch
from siq.training.errors import SiqError
from siq.training.graph import has_average_pool
from siq.training.experiments import cache, grid, study
from siq.training.experiments.records import read_results
from siq.training.experiments.sweep import quantize_template, run_sweep
from siq.training.quantizers import SIQConfig
from siq.training.train import TrainConfig

DOCS = Path(__file__).resolve().parent.parent / "docs"
STUDIES = sorted((DOCS / "studies").glob("*.toml"))


def test_every_committed_results_file_loads_and_belongs_to_a_study():
    files = sorted((DOCS / "results").glob("*.jsonl"))
    assert len(files) >= 44
    studies = study.find_studies(DOCS / "studies")
    owned = {name for s in studies for name in s.results_files()}
    fits = {entry.results: entry for s in studies for entry in s.fits}
    for path in files:
        if path.name in fits:  # a [[fit]]'s records: one per budget, seed and kind, each within its budget
            records = read_fit_records(path)
            o = fits[path.name].options
            assert len(records) == len(o["budgets"]) * len(o["seeds"]) * (len(o["solvers"]) + 1), path
            assert all(r["flash"] <= r["budget"] for r in records), path
            continue
        assert read_results(path), path
        assert path.name in owned, f"{path.name} is written by no study"


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_regenerates_its_committed_results(path):
    """Each run's cells, keyed from the float model a record names, are exactly the committed records, in order:
    the study asks for the same cells (method, widths, every quantizer and retraining setting) that the results
    hold. Float models: one key per (run's data, architecture, training recipe, seed), and different recipes get
    different keys."""
    s = study.load_study(path)
    for report in s.reports:
        for name in report.results:
            assert (DOCS / "results" / name).is_file(), f"{s.name}: report reads missing {name}"
    position = {name: 0 for name in s.results_files()}
    committed = {name: [json.loads(line) for line in (DOCS / "results" / name).read_text().splitlines() if line]
                 for name in s.results_files()}
    models: dict = {}
    for run in s.runs:
        args = run.sweep_arguments()
        qcfg = quantize_template(args["codebook_bits"], 2000, args["siq_cfg"], args["plus_cfg"], args["calibration"],
                                 args["per_channel"], args["input_bits"], args["equalize"], args["point_widths"],
                                 args["channel_steps"])
        records = committed[run.results]
        for cell in grid.cells_for(args["methods"], args["weight_bits"], args["act_bits"], args["seed"]):
            n = position[run.results]
            assert n < len(records), f"{s.name} run {run.number}: {run.results} ends before {cell}"
            record = records[n]
            where = f"{s.name} run {run.number}, {run.results} line {n + 1}"
            assert (record["method"], record["conv_bits"], record["act_bits"], record["seed"]) == \
                (cell.method, cell.weight_bits, cell.act_bits, cell.seed), where
            assert record["cell"] == cache.cell_key(record["model"], cell, args["fc_bits"], qcfg,
                                                    average_pools=has_average_pool(load_arch(args["arch_spec"]))), where
            recipe = (record["dataset"], record["arch"], json.dumps(vars(args["train_cfg"]), sort_keys=True),
                      cell.seed)
            assert models.setdefault(recipe, record["model"]) == record["model"], where
            position[run.results] = n + 1
    for name, n in position.items():
        assert n == len(committed[name]), f"{s.name}: {name} holds {len(committed[name]) - n} records no run makes"
    assert len(set(models.values())) == len(models), f"{s.name}: two recipes share a float model key"


@pytest.mark.parametrize("text, message", [
    ("", "say what the study asks"),
    ('question = "q"', "no \\[\\[run\\]\\] or \\[\\[fit\\]\\]"),
    ('question = "q"\n[[fit]]\ndataset = "digits"\nmethod = "kmeans"\nvalidation = 0.1\nresults = "f.jsonl"',
     "missing budgets"),
    ('question = "q"\n[[fit]]\ndataset = "digits"\nmethod = "kmeans"\nbudgets = ["6KB"]\nvalidation = 1.5\n'
     'results = "f.jsonl"', "validation fraction must be in"),
    ('question = "q"\n[[fit]]\ndataset = "digits"\nmethod = "kmeans"\nbudgets = ["6KB"]\nvalidation = 0.1\n'
     'results = "f.jsonl"\nsolvers = ["ilp"]', "solvers must list exact and/or greedy"),
    ('question = "q"\n[[fit]]\ndataset = "digits"\nmethod = "kmeans"\nbudgets = ["6KB"]\nvalidation = 0.1\n'
     'results = "f.jsonl"\nweight_bits = "2"', "unknown option 'weight_bits'"),
    ('question = "q"\nfoo = 1\n[[run]]', "unknown key"),
    ('question = "q"\n[[run]]\ndataset = "digits"', "missing methods"),
    ('question = "q"\n[[run]]\ndataset = "digits"\nmethods = ["siq"]\nweight_bits = "2"\nact_bits = "2"\n'
     'split = "validation"\nresults = "x.jsonl"', "needs validation"),
    ('question = "q"\n[[run]]\ndataset = "digits"\nmethods = ["nope"]\nweight_bits = "2"\nact_bits = "2"\n'
     'split = "test"\nresults = "x.jsonl"', "unknown quantization method"),
    ('question = "q"\n[[run]]\ndataset = "digits"\nmethods = ["siq"]\nweight_bits = "9"\nact_bits = "2"\n'
     'split = "test"\nresults = "x.jsonl"', "outside 1..8"),
    ('question = "q"\n[[run]]\ndataset = "digits"\nmethods = ["siq"]\nweight_bits = "2"\nact_bits = "2"\n'
     'split = "test"\nresults = "x.jsonl"\nepochs = "ten"', "option 'epochs' must be int"),
    ('question = "q"\n[[run]]\ndataset = "digits"\nmethods = ["siq"]\nweight_bits = "2"\nact_bits = "2"\n'
     'split = "test"\nresults = "../x.jsonl"', "results must be a .jsonl file name"),
    ('question = "q"\n[[run]]\ndataset = "digits"\nmethods = ["siq"]\nweight_bits = "2"\nact_bits = "2"\n'
     'split = "test"\nresults = "x.jsonl"\nsiq_rounds = 0', "rounds"),
    ('question = "q"\n[[run]]\ndataset = "digits"\nmethods = ["siq"]\nweight_bits = "2"\nact_bits = "2"\n'
     'split = "test"\nresults = "x.jsonl"\npoint_bits = { 99 = 8 }', "99 of architecture 'paper-mnist' is not a"),
    ('question = "q"\n[[run]]\ndataset = "digits"\nmethods = ["siq"]\nweight_bits = "2"\nact_bits = "2"\n'
     'split = "test"\nresults = "x.jsonl"\npoint_bits = { first = 8 }', "point_bits must map feature-map points"),
    ('question = "q"\n[[run]]\ndataset = "digits"\nmethods = ["siq"]\nweight_bits = "2"\nact_bits = "2"\n'
     'split = "test"\nresults = "x.jsonl"\npoint_bits = { 1 = 9 }', "activation bits of point 1"),
    ('question = "q"\n[[run]]\ndataset = "digits"\nmethods = ["siq"]\nweight_bits = "2"\nact_bits = "2"\n'
     'split = "test"\nresults = "x.jsonl"\nchannel_steps = "all"', "channel steps must be one of none, depthwise"),
    ('question = "q"\n[[run]]\ndataset = "digits"\nmethods = ["siq", "siq+"]\nweight_bits = "2"\nact_bits = "2"\n'
     'split = "test"\nresults = "x.jsonl"\nchannel_steps = "depthwise"\nreal_steps = true', "real steps fold"),
    ("question = [", "not TOML"),
])
def test_bad_study_is_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SiqError, match=message) as info:
        study.load_study(path)
    assert "\n" not in str(info.value)


TINY_ARCH = {"name": "tiny", "input": [1, 8, 8], "layers": [
    {"type": "conv", "out": 4, "k": 3}, {"type": "relu"}, {"type": "maxpool", "k": 2},
    {"type": "flatten"}, {"type": "dense", "out": 10}]}


def test_study_run_equals_siq_sweep_with_the_same_arguments(tmp_path, capsys):
    """Two runs (a validation and a test run) of a tiny study on digits; its results equal `siq sweep`'s with the
    same arguments, cell for cell, and a second run only reads the cache."""
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY_ARCH))
    (tmp_path / "studies").mkdir()
    (tmp_path / "results").mkdir()
    path = tmp_path / "studies" / "tiny-digits.toml"
    path.write_text(f'''question = "Does a tiny study run like a sweep?"
[defaults]
dataset = "digits"
arch = "{arch}"
epochs = 1
lr = 0.03
batch_size = 32
methods = ["uniform"]
weight_bits = "2"
act_bits = "2,float"
fc_bits = 4
[[run]]
split = "validation"
validation = 0.2
results = "tiny-digits.val.jsonl"
[[run]]
split = "test"
results = "tiny-digits.test.jsonl"
methods = ["kmeans"]
''')
    cache_dir = tmp_path / "cache"
    assert main(["study", "run", str(path), "--cache-dir", str(cache_dir), "--results-dir",
                 str(tmp_path / "results")]) == 0
    sweep_args = ["--dataset", "digits", "--arch", str(arch), "--epochs", "1", "--lr", "0.03", "--batch-size", "32",
                  "--augment-shift", "0", "--weight-bits", "2", "--act-bits", "2,float", "--fc-bits", "4",
                  "--cache-dir", str(tmp_path / "sweep-cache")]
    assert main(["sweep", *sweep_args, "--methods", "uniform", "--validation", "0.2",
                 "--out", str(tmp_path / "val.jsonl")]) == 0
    assert main(["sweep", *sweep_args, "--methods", "kmeans", "--out", str(tmp_path / "test.jsonl")]) == 0

    def cells(file):
        return [{k: v for k, v in r.items() if k not in ("seconds", "cached")} for r in read_results(file)]
    assert cells(tmp_path / "results" / "tiny-digits.val.jsonl") == cells(tmp_path / "val.jsonl")
    assert cells(tmp_path / "results" / "tiny-digits.test.jsonl") == cells(tmp_path / "test.jsonl")
    assert len(cells(tmp_path / "val.jsonl")) == 2
    again = study.run_study(study.load_study(path), tmp_path / "results", cache_dir=cache_dir, progress=False)
    assert all(r["cached"] for records in again.values() for r in records)
    capsys.readouterr()
    assert main(["study", "list", str(tmp_path / "studies")]) == 0
    assert "tiny-digits" in capsys.readouterr().out


def test_cache_schema_sees_training_recipes():
    arch = load_arch("paper-mnist")
    assert cache.model_key("d", arch, TrainConfig(epochs=30)) != cache.model_key("d", arch, TrainConfig(epochs=31))
    siq = quantize_template(8, 2000, SIQConfig(rounds=3), study.SIQPlusConfig())
    assert cache.cell_key("m", grid.Cell("siq", 2, 2, 0), 8, siq) != cache.cell_key(
        "m", grid.Cell("siq", 2, 2, 0), 8, quantize_template(8, 2000, SIQConfig(), study.SIQPlusConfig()))
    with pytest.raises(SiqError):
        run_sweep("digits", "paper-mnist", [], "2", "2", out="unused.jsonl")


def test_readme_tables_are_what_the_committed_results_say():
    from siq.training.experiments import readme
    text = (DOCS.parent / "README.md").read_text()
    assert readme.generate(text, DOCS.parent) == text, \
        "README.md disagrees with the committed results: run python -m siq.training.experiments.readme"
    # and the check can fail: a typed figure inside the markers is not what the results say
    row = "| mnist5k · SIQ (the paper's method) | "
    tampered = text.replace(row + "[97.5 %]", row + "[99.9 %]")
    assert tampered != text and readme.generate(tampered, DOCS.parent) != tampered
    docs_text = (DOCS / "README.md").read_text()
    assert readme.generate_docs_readme(docs_text, DOCS.parent) == docs_text, \
        "docs/README.md's index of studies is stale: run python -m siq.training.experiments.readme"
    assert readme.main(["--check"]) == 0


def test_the_study_format_example_is_a_valid_study(tmp_path):
    """The example in study.py's docstring is what a study file looks like: it must load."""
    doc = study.__doc__
    example = doc[doc.index("    question ="):doc.index("\nRun options")]
    path = tmp_path / "example.toml"
    path.write_text("\n".join(line[4:] for line in example.splitlines()))
    s = study.load_study(path)
    assert s.runs[0].split == "validation" and s.reports[0].out == "fashion-float-recipe"


@pytest.mark.parametrize("path", [p for p in STUDIES if study.load_study(p).reports], ids=lambda p: p.stem)
def test_committed_reports_are_what_the_committed_results_render(path, tmp_path):
    """The reports in docs/ are generated (siq study report), not edited: rendering them again from the committed
    results gives the same Markdown."""
    from siq.training.experiments.report import paper_reference_for, render_report
    for report in study.load_study(path).reports:
        files = [Path("docs/results") / name for name in report.results]
        records = read_results([DOCS.parent / f for f in files])
        reference = paper_reference_for(records[0]["dataset"], records[0].get("arch"))
        render_report([DOCS.parent / f for f in files], tmp_path / report.out, title=report.title,
                      act_bits=report.act_bits, paper_reference=reference)
        fresh = (tmp_path / report.out / "report.md").read_text().replace(str(DOCS.parent) + "/", "")
        assert fresh == (DOCS / report.out / "report.md").read_text(), report.out

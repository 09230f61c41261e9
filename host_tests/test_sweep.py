"""Bit-width sweeps and their report, on scikit-learn's 8x8 digits with a one-conv network (seconds, not minutes)."""
from __future__ import annotations

import json
import shutil

import joblib
import numpy as np
import pytest

from siq.training import quantizers
from siq.training.experiments import report, sweep
from siq.training.errors import SiqError
from siq.training.integer import build_integer_model, integer_scores
from siq.training.quant import evaluate_exact
from siq.training.quantizers import QuantizeConfig, SIQConfig, SIQPlusConfig
from siq.training.experiments.report import PAPER_MNIST, PAPER_OFFICE, render_report
from siq.training.train import TrainConfig, accuracy, load_checkpoint, predict_scores

TINY_ARCH = {"name": "tiny", "input": [1, 8, 8], "layers": [
    {"type": "conv", "out": 4, "k": 3}, {"type": "relu"}, {"type": "maxpool", "k": 2},
    {"type": "flatten"}, {"type": "dense", "out": 10}]}
# Suite defaults; each sweep below overrides only its grid.
SCHEDULE = dict(train_cfg=TrainConfig(epochs=2, batch_size=32, lr=3e-2),
                siq_cfg=SIQConfig(rounds=1, epochs_per_round=1, lr=3e-3),
                fc_bits=4, calibration_images=200, progress=False,
                threads=1)  # one torch thread: ten times faster for this tiny net when other work shares the cores
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch") / "tiny.json"
    path.write_text(json.dumps(TINY_ARCH))
    return str(path)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, arch_file):
    """Two sweeps sharing one cache: uniform on the full 1-4 x 1-4 grid with float row and column; k-means and SIQ
    on a few cells with two seeds (so their Fig. 5 bars are incomplete and their cells have seed ranges)."""
    root = tmp_path_factory.mktemp("sweep")
    full = sweep.run_sweep("digits", arch_file, ["uniform"], "1-4,float", "1-4,float",
                           out=root / "full.jsonl", seed=0, **SCHEDULE)
    few = sweep.run_sweep("digits", arch_file, ["kmeans", "siq"], [2], [4, None],
                          out=root / "few.jsonl", seed=[0, 1], **SCHEDULE)
    return root, full, few


def seeded_cache(sweeps, tmp_path):
    """A fresh cache folder holding the fixture's float models, so that a test quantizes but does not train."""
    root, _, _ = sweeps
    cache = tmp_path / "cache"
    shutil.copytree(root / ".siq_cache" / "models", cache / "models")
    return cache


# ---------------------------------------------------------------- parse_bits

@pytest.mark.parametrize("spec, expected", [
    ("1-4,8,float", [1, 2, 3, 4, 8, None]),
    ("float", [None]),
    ("8", [8]),
    (" 6 , 2-3, 3 ", [2, 3, 6]),
    ("FLOAT,1", [1, None]),
    ("1-8", [1, 2, 3, 4, 5, 6, 7, 8]),
])
def test_parse_bits(spec, expected):
    assert sweep.parse_bits(spec) == expected


@pytest.mark.parametrize("spec", ["0", "9", "4.5", "garbage", "", " ", "4-1", "1-9", "0-3", "1,,2", "float,",
                                  "-3", "1-", "64"])
def test_parse_bits_rejects(spec):
    with pytest.raises(SiqError):
        sweep.parse_bits(spec)


@pytest.mark.parametrize("override", [
    {"methods": ["nonsense"]},
    {"methods": []},
    {"methods": ["kmeans-distill"]},   # only siq+ has ingredients to turn off
    {"methods": ["siq+-nonsense"]},
    {"weight_bits": [9]},
    {"weight_bits": [0]},
    {"act_bits": ["4"]},
    {"act_bits": []},
    {"fc_bits": None},
    {"seed": "0"},
    {"jobs": 0},
    {"threads": 0},
])
def test_run_sweep_rejects_bad_configuration(tmp_path, arch_file, override):
    args = {"methods": ["uniform"], "weight_bits": [2], "act_bits": [4], **override}
    with pytest.raises(SiqError):
        sweep.run_sweep("digits", arch_file, args.pop("methods"), args.pop("weight_bits"), args.pop("act_bits"),
                        out=tmp_path / "r.jsonl", **{**SCHEDULE, **args})
    assert not (tmp_path / "r.jsonl").exists()


# ---------------------------------------------------------------- records

def test_records_cover_the_grid_and_follow_the_schema(sweeps):
    root, full, few = sweeps
    assert len(full) == 5 + 4 * 5  # float-weight cells (one per act width) + 4 weight widths x 5 act widths
    assert len(few) == 2 * 2 * 2  # seeds x methods x act widths
    on_disk = [json.loads(line) for line in (root / "full.jsonl").read_text().splitlines()]
    assert on_disk == full
    for r in full + few:
        assert set(sweep.RECORD_FIELDS) <= set(r), sorted(set(sweep.RECORD_FIELDS) - set(r))
        assert (r["dataset"], r["arch"], r["n_test"], r["codebook_bits"]) == ("digits", "tiny", 360, 8)
        assert r["error"] == pytest.approx(1 - r["accuracy"])
        both_integer = r["conv_bits"] is not None and r["act_bits"] is not None
        assert r["evaluator"] == ("integer" if both_integer else "torch")
        assert r["cached"] is False
        if r["conv_bits"] is None:
            assert r["method"] == sweep.FLOAT_METHOD
            assert r["weight_bits"] == {"0": None, "4": None}
            assert r["weights_bytes"] == 4 * (4 * 1 * 3 * 3 + 10 * 36)
        else:
            assert r["weight_bits"] == {"0": r["conv_bits"], "4": 4}  # conv at the cell's width, dense at fc_bits
            # packed indices and at most 2^b codebook bytes per layer
            assert r["weights_bytes"] <= (36 * r["conv_bits"] + 7) // 8 + 2 ** r["conv_bits"] + 360 // 2 + 16
    siq_cells = [r for r in few if r["method"] == "siq"]
    assert all(len(r["history"]) == 1 for r in siq_cells)  # one SIQ round
    assert {r["quantize_act_bits"] for r in siq_cells if r["act_bits"] is None} == {8}


def test_float_network_is_trained_and_the_float_cell_agrees(sweeps):
    _, full, few = sweeps
    for r in full + few:
        assert r["float_accuracy"] > 0.8  # the tiny schedule still learns digits
    for r in (r for r in full + few if r["conv_bits"] is None and r["act_bits"] is None):
        # the float cell is evaluated by the sweep's cell code, float_accuracy when the model was trained
        assert r["accuracy"] == r["float_accuracy"]
    seeds = {r["seed"]: r["model"] for r in few}
    assert len(set(seeds.values())) == 2  # one float model per seed
    assert {r["model"] for r in full} == {seeds[0]}  # the second sweep reused the cached seed-0 model


def test_integer_cell_equals_an_independent_exact_evaluation(sweeps):
    """Re-quantize one cell from the cached checkpoint and score it with the float64 exact model."""
    root, full, few = sweeps
    from siq.training.data import load_dataset
    ds = load_dataset("digits", seed=0)
    chosen = [r for r in full + few if (r["method"], r["conv_bits"], r["act_bits"], r["seed"]) in
              (("uniform", 3, 2, 0), ("kmeans", 2, 4, 1))]
    assert len(chosen) == 2
    for r in chosen:
        net, _ = load_checkpoint(root / ".siq_cache" / "models" / f"{r['model']}.pt")
        cfg = QuantizeConfig(method=r["method"], conv_bits=r["conv_bits"], fc_bits=4, act_bits=r["act_bits"],
                             seed=r["seed"], calibration_images=200)
        with sweep.torch_threads(1):
            qm, retrained = quantizers.quantize_model(net, ds.train_x, ds.train_y, cfg, ds.class_names)
            exact = evaluate_exact(qm, retrained, ds.test_x)
        np.testing.assert_array_equal(exact, integer_scores(build_integer_model(qm), ds.test_x))
        assert accuracy(exact, ds.test_y) == r["accuracy"], r["method"]
        assert qm.weights_bytes() == r["weights_bytes"]


def test_a_float_weight_cell_quantizes_a_batch_norm_network_at_its_folded_points(tmp_path):
    """Float weights with quantized feature maps on a network with batch norm: the cell scores the folded network
    at quantization's points (relu outputs), the very number TrainingHooks give it. Unfolded, the conv before its
    batch norm would count as a signed point and be quantized ahead of the normalization."""
    from siq.training.data import load_dataset
    from siq.training.nets import fold_batchnorm
    from siq.training.quant import TrainingHooks, calibrate_shifts
    arch = {**TINY_ARCH, "name": "tiny-bn", "layers": [TINY_ARCH["layers"][0], {"type": "batchnorm"},
                                                       *TINY_ARCH["layers"][1:]]}
    path = tmp_path / "tiny-bn.json"
    path.write_text(json.dumps(arch))
    [cell] = sweep.run_sweep("digits", str(path), ["uniform"], [None], [2], out=tmp_path / "bn.jsonl",
                             cache_dir=tmp_path / "cache", **SCHEDULE)
    ds = load_dataset("digits", seed=0)
    net = fold_batchnorm(load_checkpoint(tmp_path / "cache" / "models" / f"{cell['model']}.pt")[0])
    calibration = ds.train_x[np.random.default_rng(0).permutation(len(ds.train_x))[:200]]
    hooks = TrainingHooks(2, calibrate_shifts(net, calibration, 2))
    assert accuracy(predict_scores(net, ds.test_x, hooks), ds.test_y) == cell["accuracy"]


def test_point_widths_reach_every_cell_that_quantizes_feature_maps(sweeps, tmp_path, arch_file):
    """point_widths (study option point_bits): a quantized cell equals quantize_model with the same widths, bit for
    bit; a float-weight cell with quantized feature maps calibrates and scores them at those widths; both say so
    in their records and get keys of their own. A cell with float feature maps has no point to widen: its key,
    record and score stay those of the plain sweep. A point that is not a quantization point is refused before
    anything trains."""
    from siq.training.quant import TrainingHooks, calibrate_shifts
    from siq.training.quant.fixedpoint import quantization_points
    from siq.training.data import load_dataset
    cache = seeded_cache(sweeps, tmp_path)
    grid = dict(methods=["uniform"], weight_bits=[2, None], act_bits=[2, None])
    plain = sweep.run_sweep("digits", arch_file, **grid, out=tmp_path / "plain.jsonl", cache_dir=cache, **SCHEDULE)
    point = quantization_points(sweep.load_arch(arch_file))[0]
    wide = sweep.run_sweep("digits", arch_file, **grid, out=tmp_path / "wide.jsonl", cache_dir=cache,
                           point_widths={point: 8}, **SCHEDULE)
    for p, w in zip(plain, wide):
        quantized_maps = w["act_bits"] is not None
        assert (w["cell"] != p["cell"]) == quantized_maps, w
        assert w.get("point_bits") == ({str(point): 8} if quantized_maps else None), w
        if not quantized_maps:
            assert w["accuracy"] == p["accuracy"]
    # 8 bits instead of 2 at the point shows in the scores (the checks below could not tell otherwise)
    assert all(w["accuracy"] != p["accuracy"] for w, p in zip(wide, plain) if w["act_bits"] is not None)
    ds = load_dataset("digits", seed=0)
    net, _ = load_checkpoint(cache / "models" / f"{wide[0]['model']}.pt")
    cfg = QuantizeConfig(method="uniform", conv_bits=2, fc_bits=4, act_bits=2, seed=0, calibration_images=200,
                         point_widths={point: 8})
    with sweep.torch_threads(1):
        qm, _ = quantizers.quantize_model(net, ds.train_x, ds.train_y, cfg, ds.class_names)
    assert qm.bits_at(point) == 8
    quantized = next(w for w in wide if w["conv_bits"] == 2 and w["act_bits"] == 2)
    assert accuracy(integer_scores(build_integer_model(qm), ds.test_x), ds.test_y) == quantized["accuracy"]
    calibration = ds.train_x[np.random.default_rng(0).permutation(len(ds.train_x))[:200]]
    shifts = calibrate_shifts(net, calibration, 2, "float", None, {point: 8})
    hooks = TrainingHooks(2, shifts, point_widths={point: 8})
    float_weights = next(w for w in wide if w["conv_bits"] is None and w["act_bits"] == 2)
    assert accuracy(predict_scores(net, ds.test_x, hooks), ds.test_y) == float_weights["accuracy"]
    with pytest.raises(SiqError, match="not a quantization point"):
        sweep.run_sweep("digits", arch_file, **grid, out=tmp_path / "bad.jsonl", cache_dir=cache,
                        point_widths={99: 8}, **SCHEDULE)


def test_grouped_test_set_is_scored_per_source_image(tmp_path, arch_file):
    """Each digits test image as two crops of one source image (itself and a one-pixel shift): accuracy is over the
    360 source images, each predicted from the summed scores of its crops."""
    from siq.training.data import Dataset, load_dataset
    ds = load_dataset("digits", seed=0)
    test_x = np.stack([ds.test_x, np.roll(ds.test_x, 1, axis=3)], axis=1).reshape(-1, *ds.test_x.shape[1:])
    test_y, groups = np.repeat(ds.test_y, 2), np.repeat(np.arange(len(ds.test_y)), 2)
    crops = Dataset(name="digits-crops", train_x=ds.train_x, train_y=ds.train_y, test_x=test_x, test_y=test_y,
                    class_names=ds.class_names, test_groups=groups)
    records = sweep.run_sweep(crops, arch_file, ["uniform"], [2, None], [4, None], out=tmp_path / "r.jsonl",
                              cache_dir=tmp_path / "cache", **SCHEDULE)
    assert [(r["dataset"], r["n_test"]) for r in records] == [("digits-crops", 360)] * 4
    net, _ = load_checkpoint(next((tmp_path / "cache" / "models").glob("*.pt")))
    scores = predict_scores(net, test_x)
    float_cell = next(r for r in records if r["conv_bits"] is None and r["act_bits"] is None)
    assert float_cell["accuracy"] == float_cell["float_accuracy"] == accuracy(scores, test_y, groups)
    assert accuracy(scores, test_y, groups) != accuracy(scores, test_y)  # the grouping changes the answer


# ---------------------------------------------------------------- caching and resuming

class Interrupt(Exception):
    pass


def test_interrupted_sweep_resumes_and_skips_finished_cells(sweeps, tmp_path, arch_file, monkeypatch):
    cache = seeded_cache(sweeps, tmp_path)
    real_quantize = quantizers.quantize_model
    calls = []
    plan = {"fail_at": 5}  # four cells finish, the fifth is interrupted

    def counting(*args, **kwargs):
        calls.append(args[3].method)
        if len(calls) == plan["fail_at"]:
            raise Interrupt("simulated interruption")
        return real_quantize(*args, **kwargs)

    monkeypatch.setattr(quantizers, "quantize_model", counting)
    trainings = []
    real_train = sweep.train_float
    monkeypatch.setattr(sweep, "train_float", lambda *a, **k: trainings.append(1) or real_train(*a, **k))
    out = tmp_path / "out" / "r.jsonl"
    grid = dict(methods=["uniform", "kmeans"], weight_bits=[2, 3], act_bits=[4, None])

    def run():
        return sweep.run_sweep("digits", arch_file, grid["methods"], grid["weight_bits"], grid["act_bits"],
                               out=out, jobs=1, cache_dir=cache, **SCHEDULE)

    with pytest.raises(Interrupt):
        run()
    assert not out.exists()  # results are written whole or not at all
    assert len(list((cache / "cells").glob("*.json"))) == 4

    plan["fail_at"], calls[:] = None, []
    resumed = run()
    assert len(calls) == 4  # only the unfinished cells are quantized
    assert [r["cached"] for r in resumed] == [True] * 4 + [False] * 4
    assert trainings == []  # the float model always came from the cache

    calls[:] = []
    again = run()
    assert calls == [] and all(r["cached"] for r in again)
    strip = [{k: v for k, v in r.items() if k != "cached"} for r in resumed]
    assert strip == [{k: v for k, v in r.items() if k != "cached"} for r in again]
    assert [json.loads(line) for line in out.read_text().splitlines()] == again


def test_unreadable_cell_cache_is_recomputed(sweeps, tmp_path, arch_file):
    cache = seeded_cache(sweeps, tmp_path)
    first = sweep.run_sweep("digits", arch_file, ["uniform"], [2], [4], out=tmp_path / "r.jsonl", cache_dir=cache,
                            **SCHEDULE)
    (cache / "cells" / f"{first[0]['cell']}.json").write_text("{truncated")
    second = sweep.run_sweep("digits", arch_file, ["uniform"], [2], [4], out=tmp_path / "r.jsonl", cache_dir=cache,
                             **SCHEDULE)
    assert second[0]["cached"] is False and second[0]["accuracy"] == first[0]["accuracy"]


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])  # streams results / returns them at the end
def test_parallel_cells_equal_serial_cells(sweeps, tmp_path, arch_file, backend):
    """jobs=2 (worker processes, one torch thread each) gives the records the serial fixture sweep gave."""
    _, full, _ = sweeps
    with joblib.parallel_config(backend=backend):
        parallel = sweep.run_sweep("digits", arch_file, ["uniform"], [2, 3], [3, None], out=tmp_path / "r.jsonl",
                                   jobs=2, cache_dir=seeded_cache(sweeps, tmp_path), **SCHEDULE)
    serial = {r["cell"]: r for r in full}
    assert len(parallel) == 4
    for r in parallel:
        assert r["cached"] is False
        assert {k: v for k, v in r.items() if k not in ("seconds", "cached")} == \
               {k: v for k, v in serial[r["cell"]].items() if k not in ("seconds", "cached")}


# ---------------------------------------------------------------- the report

def test_report_renders_grid_figures_and_headlines(sweeps, tmp_path):
    root, full, few = sweeps
    result = render_report([root / "full.jsonl", root / "few.jsonl"], tmp_path / "report", title="digits sweep")
    for png in result["figures"]:
        assert png.read_bytes().startswith(PNG_SIGNATURE) and png.stat().st_size > 2000, png
    names = sorted(p.name for p in result["figures"])
    assert names == sorted(["digits-tiny-fig4.png", "digits-tiny-fig5.png", "digits-tiny-pareto.png",
                            "digits-tiny-heatmap-uniform.png", "digits-tiny-heatmap-kmeans.png",
                            "digits-tiny-heatmap-siq.png"])
    md = result["report"].read_text()
    assert md.startswith("# digits sweep")
    assert "| method | act bits | w=1 | w=2 | w=3 | w=4 | w=float |" in md
    grid = md[md.index("### Error rate grid"):md.index("### Error vs weight bits")]
    for label in ("uniform", "k-means (adaptive)", "SIQ (proposed)"):
        assert grid.count(f"\n| {label} | ") == 5, label
    for png in names:
        assert f"]({png})" in md
    assert "SIQ (proposed): not shown, 15 of the 16 cells are missing" in md
    assert "k-means (adaptive): not shown, 15 of the 16 cells are missing" in md

    head = result["groups"]["digits / tiny"]
    float_error = 1 - full[0]["float_accuracy"]
    assert head["float_error"] == pytest.approx(float_error)
    low = [r["error"] for r in full if r["conv_bits"] in (1, 2, 3, 4) and r["act_bits"] in (1, 2, 3, 4)]
    assert len(low) == 16 and head["mean_error_1to4"]["uniform"] == pytest.approx(np.mean(low))  # Fig. 5
    reached = [r["conv_bits"] for r in full if r["conv_bits"] and r["act_bits"] == 4 and r["error"] <= float_error]
    assert head["fewest_weight_bits"]["0"]["uniform"] == (min(reached) if reached else None)
    for method in ("kmeans", "siq"):
        assert head["mean_error_1to4"][method] is None and len(head["missing_1to4"][method]) == 15
    assert head["seeds"] == [0, 1]
    siq_row = next(line for line in md.splitlines() if line.startswith("| SIQ (proposed) | 4 |"))
    assert "–" in siq_row  # two seeds: mean (min–max)
    front = head["pareto"]
    assert [p["weights_bytes"] for p in front] == sorted(p["weights_bytes"] for p in front)
    assert all(a["accuracy"] < b["accuracy"] for a, b in zip(front, front[1:]))


@pytest.mark.parametrize("reference, expected", [
    (PAPER_MNIST, ["paper (at 4-bit inputs)", "Paper float error: 1.15%"]),
    (PAPER_OFFICE, ["Paper, paper §4.2", "| SIQ (proposed) | 4 | 63.74 | 32.88 | 14.42 | 11.35 | 10.25 | 9.63 |",
                    "paper Table 1 (%)"]),
])
def test_report_shows_paper_reference(sweeps, tmp_path, reference, expected):
    root, _, _ = sweeps
    md = render_report(root / "full.jsonl", tmp_path, paper_reference=reference)["report"].read_text()
    for text in expected:
        assert text in md


def test_report_rejects_missing_or_foreign_files(tmp_path):
    with pytest.raises(SiqError):
        render_report(tmp_path / "none.jsonl", tmp_path / "r")
    (tmp_path / "bad.jsonl").write_text('{"hello": 1}\n')
    with pytest.raises(SiqError):
        render_report(tmp_path / "bad.jsonl", tmp_path / "r")


def test_siq_plus_variants_are_cells_of_their_own(sweeps, tmp_path, arch_file):
    """An ablation variant ("siq+-steps": siq+ without learned activation steps) is its own method in the records,
    keyed apart from siq+, and the report's figures take it like any other method."""
    cache = seeded_cache(sweeps, tmp_path)
    records = sweep.run_sweep("digits", arch_file, ["siq+", "siq+-steps"], [2], [2], out=tmp_path / "v.jsonl",
                              cache_dir=cache, **{**SCHEDULE, "siq_cfg": SIQConfig(rounds=1, epochs_per_round=1)})
    by_method = {r["method"]: r for r in records}
    assert set(by_method) == {"siq+", "siq+-steps"}
    assert by_method["siq+"]["cell"] != by_method["siq+-steps"]["cell"]
    # the variant kept the calibrated shifts; siq+ recorded the shifts it trained in every round
    assert "shifts" in by_method["siq+"]["history"][-1]
    # retraining at its own dropout rate: a cell of its own, and the record says so (both cells alike otherwise)
    assert by_method["siq+"]["siq_dropout"] is None
    low = sweep.run_sweep("digits", arch_file, ["siq+"], [2], [2], out=tmp_path / "d.jsonl", cache_dir=cache,
                          **{**SCHEDULE, "siq_cfg": SIQConfig(rounds=1, epochs_per_round=1, dropout=0.2)})[0]
    assert low["siq_dropout"] == 0.2 and low["cell"] != by_method["siq+"]["cell"]
    # a distillation weight of its own: likewise (the ablation without distillation is not "a weight of 0")
    assert by_method["siq+"]["distill"] is None and by_method["siq+-steps"]["distill"] is None
    strong = sweep.run_sweep("digits", arch_file, ["siq+", "siq+-distill"], [2], [2], out=tmp_path / "k.jsonl",
                             cache_dir=cache, plus_cfg=SIQPlusConfig(distill=0.9),
                             **{**SCHEDULE, "siq_cfg": SIQConfig(rounds=1, epochs_per_round=1)})
    assert strong[0]["distill"] == [0.9, 4.0] and strong[0]["cell"] != by_method["siq+"]["cell"]
    assert strong[1]["distill"] is None
    # real activation steps (folded into powers of two): a cell of their own; the variant without learned steps
    # has nothing to fold, so it is the same cell as before
    assert by_method["siq+"]["real_steps"] is False and by_method["siq+-steps"]["real_steps"] is None
    real = sweep.run_sweep("digits", arch_file, ["siq+", "siq+-steps"], [2], [2], out=tmp_path / "r.jsonl",
                           cache_dir=cache, plus_cfg=SIQPlusConfig(real_steps=True),
                           **{**SCHEDULE, "siq_cfg": SIQConfig(rounds=1, epochs_per_round=1)})
    assert real[0]["real_steps"] is True and real[0]["cell"] != by_method["siq+"]["cell"]
    assert real[1]["cell"] == by_method["siq+-steps"]["cell"] and real[1]["cached"]
    # progressive activation bits: likewise a cell of their own, and nothing to lower without learned steps
    assert by_method["siq+"]["progressive_acts"] == 0 and by_method["siq+-steps"]["progressive_acts"] is None
    lowered = sweep.run_sweep("digits", arch_file, ["siq+", "siq+-steps"], [2], [2], out=tmp_path / "p.jsonl",
                              cache_dir=cache, plus_cfg=SIQPlusConfig(progressive_acts=1),
                              **{**SCHEDULE, "siq_cfg": SIQConfig(rounds=1, epochs_per_round=1)})
    assert lowered[0]["progressive_acts"] == 1 and lowered[0]["cell"] != by_method["siq+"]["cell"]
    assert lowered[1]["cell"] == by_method["siq+-steps"]["cell"] and lowered[1]["cached"]
    summary = report.render_report([tmp_path / "v.jsonl"], tmp_path / "report", title="variants")
    assert (tmp_path / "report" / "report.md").is_file() and summary["groups"]


def test_validation_and_subset_sweeps(tmp_path, arch_file):
    """--validation scores held-out training images (never the test split); --train-size/--test-size run on a
    stratified subset. Both are named in the records' dataset."""
    tuned = sweep.run_sweep("digits", arch_file, ["uniform"], [None], [None], out=tmp_path / "t.jsonl",
                            validation=0.2, subset=(600, None), cache_dir=tmp_path / "c", **SCHEDULE)
    assert tuned[0]["dataset"] == "digits[train 600, test all]/val0.2" and tuned[0]["n_test"] == 120
    small = sweep.run_sweep("digits", arch_file, ["uniform"], [None], [None], out=tmp_path / "s.jsonl",
                            subset=(None, 100), cache_dir=tmp_path / "c", **SCHEDULE)
    assert small[0]["dataset"] == "digits[train all, test 100]" and small[0]["n_test"] == 100
    with pytest.raises(SiqError, match="validation fraction"):
        sweep.run_sweep("digits", arch_file, ["uniform"], [None], [None], out=tmp_path / "x.jsonl",
                        validation=1.5, cache_dir=tmp_path / "c", **SCHEDULE)
    assert not (tmp_path / "x.jsonl").exists()

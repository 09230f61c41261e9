"""The fit study's report: the figures it states follow from the records (gains, smallest within float,
budgets kept), and its bad results files are refused in one line."""
import json

import pytest

from siq.codegen.fit.study_report import _size_comparison, read_fit_records, render, summary
from siq.training.errors import SiqError


def record(budget, kind, solver, seed, flash, accuracy, bits=None):
    return {"dataset": "fashion", "arch": "paper-mnist", "method": "siq+", "budget": budget, "kind": kind,
            "solver": solver, "seed": seed, "bits": bits or {"0": 2, "3": 1}, "per_channel": [], "flash": flash,
            "accuracy": accuracy, "float_accuracy": 0.90}


RECORDS = [  # two seeds, two budgets; float 90 %
    record(6000, "fit", "exact", 0, 5900, 0.870), record(6000, "fit", "exact", 1, 5950, 0.880),
    record(6000, "fit", "greedy", 0, 5800, 0.860), record(6000, "fit", "greedy", 1, 5800, 0.864),
    record(6000, "single", None, 0, 4600, 0.850, {"0": 1, "3": 1}),
    record(6000, "single", None, 1, 4600, 0.852, {"0": 1, "3": 1}),
    record(12000, "fit", "exact", 0, 11000, 0.893), record(12000, "fit", "exact", 1, 11200, 0.895),
    record(12000, "single", None, 0, 11500, 0.889, {"0": 4, "3": 4}),
    record(12000, "single", None, 1, 11500, 0.893, {"0": 4, "3": 4}),
]


def test_summary_states_gains_and_the_smallest_models_within_float():
    s = summary(RECORDS)
    assert s["float_accuracy"] == pytest.approx(0.90)
    assert s["gain_pp"] == {6000: pytest.approx(2.4), 12000: pytest.approx(0.3)}
    assert s["smallest_fit"].flash == pytest.approx(11100)      # 89.4 % >= 89.0 %; the 6 KB fit is not
    assert s["smallest_single"].flash == pytest.approx(11500)   # 89.1 %
    assert s["reduction_pct"] == pytest.approx(100 * (1 - 11100 / 11500))
    assert s["over_budget"] == []


def test_a_model_over_its_budget_is_named(tmp_path):
    over = RECORDS + [record(6000, "fit", "exact", 2, 6100, 0.88)]
    assert summary(over)["over_budget"] == [(6000, ("fit", "exact"), 6100)]
    readme = render(over, tmp_path / "r", "T").read_text()
    assert "over budget: fit (exact solver) at 6,000 B (6,100 B)" in readme


def test_report_renders_the_table_and_the_plot(tmp_path):
    readme = render(RECORDS, tmp_path / "r", "Fit budgets").read_text()
    assert readme.startswith("# Fit budgets\n") and "Float: 90.00 %" in readme
    assert "| 6,000 | fit (exact solver) | 2/1 | 5,925 | 87.50 | 1.00 |" in readme
    assert "6,000 B: the exact fit is +2.40 pp from the best single width" in readme
    assert "fit 11,100 B (89.40 %), single width 11,500 B (89.10 %): the fit is 3.5 % smaller" in readme
    assert (tmp_path / "r" / "accuracy-vs-flash.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("text, message", [
    ("", "no fit records"), ("{\n", "not a JSON record"), ('{"budget": 1}\n', r"not a fit record \(missing kind")])
def test_bad_fit_results_are_refused(tmp_path, text, message):
    path = tmp_path / "r.jsonl"
    path.write_text(text)
    with pytest.raises(SiqError, match=message):
        read_fit_records(path)


def test_records_round_trip_through_the_file(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert read_fit_records(path) == RECORDS


def test_a_fit_larger_than_the_single_width_is_called_larger():
    assert _size_comparison(-3.44) == ": the fit is 3.4 % larger"
    assert _size_comparison(25.0) == ": the fit is 25.0 % smaller"
    assert _size_comparison(None) == ""

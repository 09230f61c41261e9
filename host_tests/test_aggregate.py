"""The report's rules (fewest bits reaching float, seed means, method rows, Pareto front) on hand-made records."""
from __future__ import annotations

import pytest

from siq.training.experiments.report import aggregate, fewest_weight_bits, pareto_front

# ---------------------------------------------------------------- rules on hand-made records

def _record(method, w, a, error, seed=0, float_error=0.10):
    return {"dataset": "d", "arch": "a", "method": method, "conv_bits": w, "act_bits": a, "error": error,
            "seed": seed, "float_accuracy": 1 - float_error, "model": f"m{seed}", "fc_bits": 8,
            "weights_bytes": 100 * (w or 32), "evaluator": "integer", "cell": f"{method}{w}{a}{seed}"}


def test_fewest_bits_rule_uses_float_error_plus_tolerance():
    records = [_record("siq", 2, 4, 0.1030), _record("siq", 3, 4, 0.1010), _record("siq", 4, 4, 0.0990),
               _record("siq", 5, 4, 0.1200)]
    group, = aggregate(records)
    assert fewest_weight_bits(group, "siq", 4, 0.0) == 4   # first width at or under 10%
    assert fewest_weight_bits(group, "siq", 4, 0.1) == 3   # +0.1 pp: 10.1% passes
    assert fewest_weight_bits(group, "siq", 4, 0.5) == 2
    assert fewest_weight_bits(group, "siq", 3, 0.5) is None  # no cell at 3-bit activations


def test_seeds_are_averaged_per_cell():
    group, = aggregate([_record("uniform", 2, 2, 0.2, seed=0), _record("uniform", 2, 2, 0.4, seed=1)])
    stat = group.cells[("uniform", 2, 2)]
    assert (stat.mean, stat.low, stat.high, stat.n) == (pytest.approx(0.3), 0.2, 0.4, 2)


def test_a_wider_input_is_a_method_row_of_its_own():
    """Records with input_bits set (e.g. 8-bit input, 2-bit feature maps) are not averaged with the paper's one
    width for all: they get their own row, labelled with the input width."""
    from siq.training.experiments.report import method_label
    wide = {**_record("siq+", 2, 2, 0.14), "input_bits": 8}
    group, = aggregate([_record("siq+", 2, 2, 0.16), wide, {**_record("siq+", 2, 2, 0.17, seed=1), "input_bits": None}])
    assert group.cells[("siq+", 2, 2)].mean == pytest.approx(0.165)
    assert group.cells[("siq+@in8", 2, 2)].mean == pytest.approx(0.14)
    assert method_label("siq+@in8") == "SIQ+ (beyond the paper) (input 8 bits)"
    assert method_label("kmeans@fc4@in8") == "k-means (adaptive) (FC 4 bits, input 8 bits)"


def test_pareto_front():
    points = [(100, 0.5, "a"), (100, 0.6, "b"), (200, 0.55, "c"), (300, 0.9, "d"), (400, 0.9, "e")]
    assert [p[2] for p in pareto_front(points)] == ["b", "d"]

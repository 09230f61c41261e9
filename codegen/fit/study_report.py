"""The report of a study's [[fit]] (its `report` folder): at each budget the fitted models (per solver) beside the
best single width, test accuracy as the mean over the seeds, and the accuracy-versus-flash plot with the Pareto
front of every model measured. Every figure in it is computed from the committed results file.

Read from the records of codegen/fit/study.py: budget, kind ("fit" / "single"), solver, seed, bits, flash (read-
only bytes as linked for the core), accuracy, float_accuracy.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siq.training.errors import SiqError
from siq.training.experiments.aggregate import pareto_front
from siq.training.experiments.figures import new_figure
from siq.training.fileio import atomic_write_bytes

WITHIN_FLOAT_PP = 1.0  # "as accurate as float": the acceptance's tolerance, in percentage points
KINDS = (("fit", "exact"), ("fit", "greedy"), ("single", None))
LABELS = {("fit", "exact"): "fit (exact solver)", ("fit", "greedy"): "fit (Hessian greedy)",
          ("single", None): "best single width"}
COLORS = {("fit", "exact"): "tab:red", ("fit", "greedy"): "tab:orange", ("single", None): "tab:blue"}


@dataclass(frozen=True)
class Cell:
    """One kind of model at one budget, over the seeds."""
    budget: int
    kind: tuple
    accuracy: float          # mean over seeds
    spread: float            # max - min over seeds
    flash: float             # mean read-only bytes
    largest_flash: int       # the largest over seeds (what the budget bounds)
    seeds: int
    widths: str              # the single width, or the widths the fits chose (per seed, joined)


FIELDS = ("budget", "kind", "solver", "seed", "bits", "flash", "accuracy", "float_accuracy")


def read_fit_records(path: str | Path) -> list[dict]:
    """The records of a [[fit]]'s results file (one JSON object a line)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SiqError(f"cannot read fit results {path}: {exc.strerror}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SiqError(f"{path}:{number}: not a JSON record ({exc.msg})") from None
            missing = [k for k in FIELDS if k not in record] if isinstance(record, dict) else list(FIELDS)
            if missing:
                raise SiqError(f"{path}:{number}: not a fit record (missing {', '.join(missing)})")
            records.append(record)
    if not records:
        raise SiqError(f"{path}: no fit records")
    return records


def _widths(records: list[dict]) -> str:
    def one(r):
        values = [r["bits"][k] for k in sorted(r["bits"], key=int)]
        if r["kind"] == "single":
            return f"{values[0]} bits"
        return "/".join(map(str, values)) + (f" (per channel {','.join(map(str, r['per_channel']))})"
                                             if r.get("per_channel") else "")
    return "; ".join(sorted({one(r) for r in records}))


def cells(records: list[dict]) -> list[Cell]:
    out = []
    for budget in sorted({r["budget"] for r in records}):
        for kind in KINDS:
            rs = [r for r in records if r["budget"] == budget and (r["kind"], r["solver"]) == kind]
            if rs:
                acc = [r["accuracy"] for r in rs]
                out.append(Cell(budget, kind, float(np.mean(acc)), float(max(acc) - min(acc)),
                                float(np.mean([r["flash"] for r in rs])), max(r["flash"] for r in rs),
                                len({r["seed"] for r in rs}), _widths(rs)))
    return out


def smallest_within_float(table: list[Cell], kind: tuple, float_accuracy: float) -> Cell | None:
    """The smallest model of a kind whose mean accuracy is within WITHIN_FLOAT_PP of float."""
    ok = [c for c in table if c.kind == kind and c.accuracy >= float_accuracy - WITHIN_FLOAT_PP / 100 - 1e-12]
    return min(ok, key=lambda c: c.flash, default=None)


def summary(records: list[dict]) -> dict:
    """The figures the report states: per budget the gain of the exact fit over the best single width, and the
    smallest models within WITHIN_FLOAT_PP of float."""
    table = cells(records)
    float_accuracy = float(np.mean([r["float_accuracy"] for r in records]))
    by = {(c.budget, c.kind): c for c in table}
    gains = {}
    for budget in sorted({c.budget for c in table}):
        fit, single = by.get((budget, ("fit", "exact"))), by.get((budget, ("single", None)))
        if fit and single:
            gains[budget] = 100 * (fit.accuracy - single.accuracy)
    fit_small = smallest_within_float(table, ("fit", "exact"), float_accuracy)
    single_small = smallest_within_float(table, ("single", None), float_accuracy)
    reduction = None if not (fit_small and single_small) else 100 * (1 - fit_small.flash / single_small.flash)
    over = [(c.budget, c.kind, c.largest_flash) for c in table if c.largest_flash > c.budget]
    return {"float_accuracy": float_accuracy, "gain_pp": gains, "smallest_fit": fit_small,
            "smallest_single": single_small, "reduction_pct": reduction, "over_budget": over, "cells": table}


def plot(table: list[Cell], float_accuracy: float, path: Path) -> Path:
    fig = new_figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for kind in KINDS:
        mine = sorted((c for c in table if c.kind == kind), key=lambda c: c.flash)
        if mine:
            ax.plot([c.flash / 1024 for c in mine], [100 * c.accuracy for c in mine], marker="o",
                    color=COLORS[kind], label=LABELS[kind])
    front = pareto_front([(c.flash, c.accuracy, c) for c in table])
    ax.plot([p[0] / 1024 for p in front], [100 * p[1] for p in front], color="black", linestyle=":", linewidth=1,
            label="Pareto front")
    ax.axhline(100 * float_accuracy, color="gray", linestyle="--", linewidth=1, label="float")
    for budget in sorted({c.budget for c in table}):
        ax.axvline(budget / 1024, color="lightgray", linewidth=0.8, zorder=0)
    ax.set_xlabel("read-only data as linked (KiB; gray lines: the budgets)")
    ax.set_ylabel("test accuracy (%, mean over seeds)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def render(records: list[dict], out_dir: str | Path, title: str) -> Path:
    """README.md and accuracy-vs-flash.png in out_dir; returns the README's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    s = summary(records)
    table = s["cells"]
    plot(table, s["float_accuracy"], out_dir / "accuracy-vs-flash.png")
    seeds = sorted({r["seed"] for r in records})
    lines = [f"# {title}", "",
             f"Test accuracy is the integer model's, mean over seeds {', '.join(map(str, seeds))} (spread: max - min); "
             f"flash is the model's read-only data as linked, mean over the seeds. Float: "
             f"{100 * s['float_accuracy']:.2f} %.", "",
             "![accuracy against flash](accuracy-vs-flash.png)", "",
             "| budget (B) | model | widths (layer order) | flash (B) | accuracy (%) | spread (pp) |",
             "|---|---|---|---|---|---|"]
    for c in table:
        lines.append(f"| {c.budget:,} | {LABELS[c.kind]} | {c.widths} | {c.flash:,.0f} | {100 * c.accuracy:.2f} | "
                     f"{100 * c.spread:.2f} |")
    lines += ["", "## Against the best single width", ""]
    lines += [f"- {budget:,} B: the exact fit is {gain:+.2f} pp from the best single width that fits"
              for budget, gain in s["gain_pp"].items()]
    fit, single = s["smallest_fit"], s["smallest_single"]
    lines.append(f"- smallest within {WITHIN_FLOAT_PP:g} pp of float: fit "
                 + (f"{fit.flash:,.0f} B ({100 * fit.accuracy:.2f} %)" if fit else "none")
                 + ", single width " + (f"{single.flash:,.0f} B ({100 * single.accuracy:.2f} %)" if single else "none")
                 + _size_comparison(s["reduction_pct"]))
    lines.append("- every model within its budget" if not s["over_budget"] else
                 "- over budget: " + ", ".join(f"{LABELS[k]} at {b:,} B ({f:,} B)" for b, k, f in s["over_budget"]))
    path = out_dir / "README.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def _size_comparison(reduction_pct: float | None) -> str:
    """How much smaller (or larger) the fitted model is, as the report's sentence ends."""
    if reduction_pct is None:
        return ""
    return f": the fit is {abs(reduction_pct):.1f} % {'smaller' if reduction_pct >= 0 else 'larger'}"

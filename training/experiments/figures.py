"""The report's figures (PNG, matplotlib's object API so no display or global state is touched): the Fig. 4 and
Fig. 5 analogues, one error heatmap per method and the accuracy-vs-flash Pareto plot."""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from siq.training.fileio import atomic_write_bytes

from .aggregate import (FLOAT_METHOD, Group, bits_label, cell, method_color, method_label, pareto_front,
                        pct)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# ---------------------------------------------------------------- figures

def new_figure(**kwargs) -> Figure:
    """A matplotlib Figure, matplotlib imported on the first one: it takes half a second to import, and of the
    command line only the reports draw."""
    from matplotlib.figure import Figure
    return Figure(**kwargs)


def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def fig4(group: Group, act_bits: int, reference: dict | None, path: Path) -> Path:
    fig = new_figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    widths = [w for w in group.weight_bits if w is not None]
    for method in group.methods:
        xs, ys, lo, hi = [], [], [], []
        for w in widths:
            stat = cell(group, method, w, act_bits)
            if stat is not None:
                xs.append(w)
                ys.append(100 * stat.mean)
                lo.append(100 * (stat.mean - stat.low))
                hi.append(100 * (stat.high - stat.mean))
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi] if len(group.seeds) > 1 else None, marker="o", capsize=3,
                        label=method_label(method), color=method_color(method))
    ax.axhline(100 * group.float_error, color="black", lw=1, label=f"float network ({pct(group.float_error)}%)")
    float_weights = cell(group, FLOAT_METHOD, None, act_bits)
    if float_weights is not None:
        ax.axhline(100 * float_weights.mean, color="gray", ls=":", lw=1,
                   label=f"float weights, {act_bits}-bit activations ({pct(float_weights.mean)}%)")
    if reference and reference.get("float_error") is not None:
        ax.axhline(100 * reference["float_error"], color="black", ls="--", lw=1,
                   label=f"paper float ({pct(reference['float_error'])}%)")
    ax.set_xlabel("weight bits (conv kernels)")
    ax.set_ylabel("test error (%)")
    ax.set_xticks(widths)
    ax.set_title(f"{group.label}: error vs weight bits, {act_bits}-bit activations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def fig5(group: Group, means: dict, seed_ranges: dict, reference_means: dict, path: Path) -> Path:
    fig = new_figure(figsize=(5.2, 3.8))
    ax = fig.add_subplot()
    methods = list(means)
    xs = np.arange(len(methods))
    heights = [100 * means[m] for m in methods]
    errs = None
    if len(group.seeds) > 1:
        errs = [[100 * (means[m] - seed_ranges[m][0]) for m in methods],
                [100 * (seed_ranges[m][1] - means[m]) for m in methods]]
    ax.bar(xs, heights, yerr=errs, capsize=4, color=[method_color(m) or "gray" for m in methods],
           width=0.6, label="this sweep")
    if reference_means:
        ref = [100 * reference_means.get(m.split("@")[0], np.nan) for m in methods]
        ax.scatter(xs, ref, marker="_", s=600, color="black", zorder=3, label="paper")
        ax.legend(fontsize=8)
    ax.set_xticks(xs, [method_label(m) for m in methods])
    ax.set_ylabel("mean test error (%)")
    ax.set_title(f"{group.label}: mean error, 1-4 weight x 1-4 activation bits")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def heatmap(group: Group, method: str, vmax: float, path: Path) -> Path:
    matrix = np.full((len(group.act_bits), len(group.weight_bits)), np.nan)
    for r, a in enumerate(group.act_bits):
        for c, w in enumerate(group.weight_bits):
            stat = cell(group, method, w, a)
            if stat is not None:
                matrix[r, c] = 100 * stat.mean
    fig = new_figure(figsize=(1.0 + 0.75 * len(group.weight_bits), 1.2 + 0.55 * len(group.act_bits)))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="viridis_r", vmin=0.0, vmax=vmax, aspect="auto")
    for r in range(matrix.shape[0]):
        for c in range(matrix.shape[1]):
            if not np.isnan(matrix[r, c]):
                ax.text(c, r, f"{matrix[r, c]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if matrix[r, c] > vmax / 2 else "black")
    ax.set_xticks(range(len(group.weight_bits)), [bits_label(w) for w in group.weight_bits])
    ax.set_yticks(range(len(group.act_bits)), [bits_label(a) for a in group.act_bits])
    ax.set_xlabel("weight bits")
    ax.set_ylabel("activation bits")
    ax.set_title(f"{method_label(method)}: test error (%)")
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def pareto(group: Group, path: Path) -> tuple[Path | None, list]:
    points = [(stat.weights_bytes, stat.accuracy, (m, w, a)) for (m, w, a), stat in group.cells.items()
              if w is not None and a is not None]
    if not points:
        return None, []
    front = pareto_front(points)
    fig = new_figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    markers = "os^Dvp*hX"
    for method in group.methods:
        for k, a in enumerate(b for b in group.act_bits if b is not None):
            mine = [p for p in points if p[2][0] == method and p[2][2] == a]
            if mine:
                ax.scatter([p[0] for p in mine], [100 * p[1] for p in mine], marker=markers[k % len(markers)],
                           color=method_color(method), alpha=0.75, s=24,
                           label=f"{method_label(method)}, a={a}")
    ax.step([p[0] for p in front], [100 * p[1] for p in front], where="post", color="black", lw=1,
            label="Pareto front")
    ax.axhline(100 * (1 - group.float_error), color="gray", ls=":", lw=1, label="float network")
    sizes = [p[0] for p in points]
    if max(sizes) > 10 * max(min(sizes), 1):
        ax.set_xscale("log")
    ax.set_xlabel("weight flash (bytes: packed indices + codebooks)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{group.label}: accuracy vs weight memory (integer cells)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path), front



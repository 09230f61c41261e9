"""Sweep report: the paper's Table 1, Fig. 4 and Fig. 5 recomputed from sweep records (training/sweep.py).

render_report() writes into out_dir:
    report.md                   every table below, and the figures
    <group>-table1 (Markdown)   error rate grid: rows method x activation bits, columns weight bits (float included)
    <group>-fig4.png            error vs weight bits per method at fixed activation bits (default 4), float error as
                                a horizontal line; the fewest weight bits that reach the float error, per method
    <group>-fig5.png            mean error over the 1-4 x 1-4 bit grid per method (only if all 16 cells exist)
    <group>-heatmap-<m>.png     error per (weight bits, activation bits), one per method
    <group>-pareto.png          accuracy vs weight flash bytes of the integer cells, with the Pareto front
A group is one (dataset, architecture) pair: a results file from several datasets gives one section per pair.
Several seeds: every number is the mean over seeds, with (min-max) beside it.

"Reaching the float error" means: mean error at (w weight bits, A activation bits) <= float error + tolerance,
where the float error is the float network's mean test error (float weights and activations), and w is the
smallest swept width that satisfies it (None if no swept width does). The tolerance is given in percentage
points; the report states the strict rule (0) and a loose one (+0.2 pp) by default.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .errors import SiqError
from .fileio import atomic_write_bytes
from .sweep import FLOAT_METHOD, read_results

LOW_BITS = (1, 2, 3, 4)   # Fig. 5: the 16 combinations of 1-4 weight bits and 1-4 activation bits
METHOD_LABELS = {"uniform": "uniform", "kmeans": "k-means (adaptive)", "siq": "SIQ (proposed)",
                 FLOAT_METHOD: "float weights"}
METHOD_COLORS = {"uniform": "tab:red", "kmeans": "tab:blue", "siq": "tab:green",  # the paper's Table 1 colours
                 "siq+": "tab:purple"}
METHOD_LABELS["siq+"] = "SIQ+ (beyond the paper)"


def method_label(method: str) -> str:
    """Display name: "siq+-distill" -> "SIQ+ without distill"; "kmeans@fc4" keeps its suffix."""
    name, *suffixes = method.split("@")
    base, *off = name.split("-") if name.startswith("siq+") else (name,)
    label = METHOD_LABELS.get(base, base) if not off else f"SIQ+ without {', '.join(off)}"
    notes = [f"FC {x[2:]} bits" for x in suffixes if x.startswith("fc")]
    notes += [f"input {x[2:]} bits" for x in suffixes if x.startswith("in")]
    return label + (f" ({', '.join(notes)})" if notes else "")


def method_color(method: str):
    """The method's colour, or None (matplotlib's cycle) for others such as ablation variants."""
    return METHOD_COLORS.get(method.split("@")[0])

# ---------------------------------------------------------------- the paper's numbers

# §4.1 and Fig. 4: double-precision error 1.15%; with 4-bit input and feature maps, SIQ needs 4 weight bits to
# reach it, uniform and k-means need 6.
PAPER_MNIST = {
    "name": "paper §4.1 (MNIST, Fig. 4)",
    "float_error": 0.0115,
    "act_bits": 4,
    "fewest_weight_bits": {"siq": 4, "uniform": 6, "kmeans": 6},
}

# Table 1 (office images, 20 ImageNet classes): error per method (red = uniform, blue = k-means, green = SIQ),
# input bits 1-4 and weight bits 1-8 and 64 (= float, key None). Transcribed from the text of the paper, where the
# colour coding is lost: the rows were put back in reading order (uniform, k-means, SIQ for each input width),
# which makes every method improve with input bits and SIQ the best of the three in 35 of the 36 cells with
# 1-4 weight bits, as the paper states.
_TABLE1_ROWS = {
    ("uniform", 1): (0.7650, 0.6822, 0.6264, 0.6368, 0.6411, 0.6466, 0.6436, 0.6515, 0.6577),
    ("kmeans", 1): (0.6828, 0.4779, 0.3757, 0.2782, 0.2653, 0.2680, 0.2671, 0.2653, 0.2625),
    ("siq", 1): (0.6699, 0.4583, 0.2650, 0.1988, 0.1896, 0.1963, 0.1969, 0.1963, 0.1933),
    ("uniform", 2): (0.7000, 0.5000, 0.4368, 0.3239, 0.3607, 0.3552, 0.3466, 0.3417, 0.3442),
    ("kmeans", 2): (0.6613, 0.4301, 0.2485, 0.1834, 0.1748, 0.1767, 0.1761, 0.1748, 0.1730),
    ("siq", 2): (0.6472, 0.3613, 0.1742, 0.1337, 0.1239, 0.1227, 0.1221, 0.1215, 0.1233),
    ("uniform", 3): (0.6712, 0.4712, 0.3049, 0.1847, 0.1706, 0.1528, 0.1479, 0.1405, 0.1436),
    ("kmeans", 3): (0.6552, 0.3331, 0.1528, 0.1172, 0.1172, 0.1172, 0.1166, 0.1166, 0.1160),
    ("siq", 3): (0.6374, 0.3399, 0.1497, 0.1172, 0.1061, 0.1055, 0.1031, 0.1025, 0.1031),
    ("uniform", 4): (0.6693, 0.4460, 0.2638, 0.1558, 0.1405, 0.1147, 0.1147, 0.1110, 0.1104),
    ("kmeans", 4): (0.6540, 0.3374, 0.1497, 0.1135, 0.1110, 0.1184, 0.1172, 0.1184, 0.1172),
    ("siq", 4): (0.6374, 0.3288, 0.1442, 0.1135, 0.1025, 0.0963, 0.0982, 0.0969, 0.0969),
}
_TABLE1_WEIGHT_BITS = (1, 2, 3, 4, 5, 6, 7, 8, None)
PAPER_OFFICE = {
    "name": "paper §4.2 (office images, Table 1)",
    "table": {method: {a: dict(zip(_TABLE1_WEIGHT_BITS, _TABLE1_ROWS[(method, a)])) for a in (1, 2, 3, 4)}
              for method in ("uniform", "kmeans", "siq")},
}


def paper_reference_for(dataset: str, arch: str | None = None) -> dict | None:
    """The paper's numbers for a dataset spec: MNIST ones for mnist/mnist5k, Table 1 for image folders and for
    anything run on the office architecture (its stand-in)."""
    if dataset in ("mnist", "mnist5k"):
        return PAPER_MNIST
    if dataset.startswith("folder:") or arch == "paper-office":
        return PAPER_OFFICE
    return None


# ---------------------------------------------------------------- aggregation

@dataclass
class Stat:
    """One cell over seeds (errors as fractions; a seed recorded twice keeps its last record)."""
    by_seed: dict            # seed -> error
    weights_bytes: float
    evaluator: str

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.by_seed.values())))

    @property
    def low(self) -> float:
        return min(self.by_seed.values())

    @property
    def high(self) -> float:
        return max(self.by_seed.values())

    @property
    def n(self) -> int:
        return len(self.by_seed)

    @property
    def accuracy(self) -> float:
        return 1.0 - self.mean


@dataclass
class Group:
    dataset: str
    arch: str
    seeds: list
    float_errors: list                        # the float network's error, one per seed
    cells: dict = field(default_factory=dict)  # (method, weight bits, act bits) -> Stat
    methods: list = field(default_factory=list)
    weight_bits: list = field(default_factory=list)
    act_bits: list = field(default_factory=list)
    n_test: list = field(default_factory=list)

    @property
    def float_error(self) -> float:
        return float(np.mean(self.float_errors))

    @property
    def label(self) -> str:
        return f"{self.dataset} / {self.arch}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "-", f"{self.dataset}-{self.arch}").strip("-").lower() or "sweep"


def _bits_order(values) -> list:
    """Integer widths ascending, then None (float) if present."""
    values = set(values)
    return sorted(v for v in values if v is not None) + ([None] if None in values else [])


def aggregate(records: list[dict]) -> list[Group]:
    """Sweep records -> one Group per (dataset, arch); methods with several fc_bits are told apart as m@fcB."""
    by_group: dict = {}
    for r in records:
        by_group.setdefault((r["dataset"], r["arch"]), []).append(r)
    groups = []
    for (dataset, arch), rs in sorted(by_group.items()):
        fcs = {r.get("fc_bits") for r in rs if r["method"] != FLOAT_METHOD}

        def method_of(r):
            name = r["method"]
            if name != FLOAT_METHOD and len(fcs) > 1:
                name += f"@fc{r.get('fc_bits')}"
            if r.get("input_bits") is not None:  # an input wider (or narrower) than the feature maps: its own row
                name += f"@in{r['input_bits']}"
            return name

        float_by_model = {}
        for r in rs:
            if r.get("float_accuracy") is not None:
                float_by_model[(r.get("model"), r["seed"])] = 1.0 - float(r["float_accuracy"])
        cells: dict = {}
        for r in rs:
            cells.setdefault((method_of(r), r["conv_bits"], r["act_bits"]), []).append(r)
        stats = {}
        for key, cell_records in cells.items():
            stats[key] = Stat({r["seed"]: float(r["error"]) for r in cell_records},
                              float(np.mean([r.get("weights_bytes") or 0 for r in cell_records])),
                              cell_records[0].get("evaluator", "?"))
        methods = sorted({m for m, _, _ in stats if m != FLOAT_METHOD}, key=_method_rank)
        groups.append(Group(dataset, arch, sorted({r["seed"] for r in rs}), list(float_by_model.values()), stats,
                            methods, _bits_order(w for _, w, _ in stats), _bits_order(a for _, _, a in stats),
                            sorted({int(r["n_test"]) for r in rs if r.get("n_test") is not None})))
    return groups


def _method_rank(method: str):
    base = method.split("@")[0]
    order = ["uniform", "kmeans", "siq", "siq+"]
    return (order.index(base) if base in order else len(order), method)


def cell(group: Group, method: str, w, a) -> Stat | None:
    """A cell of the grid; float weights are shared by every method."""
    return group.cells.get((FLOAT_METHOD if w is None else method, w, a))


def fewest_weight_bits(group: Group, method: str, act_bits: int, tolerance_pp: float) -> int | None:
    """Smallest swept weight width w with mean error(w, act_bits) <= float error + tolerance (pp)."""
    limit = group.float_error + tolerance_pp / 100.0
    for w in group.weight_bits:
        if w is None:
            continue
        stat = cell(group, method, w, act_bits)
        if stat is not None and stat.mean <= limit + 1e-12:
            return w
    return None


def low_bit_mean(group: Group, method: str) -> tuple[float | None, list[tuple[int, int]], tuple | None]:
    """Mean error over the 16 cells of 1-4 weight bits x 1-4 act bits: (mean, missing (w, a) cells,
    (min, max) over the seeds present in all 16 cells)."""
    stats = {(w, a): cell(group, method, w, a) for a in LOW_BITS for w in LOW_BITS}
    missing = [key for key, stat in stats.items() if stat is None]
    if missing:
        return None, missing, None
    mean = float(np.mean([stat.mean for stat in stats.values()]))
    common = set.intersection(*(set(stat.by_seed) for stat in stats.values()))
    per_seed = [float(np.mean([stat.by_seed[s] for stat in stats.values()])) for s in common]
    return mean, [], (min(per_seed), max(per_seed)) if per_seed else (mean, mean)


def pareto_front(points: list[tuple[float, float, object]]) -> list[tuple[float, float, object]]:
    """Points (bytes, accuracy, tag) not dominated by any other (fewer or equal bytes and higher accuracy)."""
    front = []
    best = -math.inf
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if p[1] > best:
            front.append(p)
            best = p[1]
    return front


# ---------------------------------------------------------------- text

def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _stat_text(stat: Stat | None) -> str:
    if stat is None:
        return "—"
    if stat.n > 1:
        return f"{_pct(stat.mean)} ({_pct(stat.low)}–{_pct(stat.high)})"
    return _pct(stat.mean)


def _bits_label(b) -> str:
    return "float" if b is None else str(b)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def table1_markdown(group: Group) -> str:
    """Error rate (%) grid: rows method x activation bits, columns weight bits; float row and column included."""
    header = ["method", "act bits"] + [f"w={_bits_label(w)}" for w in group.weight_bits]
    rows = []
    for method in group.methods:
        for a in group.act_bits:
            rows.append([method_label(method), _bits_label(a)]
                        + [_stat_text(cell(group, method, w, a)) for w in group.weight_bits])
    if not group.methods:  # only float-weight cells were swept
        for a in group.act_bits:
            rows.append([METHOD_LABELS[FLOAT_METHOD], _bits_label(a)]
                        + [_stat_text(cell(group, FLOAT_METHOD, w, a)) for w in group.weight_bits])
    return _markdown_table(header, rows)


def paper_table_markdown(table: dict) -> str:
    weight_bits = _bits_order(w for rows in table.values() for row in rows.values() for w in row)
    header = ["method", "act bits"] + [f"w={_bits_label(w)}" for w in weight_bits]
    rows = []
    for method in sorted(table, key=_method_rank):
        for a in sorted(table[method]):
            rows.append([method_label(method), str(a)]
                        + [_pct(table[method][a].get(w)) for w in weight_bits])
    return _markdown_table(header, rows)


def _normalise_reference(ref: dict | None) -> dict | None:
    """Accept JSON-style keys ("float"/"64" -> None, "4" -> 4) in a user-supplied reference."""
    if ref is None:
        return None

    def bits_key(k):
        if k is None or str(k).lower() in ("float", "64", "none", "null"):
            return None
        return int(k)

    out = dict(ref)
    if "table" in ref:
        out["table"] = {m: {int(a): {bits_key(w): float(e) for w, e in row.items()} for a, row in rows.items()}
                        for m, rows in ref["table"].items()}
    return out


def _paper_low_bit_mean(table: dict) -> dict:
    means = {}
    for method, rows in table.items():
        values = [rows.get(a, {}).get(w) for a in LOW_BITS for w in LOW_BITS]
        if all(v is not None for v in values):
            means[method] = float(np.mean(values))
    return means


# ---------------------------------------------------------------- figures

def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def fig4(group: Group, act_bits: int, reference: dict | None, path: Path) -> Path:
    fig = Figure(figsize=(6.4, 4.2))
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
    ax.axhline(100 * group.float_error, color="black", lw=1, label=f"float network ({_pct(group.float_error)}%)")
    float_weights = cell(group, FLOAT_METHOD, None, act_bits)
    if float_weights is not None:
        ax.axhline(100 * float_weights.mean, color="gray", ls=":", lw=1,
                   label=f"float weights, {act_bits}-bit activations ({_pct(float_weights.mean)}%)")
    if reference and reference.get("float_error") is not None:
        ax.axhline(100 * reference["float_error"], color="black", ls="--", lw=1,
                   label=f"paper float ({_pct(reference['float_error'])}%)")
    ax.set_xlabel("weight bits (conv kernels)")
    ax.set_ylabel("test error (%)")
    ax.set_xticks(widths)
    ax.set_title(f"{group.label}: error vs weight bits, {act_bits}-bit activations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def fig5(group: Group, means: dict, seed_ranges: dict, reference_means: dict, path: Path) -> Path:
    fig = Figure(figsize=(5.2, 3.8))
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
    fig = Figure(figsize=(1.0 + 0.75 * len(group.weight_bits), 1.2 + 0.55 * len(group.act_bits)))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="viridis_r", vmin=0.0, vmax=vmax, aspect="auto")
    for r in range(matrix.shape[0]):
        for c in range(matrix.shape[1]):
            if not np.isnan(matrix[r, c]):
                ax.text(c, r, f"{matrix[r, c]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if matrix[r, c] > vmax / 2 else "black")
    ax.set_xticks(range(len(group.weight_bits)), [_bits_label(w) for w in group.weight_bits])
    ax.set_yticks(range(len(group.act_bits)), [_bits_label(a) for a in group.act_bits])
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
    fig = Figure(figsize=(6.4, 4.2))
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


# ---------------------------------------------------------------- the report

def render_report(results, out_dir: str | Path, *, title: str = "SIQ bit-width sweep",
                  paper_reference: dict | None = None, act_bits: int = 4,
                  tolerances_pp: tuple[float, ...] = (0.0, 0.2)) -> dict:
    """Write report.md and its PNG figures into out_dir from one or several sweep result files (JSON lines).

    paper_reference: the paper's numbers to show beside ours (PAPER_MNIST, PAPER_OFFICE, paper_reference_for(),
        or a dict with any of "name", "float_error", "act_bits", "fewest_weight_bits" {method: bits}, "table"
        {method: {act bits: {weight bits or "float": error}}}).
    act_bits: the activation width of the Fig. 4 analogue. tolerances_pp: tolerances (percentage points) of the
        "fewest weight bits reaching the float error" rule; the first one is the headline.
    Returns {"report": path of report.md, "figures": [png paths], "groups": {"dataset / arch": headline}} where
    headline = {"float_error", "seeds", "act_bits", "mean_error_1to4" {method: error or None},
    "missing_1to4" {method: [[w, a], ...]}, "fewest_weight_bits" {tolerance: {method: bits or None}},
    "pareto" [{"method", "weight_bits", "act_bits", "weights_bytes", "accuracy"}]} (errors as fractions).
    """
    records = read_results(results)
    if not records:
        raise SiqError(f"no sweep records in {results}")
    reference = _normalise_reference(paper_reference)
    if not tolerances_pp:
        raise SiqError("give at least one tolerance (percentage points) for the fewest-bits rule")
    out_dir = Path(out_dir)
    paths = [results] if isinstance(results, (str, Path)) else list(results)
    groups = aggregate(records)
    figures: list[Path] = []
    headlines: dict = {}
    md = [f"# {title}", "",
          f"Results: {', '.join(f'`{p}`' for p in paths)} ({len(records)} records). "
          "Error rates in percent; with several seeds, mean (min–max). Cells with both widths integer are scored "
          "by the integer reference (what the generated C computes); the others by the PyTorch model.", ""]
    if reference is not None:
        md += [f"Paper reference: {reference.get('name', 'given')}.", ""]

    for group in groups:
        if not group.float_errors:
            raise SiqError(f"{group.label}: the records carry no float_accuracy (not written by run_sweep?)")
        prefix = group.slug
        tol_keys = [f"{t:g}" for t in tolerances_pp]
        md += [f"## {group.label}", "",
               f"Seeds: {', '.join(map(str, group.seeds))}; test predictions: "
               f"{', '.join(map(str, group.n_test)) or '?'}; float network error: {_pct(group.float_error)}%"
               + (f" ({_pct(min(group.float_errors))}–{_pct(max(group.float_errors))})"
                  if len(group.float_errors) > 1 else "") + ".", ""]

        # (a) Table 1
        md += ["### Error rate grid (Table 1 layout)", "",
               "Rows: method × activation bits; columns: conv weight bits. The float column (float weights) is "
               "the same for every method; the float row has float activations.", "", table1_markdown(group), ""]
        if reference and reference.get("table"):
            md += [f"Paper, {reference.get('name', 'reference')} (w=float is the paper's 64-bit column):", "",
                   paper_table_markdown(reference["table"]), ""]

        # (b) Fig. 4
        fewest = {k: {m: fewest_weight_bits(group, m, act_bits, t) for m in group.methods}
                  for k, t in zip(tol_keys, tolerances_pp)}
        md += [f"### Error vs weight bits at {act_bits}-bit activations (Fig. 4)", ""]
        if any(cell(group, m, w, act_bits) for m in group.methods for w in group.weight_bits if w is not None):
            figures.append(fig4(group, act_bits, reference, out_dir / f"{prefix}-fig4.png"))
            md += [f"![Fig. 4 analogue]({figures[-1].name})", "",
                   f"Fewest weight bits reaching the float error: the smallest swept width w with mean error at "
                   f"(w, {act_bits}-bit activations) ≤ float error ({_pct(group.float_error)}%) + tolerance; "
                   "— = no swept width reaches it.", ""]
            header = ["method"] + [f"tolerance +{t:g} pp" if t else "strict (+0 pp)" for t in tolerances_pp]
            ref_bits = (reference or {}).get("fewest_weight_bits") or {}
            if ref_bits:
                header.append(f"paper (at {reference.get('act_bits', '?')}-bit inputs)")
            rows = []
            for m in group.methods:
                row = [method_label(m)] + [_bits_label(fewest[k][m]) if fewest[k][m] else "—"
                                                   for k in tol_keys]
                if ref_bits:
                    row.append(str(ref_bits.get(m.split("@")[0], "—")))
                rows.append(row)
            md += [_markdown_table(header, rows), ""]
            if reference and reference.get("float_error") is not None:
                md += [f"Paper float error: {_pct(reference['float_error'])}%.", ""]
        else:
            md += [f"No cells with {act_bits}-bit activations and quantized weights: sweep act bits {act_bits} "
                   "(or pass another act_bits to the report).", ""]

        # (c) Fig. 5
        means, missing, ranges = {}, {}, {}
        for m in group.methods:
            mean, gaps, seed_range = low_bit_mean(group, m)
            if mean is None:
                missing[m] = gaps
            else:
                means[m], ranges[m] = mean, seed_range
        reference_means = _paper_low_bit_mean(reference["table"]) if reference and reference.get("table") else {}
        md += ["### Mean error over 1–4 weight bits × 1–4 activation bits (Fig. 5)", ""]
        if means:
            figures.append(fig5(group, means, ranges, reference_means, out_dir / f"{prefix}-fig5.png"))
            header = ["method", "mean error (%)"] + (["paper Table 1 (%)"] if reference_means else [])
            rows = [[method_label(m), _pct(means[m]) + (f" ({_pct(ranges[m][0])}–{_pct(ranges[m][1])})"
                                                              if len(group.seeds) > 1 else "")]
                    + ([_pct(reference_means.get(m.split("@")[0]))] if reference_means else []) for m in means]
            md += [f"![Fig. 5 analogue]({figures[-1].name})", "", _markdown_table(header, rows), ""]
        for m, gaps in missing.items():
            shown = ", ".join(f"(w={w}, a={a})" for w, a in gaps)
            md += [f"{method_label(m)}: not shown, {len(gaps)} of the 16 cells are missing: {shown}.", ""]

        # (d) heat maps
        md += ["### Error heat maps (weight bits × activation bits)", ""]
        vmax = max((100 * s.mean for s in group.cells.values()), default=100.0) or 1.0
        for m in group.methods:
            figures.append(heatmap(group, m, vmax, out_dir / f"{prefix}-heatmap-{m.replace('@', '-')}.png"))
            md += [f"![{m} heat map]({figures[-1].name})", ""]

        # (e) Pareto
        md += ["### Accuracy vs weight flash (integer cells)", ""]
        figure, front = pareto(group, out_dir / f"{prefix}-pareto.png")
        if figure is not None:
            figures.append(figure)
            rows = [[method_label(m), str(w), str(a), f"{b:.0f}", _pct(acc)] for b, acc, (m, w, a) in front]
            md += [f"![accuracy vs flash]({figure.name})", "", "Pareto front (no other cell is smaller and as "
                   "accurate or better):", "",
                   _markdown_table(["method", "weight bits", "act bits", "weight bytes", "accuracy (%)"], rows), ""]
        else:
            md += ["No cell with both widths integer.", ""]

        headlines[group.label] = {
            "dataset": group.dataset, "arch": group.arch, "seeds": group.seeds, "float_error": group.float_error,
            "act_bits": act_bits, "mean_error_1to4": {m: means.get(m) for m in group.methods},
            "missing_1to4": {m: [list(g) for g in gaps] for m, gaps in missing.items()},
            "fewest_weight_bits": fewest,
            "pareto": [{"method": m, "weight_bits": w, "act_bits": a, "weights_bytes": b, "accuracy": acc}
                       for b, acc, (m, w, a) in front],
        }

    report_path = out_dir / "report.md"
    atomic_write_bytes(report_path, "\n".join(md).encode())
    return {"report": report_path, "figures": figures, "groups": headlines}

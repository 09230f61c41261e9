"""Sweep report: the paper's Table 1, Fig. 4 and Fig. 5 recomputed from sweep records (sweep.py).

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

from pathlib import Path

import numpy as np

from siq.training.errors import SiqError
from siq.training.fileio import atomic_write_bytes

from .aggregate import (FLOAT_METHOD, LOW_BITS, METHOD_LABELS, Group, Stat, bits_order, method_rank, aggregate,
                        bits_label, cell, fewest_weight_bits, low_bit_mean, method_color, method_label, pareto_front,
                        pct)
from .figures import fig4, fig5, heatmap, pareto
from .records import read_results

__all__ = ["PAPER_MNIST", "PAPER_OFFICE", "paper_reference_for", "render_report", "table1_markdown",
           "paper_table_markdown", "aggregate", "fewest_weight_bits", "low_bit_mean", "pareto_front", "method_label",
           "method_color", "cell", "Group", "Stat", "LOW_BITS", "METHOD_LABELS"]

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



# ---------------------------------------------------------------- text

def _stat_text(stat: Stat | None) -> str:
    if stat is None:
        return "—"
    if stat.n > 1:
        return f"{pct(stat.mean)} ({pct(stat.low)}–{pct(stat.high)})"
    return pct(stat.mean)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def table1_markdown(group: Group) -> str:
    """Error rate (%) grid: rows method x activation bits, columns weight bits; float row and column included."""
    header = ["method", "act bits"] + [f"w={bits_label(w)}" for w in group.weight_bits]
    rows = []
    for method in group.methods:
        for a in group.act_bits:
            rows.append([method_label(method), bits_label(a)]
                        + [_stat_text(cell(group, method, w, a)) for w in group.weight_bits])
    if not group.methods:  # only float-weight cells were swept
        for a in group.act_bits:
            rows.append([METHOD_LABELS[FLOAT_METHOD], bits_label(a)]
                        + [_stat_text(cell(group, FLOAT_METHOD, w, a)) for w in group.weight_bits])
    return _markdown_table(header, rows)


def paper_table_markdown(table: dict) -> str:
    weight_bits = bits_order(w for rows in table.values() for row in rows.values() for w in row)
    header = ["method", "act bits"] + [f"w={bits_label(w)}" for w in weight_bits]
    rows = []
    for method in sorted(table, key=method_rank):
        for a in sorted(table[method]):
            rows.append([method_label(method), str(a)]
                        + [pct(table[method][a].get(w)) for w in weight_bits])
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
               f"{', '.join(map(str, group.n_test)) or '?'}; float network error: {pct(group.float_error)}%"
               + (f" ({pct(min(group.float_errors))}–{pct(max(group.float_errors))})"
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
                   f"(w, {act_bits}-bit activations) ≤ float error ({pct(group.float_error)}%) + tolerance; "
                   "— = no swept width reaches it.", ""]
            header = ["method"] + [f"tolerance +{t:g} pp" if t else "strict (+0 pp)" for t in tolerances_pp]
            ref_bits = (reference or {}).get("fewest_weight_bits") or {}
            if ref_bits:
                header.append(f"paper (at {reference.get('act_bits', '?')}-bit inputs)")
            rows = []
            for m in group.methods:
                row = [method_label(m)] + [bits_label(fewest[k][m]) if fewest[k][m] else "—"
                                                   for k in tol_keys]
                if ref_bits:
                    row.append(str(ref_bits.get(m.split("@")[0], "—")))
                rows.append(row)
            md += [_markdown_table(header, rows), ""]
            if reference and reference.get("float_error") is not None:
                md += [f"Paper float error: {pct(reference['float_error'])}%.", ""]
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
            rows = [[method_label(m), pct(means[m]) + (f" ({pct(ranges[m][0])}–{pct(ranges[m][1])})"
                                                              if len(group.seeds) > 1 else "")]
                    + ([pct(reference_means.get(m.split("@")[0]))] if reference_means else []) for m in means]
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
            rows = [[method_label(m), str(w), str(a), f"{b:.0f}", pct(acc)] for b, acc, (m, w, a) in front]
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

"""Sweep records grouped and averaged: one Group per (dataset, architecture), one Stat per cell over seeds, and the
rules the report states (fewest weight bits reaching the float error, the 1-4 x 1-4 mean, the Pareto front)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from .grid import FLOAT_METHOD

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


def bits_order(values) -> list:
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
        methods = sorted({m for m, _, _ in stats if m != FLOAT_METHOD}, key=method_rank)
        groups.append(Group(dataset, arch, sorted({r["seed"] for r in rs}), list(float_by_model.values()), stats,
                            methods, bits_order(w for _, w, _ in stats), bits_order(a for _, _, a in stats),
                            sorted({int(r["n_test"]) for r in rs if r.get("n_test") is not None})))
    return groups


def method_rank(method: str):
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

def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def bits_label(b) -> str:
    return "float" if b is None else str(b)

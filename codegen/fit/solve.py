"""Allocation: one choice per weighted layer (index width, codebook per channel or not) minimising the summed
sensitivity under additive budgets (flash bytes, instructions).

exact(): dynamic programming over the layers on Pareto fronts. After layer l the front holds, for every cost
vector reachable by some choice of layers 0..l, the least summed sensitivity, keeping only points that no other
point beats in every cost and in sensitivity (a dominated partial choice can never complete to a better whole
one, since costs and sensitivities add). The last front, cut to the budgets and sorted by sensitivity, is the
list of candidates: the optimum first, then the next best, which the fit takes when a measured model exceeds a
budget. Costs are whole numbers (bytes, instructions), so the fronts are exact.

greedy(): the ablation, TI's automatic mixed precision: every layer starts at its widest choice, and the step
down (to the next narrower choice of one layer) with the least sensitivity increase per byte saved is taken
until the model fits. The fit runs it on the Hessian estimates of the sensitivities (sensitivity.py), as TI does.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np


@dataclass(frozen=True)
class Choice:
    """One layer's option: its index width, codebook per output channel, what it costs and how much the
    validation loss rises when the layer alone is quantized so (sensitivity)."""
    layer: int
    bits: int
    per_channel: bool
    costs: tuple[int, ...]      # (flash bytes[, instructions]) this layer adds
    sensitivity: float


@dataclass(frozen=True)
class Allocation:
    choices: tuple[Choice, ...]  # one per layer, in layer order

    @property
    def sensitivity(self) -> float:
        return sum(c.sensitivity for c in self.choices)

    @property
    def costs(self) -> tuple[int, ...]:
        return tuple(sum(c.costs[k] for c in self.choices) for k in range(len(self.choices[0].costs)))

    @property
    def bits(self) -> dict[int, int]:
        return {c.layer: c.bits for c in self.choices}

    @property
    def per_channel(self) -> frozenset[int]:
        return frozenset(c.layer for c in self.choices if c.per_channel)


def _fits(costs, budgets) -> bool:
    return all(c <= b for c, b in zip(costs, budgets))


def _prune(points: list[tuple[tuple[int, ...], float, tuple]]) -> list:
    """The points no other point beats (lower or equal in every cost and in sensitivity, strictly in one);
    of equal points the first is kept. Sorting by (costs, sensitivity) puts every dominating point before the
    points it dominates."""
    points = sorted(points, key=lambda p: (p[0], p[1]))
    kept: list = []
    if not points:
        return kept
    if len(points[0][0]) == 1:  # one budget: kept points grow in cost and fall in sensitivity
        for point in points:
            if not kept or point[1] < kept[-1][1]:
                kept.append(point)
        return kept
    # several budgets: compare each point with the kept ones at once (kept rows: costs..., sensitivity)
    table = np.empty((len(points), len(points[0][0]) + 1))
    for costs, loss, path in points:
        row = (*costs, loss)
        if len(kept) and np.any(np.all(table[:len(kept)] <= row, axis=1)):
            continue
        table[len(kept)] = row
        kept.append((costs, loss, path))
    return kept


def exact(options: list[list[Choice]], budgets: tuple[int, ...], limit: int = 20) -> list[Allocation]:
    """Up to `limit` allocations within the budgets (budgets: one per cost; what the layers may spend after the
    fixed part), best (least summed sensitivity) first; [] when none fits. options: per layer, its choices."""
    front = [(tuple(0 for _ in budgets), 0.0, ())]
    for layer in options:
        grown = []
        for costs, loss, path in front:
            for choice in layer:
                total = tuple(a + b for a, b in zip(costs, choice.costs))
                if _fits(total, budgets):  # costs only grow: a partial choice over a budget stays over it
                    grown.append((total, loss + choice.sensitivity, path + (choice,)))
        front = _prune(grown)
        if not front:
            return []
    ranked = sorted(front, key=lambda p: (p[1], p[0]))
    return [Allocation(path) for _, _, path in ranked[:limit]]


def greedy(options: list[list[Choice]], budgets: tuple[int, ...]) -> Allocation | None:
    """TI-style greedy: start at each layer's most expensive choice; repeatedly take the cheaper neighbour
    (next lower flash cost) of one layer with the least sensitivity increase per flash byte saved, until every
    budget holds. None when even the cheapest choices do not fit."""
    ladders = [sorted(layer, key=lambda c: (c.costs[0], c.sensitivity)) for layer in options]
    at = [len(ladder) - 1 for ladder in ladders]
    while True:
        current = Allocation(tuple(ladder[i] for ladder, i in zip(ladders, at)))
        if _fits(current.costs, budgets):
            return current
        steps = []
        for layer, (ladder, i) in enumerate(zip(ladders, at)):
            if i == 0:
                continue
            now, down = ladder[i], ladder[i - 1]
            saved = now.costs[0] - down.costs[0]
            rise = down.sensitivity - now.sensitivity
            steps.append((rise / saved if saved > 0 else float("inf"), layer))
        if not steps:
            return None
        at[min(steps)[1]] -= 1


def brute_force(options: list[list[Choice]], budgets: tuple[int, ...]) -> Allocation | None:
    """Every combination (for tests on small instances): the least summed sensitivity within the budgets."""
    best = None
    for combo in product(*options):
        allocation = Allocation(tuple(combo))
        if _fits(allocation.costs, budgets) and (best is None or allocation.sensitivity < best.sensitivity):
            best = allocation
    return best

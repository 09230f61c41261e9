"""report.md and fit.json of a fit: the per-layer table, the measured model against its budgets, the candidates
tried, the greedy ablation, the single-width models and the exact solver's front of flash against summed
sensitivity."""
from __future__ import annotations

from .budget import Budget
from .configfile import config_dict
from .run import FitResult
from .sensitivity import choice_name
from .solve import Allocation


def _layer_rows(result: FitResult) -> list[str]:
    cm = result.cost
    shapes = {l.index: l for l in cm.layers}
    rows = ["| layer | kind | weights | bits | codebook | flash (B) | sensitivity | greedy |",
            "|---|---|---|---|---|---|---|---|"]
    ablation = {c.layer: c for c in result.greedy.choices} if result.greedy else {}
    for c in result.allocation.choices:
        shape = shapes[c.layer]
        g = ablation.get(c.layer)
        rows.append(f"| {c.layer} | {shape.kind} | {shape.weights:,} | {c.bits} | "
                    f"{'per channel' if c.per_channel else 'per layer'} | {c.costs[0]:,} | {c.sensitivity:+.4f} | "
                    + (choice_name(g.bits, g.per_channel) if g else "-") + " |")
    return rows


def _single_width_rows(result: FitResult, budget: Budget) -> list[str]:
    cm = result.cost
    rows = ["| width (all layers) | flash (B, predicted) | fits | summed sensitivity |", "|---|---|---|---|"]
    for bits in range(1, 9):
        flash = cm.flash({l.index: bits for l in cm.layers})
        measured = [result.sensitivity["layers"][l.index].get(choice_name(bits, False)) for l in cm.layers]
        loss = "-" if None in measured else f"{sum(measured):+.4f}"  # widths outside the search: not measured
        rows.append(f"| {bits} | {flash:,} | {'yes' if flash <= budget.flash else 'no'} | {loss} |")
    return rows


def best_single_width(result: FitResult, budget: Budget) -> int | None:
    """The widest single width (all layers, one codebook each) whose predicted flash fits the budget."""
    cm = result.cost
    fits = [b for b in range(1, 9) if cm.flash({l.index: b for l in cm.layers}) <= budget.flash]
    return max(fits) if fits else None


def _summary(allocation: Allocation | None, fixed: int) -> str:
    if allocation is None:
        return "none fits"
    return (f"{', '.join(f'{c.layer}={choice_name(c.bits, c.per_channel)}' for c in allocation.choices)}: "
            f"predicted flash {fixed + allocation.costs[0]:,} B, summed sensitivity {allocation.sensitivity:+.4f}")


def report_dict(result: FitResult, budget: Budget, method: str) -> dict:
    return {"budget": {"flash": budget.flash, "ram": budget.ram, "insns": budget.insns, "cpu": budget.cpu},
            "method": method, "config": config_dict(result.config), "measured": result.measured,
            "accuracy": result.accuracy, "tried": result.tried, "fixed_flash": result.cost.fixed,
            "sensitivity": {"baseline": result.sensitivity["baseline"],
                            "layers": {str(k): v for k, v in result.sensitivity["layers"].items()},
                            "points": {str(k): v for k, v in result.sensitivity.get("points", {}).items()}},
            "greedy": None if result.greedy is None else {"bits": result.greedy.bits,
                                                          "per_channel": sorted(result.greedy.per_channel),
                                                          "sensitivity": result.greedy.sensitivity},
            "best_single_width": best_single_width(result, budget),
            "point_widths": {str(p): w for p, w in sorted(result.point_widths.items())},
            "front": [{"flash": f, "sensitivity": s} for f, s in result.front]}


def report_markdown(result: FitResult, budget: Budget, method: str) -> str:
    m, acc = result.measured, result.accuracy
    lines = [f"# siq fit: {result.cost.arch.name} within {budget.describe()}", "",
             f"Method {method}, activations {result.config.act_bits} bits. Float test accuracy "
             f"{acc['float_test']:.4f}; the fitted model's integer test accuracy **{acc['test']:.4f}**.", "",
             f"Measured: read-only data {m['flash']:,} B ({'as linked' if m['linked'] else 'predicted, not linked'}"
             f"; the cost model planned {m['predicted_flash']:,} B), RAM {m['ram']:,} B"
             + (f", {m['insns']:,} instructions per inference on {budget.cpu}" if m.get("insns") else "") + ".", "",
             "## Per layer", "",
             "Sensitivity: the validation loss rise when the layer alone is quantized to that choice after training "
             f"(baseline loss {result.sensitivity['baseline']:.4f}). Flash: packed indices and codebook; "
             f"{result.cost.fixed:,} B of biases, op parameters and tables come on top.", ""]
    lines += _layer_rows(result)
    lines += ["", "## Ablation", "",
              f"- exact (dynamic programming): {_summary(result.allocation, result.cost.fixed)}",
              f"- greedy (TI's order: Hessian estimate 1/2 tr(H)/N ||w - Q(w)||^2 per byte saved; scored by the measured "
              f"rises): {_summary(result.greedy, result.cost.fixed)}", "",
              "## One width for all layers", ""]
    lines += _single_width_rows(result, budget)
    chosen = result.point_widths
    lines += ["", "## Activation points", "",
              "The validation loss rise over the float network when one point alone is quantized to a width (-1 is "
              "the input image). " + (f"The fit gives {', '.join(f'point {p} {w} bits' for p, w in chosen.items())}"
                                      f" and {result.config.act_bits} bits to the others (summed rise "
                                      f"{result.point_rise:+.4f} over {result.config.act_bits} bits everywhere); "
                                      f"arena {result.cost.arena_bytes:,} B." if chosen else
                                      f"Every point at {result.config.act_bits} bits."), ""]
    points = result.sensitivity.get("points", {})
    widths = sorted({int(w) for rises in points.values() for w in rises})
    lines += ["| point | " + " | ".join(f"{w} bits" for w in widths) + " |", "|---|" + "---|" * len(widths)]
    lines += [f"| {p} | " + " | ".join(f"{points[p][str(w)]:+.4f}" for w in widths) + " |" for p in sorted(points)]
    lines += ["", "## Candidates measured", "", "| candidate | bits | flash (B) | RAM (B) | instructions | verdict |",
              "|---|---|---|---|---|---|"]
    for t in result.tried:
        bits = ", ".join(f"{k}={v}" for k, v in t["bits"].items())
        mm = t["measured"]
        lines.append(f"| {t['candidate']} | {bits} | {mm['flash']:,} | {mm['ram']:,} | "
                     f"{mm['insns'] if mm['insns'] is not None else '-'} | "
                     f"{'; '.join(t['over']) if t['over'] else 'within budget'} |")
    lines += ["", "## Front of the exact solver (predicted flash against summed sensitivity)", "",
              "| flash (B) | summed sensitivity |", "|---|---|"]
    lines += [f"| {f:,} | {s:+.4f} |" for f, s in sorted(result.front)]
    return "\n".join(lines) + "\n"

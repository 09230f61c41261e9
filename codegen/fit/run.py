"""The fit: plan a per-layer configuration within the budgets, retrain it with the chosen method, measure it for
real, and take the next candidate while a measurement exceeds a budget.

    check_budget   before anything trains: the smallest model the architecture allows must fit (flash: every
                   layer at 1 bit with one codebook; RAM: the activation arena), else one line saying how small
    train          the float network on the training data less a validation split (Dataset.split_validation)
    sensitivity    per layer, width and codebook layout, and per stored point and activation width, on that
                   validation split (sensitivity.py)
    allocate       exact() over the layers' choices with costs from cost.py (greedy() as the ablation); with
                   activation widths to search, once per combination of the points' widths worth weighing
                   (point_options), each with its own arena, fixed bytes and kernel costs
    retrain        the chosen configuration with the method, on the whole training split (as `siq quantize
                   --config` does it from the saved checkpoint and configuration)
    measure        linked for the core (read-only bytes, RAM) and run in QEMU for the instructions (measure.py);
                   over a budget: the next candidate. A model over a budget is never returned.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace

import numpy as np

from siq.training.arch import Arch
from siq.training.data import Dataset
from siq.training.errors import SiqError
from siq.training.integer import integer_scores
from siq.training.nets import Net, fold_batchnorm
from siq.training.quant import QuantizedModel, quantization_points
from siq.training.quantizers import QuantizeConfig, quantize_model
from siq.training.train import TrainConfig, accuracy, predict_scores, train_float

from ..lower import lower
from .budget import Budget
from .cost import CostModel, cost_model
from .insns import InstructionModel
from .measure import measure
from .sensitivity import choice_name, sensitivities
from .solve import Allocation, Choice, exact, greedy

MAX_CANDIDATES = 5  # retrained and measured at most; each retraining takes the method's whole schedule
MAX_POINT_COMBINATIONS = 4096  # activation-width combinations weighed (two widths a point: 12 points)


@dataclass
class FitResult:
    """What fit_model made: the configuration, the model, its measurements and how it was chosen."""
    config: QuantizeConfig
    allocation: Allocation
    model: QuantizedModel
    measured: dict
    tried: list = field(default_factory=list)       # every candidate measured, in order, with its verdict
    greedy: Allocation | None = None
    sensitivity: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)
    cost: CostModel | None = None
    front: list = field(default_factory=list)       # (flash, summed sensitivity) of the exact solver's front
    point_widths: dict = field(default_factory=dict)  # points given their own activation width
    point_rise: float = 0.0                         # their summed sensitivity over one width everywhere


def check_budget(cm: CostModel, budget: Budget, insn_model: InstructionModel | None = None,
                 narrowest: CostModel | None = None) -> None:
    """SiqError (one line, before training) when no configuration can fit: it names the smallest possible.
    narrowest: the cost model with every point at the narrowest activation width searched (its arena is the
    smallest any configuration has)."""
    smallest = cm.smallest_flash()
    if budget.flash < smallest:
        raise SiqError(f"flash budget {budget.flash:,} B is below the smallest model of {cm.arch.name!r}: "
                       f"{smallest:,} B of read-only data (every layer at 1 bit, one codebook per layer; "
                       f"{cm.fixed:,} B of it biases, op parameters and tables)")
    least = narrowest or cm
    if budget.ram is not None and budget.ram < least.arena_bytes:
        raise SiqError(f"RAM budget {budget.ram:,} B is below the activation arena of {cm.arch.name!r} at "
                       f"{least.act_bits if narrowest is None else min(dict(least.point_widths).values())}-bit "
                       f"activations: {least.arena_bytes:,} B (before the stack); lower --act-bits or raise --ram")
    if budget.insns is not None and insn_model is not None:
        least = insn_model.smallest(cm)
        if budget.insns < least:
            raise SiqError(f"instruction budget {budget.insns:,} is below the fewest instructions {cm.arch.name!r} "
                           f"can take on {budget.cpu}: about {least:,} per inference (the cheapest widths, "
                           "by the calibrated kernel costs)")


def choices(cm: CostModel, sens: dict, widths, per_channel=(False, True),
            insn_model: InstructionModel | None = None, measure: str = "layers") -> list[list[Choice]]:
    """Per weighted layer, every (width, per-channel) option with its costs and sensitivity (measure "layers":
    the measured loss rise; "hessian": its second-order estimate)."""
    out = []
    for layer in cm.layers:
        options = []
        for bits in widths:
            for channel in per_channel:
                costs = (cm.layer_flash(layer.index, bits, channel),)
                if insn_model is not None:
                    costs += (insn_model.layer(cm, layer.index, bits),)
                options.append(Choice(layer.index, bits, channel, costs,
                                      sens[measure][layer.index][choice_name(bits, channel)]))
        out.append(options)
    return out


def layer_budgets(cm: CostModel, budget: Budget, insn_model: InstructionModel | None) -> tuple[int, ...]:
    """What the weighted layers may spend: each budget less the fixed part."""
    out = (budget.flash - cm.fixed,)
    if budget.insns is not None and insn_model is not None:
        out += (budget.insns - insn_model.fixed(cm),)
    return out


def config_for(base: QuantizeConfig, allocation: Allocation, point_widths: dict | None = None) -> QuantizeConfig:
    return replace(base, layer_bits=dict(sorted(allocation.bits.items())), per_channel="none",
                   channel_layers=sorted(allocation.per_channel), point_widths=dict(sorted((point_widths or {}).items())))


def point_options(sens: dict, act_widths, act_bits: int) -> dict[int, list[int]]:
    """Per stored feature-map point (the input keeps its width), the activation widths worth weighing: of the
    widths asked for, the one with the least measured loss rise among those stored packed (<= 4 bits, two codes
    a byte) and the one among those stored as bytes. Any other width costs the same RAM, flash and instructions
    as one of these (the kernels and buffers depend on the storage, not the width) and loses more accuracy."""
    out = {}
    for point, rises in sorted(sens["points"].items()):
        if point == -1:
            continue
        kept = []
        for stored in ([w for w in act_widths if w <= 4], [w for w in act_widths if w > 4]):
            if stored:
                kept.append(min(stored, key=lambda w: (rises[str(w)], -w)))
        out[point] = sorted(kept)
    return out


def point_rise(sens: dict, widths: dict[int, int], act_bits: int) -> float:
    """Summed sensitivity of points given their own widths, over act_bits at each (one point alone at a width,
    the others float: point_sensitivities)."""
    return sum(sens["points"][p][str(w)] - sens["points"][p][str(act_bits)] for p, w in widths.items())


def check_point_search(arch: Arch, act_widths) -> None:
    """Refuse (before training) a search over more activation-width combinations than MAX_POINT_COMBINATIONS."""
    if act_widths is None:
        return
    classes = len({w <= 4 for w in act_widths})
    count = classes ** len(quantization_points(arch.folded()))
    if count > MAX_POINT_COMBINATIONS:
        raise SiqError(f"--act-widths: {arch.name!r} has {len(quantization_points(arch.folded()))} stored feature "
                       f"maps, {count:,} width combinations to weigh (at most {MAX_POINT_COMBINATIONS:,}): give "
                       "widths on one side of 4 bits only, or fix the points with --point-bits")


def narrowest_points(arch: Arch, base: QuantizeConfig, act_widths) -> CostModel | None:
    """The cost model with every stored point at the narrowest width searched (None: no search)."""
    if act_widths is None:
        return None
    return cost_model(arch, base.act_bits, base.input_bits, base.codebook_bits,
                      {p: min(act_widths) for p in quantization_points(arch.folded())})


def plan(arch: Arch, base: QuantizeConfig, sens: dict, budget: Budget, widths, per_channel, act_widths,
         insn_model: InstructionModel | None) -> list[tuple[float, dict, Allocation, CostModel]]:
    """Up to MAX_CANDIDATES (summed sensitivity, point widths, allocation, cost model), best first: the exact
    solver's best allocations of the weights for every combination of point widths whose arena fits the RAM
    budget (one combination, every point at act_bits, without act_widths)."""
    options = point_options(sens, act_widths, base.act_bits) if act_widths is not None else {}
    ranked = []
    for combination in itertools.product(*options.values()):
        point_widths = {p: w for p, w in zip(options, combination) if w != base.act_bits}
        cm = cost_model(arch, base.act_bits, base.input_bits, base.codebook_bits, point_widths)
        if budget.ram is not None and cm.arena_bytes > budget.ram:
            continue
        rise = point_rise(sens, point_widths, base.act_bits)
        for allocation in exact(choices(cm, sens, widths, per_channel, insn_model),
                                layer_budgets(cm, budget, insn_model), limit=MAX_CANDIDATES):
            ranked.append((allocation.sensitivity + rise, point_widths, allocation, cm))
    ranked.sort(key=lambda r: (r[0], r[2].costs, sorted(r[1].items())))
    return ranked[:MAX_CANDIDATES]


def _within(measured: dict, budget: Budget) -> list[str]:
    """The budgets a measurement exceeds, as words for the log ([] when it fits)."""
    over = []
    if measured["flash"] > budget.flash:
        over.append(f"flash {measured['flash']:,} > {budget.flash:,} B")
    if budget.ram is not None and measured["ram"] > budget.ram:
        over.append(f"RAM {measured['ram']:,} > {budget.ram:,} B")
    if budget.insns is not None and (measured["insns"] or 0) > budget.insns:
        over.append(f"instructions {measured['insns']:,} > {budget.insns:,}")
    return over


def fit_model(arch: Arch, data: Dataset, budget: Budget, base: QuantizeConfig, train_cfg: TrainConfig, *,
              validation: float = 0.1, split_seed: int = 0, widths=range(1, 9), per_channel=(False, True),
              solver: str = "exact", cpu: str | None = None, insn_model: InstructionModel | None = None,
              act_widths=None,
              cache_dir=None, net: Net | None = None, meta: dict | None = None, log=print) -> tuple[FitResult, Net]:
    """Fit `arch` (already fitted to `data`) to the budget; returns the result and the float network.

    net: a float network trained on data's training split less the validation split (trained here if None).
    cpu: the core the model is linked for (None: no toolchain, flash is the cost model's upper bound).
    solver: "exact" (dynamic programming) or "greedy" (the ablation).
    act_widths: activation widths a stored point may take (None: base.act_bits everywhere); the exact solver
    weighs them (point_options), the greedy ablation keeps base.act_bits."""
    cm = cost_model(arch, base.act_bits, base.input_bits, base.codebook_bits)
    check_point_search(arch, act_widths)
    check_budget(cm, budget, insn_model, narrowest_points(arch, base, act_widths))
    train_part, val = data.split_validation(validation, split_seed)
    if net is None:
        log(f"training {arch.name} on {len(train_part.train_x)} images ({len(val.test_x)} held out for "
            f"validation), {train_cfg.epochs} epochs")
        net, _ = train_float(arch, train_part.train_x, train_part.train_y, train_cfg)
    folded = fold_batchnorm(net)
    calib = data.train_x[np.random.default_rng(base.seed).permutation(len(data.train_x))[:base.calibration_images]]
    method = "uniform" if base.method == "uniform" else "kmeans"
    sens = sensitivities(folded, val.test_x, val.test_y, act_bits=base.act_bits, calibration=calib, widths=widths,
                         per_channel=per_channel, method=method, seed=base.seed, input_bits=base.input_bits,
                         cache_dir=cache_dir, log=log)
    options = choices(cm, sens, widths, per_channel, insn_model)
    budgets = layer_budgets(cm, budget, insn_model)
    flash_only = [[replace(c, costs=c.costs[:1]) for c in layer] for layer in options]
    front = exact(flash_only, (10**12,), limit=10**6)  # the report's front: flash against summed sensitivity
    # the ablation: TI's Hessian-aware greedy order, scored (like the exact solver's choice) by measured rises
    hessian_greedy = greedy(choices(cm, sens, widths, per_channel, insn_model, "hessian"), budgets)
    ablation = None if hessian_greedy is None else Allocation(tuple(
        next(o for o in layer if (o.bits, o.per_channel) == (c.bits, c.per_channel))
        for layer, c in zip(options, hessian_greedy.choices)))
    candidates = plan(arch, base, sens, budget, widths, per_channel, act_widths, insn_model) if solver == "exact" \
        else [(a.sensitivity, {}, a, cm) for a in [ablation] if a is not None]
    if not candidates:
        raise SiqError(f"no configuration of {arch.name!r} fits {budget.describe()} by the cost model")
    image = data.test_x[0] if budget.insns is not None else None
    tried = []
    for number, (total, point_widths, allocation, planned) in enumerate(candidates, 1):
        cfg = config_for(base, allocation, point_widths)
        log(f"candidate {number}: {describe(allocation, point_widths)}; predicted flash "
            f"{planned.fixed + allocation.costs[0]:,} B, arena {planned.arena_bytes:,} B; summed sensitivity "
            f"{total:.4f}")
        start = time.time()
        qm, _ = quantize_model(net, data.train_x, data.train_y, cfg, data.class_names, meta)
        measured = measure(qm, cpu, image)
        over = _within(measured, budget)
        tried.append({"candidate": number, "bits": allocation.bits, "per_channel": sorted(allocation.per_channel),
                      "point_widths": point_widths,
                      "measured": {k: measured[k] for k in ("flash", "ram", "insns", "linked", "predicted_flash")},
                      "over": over, "seconds": round(time.time() - start, 1)})
        log(f"candidate {number}: flash {measured['flash']:,} B ({'linked' if measured['linked'] else 'predicted'})"
            f", RAM {measured['ram']:,} B" + (f", {measured['insns']:,} instructions" if measured["insns"] else "")
            + (f": over budget ({'; '.join(over)}), next candidate" if over else ": within budget"))
        if not over:
            lm = lower(qm)
            acc = {"float_validation": accuracy(predict_scores(net, val.test_x), val.test_y, val.test_groups),
                   "float_test": accuracy(predict_scores(net, data.test_x), data.test_y, data.test_groups),
                   "test": accuracy(integer_scores(lm.integer, data.test_x), data.test_y, data.test_groups)}
            qm.meta["int_accuracy"] = acc["test"]
            result = FitResult(cfg, allocation, qm, measured, tried, ablation, sens, acc, planned,
                               [(cm.fixed + a.costs[0], a.sensitivity) for a in front], point_widths,
                               total - allocation.sensitivity)
            return result, net
    raise SiqError(f"none of the {len(candidates)} best configurations of {arch.name!r} fits {budget.describe()} "
                   f"when measured ({'; '.join(tried[-1]['over'])}): raise the budget")


def describe(allocation: Allocation, point_widths: dict | None = None) -> str:
    return ", ".join([f"layer {c.layer} {c.bits} bits" + (" per channel" if c.per_channel else "")
                      for c in allocation.choices] +
                     [f"point {p} at {w}-bit activations" for p, w in sorted((point_widths or {}).items())])

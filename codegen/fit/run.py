"""The fit: plan a per-layer configuration within the budgets, retrain it with the chosen method, measure it for
real, and take the next candidate while a measurement exceeds a budget.

    check_budget   before anything trains: the smallest model the architecture allows must fit (flash: every
                   layer at 1 bit with one codebook; RAM: the activation arena), else one line saying how small
    train          the float network on the training data less a validation split (Dataset.split_validation)
    sensitivity    per layer, width and codebook layout, on that validation split (sensitivity.py)
    allocate       exact() over the layers' choices with costs from cost.py (greedy() as the ablation)
    retrain        the chosen configuration with the method, on the whole training split (as `siq quantize
                   --config` does it from the saved checkpoint and configuration)
    measure        linked for the core (read-only bytes, RAM) and run in QEMU for the instructions (measure.py);
                   over a budget: the next candidate. A model over a budget is never returned.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from siq.training.arch import Arch
from siq.training.data import Dataset
from siq.training.errors import SiqError
from siq.training.integer import integer_scores
from siq.training.nets import Net, fold_batchnorm
from siq.training.quant import QuantizedModel
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


def check_budget(cm: CostModel, budget: Budget, insn_model: InstructionModel | None = None) -> None:
    """SiqError (one line, before training) when no configuration can fit: it names the smallest possible."""
    smallest = cm.smallest_flash()
    if budget.flash < smallest:
        raise SiqError(f"flash budget {budget.flash:,} B is below the smallest model of {cm.arch.name!r}: "
                       f"{smallest:,} B of read-only data (every layer at 1 bit, one codebook per layer; "
                       f"{cm.fixed:,} B of it biases, op parameters and tables)")
    if budget.ram is not None and budget.ram < cm.arena_bytes:
        raise SiqError(f"RAM budget {budget.ram:,} B is below the activation arena of {cm.arch.name!r} at "
                       f"{cm.act_bits}-bit activations: {cm.arena_bytes:,} B (before the stack); lower --act-bits "
                       f"or raise --ram")
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


def config_for(base: QuantizeConfig, allocation: Allocation) -> QuantizeConfig:
    return replace(base, layer_bits=dict(sorted(allocation.bits.items())), per_channel="none",
                   channel_layers=sorted(allocation.per_channel))


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
              cache_dir=None, net: Net | None = None, meta: dict | None = None, log=print) -> tuple[FitResult, Net]:
    """Fit `arch` (already fitted to `data`) to the budget; returns the result and the float network.

    net: a float network trained on data's training split less the validation split (trained here if None).
    cpu: the core the model is linked for (None: no toolchain, flash is the cost model's upper bound).
    solver: "exact" (dynamic programming) or "greedy" (the ablation)."""
    cm = cost_model(arch, base.act_bits, base.input_bits, base.codebook_bits)
    check_budget(cm, budget, insn_model)
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
    candidates = exact(options, budgets, limit=MAX_CANDIDATES) if solver == "exact" else \
        [a for a in [ablation] if a is not None]
    if not candidates:
        raise SiqError(f"no configuration of {arch.name!r} fits {budget.describe()} by the cost model")
    image = data.test_x[0] if budget.insns is not None else None
    tried = []
    for number, allocation in enumerate(candidates, 1):
        cfg = config_for(base, allocation)
        log(f"candidate {number}: {describe(allocation)}; predicted flash {cm.fixed + allocation.costs[0]:,} B; "
            f"summed sensitivity {allocation.sensitivity:.4f}")
        start = time.time()
        qm, _ = quantize_model(net, data.train_x, data.train_y, cfg, data.class_names, meta)
        measured = measure(qm, cpu, image)
        over = _within(measured, budget)
        tried.append({"candidate": number, "bits": allocation.bits, "per_channel": sorted(allocation.per_channel),
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
            result = FitResult(cfg, allocation, qm, measured, tried, ablation, sens, acc, cm,
                               [(cm.fixed + a.costs[0], a.sensitivity) for a in front])
            return result, net
    raise SiqError(f"none of the {len(candidates)} best configurations of {arch.name!r} fits {budget.describe()} "
                   f"when measured ({'; '.join(tried[-1]['over'])}): raise the budget")


def describe(allocation: Allocation) -> str:
    return ", ".join(f"layer {c.layer} {c.bits} bits" + (" per channel" if c.per_channel else "")
                     for c in allocation.choices)

"""A study's [[fit]] entries (training/experiments/study.py): at every budget and seed, the fitted model (one
record per solver) and the best single width beside it (every layer at one width, one codebook per layer, the
widest whose linked read-only data fits), each retrained with the same method and scored on the test split.

Records (one JSON object per line in the results file), in order budget x seed x (solvers..., single):
    dataset, arch, method, budget (bytes), kind ("fit" or "single"), solver (exact / greedy; null for single),
    seed, bits ({layer: width}), per_channel (layers), flash (read-only bytes as linked, or predicted when no
    toolchain), linked, predicted_flash, sensitivity (summed; fit only), accuracy (integer test accuracy),
    float_accuracy, cell (cache key).
Cells are cached in <cache>/fit-cells/<cell>.json and float networks in <cache>/fit-models/<key>.pt, so an
interrupted study resumes; sensitivities are cached by sensitivity.py.
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from siq.training.errors import SiqError
from siq.training.experiments.cache import digest, model_key
from siq.training.experiments.grid import parse_bits
from siq.training.experiments.study import Fit, Run
from siq.training.experiments.sweep import prepare_data
from siq.training.fileio import atomic_write_bytes
from siq.training.integer import integer_scores
from siq.training.quantizers import QuantizeConfig, quantize_model
from siq.training.train import accuracy, load_checkpoint, predict_scores, save_checkpoint, train_float

from ..lower import lower
from ..preflight import preflight
from ..target.toolchain import toolchain_status
from .budget import Budget, parse_size
from .cost import cost_model
from .measure import measure
from .run import check_budget, fit_model


def _configs(o: dict, seed: int):
    """(TrainConfig, QuantizeConfig) of a fit's options, through the sweep's own option mapping."""
    options = {**o, "methods": [o["method"]], "weight_bits": "4", "act_bits": str(o.get("act_bits", 4)),
               "split": "test", "seeds": [seed]}
    args = Run(0, options, "test", o["results"]).sweep_arguments()
    # one codebook per layer unless the fit chooses otherwise: the single-width baseline is defined so
    base = QuantizeConfig(method=o["method"], act_bits=o.get("act_bits", 4), input_bits=o.get("input_bits"),
                          codebook_bits=args["codebook_bits"], calibration=args["calibration"], seed=seed,
                          siq=args["siq_cfg"], plus=args["plus_cfg"], per_channel="none")
    return replace(args["train_cfg"], seed=seed), base


def _config_text(base: QuantizeConfig) -> str:
    """The configuration as a cell key reads it: a field at its neutral value (what the configuration meant
    before the field existed) is left out, so adding a field keeps every cached cell's key."""
    fields = asdict(base)
    if not fields["point_widths"]:
        del fields["point_widths"]
    return json.dumps(fields, sort_keys=True, default=str)


def _float_net(ds, arch, data_digest: str, tcfg, validation: float, split_seed: int, cache: Path):
    key = model_key(digest(data_digest, "fit validation", validation, split_seed), arch, tcfg)
    path = cache / "fit-models" / f"{key}.pt"
    if path.is_file():
        try:
            return load_checkpoint(path)[0], key
        except SiqError:
            pass  # unreadable: train again
    train_part, _ = ds.split_validation(validation, split_seed)
    net, _ = train_float(arch, train_part.train_x, train_part.train_y, tcfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, net, {"spec": "fit study", "digest": data_digest}, tcfg, {})
    return net, key


def _single(net, ds, arch, budget: Budget, base: QuantizeConfig, widths, cpu) -> dict | None:
    """The widest single width whose model links within the budget (narrower ones tried while over)."""
    cm = cost_model(arch, base.act_bits, base.input_bits, base.codebook_bits)
    for bits in sorted(widths, reverse=True):
        layer_bits = {l.index: bits for l in cm.layers}
        if cm.flash(layer_bits) > budget.flash and bits != min(widths):
            continue
        cfg = replace(base, layer_bits=layer_bits)
        qm, _ = quantize_model(net, ds.train_x, ds.train_y, cfg, ds.class_names)
        measured = measure(qm, cpu)
        if measured["flash"] <= budget.flash:
            acc = accuracy(integer_scores(lower(qm).integer, ds.test_x), ds.test_y, ds.test_groups)
            return {"bits": {str(k): v for k, v in layer_bits.items()}, "per_channel": [], "accuracy": acc,
                    **{k: measured[k] for k in ("flash", "linked", "predicted_flash")}}
    return None


def run_fit_entry(entry: Fit, results_dir: str | Path, cache_dir: str | Path, log=print) -> list[dict]:
    """Every cell of one [[fit]] (cached), written to its results file; returns the records."""
    o, cache = entry.options, Path(cache_dir)
    subset = None if "train_size" not in o and "test_size" not in o else (o.get("train_size"), o.get("test_size"))
    ds, arch, data_digest = prepare_data(o["dataset"], o.get("arch", "paper-mnist"), o.get("data_dir"),
                                         o.get("split_seed", 0), subset=subset)
    cpu = o.get("cpu", "cortex-m4") if toolchain_status()["ok"] else None
    widths = parse_bits(o.get("widths", "1-8"))
    seeds = o.get("seeds", [0])
    records = []
    for budget_text in o["budgets"]:
        budget = Budget(parse_size(str(budget_text), "a study budget"))
        for seed in [seeds] if isinstance(seeds, int) else seeds:
            tcfg, base = _configs(o, seed)
            net, model = _float_net(ds, arch, data_digest, tcfg, o["validation"], o.get("split_seed", 0), cache)
            float_acc = accuracy(predict_scores(net, ds.test_x), ds.test_y, ds.test_groups)
            for kind in [("fit", s) for s in o.get("solvers", ["exact"])] + \
                    ([("single", None)] if o.get("single_width", True) else []):
                cell = digest("fit cell", model, budget.flash, kind, _config_text(base), widths, cpu)[:24]
                path = cache / "fit-cells" / f"{cell}.json"
                if path.is_file():
                    records.append(json.loads(path.read_text()))
                    continue
                if kind[0] == "fit":
                    result, _ = fit_model(arch, ds, budget, base, tcfg, validation=o["validation"],
                                          split_seed=o.get("split_seed", 0), widths=widths, solver=kind[1],
                                          cpu=cpu, cache_dir=cache, net=net, log=log)
                    measured = {k: result.measured[k] for k in ("flash", "linked", "predicted_flash")}
                    part = {"bits": {str(k): v for k, v in result.allocation.bits.items()},
                            "per_channel": sorted(result.allocation.per_channel), "accuracy": result.accuracy["test"],
                            "sensitivity": result.allocation.sensitivity, **measured}
                else:
                    part = _single(net, ds, arch, budget, base, widths, cpu)
                    if part is None:
                        log(f"no single width fits {budget.flash:,} B")
                        continue
                record = {"dataset": o["dataset"], "arch": arch.name, "method": o["method"], "budget": budget.flash,
                          "kind": kind[0], "solver": kind[1], "seed": seed, **part, "float_accuracy": float_acc,
                          "cell": cell}
                atomic_write_bytes(path, (json.dumps(record) + "\n").encode())
                log(f"{kind[0]} {kind[1] or ''} at {budget.flash:,} B, seed {seed}: flash {record['flash']:,} B, "
                    f"accuracy {record['accuracy']:.4f}")
                records.append(record)
    atomic_write_bytes(Path(results_dir) / entry.results, "".join(json.dumps(r) + "\n" for r in records).encode())
    return records


def preflight_fits(fits) -> None:
    """Every [[fit]] checked before anything trains: data, architecture, method, and each budget against the
    smallest model the architecture allows."""
    for entry in fits:
        o = entry.options
        base = _configs(o, 0)[1]
        checked = preflight(o["dataset"], o.get("arch", "paper-mnist"), data_dir=o.get("data_dir"),
                            split_seed=o.get("split_seed", 0), batch_size=o.get("batch_size", 64), quant_cfg=base)
        cm = cost_model(checked.arch, base.act_bits, base.input_bits, base.codebook_bits)
        for budget in o["budgets"]:
            check_budget(cm, Budget(parse_size(str(budget), f"fit {entry.number}: budget")))

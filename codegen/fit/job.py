"""`siq fit` as one job into one output folder: float.pt (the float network, trained on the training split less
the validation split), quantized.pt, fit-config.json (`siq quantize float.pt --config fit-config.json` makes
the same quantized.pt again), report.md and fit.json."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from siq.training.errors import SiqError
from siq.training.fileio import atomic_directory
from siq.training.quant import save_quantized
from siq.training.quantizers import QuantizeConfig
from siq.training.train import TrainConfig, accuracy, predict_scores, save_checkpoint, train_float

from ..export import json_default
from ..pipeline import OUTPUT_MARKER, dataset_meta, without_timings
from ..preflight import preflight
from ..target.toolchain import toolchain_status
from .budget import Budget
from .configfile import write_config
from .cost import cost_model
from .insns import load_instruction_model
from .report import report_dict, report_markdown
from .run import FitResult, check_budget, check_point_search, fit_model, narrowest_points

CONFIG_FILE = "fit-config.json"


def link_cpu(budget: Budget, link: bool = True) -> str | None:
    """The core the fitted model is linked for: the budget's, else cortex-m4 when the toolchain is here (None:
    no toolchain, flash is the cost model's upper bound). RAM and instruction budgets need the toolchain."""
    available = link and toolchain_status()["ok"]
    if not available and (budget.ram is not None or budget.insns is not None):
        raise SiqError("RAM and instruction budgets are measured on the linked firmware: arm-none-eabi-gcc and "
                       "qemu-system-arm are needed (make setup installs them)")
    if not available:
        return None
    return budget.cpu or "cortex-m4"


def run_fit(out: Path, dataset: str, arch: str, budget: Budget, base: QuantizeConfig, tcfg: TrainConfig, *,
            validation: float = 0.1, widths=range(1, 9), per_channel=(False, True), solver: str = "exact",
            data_dir=None, split_seed: int = 0, cache_dir=None, force: bool = False, link: bool = True,
            allow_large: bool = False, act_widths=None, log=print) -> FitResult:
    if solver not in ("exact", "greedy"):
        raise SiqError(f"solver must be exact or greedy, got {solver!r}")
    if not 0.0 < validation < 1.0:
        raise SiqError(f"the validation fraction must be in (0, 1), got {validation}")
    cpu = link_cpu(budget, link)
    checked = preflight(dataset, arch, data_dir=data_dir, split_seed=split_seed, batch_size=tcfg.batch_size,
                        quant_cfg=base, allow_large=allow_large)
    insn_model = load_instruction_model(budget.cpu) if budget.insns is not None else None
    if budget.insns is not None and insn_model is None:
        log(f"note: no calibrated kernel costs for {budget.cpu} (python -m siq.codegen.fit.insns --cpu "
            f"{budget.cpu}): the plan ignores the instruction budget, each candidate's real count is checked")
    check_point_search(checked.arch, act_widths)
    check_budget(cost_model(checked.arch, base.act_bits, base.input_bits, base.codebook_bits), budget, insn_model,
                 narrowest_points(checked.arch, base, act_widths))
    data = checked.data
    identity = "siq fit " + hashlib.sha256(json.dumps(
        [dataset, arch if isinstance(arch, str) else checked.arch.to_dict(), asdict(budget), asdict(base),
         asdict(tcfg), validation, list(widths), list(per_channel), solver, data_dir, split_seed,
         None if act_widths is None else list(act_widths)],
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    with atomic_directory(out, force=force, marker=OUTPUT_MARKER, identity=identity) as tmp:
        train_part, val = data.split_validation(validation, split_seed)
        log(f"training {checked.arch.name} on {len(train_part.train_x)} images ({len(val.test_x)} held out for "
            f"validation), {tcfg.epochs} epochs")
        net, history = train_float(checked.arch, train_part.train_x, train_part.train_y, tcfg)
        float_acc = accuracy(predict_scores(net, data.test_x), data.test_y, data.test_groups)
        ds_meta = dataset_meta(data, dataset, data_dir, split_seed)
        save_checkpoint(tmp / "float.pt", net, ds_meta, tcfg, {"float_accuracy": float_acc, "history": history,
                                                                "validation": validation})
        info = {"arch": net.arch.name, "dataset": ds_meta, "float_accuracy": float_acc}
        result, _ = fit_model(checked.arch, data, budget, base, tcfg, validation=validation, split_seed=split_seed,
                              widths=widths, per_channel=per_channel, solver=solver, cpu=cpu,
                              insn_model=insn_model, cache_dir=cache_dir, net=net, meta=info,
                              act_widths=act_widths, log=log)
        save_quantized(tmp / "quantized.pt", without_timings(result.model))
        write_config(result.config, tmp / CONFIG_FILE)
        (tmp / "report.md").write_text(report_markdown(result, budget, base.method))
        (tmp / "fit.json").write_text(json.dumps(report_dict(result, budget, base.method), indent=2,
                                                 sort_keys=True, default=json_default) + "\n")
    log(f"fitted {checked.arch.name}: read-only data {result.measured['flash']:,} B within {budget.flash:,} B, "
        f"integer test accuracy {result.accuracy['test']:.4f}; {out / 'report.md'}")
    return result

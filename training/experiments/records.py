"""Result records: the fields every record starts with, the settings a record states beside its cache keys, and
reading results files back (JSON lines, one record per cell)."""
from __future__ import annotations

import json
from pathlib import Path

from siq.training.errors import SiqError
from siq.training.quantizers import RETRAINING_METHODS, SIQPlusConfig, method_variant

from .cache import cell_quantize_fields
from .grid import Cell

RECORD_FIELDS = ("dataset", "arch", "method", "weight_bits", "conv_bits", "fc_bits", "act_bits", "accuracy",
                 "error", "weights_bytes", "seed", "seconds", "float_accuracy", "n_test", "evaluator",
                 "quantize_act_bits", "codebook_bits", "history", "cell", "model", "cached")


def retraining_dropout(cell: Cell, qcfg: dict) -> float | None:
    """SIQ retraining's dropout rate for this cell where it was set apart from the architecture's; None otherwise,
    and for cells that are not retrained."""
    if cell.weight_bits is None or method_variant(cell.method)[0] not in RETRAINING_METHODS:
        return None
    return qcfg["siq"].get("dropout")


def distillation(cell: Cell, qcfg: dict) -> list[float] | None:
    """[weight, temperature] of siq+'s distillation term where it was set apart from the default; None otherwise
    (and for cells that do not distil)."""
    if cell.weight_bits is None:
        return None
    base, off = method_variant(cell.method)
    if base != "siq+":
        return None
    plus = cell_quantize_fields(qcfg, cell.method)["plus"]
    default = SIQPlusConfig().without(off)
    if (plus["distill"], plus["temperature"]) == (default.distill, default.temperature):
        return None
    return [plus["distill"], plus["temperature"]]


def learned_steps_setting(cell: Cell, qcfg: dict, name: str):
    """A setting of siq+'s learned activation steps for this cell (real_steps: real feature-map steps folded into
    powers of two; progressive_acts: the extra activation bits it started from); None for cells without them."""
    if cell.weight_bits is None or method_variant(cell.method)[0] != "siq+":
        return None
    plus = cell_quantize_fields(qcfg, cell.method)["plus"]
    return plus[name] if plus["learn_act_steps"] else None


def ordered_record(record: dict) -> dict:
    return {k: record.get(k) for k in RECORD_FIELDS} | {k: v for k, v in record.items() if k not in RECORD_FIELDS}


def read_results(paths) -> list[dict]:
    """Records of one or several JSON-lines result files; a cell present twice keeps its last record."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    by_cell: dict = {}
    for path in paths:
        path = Path(path)
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise SiqError(f"cannot read sweep results {path}: {exc.strerror}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SiqError(f"{path}:{number}: not a JSON record ({exc.msg})") from None
            missing = [k for k in ("dataset", "arch", "method", "conv_bits", "act_bits", "error", "seed")
                       if k not in record]
            if missing:
                raise SiqError(f"{path}:{number}: not a sweep record (missing {', '.join(missing)})")
            by_cell[record.get("cell") or (path, number)] = record
    return list(by_cell.values())

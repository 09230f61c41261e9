"""The grid of a sweep: bit-width lists ("1-4,8,float") and the cells (method x weight bits x activation bits x
seed) in the fixed order results files keep."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from siq.training.errors import SiqError
from siq.training.quant import check_bits

FLOAT_METHOD = "float"            # method recorded for cells with float weights (they do not depend on the method)

# ---------------------------------------------------------------- bit lists

def parse_bits(spec: str) -> list[int | None]:
    """A bit-width list from text: comma-separated widths 1..8, ranges "a-b", and "float" (-> None).

    The result is sorted, without repeats, None last:

    >>> parse_bits("1-4,8,float")
    [1, 2, 3, 4, 8, None]
    >>> parse_bits(" 6, 2-3 ,3")
    [2, 3, 6]
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SiqError(f"empty bit-width list {spec!r}: give widths 1..8, ranges like 1-4, or 'float'")
    widths: set[int] = set()
    has_float = False
    for item in spec.split(","):
        item = item.strip()
        if item.lower() == "float":
            has_float = True
            continue
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", item)
        if not match:
            raise SiqError(f"bad bit width {item!r} in {spec!r}: use whole numbers 1..8, ranges like 1-4, "
                           "or 'float'")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if not (1 <= low <= 8 and 1 <= high <= 8):
            raise SiqError(f"bit width {item!r} in {spec!r} is outside 1..8")
        if low > high:
            raise SiqError(f"bit-width range {item!r} in {spec!r} runs backwards: write {high}-{low}")
        widths.update(range(low, high + 1))
    return sorted(widths) + ([None] if has_float else [])


def check_bit_list(values, what: str) -> list[int | None]:
    if isinstance(values, str):
        return parse_bits(values)
    values = list(values)
    if not values:
        raise SiqError(f"{what}: empty list")
    checked = [check_bits(v, what, allow_float=True) for v in values]
    return sorted({v for v in checked if v is not None}) + ([None] if None in checked else [])



@dataclass(frozen=True)
class Cell:
    """One point of the grid; weight_bits/act_bits None = float."""
    method: str
    weight_bits: int | None
    act_bits: int | None
    seed: int


def cells_for(methods: Sequence[str], weight_bits, act_bits, seeds: Sequence[int]) -> list[Cell]:
    """The grid in a fixed order (seed, method, weight bits, act bits); float-weight cells once, method "float"."""
    cells = []
    for seed in seeds:
        for a in act_bits:
            if None in weight_bits:
                cells.append(Cell(FLOAT_METHOD, None, a, seed))
        for method in methods:
            for w in weight_bits:
                if w is None:
                    continue
                for a in act_bits:
                    cells.append(Cell(method, w, a, seed))
    return cells



"""Budgets as people write them: sizes in bytes ("6144", "6KB", "6 KiB", "1.5K", "2MB") and instruction counts
("300000", "300k", "1.2M"), each refused in one line when zero, negative or unreadable.

Sizes use the embedded convention: K/KB/KiB = 1024 bytes, M/MB/MiB = 1024^2 (a flash part sold as "64 KB" has
65,536 bytes). Counts are decimal: k = 1,000, M = 1,000,000, G = 10^9. A size or count must come out a whole
number ("1.5K" = 1,536 B; "0.3k" instructions = 300; "1.1B" is refused).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from siq.training.errors import SiqError

SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2}
COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_NUMBER = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*([a-z]*)\s*$", re.I)


def _parse(text: str, units: dict, what: str, example: str) -> int:
    match = _NUMBER.match(str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in units:
        raise SiqError(f"{what} must be a number with an optional unit ({example}), got {text!r}")
    value = float(match.group(1)) * units[unit]
    if not math.isfinite(value):
        raise SiqError(f"{what} must be a finite number with an optional unit ({example}), got {text!r}")
    if value <= 0:
        raise SiqError(f"{what} must be more than zero, got {text!r}")
    if value != int(value):
        raise SiqError(f"{what} must come to a whole number, got {text!r} = {value:g}")
    return int(value)


def parse_size(text: str, what: str = "size") -> int:
    """Bytes: "6144", "6KB", "6 KiB", "6k" (all 6,144), "2MB"."""
    return _parse(text, SIZE_UNITS, what, "6144, 6KB, 6KiB, 2MB")


def parse_count(text: str, what: str = "count") -> int:
    """Instructions: "300000", "300k", "1.2M"."""
    return _parse(text, COUNT_UNITS, what, "300000, 300k, 1.2M")


@dataclass(frozen=True)
class Budget:
    """What the fitted model may take: flash = bytes of its read-only data as linked (required); ram = its
    static RAM and worst-case stack as linked; insns = instructions per inference on `cpu`."""
    flash: int
    ram: int | None = None
    insns: int | None = None
    cpu: str | None = None

    def __post_init__(self):
        for name in ("flash", "ram", "insns"):
            value = getattr(self, name)
            if value is None and name != "flash":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SiqError(f"the {name} budget must be a whole number above zero, got {value!r}")
        if self.insns is not None and self.cpu is None:
            raise SiqError("an instruction budget needs the core it is counted on: pass --cpu (e.g. cortex-m4)")

    def describe(self) -> str:
        parts = [f"flash {self.flash:,} B"]
        if self.ram is not None:
            parts.append(f"RAM {self.ram:,} B")
        if self.insns is not None:
            parts.append(f"{self.insns:,} instructions on {self.cpu}")
        return ", ".join(parts)

"""Static arena planning by liveness (the tflite-micro greedy planner's interface, in small).

Buffers are placed largest first at the lowest offset that does not overlap a buffer alive at the same time.
"""
from __future__ import annotations

from dataclasses import dataclass

ALIGNMENT = 4


@dataclass
class Buffer:
    name: str
    size: int
    first_use: int   # op index that writes it
    last_use: int    # last op index that reads it
    offset: int = -1


class GreedyPlanner:
    def __init__(self):
        self.buffers: list[Buffer] = []

    def add_buffer(self, name: str, size: int, first_use: int, last_use: int) -> Buffer:
        buffer = Buffer(name, size, first_use, last_use)
        self.buffers.append(buffer)
        return buffer

    def plan(self) -> int:
        """Assign offsets; returns the arena size in bytes."""
        placed: list[Buffer] = []
        for buffer in sorted(self.buffers, key=lambda b: (-b.size, b.first_use, b.name)):
            live = sorted((b for b in placed if b.first_use <= buffer.last_use and buffer.first_use <= b.last_use),
                          key=lambda b: b.offset)
            offset = 0
            for other in live:
                if offset + buffer.size <= other.offset:
                    break
                offset = max(offset, _align(other.offset + other.size))
            buffer.offset = offset
            placed.append(buffer)
        return _align(max((b.offset + b.size for b in self.buffers), default=0))

    def get_offset(self, buffer: Buffer) -> int:
        return buffer.offset


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT

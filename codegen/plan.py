"""Static arena planning by liveness (the tflite-micro greedy planner's interface, in small), after ops that can
write over their input share one buffer with it (share_in_place_buffers).

Buffers are placed one by one at the lowest offset that does not overlap a buffer alive at the same time; the
placement is tried in a few orders (largest first as tflite-micro does, ties by first or by last write; first
written first) and the smallest arena is kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .kernels import runs_in_place

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
        orders = [lambda b: (-b.size, b.first_use, b.name), lambda b: (-b.size, -b.first_use, b.name),
                  lambda b: (b.first_use, -b.size, b.name)]
        best = min(orders, key=lambda order: self._place(order))
        return self._place(best)

    def _place(self, order) -> int:
        placed: list[Buffer] = []
        for buffer in sorted(self.buffers, key=order):
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

    def grow(self, buffer: Buffer, offer: Callable[[int], int | None], arena: int) -> int:
        """Grow `buffer` into the bytes its steps leave free under `arena`: offer(budget) is the size its owner
        would take within `budget` bytes (None: none). The largest offer the plan still fits in `arena` is kept
        (a greedy placement may not pack every offer that fits the sum). Returns the buffer's size; the offsets
        are those of the last plan tried."""
        live = sum(_align(b.size) for b in self.buffers
                   if b is not buffer and b.first_use <= buffer.last_use and buffer.first_use <= b.last_use)
        size = offer(arena - live)
        while size is not None and size > buffer.size:
            kept, buffer.size = buffer.size, size
            if self.plan() <= arena:
                return size
            buffer.size = kept
            size = offer(size - 1)
        return buffer.size


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def share_in_place_buffers(ops: list) -> None:
    """Lowered ops (codegen/lower.py LoweredOp): an op whose fast kernel can write over its input (runs_in_place)
    and whose input buffer no later op reads gets that buffer as its output. Its output buffer is renamed in every
    op, so the two maps never take RAM at once (a pointwise conv then needs one map plus its scratch): the planner
    sees one buffer alive from its first writer to its last reader."""
    for index, op in enumerate(ops):
        if not runs_in_place(op.ir, op.fast_kernel, op.in_bits, op.out_bits) or op.input == "image" \
                or op.output == "scores" or any(op.input in later.inputs for later in ops[index + 1:]):
            continue
        old = op.output
        for other in ops[index:]:
            other.output = op.input if other.output == old else other.output
            other.input = op.input if other.input == old else other.input
            other.other = op.input if other.other == old else other.other
        op.in_place = True

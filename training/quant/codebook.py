"""Codebooks on the firmware's fixed-point grid: integer values c_k * 2^-e, one per layer or a row per channel."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import SiqError
from .fixedpoint import aligned_channel_points, aligned_octave_limit, channel_step_points, round_half_up

@dataclass
class LayerCodebook:
    """One weighted layer's quantized weights: value = codebook[indices] * 2^-exponent, or, per channel,
    value[o, ...] = codebook[o, indices[o, ...]] * 2^-exponent."""
    bits: int                 # index width b: 1..8; at most 2^b entries per codebook (row)
    codebook: np.ndarray      # int64 within the signed codebook_bits range: [K] sorted and unique (per layer),
    #                           or [C_OUT, K] per output channel, each row sorted (a row with fewer distinct
    #                           values repeats its last one: entries no index refers to)
    exponent: int
    indices: np.ndarray       # uint8, the weight tensor's shape

    @property
    def per_channel(self) -> bool:
        return self.codebook.ndim == 2

    @property
    def entries(self) -> int:
        """Codebook entries per output channel (per channel) or for the layer (the row length in the C)."""
        return int(self.codebook.shape[-1])

    def integer_weights(self) -> np.ndarray:
        """The weights as integers on the 2^-exponent grid (int64, the weight tensor's shape)."""
        return codebook_weights(self.codebook, self.indices)

    def values(self) -> np.ndarray:
        return self.integer_weights().astype(np.float64) * 2.0 ** -self.exponent


def codebook_weights(codebook: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """codebook[indices] for one codebook; codebook[o, indices[o, ...]] for a codebook row per output channel."""
    codebook = np.asarray(codebook, dtype=np.int64)
    indices = np.asarray(indices).astype(np.intp)
    if codebook.ndim == 1:
        return codebook[indices]
    rows = np.arange(indices.shape[0]).reshape((-1,) + (1,) * (indices.ndim - 1))
    return codebook[rows, indices]


# Codebook values are int8 in the C, or int16 when any needs more than 8 bits; 15 bits at most, so that the DSP
# kernels' lane pairing (hi + 1) * 65536 + lo stays inside int32.
MAX_CODEBOOK_BITS = 15


# A conv's per-channel codebook whose output channels share rows is stored as its distinct rows plus a uint16_t
# offset per output channel (codegen/weights.py); training counts its flash by the same rule.
ROW_OFFSET_BYTES = 2        # a row offset is a uint16_t
MAX_ROW_OFFSET = 2**16 - 1


def shared_rows(table: np.ndarray, entry_bytes: int) -> tuple[np.ndarray, list[int]] | None:
    """(the distinct rows in order of first appearance, each output channel's row offset) of a per-channel
    codebook [C_OUT, K], where storing them so takes fewer bytes than every row and every offset fits a uint16_t
    (codegen/weights.py); else None."""
    table = np.asarray(table)
    if table.ndim != 2:
        return None
    channels, k = table.shape
    distinct, which = np.unique(table, axis=0, return_inverse=True)
    which = np.asarray(which).reshape(-1)
    if entry_bytes * len(distinct) * k + ROW_OFFSET_BYTES * channels >= entry_bytes * channels * k:
        return None
    order = {}  # index into `distinct` -> its stored row, numbered by first appearance
    for row in which:
        order.setdefault(int(row), len(order))
    offsets = [order[int(row)] * k for row in which]
    if max(offsets) > MAX_ROW_OFFSET:
        return None
    stored = np.empty((len(order), k), dtype=table.dtype)
    for row, position in order.items():
        stored[position] = distinct[row]
    return stored, offsets



def channel_octave_limit(codebook_bits: int) -> int:
    """How many octaves finer than its point's step a channel's step may be (channel_step_points): lowering
    scales a codebook row by 2^octaves on each side of such a point, and the scaled entries must stay within
    the signed MAX_CODEBOOK_BITS range (12-bit values: 3 octaves)."""
    return MAX_CODEBOOK_BITS - codebook_bits


def channel_octave_limits(arch, mode: str, codebook_bits: int, bits_at) -> dict[int, int]:
    """Each point of channel_step_points(arch, mode) with the most octaves a channel's step may be finer than the
    point's: channel_octave_limit(codebook_bits), and at a point the pointwise convs align, also what keeps its
    `bits_at(point)`-bit codes inside a 16-bit lane once shifted (aligned_octave_limit). Mode "none": none."""
    if mode == "none":
        return {}
    aligned = set(aligned_channel_points(arch))
    return {p: min(channel_octave_limit(codebook_bits), aligned_octave_limit(bits_at(p))) if p in aligned
            else channel_octave_limit(codebook_bits) for p in channel_step_points(arch, mode)}


def check_codebook_bits(bits) -> int:
    """Fixed-point bits of codebook values: 2..MAX_CODEBOOK_BITS (a sign and at least one magnitude bit)."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= MAX_CODEBOOK_BITS:
        raise SiqError(f"codebook bits must be a whole number from 2 to {MAX_CODEBOOK_BITS}, got {bits!r}")
    return int(bits)


def codebook_entry_bytes(codebooks) -> int:
    """Bytes per codebook entry in the C: 1 (int8) when every value of every codebook fits, else 2 (int16).
    Refuses values outside the signed MAX_CODEBOOK_BITS range."""
    values = [int(v) for book in codebooks for v in np.asarray(book).reshape(-1)]
    low, high = -2 ** (MAX_CODEBOOK_BITS - 1), 2 ** (MAX_CODEBOOK_BITS - 1) - 1
    if values and (min(values) < low or max(values) > high):
        raise SiqError(f"codebook values {min(values)}..{max(values)} exceed {low}..{high}: "
                       f"use --codebook-bits {MAX_CODEBOOK_BITS} or fewer")
    return 1 if not values or (min(values) >= -128 and max(values) <= 127) else 2


def snap_codebook(centroids: np.ndarray, assignment: np.ndarray, bits: int, codebook_bits: int) -> LayerCodebook:
    """Snap float centroids to the signed fixed-point grid (power-of-two scale chosen so the largest |centroid|
    uses the full range), merge centroids that land on the same integer, and re-index. centroids [K] with
    assignment (any shape) indexing it, or [C_OUT, K] with assignment [C_OUT, ...] indexing each channel's row
    (one exponent for the whole layer: the accumulator grid stays one per layer)."""
    centroids = np.asarray(centroids, dtype=np.float64)
    if not np.all(np.isfinite(centroids)):
        raise SiqError("quantization produced non-finite weights (NaN/Inf): the model diverged; retrain it")
    top = 2 ** (codebook_bits - 1) - 1
    largest = float(np.max(np.abs(centroids)))
    exponent = 0 if largest == 0.0 else int(math.floor(math.log2(top / largest)))
    snapped = np.clip(round_half_up(centroids * 2.0 ** exponent), -top - 1, top).astype(np.int64)
    assignment = np.asarray(assignment)
    if snapped.ndim == 1:
        codebook, remap = np.unique(snapped, return_inverse=True)
        indices = remap.reshape(-1)[assignment.reshape(-1)].reshape(assignment.shape)
        return LayerCodebook(bits, codebook, exponent, indices.astype(np.uint8))
    rows, indices = [], np.empty(assignment.shape, np.uint8)
    for o, row in enumerate(snapped):
        values, remap = np.unique(row, return_inverse=True)
        rows.append(values)
        indices[o] = remap.reshape(-1)[assignment[o].reshape(-1)].reshape(assignment.shape[1:])
    return LayerCodebook(bits, pad_rows(rows), exponent, indices)


def pad_rows(rows) -> np.ndarray:
    """Sorted rows of different lengths as one [len(rows), longest] array, each row padded with its last value."""
    width = max(len(r) for r in rows)
    return np.stack([np.concatenate([r, np.repeat(r[-1:], width - len(r))]) for r in rows])


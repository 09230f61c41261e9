"""Sub-byte packing of weight indices: one contiguous LSB-first bitstream per layer.

Bit order: index i occupies stream bits [i*b, i*b + b); stream bit j is bit (j mod 8) of byte j div 8, and an
index's least significant bit comes first. A layer of N indices takes exactly ceil(N*b/8) bytes; the unused
high bits of the last byte are zero. The C twin reading it is read_index() in firmware_template/kernels/common.c.j2.
"""
from __future__ import annotations

import numpy as np


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    if not 1 <= bits <= 8:
        raise ValueError(f"index width must be 1..8 bits, got {bits}")
    flat = np.asarray(indices, dtype=np.int64).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= 2**bits):
        raise ValueError(f"indices must fit in {bits} bits")
    stream = ((flat[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(stream, bitorder="little").tobytes()


def read_index(packed: bytes, position: int, bits: int) -> int:
    """numpy-side twin of the C read_index(): the same two-byte window arithmetic."""
    bit = position * bits
    byte, offset = bit >> 3, bit & 7
    window = packed[byte]
    if offset + bits > 8:
        window |= packed[byte + 1] << 8
    return (window >> offset) & ((1 << bits) - 1)


def unpack_indices(packed: bytes, count: int, bits: int) -> np.ndarray:
    stream = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), bitorder="little")[:count * bits]
    return (stream.reshape(count, bits).astype(np.int64) << np.arange(bits)).sum(axis=1)

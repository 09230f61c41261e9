"""A weighted layer's flash as lowering lays it out (WeightTable), with a per-channel codebook whose output
channels share rows stored as each distinct row once plus a table of row offsets. The rule (shared_rows) lives in
training/quant/codebook.py, so that QuantizedModel.weights_bytes counts flash by it too.

Row sharing (share_rows): a conv's codebook [C_OUT, K] with R < C_OUT distinct rows is stored as those R rows, in
order of first appearance (row 0 is output channel 0's), and a uint16_t table row_offsets[C_OUT] with output
channel o's row at codebook + row_offsets[o] (a multiple of K, at most (R - 1) * K). The C kernels find the row
with codebook_row() (firmware_template/kernels/common.c.j2): codebook + row_offsets[o] where the table exists,
else codebook + o * codebook_stride. The table costs ROW_OFFSET_BYTES per output channel, so rows are shared only
where that takes fewer bytes than every row:

    E * R * K + 2 * C_OUT < E * C_OUT * K        (E: bytes of a codebook entry, 1 or 2)

and only where every offset fits a uint16_t. Otherwise, and for dense layers (their kernels read rows by stride
only), the layout is one row per output channel, as without sharing.

A conv with steps per channel around it (quant.aligned_channel_points) has one more table in flash, its shifts
per channel (ChannelTable).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from siq.training.integer import Conv2dGeneralRequant, Conv2dRequant
from siq.training.quant import ROW_OFFSET_BYTES, shared_rows

IDENTITY_CODEBOOK_ARRAY = "int8_identity_codebook"  # kernels.INT8_IDENTITY_CODEBOOK, once per model


@dataclass
class WeightTable:
    """One weighted layer's flash: a codebook of fixed-point values (int8, or int16 for the whole model when any
    value needs it: LoweredModel.codebook_entry_bytes) and the packed index bitstream.

    Codebook layout: codebook_rows stored rows of codebook_entries values, row-major. codebook_stride = 0: one row
    for the whole layer (every output channel reads codebook[0 .. entries)); codebook_stride = entries: a row per
    output channel, channel o reads codebook[o * stride .. o * stride + entries), unless row_offsets is set: then
    each distinct row is stored once and channel o reads codebook[row_offsets[o] .. row_offsets[o] + entries)
    (module docstring). The C kernels read index k of output channel o at codebook_row(o)[k] in every case."""
    name: str
    codebook: list[int]    # every stored entry, row-major: codebook_rows * codebook_entries values
    packed: bytes
    bits: int
    count: int
    bias: list[int]
    codebook_rows: int = 1
    codebook_stride: int = 0
    index_is_value: bool = False  # kernels.index_is_value: packed holds the int8 weights, codebook the identity
    row_offsets: list[int] | None = None  # output channel o's row starts at codebook[row_offsets[o]]

    @property
    def codebook_entries(self) -> int:
        """Values per row: at most 2^bits."""
        return len(self.codebook) // self.codebook_rows

    @property
    def arrays(self) -> dict[str, str]:
        """The C arrays holding the table, by the parameter-struct field pointing at each (layers storing int8
        weights as their indices share one identity codebook)."""
        codebook = IDENTITY_CODEBOOK_ARRAY if self.index_is_value else f"{self.name}_codebook"
        return {"codebook": codebook, "weights": f"{self.name}_weights", "bias": f"{self.name}_bias"}

    @property
    def rows_array(self) -> str | None:
        """The C array of row offsets (the params' codebook_rows), None where rows are read by stride."""
        return f"{self.name}_codebook_rows" if self.row_offsets is not None else None

    def codebook_bytes(self, entry_bytes: int) -> int:
        """Flash of the layer's own codebook: its stored entries plus the row-offset table (0 for a layer reading
        the model's shared identity codebook)."""
        if self.index_is_value:
            return 0
        return entry_bytes * len(self.codebook) + ROW_OFFSET_BYTES * len(self.row_offsets or ())

    def stored_rows(self) -> list[list[int]]:
        """The codebook as stored: codebook_rows rows of codebook_entries values."""
        k = self.codebook_entries
        return [self.codebook[r * k:(r + 1) * k] for r in range(self.codebook_rows)]

    def codebook_table(self) -> list[int] | list[list[int]]:
        """The codebook as QuantizedModel holds it: [K], or [C_OUT][K] per output channel (shared rows repeated)."""
        if not self.codebook_stride:
            return list(self.codebook)
        k = self.codebook_stride
        starts = self.row_offsets if self.row_offsets is not None else range(0, len(self.codebook), k)
        return [self.codebook[start:start + k] for start in starts]


def share_rows(w: WeightTable, entry_bytes: int) -> WeightTable:
    """w with each distinct codebook row stored once and a row-offset table, where shared_rows applies; else w."""
    if not w.codebook_stride or w.row_offsets is not None or w.index_is_value:
        return w
    layout = shared_rows(np.asarray(w.codebook_table(), dtype=np.int64), entry_bytes)
    if layout is None:
        return w
    stored, offsets = layout
    assert all(o % w.codebook_stride == 0 and o + w.codebook_stride <= stored.size for o in offsets)
    return dataclasses.replace(w, codebook=[int(v) for v in stored.reshape(-1)], codebook_rows=len(stored),
                               row_offsets=offsets)


@dataclass
class ChannelTable:
    """A conv's shift per channel, in flash: a pointwise conv's left shift per input channel (uint8_t in_shifts)
    or a depthwise conv's requantization shift per output channel (int8_t channel_shifts)."""
    field: str
    ctype: str
    values: list[int]


def channel_table(op) -> ChannelTable | None:
    """The op's shifts per channel, if it has any (Conv2dRequant.in_shifts, Conv2dGeneralRequant.channel_shifts)."""
    if isinstance(op, Conv2dRequant) and op.in_shifts is not None:
        # padded to an even count: the DSP pointwise kernel reads the shifts of a channel pair together
        return ChannelTable("in_shifts", "uint8_t", [int(v) for v in op.in_shifts] + [0] * (len(op.in_shifts) % 2))
    if isinstance(op, Conv2dGeneralRequant) and op.channel_shifts is not None:
        return ChannelTable("channel_shifts", "int8_t", [int(v) for v in op.channel_shifts])
    return None


def channel_table_name(index: int, table: ChannelTable) -> str:
    """The C array of op `index`'s table."""
    return f"op{index}_{table.field}"

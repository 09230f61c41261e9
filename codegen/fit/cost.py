"""What a per-layer configuration costs on the target, before anything is trained: bytes of the model's read-only
data (its .rodata as linked: packed indices, codebooks, biases, op parameter structs, LRN tables, class names)
and the arena the memory plan gives it.

The numbers come from the lowering itself, not from a second copy of its rules: a stand-in QuantizedModel of the
architecture's shapes, with every codebook full (2^b entries), is lowered by codegen/lower.py and its arrays are
counted by rodata_bytes(), the same function that counts a trained model's. Flash is additive over the weighted
layers:

    rodata(config) = fixed + sum over weighted layers l of  ceil(N_l * b_l / 8) + E * R_l * K_l

with N_l the layer's weights, b_l its index width, K_l <= 2^b_l its codebook entries per row, R_l its rows
(1, or C_OUT per output channel), E the bytes of a codebook entry (1: int8 while codebook values fit 8 bits, 2:
int16 for --codebook-bits above 8) and `fixed` the biases (4 B each), the parameter structs (4 B a field) and
the LRN tables, none of which depends on the widths. A trained codebook can hold fewer than 2^b entries
(uniform's odd level count, values merged on the fixed-point grid), and a per-channel conv codebook whose output
channels share rows is stored as its distinct rows plus a 2 B offset a channel where that is smaller
(codegen/weights.py), so a predicted cost is an upper bound of the trained model's and equals it when every
codebook is full and its rows distinct; and GCC may fold a parameter struct into the code of a kernel it inlines,
which takes the struct's bytes out of .rodata (rodata_bytes). The fit therefore plans with this upper bound and
checks the linked size of what it built.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from siq.training.arch import Arch
from siq.training.quant import LayerCodebook, QuantizedModel, quantization_points

from ..kernels import INT8_IDENTITY_CODEBOOK
from ..lower import LoweredModel, lower
from ..pack import packed_size
from ..weights import IDENTITY_CODEBOOK_ARRAY, ROW_OFFSET_BYTES

FIELD_BYTES = 4        # Cortex-M: every int32_t, uint32_t and pointer field is 4 bytes


def entry_bytes(codebook_bits: int) -> int:
    """Bytes of one codebook entry in the C: snap_codebook scales the largest centroid to 2^(c-1) - 1, so a
    codebook of more than 8 fixed-point bits needs int16 (codebook_entry_bytes)."""
    return 1 if codebook_bits <= 8 else 2


def rodata_sections(lm: LoweredModel) -> dict[str, int]:
    """{symbol: bytes} of every read-only array and parameter struct the generated C defines for the model (the
    names codegen/emit.py gives them; each is its own .rodata.<symbol> section under -fdata-sections).

    Parameter structs are 4 B a field (every field is int32, uint32 or a pointer, so no padding). The class-name
    table is left out: the inference never reads it, and the linker drops it unless the application uses it."""
    entry = lm.codebook_entry_bytes
    out = {}
    for index, op in enumerate(lm.ops):
        if op.weights:
            w = op.weights
            if not w.index_is_value:  # else its indices are the int8 weights, read through the shared identity
                out[w.arrays["codebook"]] = entry * len(w.codebook)
            if w.rows_array:  # output channels sharing codebook rows: the table of their offsets (uint16_t)
                out[w.rows_array] = ROW_OFFSET_BYTES * len(w.row_offsets)
            out[w.arrays["weights"]] = len(w.packed)
            out[w.arrays["bias"]] = 4 * len(w.bias)
        if op.table is not None:
            out[op.params.table] = 4 * len(op.table)
        out[f"op{index}_{op.kernel}_params"] = FIELD_BYTES * len(fields(op.params))
    if lm.identity_codebook:
        out[IDENTITY_CODEBOOK_ARRAY] = entry * len(INT8_IDENTITY_CODEBOOK)
    return out


def is_params(symbol: str) -> bool:
    return symbol.endswith("_params")


def rodata_bytes(lm: LoweredModel) -> dict[str, int]:
    """The model's read-only data by kind (codebooks, indices, biases, tables, params) and their "total".

    Everything but the parameter structs links exactly as counted. GCC may fold a struct into the code of a
    kernel it inlines (a kernel called once), and the struct's bytes then leave .rodata: so "total" is exact
    for the arrays and an upper bound by at most "params" for the whole."""
    kinds = {"codebooks": "_codebook", "codebook_rows": "_codebook_rows", "indices": "_weights", "biases": "_bias",
             "tables": "_table", "params": "_params"}
    sections = rodata_sections(lm)
    out = {kind: sum(v for k, v in sections.items() if k.endswith(tail)) for kind, tail in kinds.items()}
    out["total"] = sum(sections.values())
    return out


@dataclass(frozen=True)
class LayerShape:
    """A weighted layer as the cost model sees it."""
    index: int
    weights: int        # N: weights of the layer
    rows: int           # output channels (codebook rows when per channel)
    kind: str           # "conv" or "dense"

    def flash(self, bits: int, per_channel: bool, entry: int, entries: int | None = None) -> int:
        """Packed indices plus codebook of this layer at `bits` (entries per row: 2^bits unless given)."""
        k = 2**bits if entries is None else entries
        return packed_size(self.weights, bits) + entry * k * (self.rows if per_channel else 1)


@dataclass(frozen=True)
class CostModel:
    """Flash and RAM of any per-layer configuration of one architecture (folded), activation width and codebook
    width. fixed: the width-independent read-only bytes; arena_bytes: the planned activation arena."""
    arch: Arch
    layers: tuple[LayerShape, ...]
    fixed: int
    entry: int
    arena_bytes: int
    act_bits: int
    point_widths: tuple = ()   # (point, width) pairs of the points with their own activation width

    def layer_flash(self, index: int, bits: int, per_channel: bool = False) -> int:
        return self._layer(index).flash(bits, per_channel, self.entry)

    def flash(self, bits: dict[int, int], per_channel=frozenset()) -> int:
        """Predicted read-only bytes of the configuration (an upper bound; equal when codebooks are full)."""
        return self.fixed + sum(self.layer_flash(l.index, bits[l.index], l.index in per_channel)
                                for l in self.layers)

    def smallest_flash(self) -> int:
        """The smallest model any configuration gives: 1-bit indices, one codebook per layer."""
        return self.flash({l.index: 1 for l in self.layers})

    def _layer(self, index: int) -> LayerShape:
        for layer in self.layers:
            if layer.index == index:
                return layer
        raise KeyError(f"layer {index} carries no weights")


def stand_in(arch: Arch, bits: dict[int, int], per_channel=frozenset(), act_bits: int = 4,
             input_bits: int | None = None, codebook_bits: int = 8, point_widths=None) -> QuantizedModel:
    """A QuantizedModel of the architecture's shapes with full codebooks (2^b distinct values per row, in the
    entry type codebook_bits gives), zero indices and biases: what the lowering needs to lay out the C."""
    arch = arch.folded()
    top = 2 ** (codebook_bits - 1) - 1
    layers = {}
    for i in arch.weighted_layers():
        shape = arch.weight_shape(i)
        k = 2 ** bits[i]
        # 2^b distinct values spanning +-top, so the entry type is the one codebook_bits gives (int16 above 8
        # bits); where fewer than 2^b integers lie in that range, consecutive integers around zero (int8)
        row = np.unique(np.floor(np.linspace(-top, top, k) + 0.5).astype(np.int64))
        if len(row) < k:
            row = np.arange(k, dtype=np.int64) - k // 2
        book = np.tile(row, (shape[0], 1)) if i in per_channel else row
        layers[i] = LayerCodebook(bits[i], book, 0, np.zeros(shape, np.uint8))
    biases = {i: np.zeros(arch.weight_shape(i)[0], np.int64) for i in layers}
    shifts = {p: act_bits for p in [-1] + quantization_points(arch)}
    names = [str(c) for c in range(arch.num_classes)]
    return QuantizedModel(arch, act_bits, shifts, layers, biases, names, input_bits=input_bits,
                          point_widths=dict(point_widths or {}))


def layer_shapes(arch: Arch) -> tuple[LayerShape, ...]:
    arch = arch.folded()
    out = []
    for i in arch.weighted_layers():
        shape = arch.weight_shape(i)
        out.append(LayerShape(i, int(np.prod(shape)), int(shape[0]), "dense" if len(shape) == 2 else "conv"))
    return tuple(out)


def cost_model(arch: Arch, act_bits: int = 4, input_bits: int | None = None, codebook_bits: int = 8,
               point_widths=None) -> CostModel:
    """The cost model of an architecture: one stand-in lowered at 1-bit widths gives the fixed part and the arena
    (neither depends on the weight widths: the arena holds activations, whose layouts depend on their widths)."""
    layers = layer_shapes(arch)
    ones = {l.index: 1 for l in layers}
    lm = lower(stand_in(arch, ones, act_bits=act_bits, input_bits=input_bits, codebook_bits=codebook_bits,
                        point_widths=point_widths))
    entry = entry_bytes(codebook_bits)
    fixed = rodata_bytes(lm)["total"] - sum(l.flash(1, False, entry) for l in layers)
    return CostModel(arch.folded(), layers, fixed, entry, lm.arena_bytes, act_bits,
                     tuple(sorted((point_widths or {}).items())))

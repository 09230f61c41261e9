"""The dataflow of an architecture: which tensor each layer reads (its `input`, or the `inputs` of add and
concat, by name), and where the integer client stores quantized codes (the quantization points).

Points, by layer index (-1 is the network input):
  * every relu, clip and lrn (unsigned a-bit codes, as always);
  * a conv or dense layer not followed by a relu/clip (it feeds only add layers: a batch-normed residual branch):
    a *signed* point, codes in [-2^(a-1), 2^(a-1) - 1], stored with the zero point 2^(a-1) added;
  * an add not followed by a relu/clip (the relu after an add is fused into the add's requantization, so that
    relu is the point), and every concat;
  * every average pool (global or not): a mean of n codes is finer than its input's step (n times as many
    levels), so the pool rounds it onto a step of its own rather than back onto its input's.
Max pooling, flatten, dropout and (before folding) batch norm keep their input's step: they are not points.
"""
from __future__ import annotations

from .errors import SiqError
from .layers import (ACTIVATIONS, LRN, MERGES, WEIGHTED, Add, AvgPool, BatchNorm, Concat, Dropout, Flatten,
                     GlobalAvgPool, MaxPool)

NETWORK_INPUT = "input"  # the reserved name of the network input
PASS_THROUGH = (MaxPool, Flatten, Dropout, BatchNorm)  # codes keep their step
POOL_POINTS = (AvgPool, GlobalAvgPool)  # a step of their own (module docstring)


def resolve_sources(layers, arch_name: str) -> tuple[tuple[int, ...], ...]:
    """For every layer, the indices of the layers whose outputs it reads (-1 = the network input), in order.
    SiqError naming the layer for a bad, duplicate, reserved, unknown or not-yet-defined name."""
    defined: dict[str, int] = {}
    declared = {layer.name: i for i, layer in enumerate(layers) if isinstance(layer.name, str)}
    sources = []
    for i, layer in enumerate(layers):
        where = f"architecture {arch_name!r} layer {i} ({layer.type})"

        def ref(name) -> int:
            if not isinstance(name, str) or not name:
                raise SiqError(f"{where}: an input must be a layer name (a non-empty string), got {name!r}")
            if name == NETWORK_INPUT:
                return -1
            if name in defined:
                return defined[name]
            if name in declared:
                raise SiqError(f"{where}: reads {name!r} before it is defined (layer {declared[name]}); layers "
                               "read only earlier layers' outputs")
            known = ", ".join([NETWORK_INPUT] + list(defined))
            raise SiqError(f"{where}: unknown input name {name!r} (known here: {known})")

        if isinstance(layer, MERGES):
            if layer.input is not None:
                raise SiqError(f"{where}: {layer.type} reads `inputs` (a list of names), not `input`")
            if not isinstance(layer.inputs, tuple) or len(layer.inputs) < 2:
                raise SiqError(f"{where}: {layer.type} needs inputs = [two or more names], got {layer.inputs!r}")
            sources.append(tuple(ref(n) for n in layer.inputs))
        elif layer.input is not None:
            sources.append((ref(layer.input),))
        else:
            sources.append((i - 1,))
        if layer.name is not None:
            if not isinstance(layer.name, str) or not layer.name:
                raise SiqError(f"{where}: name must be a non-empty string, got {layer.name!r}")
            if layer.name == NETWORK_INPUT:
                raise SiqError(f"{where}: the name {NETWORK_INPUT!r} is reserved for the network input")
            if layer.name in defined:
                raise SiqError(f"{where}: duplicate name {layer.name!r} (layer {defined[layer.name]} has it)")
            defined[layer.name] = i
    return tuple(sources)


def readers(arch) -> dict[int, list[int]]:
    """Layer index (-1 = input) -> the layers reading its output, in order."""
    out: dict[int, list[int]] = {}
    for i, srcs in enumerate(arch.sources):
        for s in srcs:
            out.setdefault(s, []).append(i)
    return out


def activation_reads(arch, index: int) -> bool:
    """A relu or clip right after layer `index`, reading it."""
    return index + 1 < len(arch.layers) and isinstance(arch.layers[index + 1], ACTIVATIONS) and \
        arch.sources[index + 1] == (index,)


def signed_points(arch) -> list[int]:
    """Conv/dense layers (not the last layer) whose output is stored without a relu: signed codes."""
    last = len(arch.layers) - 1
    return [i for i, layer in enumerate(arch.layers)
            if isinstance(layer, WEIGHTED) and i != last and not activation_reads(arch, i)]


def points(arch) -> list[int]:
    """Layer indices whose outputs are stored quantized (the module docstring's list), ascending."""
    signed = set(signed_points(arch))
    out = []
    for i, layer in enumerate(arch.layers):
        if isinstance(layer, (*ACTIVATIONS, LRN, Concat, *POOL_POINTS)) or i in signed or \
                (isinstance(layer, Add) and not activation_reads(arch, i)):
            out.append(i)
    return out


def has_average_pool(arch) -> bool:
    """An avgpool or globalavgpool anywhere in the network (its cells' cache keys say so: experiments/cache.py)."""
    return any(isinstance(layer, POOL_POINTS) for layer in arch.layers)


def point_of(arch, index: int, point_set: set | None = None) -> int:
    """The point whose codes (and step) layer `index`'s output carries: itself, the point its pass-through
    layers read, or for a conv/dense/add fused with the relu after it, that relu."""
    point_set = set(points(arch)) if point_set is None else point_set
    while index != -1 and index not in point_set:
        if isinstance(arch.layers[index], PASS_THROUGH):
            index = arch.sources[index][0]
        else:
            return index + 1
    return index


def merge_inputs(arch, index: int) -> list[int]:
    """The points feeding an add or concat layer, in its `inputs` order."""
    point_set = set(points(arch))
    return [point_of(arch, s, point_set) for s in arch.sources[index]]

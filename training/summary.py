"""How big a network is, layer by layer: output shape, multiply-accumulates per inference and parameters.

MACs are those of the conv and dense layers (one per weight and output position: what the integer IR's ops count,
training/integer/ir.py `macs`); pooling, normalisation and activations add none. Parameters are counted as
deployed: conv and dense weights and biases. Batch norm is folded into the layer before it (Arch.folded), so its
scale and shift become that layer's weights and bias and it adds none of its own.
"""
from __future__ import annotations

from dataclasses import dataclass

from .arch import Arch, BatchNorm, Conv, Dense, layer_dict
from .graph import points
from .quant import aligned_channel_points, channel_step_points


@dataclass(frozen=True)
class LayerSize:
    index: int
    layer: str                  # the layer as its architecture-file entry, on one line
    out_shape: tuple[int, ...]  # (C, H, W) or (N,)
    macs: int
    params: int


def describe(layer) -> str:
    """conv(out=64, k=[10, 4], stride=2, pad=same), relu, ... (the fields of its architecture-file entry)."""
    entry = layer_dict(layer)
    kind = entry.pop("type")
    return f"{kind}({', '.join(f'{k}={v}' for k, v in entry.items())})" if entry else kind


def layer_sizes(arch: Arch) -> list[LayerSize]:
    shapes = arch.shapes()
    rows = []
    for i, layer in enumerate(arch.layers):
        macs = params = 0
        if isinstance(layer, (Conv, Dense)):
            weights = 1
            for d in arch.weight_shape(i):
                weights *= d
            params = weights + layer.out
            positions = shapes[i][1] * shapes[i][2] if isinstance(layer, Conv) else 1
            macs = weights * positions
        rows.append(LayerSize(i, describe(layer), shapes[i], macs, params))
    return rows


def totals(arch: Arch) -> dict:
    """{"parameters", "macs"} of the whole network."""
    rows = layer_sizes(arch)
    return {"parameters": sum(r.params for r in rows), "macs": sum(r.macs for r in rows)}


def size_table(arch: Arch) -> str:
    """The per-layer table and its totals, as `siq arch` prints it."""
    rows = layer_sizes(arch)
    shape = "x".join(str(d) for d in arch.input)
    width = max([len(r.layer) for r in rows] + [5])
    lines = [f"{arch.name}: input {shape}",
             f"{'#':>3}  {'layer':<{width}}  {'output':>12}  {'MACs':>12}  {'params':>9}"]
    for r in rows:
        note = "  (folded into the layer before)" if isinstance(arch.layers[r.index], BatchNorm) else ""
        lines.append(f"{r.index:>3}  {r.layer:<{width}}  {'x'.join(map(str, r.out_shape)):>12}  "
                     f"{r.macs:>12,}  {r.params:>9,}{note}")
    total = totals(arch)
    lines.append(f"{'':>3}  {'total':<{width}}  {'':>12}  {total['macs']:>12,}  {total['parameters']:>9,}")
    folded = arch.folded()
    where = " (indices of the network with batch norm folded)" if folded.layers != arch.layers else ""
    lines.append(f"weighted layers (--layer-bits){where}: {', '.join(map(str, folded.weighted_layers()))}")
    lines.append(f"stored feature maps (--point-bits){where}: {', '.join(map(str, points(folded)))}")
    per_channel, aligned = channel_step_points(folded), aligned_channel_points(folded)
    if per_channel:
        lines.append(f"feature maps only depthwise convs read (a step per channel with --channel-steps "
                     f"depthwise or separable){where}: {', '.join(map(str, per_channel))}")
    if aligned:
        lines.append(f"depthwise outputs only pointwise convs read (a step per channel with --channel-steps "
                     f"separable){where}: {', '.join(map(str, aligned))}")
    return "\n".join(lines)

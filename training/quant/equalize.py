"""Cross-layer equalization: rescale the channels between two convs so that each channel's weights span the same
range on both sides, without changing what the float network computes.

For a conv (or dense) L whose output reaches a conv M through ReLUs only, and nothing else reads it, dividing L's
output channel c (its weights and bias) by s_c > 0 and multiplying M's weights on input channel c by s_c leaves the
network's function unchanged: ReLU(x / s) = ReLU(x) / s. With s_c = sqrt(r_L[c] / r_M[c]), r_L[c] the largest |w| of
L's output channel c and r_M[c] that of M's weights reading channel c, both sides end with the range
sqrt(r_L[c] r_M[c]); iterated over the chain, every pair settles. Batch norm folded into a conv scales each output
channel by its own factor, so a folded layer's channels span very different ranges, and one codebook per layer (or
one power-of-two grid for its entries) fits the wide channels and leaves the narrow ones on a few levels.

Measured on resnet8 and ds-cnn-28 (docs/decisions.md, 'Cross-layer equalization for the quantizers that do not
retrain'): post-training k-means at W4A4 gains from it; SIQ's retraining does not (it moves the weights itself), so
it is an option, off by default.
Clip (ReLU6) is not positively homogeneous (its ceiling would move) and a residual branch's tensor has a second
reader: such pairs are left alone."""
from __future__ import annotations

import copy

import torch

from ..arch import Conv, ReLU
from ..graph import readers
from ..nets import Net

# Sweeps over the chain. Each pair is balanced exactly when visited, then unbalanced by its neighbours' turn; after
# 20 sweeps the two sides of every pair agree within 0.7 % on ds-cnn-28 and 2.8 % on mobilenet-v1-0.25 (random
# weights; resnet8's pairs are isolated and agree exactly after one).
ITERATIONS = 20


def equalizable_pairs(arch) -> list[tuple[int, int]]:
    """(L, M): weighted layer L whose output reaches conv M through ReLUs only, each tensor on the way read by the
    next layer alone."""
    readers_of = readers(arch)
    weighted = arch.weighted_layers()
    pairs = []
    for first, second in zip(weighted, weighted[1:]):
        # conv pairs only (a conv's weights are indexed [C_OUT, C_IN / groups, KH, KW] below); a dense layer
        # outputs a vector, which no conv reads, so the first is a conv too
        if not isinstance(arch.layers[second], Conv):
            continue
        between = range(first + 1, second)
        if all(isinstance(arch.layers[k], ReLU) for k in between) and \
                all(readers_of.get(k, []) == [k + 1] for k in range(first, second)):
            pairs.append((first, second))
    return pairs


def _input_channel_rows(net: Net, second: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each input channel c of conv `second`: the output channels reading it (a [C_IN, per_group] index of
    weight rows) and its column in those rows ([C_IN])."""
    weight = net.layers[second].weight
    groups = net.arch.layers[second].groups
    in_per_group = weight.shape[1]
    out_per_group = weight.shape[0] // groups
    channel = torch.arange(in_per_group * groups)
    group = channel // in_per_group
    rows = group[:, None] * out_per_group + torch.arange(out_per_group)[None, :]
    return rows, channel % in_per_group


def _ranges(net: Net, first: int, second: int, rows, column) -> tuple[torch.Tensor, torch.Tensor]:
    w_first = net.layers[first].weight.detach().double()
    w_second = net.layers[second].weight.detach().double()
    out_range = w_first.reshape(w_first.shape[0], -1).abs().amax(1)
    per_row = w_second.abs().amax(dim=(2, 3))                      # [C_OUT, in_per_group]
    in_range = per_row[rows, column[:, None]].amax(1)               # [C_IN]
    return out_range, in_range


def equalize_channels(net: Net, iterations: int = ITERATIONS) -> Net:
    """A copy of `net` (batch norm already folded) with every equalizable pair's channels rescaled; the same
    function up to float rounding. A channel whose weights are all zero on either side keeps its scale."""
    net = copy.deepcopy(net)
    pairs = equalizable_pairs(net.arch)
    index = {second: _input_channel_rows(net, second) for _, second in pairs}
    with torch.no_grad():
        for _ in range(iterations):
            for first, second in pairs:
                rows, column = index[second]
                out_range, in_range = _ranges(net, first, second, rows, column)
                live = (out_range > 0) & (in_range > 0)
                scale = torch.where(live, torch.sqrt(out_range / torch.where(live, in_range, 1.0)), 1.0)
                layer = net.layers[first]
                shape = (-1,) + (1,) * (layer.weight.dim() - 1)
                layer.weight.copy_(layer.weight.double() / scale.reshape(shape))
                layer.bias.copy_(layer.bias.double() / scale)
                w_second = net.layers[second].weight
                factor = torch.ones(w_second.shape[:2], dtype=torch.float64)
                factor[rows, column[:, None].expand_as(rows)] = scale[:, None].expand_as(rows)
                w_second.copy_(w_second.double() * factor[:, :, None, None])
    return net

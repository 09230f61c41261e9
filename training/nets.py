"""The PyTorch network built from an Arch, with hooks where quantization plugs in.

The same module runs three ways:
  * float training and evaluation (no hooks);
  * quantization-aware retraining: float32, straight-through fake quantization of weights and activations;
  * exact evaluation: float64 with power-of-two activation steps and fixed-point codebooks, which computes
    bit for bit what the integer C computes (see training/quant/__init__.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .arch import (LRN, Add, Arch, AvgPool, BatchNorm, Clip, Concat, Conv, Dense, Dropout, Flatten, GlobalAvgPool,
                   MaxPool, ReLU)
from .graph import points, readers, signed_points


class Hooks:
    """Where a quantization scheme intervenes; the base class is the float network."""

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def weight(self, index: int, w: torch.Tensor) -> torch.Tensor:
        return w

    def bias(self, index: int, b: torch.Tensor) -> torch.Tensor:
        return b

    def activation(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Output of a relu, lrn, average pool, concat or unfused add layer (the feature maps the client stores)."""
        return x

    def lrn(self, index: int, module: nn.LocalResponseNorm, x: torch.Tensor) -> torch.Tensor:
        return module(x) if x.device.type == "cpu" else window_lrn(module, x)

    def signed(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Output of a conv/dense stored without a relu (it feeds add layers): signed codes (graph.py)."""
        return x

    def avgpool(self, index: int, module: nn.AvgPool2d, x: torch.Tensor) -> torch.Tensor:
        """An avgpool or globalavgpool layer, before activation() stores it on its own step (the integer model
        rounds its mean onto that step: quant/hooks.py)."""
        return module(x)


FLOAT = Hooks()


def window_lrn(module: nn.LocalResponseNorm, x: torch.Tensor) -> torch.Tensor:
    """torch's LocalResponseNorm for [N, C, H, W], with the channel-window sum taken from shifted slices.
    torch averages the squares with avg_pool3d, whose CUDA backward has no deterministic implementation (it throws
    under torch.use_deterministic_algorithms): off the CPU training uses this form. The CPU keeps torch's own, so
    CPU-trained weights stay what they were."""
    size, channels = module.size, x.shape[1]
    squares = nn.functional.pad(x * x, (0, 0, 0, 0, size // 2, (size - 1) // 2))
    window = sum(squares[:, k:k + channels] for k in range(size)) / size
    return x / (window * module.alpha + module.k) ** module.beta


def _module(layer, in_shape: tuple[int, ...]) -> nn.Module:
    in_channels = in_features = in_shape[0]
    if isinstance(layer, Conv):
        # the padding is applied in Net.forward (it may be asymmetric); the module only holds the weights
        return nn.Conv2d(in_channels, layer.out, layer.k, layer.stride, 0, groups=layer.groups)
    if isinstance(layer, BatchNorm):
        cls = nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d
        return cls(in_channels, layer.eps, layer.momentum)
    if isinstance(layer, Clip):
        return nn.Hardtanh(0.0, float(layer.max))
    if isinstance(layer, AvgPool):
        return nn.AvgPool2d(layer.kernel, layer.strides, layer.pad, count_include_pad=True)
    if isinstance(layer, GlobalAvgPool):
        return nn.AvgPool2d(in_shape[1:], 1, 0, count_include_pad=True)
    if isinstance(layer, Dense):
        return nn.Linear(in_features, layer.out)
    if isinstance(layer, ReLU):
        return nn.ReLU()
    if isinstance(layer, MaxPool):
        return nn.MaxPool2d(layer.k)
    if isinstance(layer, LRN):
        return nn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)
    if isinstance(layer, Flatten):
        return nn.Flatten()
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.p)
    if isinstance(layer, (Add, Concat)):
        return nn.Identity()  # computed in Net.forward from the named tensors; keeps module i = layer i
    raise TypeError(f"no module for {layer!r}")


class Net(nn.Module):
    """Input: images as real values x = pixel / 256 (so that x * 2^8 is the uint8 pixel exactly)."""

    def __init__(self, arch: Arch):
        super().__init__()
        self.arch = arch
        shapes = arch.input_shapes()
        self.layers = nn.ModuleList(_module(layer, shapes[i]) for i, layer in enumerate(arch.layers))
        # conv padding per layer: (top, bottom, left, right), fixed by the input shape ("same")
        self.pads = {i: layer.padding(*shapes[i][1:]) for i, layer in enumerate(arch.layers)
                     if isinstance(layer, Conv)}
        # the dataflow: outputs some layer other than the next one reads are kept until their last reader
        self.sources = arch.sources
        self.last_reader = {s: max(r) for s, r in readers(arch).items() if r != [s + 1]}
        self.signed_points = set(signed_points(arch))
        self.merge_points = {i for i in points(arch) if isinstance(arch.layers[i], (Add, Concat))}

    def forward(self, x: torch.Tensor, hooks: Hooks = FLOAT, collect: list | None = None) -> torch.Tensor:
        return self._layers(self.prefix(x, hooks, 0), len(self.layers), hooks, collect).x

    def prefix(self, x: torch.Tensor, hooks: Hooks, stop: int) -> PartialPass:
        """The forward pass of layers 0 .. stop - 1: resume() finishes it under hooks that differ from these only
        at layers stop and after, computing what forward() computes under them, operation for operation."""
        x = hooks.input(x)
        return self._layers(PartialPass(0, x, {-1: x} if -1 in self.last_reader else {}), stop, hooks, None)

    def resume(self, state: PartialPass, hooks: Hooks = FLOAT) -> torch.Tensor:
        """The network's output from a prefix() (which stays valid for further resumes)."""
        return self._layers(state, len(self.layers), hooks, None).x

    def _layers(self, state: PartialPass, stop: int, hooks: Hooks, collect: list | None) -> PartialPass:
        x, kept = state.x, dict(state.kept)
        for i in range(state.index, stop):
            layer, module = self.arch.layers[i], self.layers[i]
            ins = [x if s == i - 1 else kept[s] for s in self.sources[i]]
            x = ins[0]
            if isinstance(layer, Add):
                x = sum(ins[1:], ins[0])  # exact: the inputs are codes on power-of-two steps (float64)
            elif isinstance(layer, Concat):
                x = torch.cat(ins, 1)
            elif isinstance(layer, Conv):
                top, bottom, left, right = self.pads[i]
                if top != bottom or left != right:
                    x = nn.functional.pad(x, (left, right, top, bottom))  # zeros: code 0, as the C skips them
                    top = left = 0
                x = nn.functional.conv2d(x, hooks.weight(i, module.weight), hooks.bias(i, module.bias),
                                         layer.strides, (top, left), 1, layer.groups)
            elif isinstance(layer, Dense):
                x = nn.functional.linear(x, hooks.weight(i, module.weight), hooks.bias(i, module.bias))
            elif isinstance(layer, LRN):
                x = hooks.activation(i, hooks.lrn(i, module, x))
            elif isinstance(layer, (ReLU, Clip)):
                x = hooks.activation(i, module(x))
            elif isinstance(layer, (AvgPool, GlobalAvgPool)):
                x = hooks.activation(i, hooks.avgpool(i, module, x))
            else:
                x = module(x)
            if i in self.signed_points:
                x = hooks.signed(i, x)
            elif i in self.merge_points:
                x = hooks.activation(i, x)
            if collect is not None:
                collect.append(x)
            if i in self.last_reader:
                kept[i] = x
            for s in self.sources[i]:
                if self.last_reader.get(s) == i:
                    kept.pop(s, None)  # an add may read one tensor twice
        return PartialPass(stop, x, kept)


@dataclass(frozen=True)
class PartialPass:
    """A forward pass stopped before layer `index`: x is layer index - 1's output (the hooked input at index 0),
    kept the earlier outputs that layers from `index` on still read."""
    index: int
    x: torch.Tensor
    kept: dict


def images_to_input(images, dtype=torch.float32) -> torch.Tensor:
    """uint8 [N, C, H, W] -> real input pixel / 256, exact in any float type."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # joblib hands workers read-only memmaps, which torch warns about sharing
    return torch.as_tensor(images).to(dtype) / 256.0


# A batch-normalized channel whose running variance is below this fraction of eps was constant over training:
# its input was dead (a channel its relu never opened) up to float32 noise. Measured on ds-cnn-28 trained on
# Fashion-MNIST: the three depthwise channels reading dead channels had variances of 3e-11 to 8e-9 (at most 1e-3
# eps), the smallest of a live channel was 1e-3 (100 eps).
CONSTANT_CHANNEL_VARIANCE = 1e-3


def fold_batchnorm(net: Net) -> Net:
    """The same function without batch norm layers, in eval mode: each batchnorm (running statistics, affine) is
    folded into the conv/dense before it, w' = w * g / sqrt(var + eps) per output channel and
    b' = (b - mean) * g / sqrt(var + eps) + beta. Quantization starts from this net, so codebooks are fitted to
    the folded weights. A net without batch norm is returned unchanged.

    A channel that was constant over training (var < CONSTANT_CHANNEL_VARIANCE * eps) gets w' = 0 and keeps b':
    it computes the constant it computed in training. Folded by the formula its weights would be about
    g / sqrt(eps), hundreds of times the layer's others, and they would multiply an input that is always zero;
    one such channel sets the range of the layer's codebook and of its fixed-point grid and leaves every other
    weight of the layer on a few levels (ds-cnn-28 on Fashion-MNIST: 38 % at W8A8 against 91 % float)."""
    if not any(isinstance(l, BatchNorm) for l in net.arch.layers):
        return net
    folded = Net(net.arch.folded()).to(next(net.parameters()).dtype)
    target = 0
    with torch.no_grad():
        for i, layer in enumerate(net.arch.layers):
            if isinstance(layer, BatchNorm):
                bn = net.layers[i]
                var = bn.running_var.double()
                scale = bn.weight.double() / torch.sqrt(var + bn.eps)
                dst = folded.layers[target - 1]
                w = dst.weight.double()
                live = (var >= CONSTANT_CHANNEL_VARIANCE * bn.eps).to(w.dtype)
                dst.weight.copy_(w * (scale * live).reshape((-1,) + (1,) * (w.dim() - 1)))
                dst.bias.copy_((dst.bias.double() - bn.running_mean.double()) * scale + bn.bias.double())
                continue
            folded.layers[target].load_state_dict(net.layers[i].state_dict())
            target += 1
    return folded.eval()

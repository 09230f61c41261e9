"""Declarative network architectures: one list of layer specs drives the PyTorch module and the C generator.

An architecture is an input shape (channels, height, width), or (channels, length) for 1-D signals, which is
the map (channels, 1, length), and a sequence of layers:
  conv(out, k, stride=1, pad=0, groups=1)   k, stride: int or [h, w]; pad: int, "valid", "same", [h, w] or
                                           [top, bottom, left, right]; groups divides both channel counts
                                           (groups = in channels = out channels is a depthwise conv)
  conv1d(out, k, stride=1, pad=0, groups=1) the conv with a 1 x k kernel on (channels, 1, length); pad: int,
                                           "valid", "same" or [left, right]
  batchnorm(eps, momentum)                 directly after a conv or dense layer; folded into its weights and
                                           bias before quantization (the integer model has no batch norm)
  relu, relu6, clip(max)                   relu6 is clip(6): min(max(x, 0), max)
  maxpool(k), avgpool(k, stride=k, pad=0), globalavgpool, lrn(size, alpha, beta, k), flatten, dense(out),
  dropout(p),
  add(inputs)                              elementwise sum of two or more tensors of one shape
  concat(inputs)                           channel concatenation of (C, H, W) tensors of equal H and W
Every layer takes two optional fields: name = "..." names its output (unique; "input" is reserved for the
network input) and input = "..." makes it read that tensor instead of the previous layer's output; add and concat
read `inputs`, a list of such names. Layers are listed in topological order (a name is read only after its layer)
and the last one gives the class scores. A batchnorm reads the conv/dense right before it, which nothing else
reads; folding moves the batchnorm's name to that layer. What the integer client runs (training/graph.py): a
conv/dense without a relu after it may feed only add layers, and such an add is followed by a relu.
It can be given as a preset name or as a TOML/JSON file:

    name = "tiny"
    input = [1, 28, 28]
    layers = [
      {type = "conv", out = 4, k = 5},
      {type = "relu"}, {type = "maxpool", k = 2}, {type = "flatten"}, {type = "dense", out = 10},
    ]

A residual block (the shortcut s1 is read after the branch):
      {type = "relu", name = "s1"},
      {type = "conv", out = 16, k = 3, pad = 1}, {type = "batchnorm"}, {type = "relu"},
      {type = "conv", out = 16, k = 3, pad = 1}, {type = "batchnorm", name = "main"},
      {type = "add", inputs = ["main", "s1"]}, {type = "relu", name = "s2"},
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from .errors import SiqError
from .graph import readers, resolve_sources
# The layer specs live in layers.py; every one is importable from here too, where callers have always found them.
from .layers import (ACTIVATIONS, LAYER_TYPES, LRN, MERGES, WEIGHTED, Add, AvgPool, BatchNorm, Clip, Concat, Conv,
                     Dense, Dropout, Flatten, GlobalAvgPool, MaxPool, ReLU, conv1d, layer_dict, relu6)

__all__ = ["ACTIVATIONS", "LAYER_TYPES", "LRN", "MERGES", "PRESETS", "WEIGHTED", "Add", "Arch", "AvgPool", "BatchNorm",
           "Clip", "Concat", "Conv", "Dense", "Dropout", "Flatten", "GlobalAvgPool", "MaxPool", "ReLU", "conv1d",
           "layer_dict", "load_arch", "relu6"]


def _check_field_types(layer, where: str) -> None:
    """Every field of the declared kind: a whole number for int fields (not 4.7, "5" or true), a finite number
    for float fields. The geometry checks (shapes) compare numbers, so a string or a fraction reaching them
    would fail as a traceback, and a fraction would reach the C generator as a size."""
    for name, spec in layer.__dataclass_fields__.items():
        value, kind = getattr(layer, name), spec.type
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise SiqError(f"{where}: {name} must be a whole number, got {value!r}")
        if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                or value != value or value in (float("inf"), float("-inf"))):
            raise SiqError(f"{where}: {name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class Arch:
    name: str
    input: tuple[int, int, int]  # (channels, height, width); a 1-D input (channels, length) is (channels, 1, length)
    layers: tuple

    def to_dict(self) -> dict:
        return {"name": self.name, "input": list(self.input), "layers": [layer_dict(l) for l in self.layers]}

    @staticmethod
    def from_dict(d: dict) -> "Arch":
        try:
            name = str(d.get("name", "custom"))
            shape = tuple(d["input"])
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in shape):
                raise SiqError(f"architecture input must be whole numbers [channels, height, width] or [channels, "
                               f"length], got {shape}")
            if len(shape) == 2:
                shape = (shape[0], 1, shape[1])
            if len(shape) != 3 or min(shape) < 1:
                raise SiqError(f"architecture input must be [channels, height, width] or [channels, length] > 0, "
                               f"got {list(shape)}")
            layers = []
            for i, spec in enumerate(d["layers"]):
                spec = dict(spec)
                kind = spec.pop("type", None)
                if kind not in LAYER_TYPES:
                    raise SiqError(f"architecture layer {i}: unknown type {kind!r} "
                                   f"(known: {', '.join(sorted(LAYER_TYPES))})")
                try:
                    layers.append(LAYER_TYPES[kind](**spec))
                except (TypeError, SiqError) as exc:
                    raise SiqError(f"architecture layer {i} ({kind}): {exc}") from None
                _check_field_types(layers[-1], f"architecture layer {i} ({kind})")
        except (KeyError, TypeError, ValueError) as exc:
            raise SiqError(f"malformed architecture: {type(exc).__name__}: {exc}") from None
        arch = Arch(name, shape, tuple(layers))
        arch.shapes()  # validates the geometry
        return arch

    @cached_property
    def sources(self) -> tuple[tuple[int, ...], ...]:
        """Per layer, the layers it reads (-1 = the network input): graph.resolve_sources."""
        return resolve_sources(self.layers, self.name)

    def input_shapes(self) -> list[tuple[int, ...]]:
        """The shape of each layer's (first) input."""
        shapes = self.shapes()
        return [self.input if s[0] == -1 else shapes[s[0]] for s in self.sources]

    def weighted_layers(self) -> list[int]:
        """Indices (into layers) of the conv and dense layers, in order."""
        return [i for i, l in enumerate(self.layers) if isinstance(l, WEIGHTED)]

    def shapes(self) -> list[tuple[int, ...]]:
        """Output shape of every layer (C, H, W) or (N,); raises SiqError on impossible geometry."""
        out: list[tuple[int, ...]] = []
        sources = self.sources
        for i, layer in enumerate(self.layers):
            where = f"architecture {self.name!r} layer {i} ({layer.type})"
            ins = [self.input if s == -1 else out[s] for s in sources[i]]
            shape = ins[0]
            if isinstance(layer, MERGES):
                shape = self._merge_shape(layer, ins, where)
            elif isinstance(layer, Conv):
                shape = self._conv_shape(layer, shape, where)
            elif isinstance(layer, BatchNorm):
                if i == 0 or not isinstance(self.layers[i - 1], WEIGHTED) or sources[i] != (i - 1,):
                    raise SiqError(f"{where}: batchnorm must directly follow a conv or dense layer and read its "
                                   "output (it is folded into that layer's weights and bias)")
                others = [r for r in readers(self).get(i - 1, []) if r != i]
                if others:
                    raise SiqError(f"{where}: layer {others[0]} also reads the conv/dense output this batchnorm "
                                   "normalizes; read the batchnorm's output instead (it is folded into the layer)")
                if not layer.eps > 0 or not 0 <= layer.momentum <= 1:
                    raise SiqError(f"{where}: batchnorm needs eps > 0 and momentum in [0, 1]")
            elif isinstance(layer, Clip):
                if isinstance(layer.max, bool) or not isinstance(layer.max, (int, float)) or not layer.max > 0:
                    raise SiqError(f"{where}: clip max must be a number > 0, got {layer.max!r}")
            elif isinstance(layer, (AvgPool, GlobalAvgPool)):
                if len(shape) != 3:
                    raise SiqError(f"{where}: {layer.type} needs a (C, H, W) input")
                c, h, w = shape
                if isinstance(layer, GlobalAvgPool):
                    shape = (c, 1, 1)
                else:
                    try:
                        (kh, kw), (sh, sw) = layer.kernel, layer.strides
                    except SiqError as exc:
                        raise SiqError(f"{where}: {exc}") from None
                    if isinstance(layer.pad, bool) or not isinstance(layer.pad, int) or \
                            not 0 <= 2 * layer.pad <= min(kh, kw):
                        raise SiqError(f"{where}: avgpool pad must be a whole number from 0 to half the window")
                    oh, ow = (h + 2 * layer.pad - kh) // sh + 1, (w + 2 * layer.pad - kw) // sw + 1
                    if oh < 1 or ow < 1:
                        raise SiqError(f"{where}: window {kh}x{kw} larger than the {h}x{w} map")
                    shape = (c, oh, ow)
            elif isinstance(layer, MaxPool):
                if len(shape) != 3 or layer.k < 1:
                    raise SiqError(f"{where}: maxpool needs a (C, H, W) input and k >= 1")
                c, h, w = shape
                if h < layer.k or w < layer.k:
                    raise SiqError(f"{where}: pool {layer.k} larger than the {h}x{w} map")
                shape = (c, h // layer.k, w // layer.k)
            elif isinstance(layer, LRN):
                if len(shape) != 3 or layer.size < 1 or layer.k <= 0 or layer.beta < 0 or layer.alpha < 0:
                    raise SiqError(f"{where}: lrn needs a (C, H, W) input, size >= 1, k > 0, alpha, beta >= 0")
            elif isinstance(layer, Flatten):
                n = 1
                for s in shape:
                    n *= s
                shape = (n,)
            elif isinstance(layer, Dense):
                if len(shape) != 1:
                    raise SiqError(f"{where}: dense needs a flat input: add a flatten layer before it")
                if layer.out < 1:
                    raise SiqError(f"{where}: out must be >= 1")
                shape = (layer.out,)
            elif isinstance(layer, Dropout):
                if not 0.0 <= layer.p < 1.0:
                    raise SiqError(f"{where}: dropout p must be in [0, 1)")
            out.append(shape)
        if not out or len(out[-1]) != 1:
            raise SiqError(f"architecture {self.name!r} must end with a dense layer giving the class scores")
        return out

    @staticmethod
    def _merge_shape(layer, shapes: list, where: str) -> tuple[int, ...]:
        names = ", ".join(f"{n!r} {list(s)}" for n, s in zip(layer.inputs, shapes))
        if isinstance(layer, Add):
            if any(s != shapes[0] for s in shapes):
                raise SiqError(f"{where}: add needs inputs of one shape, got {names}")
            return shapes[0]
        if any(len(s) != 3 for s in shapes) or any(s[1:] != shapes[0][1:] for s in shapes):
            raise SiqError(f"{where}: concat needs (C, H, W) inputs of equal height and width, got {names}")
        return (sum(s[0] for s in shapes),) + shapes[0][1:]

    @staticmethod
    def _conv_shape(layer: Conv, shape: tuple, where: str) -> tuple[int, int, int]:
        if len(shape) != 3:
            raise SiqError(f"{where}: conv needs a (C, H, W) input, got {shape}")
        c, h, w = shape
        try:
            (kh, kw), (sh, sw), (top, bottom, left, right) = layer.kernel, layer.strides, layer.padding(h, w)
        except SiqError as exc:
            raise SiqError(f"{where}: {exc}") from None
        groups = layer.groups
        if isinstance(layer.out, bool) or not isinstance(layer.out, int) or layer.out < 1:
            raise SiqError(f"{where}: out must be a whole number >= 1")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or c % groups or \
                layer.out % groups:
            raise SiqError(f"{where}: groups {groups!r} must divide both the {c} input and {layer.out} output "
                           "channels")
        oh = (h + top + bottom - kh) // sh + 1
        ow = (w + left + right - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise SiqError(f"{where}: kernel {kh}x{kw} does not fit a {h}x{w} input")
        return (layer.out, oh, ow)

    def weight_shape(self, index: int) -> tuple[int, ...]:
        """PyTorch layout of a weighted layer's weights: conv [C_OUT, C_IN / groups, KH, KW], dense [OUT, IN]."""
        layer = self.layers[index]
        in_shape = self.input_shapes()[index]
        if isinstance(layer, Conv):
            return (layer.out, in_shape[0] // layer.groups) + layer.kernel
        return (layer.out, in_shape[0])

    def folded(self) -> "Arch":
        """The architecture quantization and the C see: batch norm layers folded away (nets.fold_batchnorm). A
        batchnorm reads only the layer right before it and is that layer's only reader (shapes() checks), so the
        conv/dense takes the batchnorm's name and every reference stays valid."""
        layers = []
        for layer in self.layers:
            if isinstance(layer, BatchNorm):
                layers[-1] = replace(layers[-1], name=layer.name)
            else:
                layers.append(layer)
        return Arch(self.name, self.input, tuple(layers))

    @property
    def num_classes(self) -> int:
        return self.shapes()[-1][0]

    def with_classes(self, num_classes: int) -> "Arch":
        """The same network with its last dense layer resized to the dataset's class count."""
        last = max(self.weighted_layers())
        if not isinstance(self.layers[last], Dense):
            raise SiqError(f"architecture {self.name!r}: the last weighted layer must be dense")
        layers = list(self.layers)
        layers[last] = replace(layers[last], out=num_classes)
        return Arch(self.name, self.input, tuple(layers))

    def with_input(self, shape: tuple[int, int, int]) -> "Arch":
        arch = Arch(self.name, tuple(shape), self.layers)
        arch.shapes()
        return arch


def _paper_block(out: int, pad: int) -> list:
    return [Conv(out, 5, 1, pad), ReLU(), MaxPool(2), LRN(5, 1e-4, 0.75, 2.0)]


def _separable(channels: int, out: int, stride: int) -> list:
    """MobileNet's block: depthwise 3x3 'same' conv, batch norm, relu, pointwise 1x1 conv, batch norm, relu."""
    return [Conv(channels, 3, stride, "same", channels), BatchNorm(), ReLU(), Conv(out, 1), BatchNorm(), ReLU()]


def _mobilenet_v1_025() -> tuple:
    layers, channels = [Conv(8, 3, 2, "same"), BatchNorm(), ReLU()], 8
    for out, stride in [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2)] + [(128, 1)] * 5 + [(256, 2), (256, 1)]:
        layers += _separable(channels, out, stride)
        channels = out
    return tuple(layers + [GlobalAvgPool(), Flatten(), Dense(2)])


def _resnet_stack(index: int, channels: int, stride: int) -> list:
    """One ResNet-8 stack reading the tensor named s<index>: two 3x3 convs with batch norm, the shortcut (the input
    itself, or a 1x1 conv with batch norm where the stack strides), add, relu, named s<index + 1>."""
    main, short, into = f"main{index}", f"short{index}", f"s{index}"
    layers = [Conv(channels, 3, stride, 1, input=into), BatchNorm(), ReLU(),
              Conv(channels, 3, 1, 1), BatchNorm(name=main)]
    if stride != 1:
        layers += [Conv(channels, 1, stride, 0, input=into), BatchNorm(name=short)]
    else:
        short = into
    return layers + [Add(inputs=(main, short)), ReLU(name=f"s{index + 1}")]


def _resnet8() -> tuple:
    layers = [Conv(16, 3, 1, 1), BatchNorm(), ReLU(name="s1")]
    for index, (channels, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
        layers += _resnet_stack(index, channels, stride)
    return tuple(layers + [GlobalAvgPool(), Flatten(), Dense(10)])


PRESETS = {
    # §4.1: conv 6@5x5 -> pool -> LRN -> conv 12@5x5 -> pool -> LRN -> FC 100 (dropout) -> FC 10.
    # 28 -> 24 -> 12 -> 8 -> 4: 12*4*4 = 192 features, 22,278 parameters, 221,800 MACs.
    "paper-mnist": Arch("paper-mnist", (1, 28, 28), tuple(
        _paper_block(6, 0) + _paper_block(12, 0)
        + [Flatten(), Dense(100), ReLU(), Dropout(0.5), Dense(10)])),
    # §4.2: three conv layers 12/24/32 @5x5 each with pool and LRN, FC 300, 32x32 gray input.
    # 'same' padding keeps 32 -> 16 -> 8 -> 4 so that three 2x2 pools fit: 32*4*4 = 512 features.
    "paper-office": Arch("paper-office", (1, 32, 32), tuple(
        _paper_block(12, 2) + _paper_block(24, 2) + _paper_block(32, 2)
        + [Flatten(), Dense(300), ReLU(), Dropout(0.5), Dense(20)])),
    # MLPerf Tiny keyword spotting: 49x10 MFCC map, conv 64@10x4/2 'same', four depthwise-separable blocks,
    # average pool over the 25x5 map, FC 12. 2,656,768 MACs.
    "ds-cnn": Arch("ds-cnn", (1, 49, 10), tuple(
        [Conv(64, (10, 4), 2, "same"), BatchNorm(), ReLU()] + _separable(64, 64, 1) * 4
        + [GlobalAvgPool(), Flatten(), Dense(12)])),
    # DS-CNN sized for 28x28 gray images (Fashion-MNIST, MNIST): the keyword-spotting network's shape with a
    # small first kernel, conv 64@3x3/2 'same' (28 -> 14), four depthwise-separable blocks at 14x14, average
    # pool, FC 10. 3,776,384 MACs (under a third of resnet8's 12.5 M), 20,490 parameters once batch norm is folded.
    "ds-cnn-28": Arch("ds-cnn-28", (1, 28, 28), tuple(
        [Conv(64, 3, 2, "same"), BatchNorm(), ReLU()] + _separable(64, 64, 1) * 4
        + [GlobalAvgPool(), Flatten(), Dense(10)])),
    # MLPerf Tiny visual wake words: MobileNetV1 width 0.25 on 96x96 RGB, 2 classes. 7,489,664 MACs.
    "mobilenet-v1-0.25": Arch("mobilenet-v1-0.25", (3, 96, 96), _mobilenet_v1_025()),
    # MLPerf Tiny image classification: ResNet-8 on 32x32 RGB, three residual stacks of 16/32/64 channels (the
    # last two stride 2 with a 1x1 projection shortcut), average pool over the 8x8 map, FC 10. 12,501,632 MACs.
    "resnet8": Arch("resnet8", (3, 32, 32), _resnet8()),
}


def load_arch(spec: str) -> Arch:
    """A preset name, or the path of a TOML or JSON architecture file."""
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if path.suffix.lower() not in (".toml", ".json"):
        raise SiqError(f"unknown architecture {spec!r}: use one of {', '.join(PRESETS)} "
                       "or the path of a .toml/.json architecture file")
    if not path.is_file():
        raise SiqError(f"architecture file {spec!r} not found")
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise SiqError(f"malformed architecture file {spec!r}: {exc}") from None
    if not isinstance(data, dict) or "layers" not in data or "input" not in data:
        raise SiqError(f"malformed architecture file {spec!r}: needs 'input' and 'layers'")
    data.setdefault("name", path.stem)
    return Arch.from_dict(data)

"""Layer specs of an architecture (training/arch.py): one frozen dataclass per layer type, as written in TOML/JSON
architecture files, with the geometry helpers the torch model, the lowering and the C generator share."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import SiqError

def _pair(value, what: str) -> tuple[int, int]:
    """An int or [h, w] as (h, w), each a whole number >= 1."""
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise SiqError(f"{what} must be a whole number >= 1 or [height, width] of them, got {value!r}")
    return pair


def _frozen(layer, *names) -> None:
    """Lists from TOML/JSON become tuples: layers are frozen and hashable."""
    for name in names:
        value = getattr(layer, name)
        if isinstance(value, list):
            object.__setattr__(layer, name, tuple(value))


@dataclass(frozen=True)
class Layer:
    """Fields every layer has (keyword-only, after each layer's own): `name` names its output tensor so that a
    later layer can read it; `input` makes it read the named tensor ("input" is the network input) instead of the
    previous layer's output. Both None: the sequential default."""
    name: str | None = field(default=None, kw_only=True)
    input: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class Conv(Layer):
    """2-D convolution; in_channels / groups input channels feed each output channel (PyTorch's groups)."""
    out: int
    k: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    pad: int | str | tuple = 0
    groups: int = 1
    type: str = field(default="conv", init=False)

    def __post_init__(self):
        _frozen(self, "k", "stride", "pad")

    @property
    def kernel(self) -> tuple[int, int]:
        return _pair(self.k, "conv k")

    @property
    def strides(self) -> tuple[int, int]:
        return _pair(self.stride, "conv stride")

    def padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) zero rows/columns on a height x width input. "same" gives ceil(in / stride)
        outputs with the odd extra row/column at the bottom/right (TensorFlow's rule); "valid" is no padding."""
        pad, (kh, kw), (sh, sw) = self.pad, self.kernel, self.strides
        if pad == "valid":
            return (0, 0, 0, 0)
        if pad == "same":
            th = max((-(-height // sh) - 1) * sh + kh - height, 0)
            tw = max((-(-width // sw) - 1) * sw + kw - width, 0)
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        pads = tuple(pad) if isinstance(pad, (list, tuple)) else (pad,) * 4
        if len(pads) == 2:
            pads = (pads[0], pads[0], pads[1], pads[1])
        if len(pads) != 4 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in pads):
            raise SiqError(f"conv pad must be a whole number >= 0, \"valid\", \"same\", [h, w] or "
                           f"[top, bottom, left, right], got {pad!r}")
        return pads


def conv1d(out: int, k: int, stride: int = 1, pad=0, groups: int = 1, **names) -> Conv:
    """A 1-D conv over (channels, length) is the 2-D conv with a 1 x k kernel on the map (channels, 1, length)."""
    for name, value in (("k", k), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SiqError(f"conv1d {name} must be a whole number, got {value!r}")
    if isinstance(pad, (list, tuple)):
        if len(pad) != 2:
            raise SiqError(f"conv1d pad must be a whole number, \"valid\", \"same\" or [left, right], got {pad!r}")
        pad = (0, 0, pad[0], pad[1])
    elif not isinstance(pad, str):
        pad = (0, 0, pad, pad)
    return Conv(out, (1, k), (1, stride), pad, groups, **names)  # names: the `name` / `input` keywords


@dataclass(frozen=True)
class BatchNorm(Layer):
    """Batch norm over the channels (or features) of the conv (dense) layer right before it; trained as batch
    norm and folded into that layer's weights and bias before quantization (Arch.folded, nets.fold_batchnorm)."""
    eps: float = 1e-5
    momentum: float = 0.1
    type: str = field(default="batchnorm", init=False)


@dataclass(frozen=True)
class Clip(Layer):
    """min(max(x, 0), max): a relu with an upper bound (relu6 is clip(6)); a quantization point like relu."""
    max: float = 6.0
    type: str = field(default="clip", init=False)


def relu6(**names) -> Clip:
    return Clip(6.0, **names)


@dataclass(frozen=True)
class AvgPool(Layer):
    """Mean over k windows (zero padding counted: the divisor is always kh * kw); stride defaults to k."""
    k: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None
    pad: int = 0
    type: str = field(default="avgpool", init=False)

    def __post_init__(self):
        _frozen(self, "k", "stride")

    @property
    def kernel(self) -> tuple[int, int]:
        return _pair(self.k, "avgpool k")

    @property
    def strides(self) -> tuple[int, int]:
        return self.kernel if self.stride is None else _pair(self.stride, "avgpool stride")


@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """Mean over each channel's whole map: (C, H, W) -> (C, 1, 1), the avgpool with k = (H, W)."""
    type: str = field(default="globalavgpool", init=False)


@dataclass(frozen=True)
class ReLU(Layer):
    type: str = field(default="relu", init=False)


@dataclass(frozen=True)
class MaxPool(Layer):
    k: int
    type: str = field(default="maxpool", init=False)


@dataclass(frozen=True)
class LRN(Layer):
    """Cross-channel local response normalization, PyTorch semantics:
    b_c = a_c / (k + alpha/size * sum_{c' in window(c)} a_c'^2) ** beta."""
    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0
    type: str = field(default="lrn", init=False)


@dataclass(frozen=True)
class Flatten(Layer):
    type: str = field(default="flatten", init=False)


@dataclass(frozen=True)
class Dense(Layer):
    out: int
    type: str = field(default="dense", init=False)


@dataclass(frozen=True)
class Dropout(Layer):
    p: float = 0.5
    type: str = field(default="dropout", init=False)


@dataclass(frozen=True)
class Add(Layer):
    """Elementwise sum of two or more tensors of one shape, named by `inputs` (earlier layers' names or
    "input"). The integer client brings the codes to a common power-of-two step and requantizes the sum."""
    inputs: tuple[str, ...] = ()
    type: str = field(default="add", init=False)

    def __post_init__(self):
        _frozen(self, "inputs")


@dataclass(frozen=True)
class Concat(Layer):
    """Channel concatenation (the C axis, in `inputs` order) of tensors with equal height and width."""
    inputs: tuple[str, ...] = ()
    type: str = field(default="concat", init=False)

    def __post_init__(self):
        _frozen(self, "inputs")


LAYER_TYPES = {cls.__dataclass_fields__["type"].default: cls
               for cls in (Conv, BatchNorm, ReLU, Clip, MaxPool, AvgPool, GlobalAvgPool, LRN, Flatten, Dense,
                           Dropout, Add, Concat)}
LAYER_TYPES.update(conv1d=conv1d, relu6=relu6)  # spellings of a layer above with fixed fields
WEIGHTED = (Conv, Dense)
MERGES = (Add, Concat)  # layers reading several tensors (`inputs`)
ACTIVATIONS = (ReLU, Clip)  # quantization points that follow a conv or dense layer


def layer_dict(layer) -> dict:
    """A layer as its architecture-file entry (Arch.to_dict)."""
    d = asdict(layer)
    if isinstance(layer, Conv) and layer.groups == 1:
        del d["groups"]  # files written before groups existed, and their digests, stay the same
    if isinstance(layer, AvgPool) and layer.stride is None:
        del d["stride"]
    for key in ("name", "input"):  # sequential files, and their digests, stay the same
        value = d.pop(key)
        if value is not None:
            d[key] = value
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

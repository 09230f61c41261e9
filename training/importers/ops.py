"""Operator rules both front ends share: which conv, pool, mean and reshape siq can run, as an architecture-file
layer dict, or a string saying why not (the front end turns it into a refusal naming its node).

Arguments come normalized: per-axis lists (one axis for 1-D ops, two for 2-D), pads as [begin..., end...] per
axis (ONNX's order). A 1-D op runs on siq's (C, 1, L) map, so its window is 1 x k.
"""
from __future__ import annotations

import math

# Why an activation or a layer siq lacks is refused; the output variant names the usual fix.
ACTIVATION_REASON = {
    "sigmoid": "a sigmoid between layers: the integer C has relu, relu6 and clip(max) activations only",
    "sigmoid_": "a sigmoid between layers: the integer C has relu, relu6 and clip(max) activations only",
    "tanh": "a tanh between layers: the integer C has relu, relu6 and clip(max) activations only",
    "gelu": "a gelu: the integer C has relu, relu6 and clip(max) activations only",
    "silu": "a silu (swish): the integer C has relu, relu6 and clip(max) activations only",
    "hardswish": "a hardswish: the integer C has relu, relu6 and clip(max) activations only",
    "leaky_relu": "a leaky relu: the integer C has relu, relu6 and clip(max) activations only",
    "softmax": "a softmax between layers: siq has no softmax",
    "_softmax": "a softmax between layers: siq has no softmax",
    "log_softmax": "a log-softmax between layers: siq has no softmax",
    "_log_softmax": "a log-softmax between layers: siq has no softmax",
}
OUTPUT_REASON = ("a final normalization of the scores: siq's models end with the class scores of their last "
                 "layer (the class is their argmax); import the model without it")
RECURRENT = "recurrent layers (LSTM, GRU, RNN) are not supported: siq runs feed-forward convolutional networks"
MODULE_REASONS = {"LSTM": RECURRENT, "GRU": RECURRENT, "RNN": RECURRENT, "LSTMCell": RECURRENT,
                  "GRUCell": RECURRENT, "RNNCell": RECURRENT,
                  "MultiheadAttention": "attention is not supported: siq runs feed-forward convolutional networks"}


def _per_axis(value, rank: int) -> list[int]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return [int(v) for v in (values * rank if len(values) == 1 else values)]


def _window(values: list[int]):
    """A per-axis window as the architecture writes it: an int when square, else [h, w]."""
    return values[0] if values[0] == values[1] else list(values)


def conv_layer(weight, stride, pads, dilation, groups) -> dict | str:
    """weight [O, I/g, (kh,) kw]; pads "same", "valid" or [begin..., end...]; -> a conv layer dict (pad always
    [top, bottom, left, right]) or why not."""
    rank = weight.dim() - 2
    if rank not in (1, 2):
        return f"a {rank}-D convolution: siq runs 1-D and 2-D convolutions"
    kernel = [int(k) for k in weight.shape[2:]]
    stride, dilation = _per_axis(stride, rank), _per_axis(dilation, rank)
    if any(d != 1 for d in dilation):
        return f"a dilated convolution (dilation {dilation}): siq's convs are not dilated"
    if pads == "valid":
        pads = [0] * (2 * rank)
    elif pads == "same":  # PyTorch's (stride 1): the odd extra zero at the end
        if any(s != 1 for s in stride):
            return "padding 'same' with a stride other than 1"
        pads = [(k - 1) // 2 for k in kernel] + [k - 1 - (k - 1) // 2 for k in kernel]
    else:
        pads = _per_axis(pads, rank)
        pads = pads * 2 if len(pads) == rank else pads
    if len(pads) != 2 * rank or min(pads) < 0:
        return f"padding {pads}: expected {2 * rank} non-negative numbers"
    if rank == 1:
        kernel, stride, pads = [1] + kernel, [1] + stride, [0, pads[0], 0, pads[1]]
    top, left, bottom, right = pads
    out = int(weight.shape[0])
    layer = {"type": "conv", "out": out, "k": _window(kernel), "stride": _window(stride),
             "pad": [top, bottom, left, right]}
    if groups != 1:
        layer["groups"] = int(groups)
    return layer


def pool_layer(kind: str, kernel, stride, pads, ceil_mode=False, count_include_pad=True, dilation=1,
               divisor=None) -> dict | str:
    """A max or average pool window ([k] or [kh, kw]) as a maxpool / avgpool layer dict, or why not."""
    rank = len(kernel)
    kernel = [int(k) for k in kernel]
    stride = _per_axis(stride, rank) if stride not in (None, [], ()) else list(kernel)
    pads = _per_axis(pads, rank)
    pads = pads * 2 if len(pads) == rank else pads
    if any(d != 1 for d in _per_axis(dilation, rank)):
        return "a dilated pool"
    if divisor is not None:
        return "an average pool with divisor_override"
    if rank == 1:
        kernel, stride, pads = [1] + kernel, [1] + stride, [0, pads[0], 0, pads[1]]
    if kind == "max":
        if kernel[0] != kernel[1] or stride != kernel or any(pads):
            return (f"a max pool with window {kernel}, stride {stride}, padding {pads}: siq's maxpool takes "
                    "square k x k windows with stride k and no padding (1-D signals: use an average pool or a "
                    "strided conv)")
        return {"type": "maxpool", "k": kernel[0]}
    if len(set(pads)) > 1 or (rank == 1 and pads[1]):
        return f"an average pool with padding {pads}: siq pads average pools by the same amount on every side"
    if pads[0] and not count_include_pad:
        return "an average pool that leaves its zero padding out of the mean (count_include_pad=False)"
    layer = {"type": "avgpool", "k": _window(kernel), "pad": pads[0]}
    if stride != kernel:
        layer["stride"] = _window(stride)
    return layer


def spatial_mean(kind: str, in_shape, *args, **kw) -> list[dict] | str:
    """adaptive_avg_pool2d/1d(x, size) or mean(x, dims, keepdim) -> globalavgpool (+ flatten), or an avgpool
    when the adaptive output size divides the map; else why not."""
    if in_shape is None or len(in_shape) not in (2, 3):
        return f"a mean over a {in_shape} tensor: siq averages (C, H, W) maps or (C, L) signals"
    spatial = list(in_shape[1:])
    if kind.startswith("adaptive"):
        size = _per_axis(args[0] if args else kw["output_size"], len(spatial))
        if all(s == 1 for s in size):
            return [{"type": "globalavgpool"}]
        if any(n % s for n, s in zip(spatial, size)):
            return f"an adaptive average pool from {spatial} to {size}: the output size must divide the map"
        return [pool_layer("avg", [n // s for n, s in zip(spatial, size)], None, [0])]
    dims = args[0] if args else kw.get("dim")
    keepdim = args[1] if len(args) > 1 else kw.get("keepdim", False)
    rank = len(in_shape) + 1
    if dims is None or sorted(d % rank for d in _per_axis(dims, 1)) != list(range(2, rank)):
        return f"a mean over axes {dims}: siq averages over the whole map only (a global average pool)"
    return [{"type": "globalavgpool"}] + ([] if keepdim else [{"type": "flatten"}])


def flatten_or_identity(in_shape, out_shape) -> dict | None | str:
    """A reshape (view, flatten, squeeze, ...) between two known shapes (batch axis left out): a flatten when it
    makes the flat vector of the whole sample, nothing when it only adds or drops unit axes of a map, else why
    not."""
    if in_shape is None or out_shape is None or -1 in in_shape or -1 in out_shape:
        return "a reshape with sizes unknown at import (a dynamic reshape)"
    if len(out_shape) == 1 and out_shape[0] == math.prod(in_shape):
        return {"type": "flatten"}
    if len(out_shape) >= 2 and [d for d in in_shape if d != 1] == [d for d in out_shape if d != 1] \
            and out_shape[0] == in_shape[0]:
        return None
    return (f"a reshape from {[-1, *in_shape]} to {[-1, *out_shape]}, which is not a flatten: siq's layers take "
            "(C, H, W) maps or flat vectors")

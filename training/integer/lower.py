"""Lowering a QuantizedModel to the integer IR (ir.py), once: shifts, roundings and proven accumulator bounds
(build_integer_model), and the fusion of conv -> relu -> max-pool into one kernel step (fuse).

Everything here refuses, with a message naming the fix, what the integer client cannot compute exactly.
"""
from __future__ import annotations

import numpy as np

from siq.training.arch import ACTIVATIONS, LRN, Arch, AvgPool, BatchNorm, Conv, Dense, Dropout, Flatten, GlobalAvgPool, MaxPool
from siq.training.errors import SiqError
from siq.training.quant import (INT32_MAX, QuantizedModel, codebook_weights, input_point_of, lrn_table, point_max_code,
                                quantizable)

from .ir import (AvgPool2d, Conv2dGeneralRequant, Conv2dRequant, Conv2dRequantMaxpool, DenseRequant, DenseScores, IntegerModel, KernelStep, LRNRequant,
                 MaxPool2d, QuantizeInput)


def accumulator_bound(codebook, indices, bias, in_max_code: int) -> int:
    """Largest |acc| any input with codes in [0, in_max_code] can produce, over every partial sum: per output,
    acc lies in [bias + max_code * sum(negative weights), bias + max_code * sum(positive weights)]."""
    w = codebook_weights(codebook, indices).reshape(indices.shape[0], -1)
    high = bias + in_max_code * np.sum(np.maximum(w, 0), axis=1)
    low = bias + in_max_code * np.sum(np.minimum(w, 0), axis=1)
    return int(max(np.max(np.abs(high)), np.max(np.abs(low)), np.max(np.abs(bias))))


def _prove(bound: int, where: str) -> int:
    if bound > INT32_MAX:
        raise SiqError(f"{where}: the accumulator can reach {bound} > 2^31-1 = {INT32_MAX}; "
                       "use fewer activation or codebook bits, or a smaller fan-in")
    return bound


def check_lowerable(arch: Arch) -> None:
    """Refuse, before any training, an architecture the integer client cannot run: the structural checks of
    build_integer_model on the architecture as quantization will see it (batch norm folded)."""
    arch = arch.folded()
    quantizable(arch)
    shapes = [arch.input] + arch.shapes()
    for i, layer in enumerate(arch.layers):
        _check_layer(arch, i, layer, shapes[i])


def _check_layer(arch: Arch, i: int, layer, in_shape) -> None:
    where = f"layer {i} ({layer.type})"
    if isinstance(layer, BatchNorm):
        raise SiqError(f"{where}: batch norm must be folded before lowering (quantize the model first)")
    if isinstance(layer, ACTIVATIONS):
        if i == 0 or not isinstance(arch.layers[i - 1], (Conv, Dense)):
            raise SiqError(f"{where}: {layer.type} must directly follow a conv or dense layer in the integer "
                           "client")
    elif isinstance(layer, MaxPool):
        if in_shape[1] % layer.k or in_shape[2] % layer.k:
            raise SiqError(f"{where}: pool {layer.k} does not divide the {in_shape[1]}x{in_shape[2]} map; "
                           "change the padding or the pool size")
    elif isinstance(layer, (AvgPool, GlobalAvgPool)):
        count = in_shape[1] * in_shape[2] if isinstance(layer, GlobalAvgPool) else \
            layer.kernel[0] * layer.kernel[1]
        if count * 255 + count // 2 > INT32_MAX:
            raise SiqError(f"{where}: a window of {count} codes can overflow the int32 sum")
    elif not isinstance(layer, (Conv, Dense, LRN, Flatten, Dropout)):
        raise SiqError(f"{where}: no integer implementation for this layer type")


def build_integer_model(qm: QuantizedModel) -> IntegerModel:
    """Lower the quantized model to integer ops, refusing what the integer client cannot compute exactly."""
    arch = qm.arch
    quantizable(arch)
    shapes = [arch.input] + arch.shapes()
    max_code = 2**qm.act_bits - 1
    shift_from_pixel = qm.shifts[-1] - 8
    ops: list = [QuantizeInput(arch.input, shift_from_pixel, 2**qm.input_bits - 1)]
    last = arch.weighted_layers()[-1]
    for i, layer in enumerate(arch.layers):
        in_shape, out_shape = shapes[i], shapes[i + 1]
        where = f"layer {i} ({layer.type})"
        _check_layer(arch, i, layer, in_shape)
        if isinstance(layer, (Conv, Dense)):
            lc = qm.layers[i]
            if lc.per_channel and lc.codebook.shape[0] != out_shape[0]:
                raise SiqError(f"{where}: {lc.codebook.shape[0]} codebook rows for {out_shape[0]} output channels")
            acc_exp = qm.accumulator_exponent(i)
            bias = qm.biases[i].astype(np.int64)
            in_max_code = 2 ** qm.bits_at(input_point_of(arch, i)) - 1
            bound = accumulator_bound(lc.codebook, lc.indices, bias, in_max_code)
            if i == last:
                ops.append(DenseScores(in_shape[0], out_shape[0], lc.codebook, lc.indices, lc.bits, bias,
                                       _prove(bound, where), i))
                continue
            # A left shift of 8 or more saturates every positive accumulator (max_code <= 255 < 2^8), so
            # shifts below -8 are clamped there: the same result, and the C never shifts by 32 or more.
            shift = max(acc_exp - qm.shifts[i + 1], -8)
            half = 2 ** (shift - 1) if shift > 0 else 0
            bound = _prove(bound + half, where)
            common = dict(codebook=lc.codebook, indices=lc.indices, bits=lc.bits, bias=bias + half, shift=shift,
                          max_code=point_max_code(arch, i + 1, qm.shifts[i + 1], qm.act_bits), acc_bound=bound,
                          layer_index=i + 1)
            if isinstance(layer, Conv):
                ops.append(_conv_op(layer, in_shape, out_shape, common))
            else:
                ops.append(DenseRequant(in_shape[0], out_shape[0], **common))
        elif isinstance(layer, MaxPool):
            ops.append(MaxPool2d(in_shape, out_shape, layer.k, i))
        elif isinstance(layer, (AvgPool, GlobalAvgPool)):
            point = input_point_of(arch, i)
            codes = point_max_code(arch, point, qm.shifts[point], qm.bits_at(point))
            if isinstance(layer, AvgPool):
                ops.append(AvgPool2d(in_shape, out_shape, layer.kernel, layer.strides, layer.pad, codes, i))
            else:
                ops.append(AvgPool2d(in_shape, out_shape, in_shape[1:], (1, 1), 0, codes, i))
        elif isinstance(layer, LRN):
            tab = lrn_table(layer, qm.shifts[input_point_of(arch, i)], qm.shifts[i], qm.act_bits)
            ops.append(LRNRequant(in_shape, tab.window_before, tab.window_after, tab.index_shift,
                                  np.array(tab.table, dtype=np.int64), tab.frac_bits, max_code, i))
        # relu/clip are the requantization's clamps; flatten keeps [C, H, W]'s channel-major order; dropout is
        # the identity at inference
    return IntegerModel(arch.input, arch.num_classes, qm.act_bits, ops, list(qm.class_names),
                        qm.accumulator_exponent(last), qm.input_bits)


def _conv_op(layer: Conv, in_shape, out_shape, common: dict):
    """Conv2dRequant where it fits (square kernel, one stride, the same pad on all four sides, no groups: the
    kernels with fast variants), else the general conv."""
    (kh, kw), (sh, sw) = layer.kernel, layer.strides
    pads = layer.padding(*in_shape[1:])
    if kh == kw and sh == sw and len(set(pads)) == 1 and layer.groups == 1:
        return Conv2dRequant(in_shape, out_shape, kh, sh, pads[0], **common)
    return Conv2dGeneralRequant(in_shape, out_shape, (kh, kw), (sh, sw), pads, layer.groups, **common)


def fuse(model: IntegerModel) -> list[KernelStep]:
    """The model's ops as C kernel calls: conv -> relu -> max-pool becomes one Conv2dRequantMaxpool."""
    steps, ops, k = [], model.ops, 0
    while k < len(ops):
        op = ops[k]
        if isinstance(op, Conv2dRequant) and k + 1 < len(ops) and isinstance(ops[k + 1], MaxPool2d):
            steps.append(KernelStep(Conv2dRequantMaxpool(op, ops[k + 1]), [k, k + 1]))
            k += 2
        else:
            steps.append(KernelStep(op, [k]))
            k += 1
    return steps

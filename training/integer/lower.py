"""Lowering a QuantizedModel to the integer IR (ir.py), once: shifts, roundings and proven accumulator bounds
(build_integer_model, following the architecture's dataflow: each op records the ops it reads), and the fusion of
conv -> relu -> max-pool into one kernel step (fuse).

Everything here refuses, with a message naming the fix, what the integer client cannot compute exactly.
"""
from __future__ import annotations

import numpy as np

from siq.training.arch import (ACTIVATIONS, LRN, MERGES, Add, Arch, AvgPool, BatchNorm, Conv, Dense, Dropout, Flatten,
                               GlobalAvgPool, MaxPool)
from siq.training.errors import SiqError
from siq.training.graph import activation_reads, merge_inputs, signed_points
from siq.training.quant import (INT32_MAX, LANE_BITS, QuantizedModel, aligned_octave_limit, codebook_weights,
                                input_point_of, lrn_table, point_max_code, pool_rounding, quantizable,
                                signed_zero_point)

from .ir import (AddRequant, AvgPool2d, ConcatRequant, Conv2dGeneralRequant, Conv2dRequant, Conv2dRequantMaxpool,
                 DenseRequant, DenseScores, IntegerModel, KernelStep, LRNRequant, MaxPool2d, QuantizeInput)


def accumulator_bound(codebook, indices, bias, in_max_code) -> int:
    """Largest |acc| any input with codes in [0, in_max_code] can produce, over every partial sum: per output,
    acc lies in [bias + max_code * sum(negative weights), bias + max_code * sum(positive weights)]. in_max_code:
    one bound, or one per input channel (indices' axis 1: a conv's aligned input channels)."""
    top = np.asarray(in_max_code, dtype=np.int64).reshape((-1,) + (1,) * (indices.ndim - 2))
    w = codebook_weights(codebook, indices)
    high = bias + np.sum(np.maximum(w, 0) * top, axis=tuple(range(1, indices.ndim)))
    low = bias + np.sum(np.minimum(w, 0) * top, axis=tuple(range(1, indices.ndim)))
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
    shapes = arch.input_shapes()
    for i, layer in enumerate(arch.layers):
        _check_layer(arch, i, layer, shapes[i])


def _check_layer(arch: Arch, i: int, layer, in_shape) -> None:
    where = f"layer {i} ({layer.type})"
    if isinstance(layer, BatchNorm):
        raise SiqError(f"{where}: batch norm must be folded before lowering (quantize the model first)")
    if isinstance(layer, ACTIVATIONS):
        if i == 0 or not isinstance(arch.layers[i - 1], (Conv, Dense, Add)) or arch.sources[i] != (i - 1,):
            raise SiqError(f"{where}: {layer.type} must directly follow a conv, dense or add layer in the "
                           "integer client")
    elif isinstance(layer, MaxPool):
        if in_shape[1] % layer.k or in_shape[2] % layer.k:
            raise SiqError(f"{where}: pool {layer.k} does not divide the {in_shape[1]}x{in_shape[2]} map; "
                           "change the padding or the pool size")
    elif isinstance(layer, (AvgPool, GlobalAvgPool)):
        count = in_shape[1] * in_shape[2] if isinstance(layer, GlobalAvgPool) else \
            layer.kernel[0] * layer.kernel[1]
        if count * 255 + count // 2 > INT32_MAX:
            raise SiqError(f"{where}: a window of {count} codes can overflow the int32 sum")
    elif not isinstance(layer, (Conv, Dense, LRN, Flatten, Dropout, *MERGES)):
        raise SiqError(f"{where}: no integer implementation for this layer type")


def build_integer_model(qm: QuantizedModel) -> IntegerModel:
    """Lower the quantized model to integer ops, refusing what the integer client cannot compute exactly."""
    arch = qm.arch
    quantizable(arch)
    shapes, out_shapes = arch.input_shapes(), arch.shapes()
    shift_from_pixel = qm.shifts[-1] - 8
    ops: list = [QuantizeInput(arch.input, shift_from_pixel, 2**qm.input_bits - 1)]
    inputs: list = [()]
    op_of = {-1: 0}  # arch layer -> the op whose output equals the layer's output
    last = arch.weighted_layers()[-1]
    signed = set(signed_points(arch))
    for i, layer in enumerate(arch.layers):
        in_shape, out_shape = shapes[i], out_shapes[i]
        where = f"layer {i} ({layer.type})"
        _check_layer(arch, i, layer, in_shape)
        reads = tuple(op_of[s] for s in arch.sources[i])
        op = None
        if isinstance(layer, (Conv, Dense)):
            op = _weighted_op(qm, i, layer, in_shape, out_shape, i == last, i in signed, where)
        elif isinstance(layer, MERGES):
            op = _add_op(qm, i, out_shape, signed, where) if isinstance(layer, Add) else \
                _concat_op(qm, i, [out_shapes[s][0] if s >= 0 else arch.input[0] for s in arch.sources[i]],
                           out_shape, where)
        elif isinstance(layer, MaxPool):
            op = MaxPool2d(in_shape, out_shape, layer.k, i)
        elif isinstance(layer, (AvgPool, GlobalAvgPool)):
            op = _avgpool_op(qm, i, layer, in_shape, out_shape, where)
        elif isinstance(layer, LRN):
            source = input_point_of(arch, i)  # the table spans the input's codes; the clamp is the output's
            tab = lrn_table(layer, qm.shifts[source], qm.shifts[i], qm.bits_at(source))
            op = LRNRequant(in_shape, tab.window_before, tab.window_after, tab.index_shift,
                            np.array(tab.table, dtype=np.int64), tab.frac_bits, 2 ** qm.bits_at(i) - 1, i)
        # relu/clip are the requantization's clamps (of the conv, dense or add they follow); flatten keeps
        # [C, H, W]'s channel-major order; dropout is the identity at inference
        if op is None:
            op_of[i] = reads[0]
        else:
            ops.append(op)
            inputs.append(reads)
            op_of[i] = len(ops) - 1
    return IntegerModel(arch.input, arch.num_classes, qm.act_bits, ops, list(qm.class_names),
                        qm.accumulator_exponent(last), qm.input_bits, inputs, dict(qm.point_widths))


def _avgpool_op(qm: QuantizedModel, i: int, layer, in_shape, out_shape, where: str) -> AvgPool2d:
    """The pool's mean rounded onto its own step (the pool is a quantization point: graph.py)."""
    point = input_point_of(qm.arch, i)
    in_max = point_max_code(qm.arch, point, qm.shifts[point], qm.bits_at(point))
    kernel, stride, pad = (in_shape[1:], (1, 1), 0) if isinstance(layer, GlobalAvgPool) else \
        (layer.kernel, layer.strides, layer.pad)
    count = kernel[0] * kernel[1]
    up, divisor, half = pool_rounding(count, qm.shifts[point], qm.shifts[i])
    bound = _prove((count * in_max << up) + half, where)
    return AvgPool2d(in_shape, out_shape, tuple(kernel), tuple(stride), pad, up, divisor,
                     point_max_code(qm.arch, i, qm.shifts[i], qm.bits_at(i)), bound, i)


def _weighted_op(qm: QuantizedModel, i: int, layer, in_shape, out_shape, final: bool, signed: bool, where: str):
    """A conv/dense: the class scores (the last layer), requantized to the relu after it, or, as a signed point,
    to its own step with the zero point folded into the bias."""
    arch, lc = qm.arch, qm.layers[i]
    if lc.per_channel and lc.codebook.shape[0] != out_shape[0]:
        raise SiqError(f"{where}: {lc.codebook.shape[0]} codebook rows for {out_shape[0]} output channels")
    acc_exp = qm.accumulator_exponent(i)
    point = i if signed else i + 1
    codebook, bias = qm.folded_codebook(i)
    in_bits = qm.bits_at(input_point_of(arch, i))
    in_max_code, in_shifts = 2**in_bits - 1, qm.input_shifts(i)
    if in_shifts is not None:
        in_max_code = in_max_code << in_shifts
        if in_max_code.max() >= 2**LANE_BITS:
            raise SiqError(f"{where}: its input's steps per channel span {int(in_shifts.max())} octaves; "
                           f"{in_bits}-bit codes aligned that far leave the fast kernels' 16-bit lanes (calibration "
                           f"keeps them within {aligned_octave_limit(in_bits)})")
    bound = accumulator_bound(codebook, lc.indices, bias, in_max_code)
    if final:
        return DenseScores(in_shape[0], out_shape[0], codebook, lc.indices, lc.bits, bias, _prove(bound, where), i)
    zero = signed_zero_point(qm.bits_at(point)) if signed else 0
    # A left shift of 8 or more saturates every positive accumulator (max_code <= 255 < 2^8), so shifts below -8
    # are clamped there: the same result, and the C never shifts by 32 or more. With a zero point Z = 2^(a-1),
    # a left shift of a - 1 already saturates every acc != 0 (Z + 2^(a-1) > max, Z - 2^(a-1) = 0), and keeps
    # Z / 2^-shift whole, so the zero point folds into the bias: (acc + Z 2^shift) >> shift = (acc >> shift) + Z.
    shift = max(acc_exp - qm.shifts[point], -(qm.bits_at(point) - 1) if signed else -8)
    half = 2 ** (shift - 1) if shift > 0 else 0
    offset = zero << shift if shift >= 0 else zero >> -shift
    octaves, channel_shifts = qm.output_octaves(i), None
    if octaves is not None:  # output channel o on a step 2^octaves[o] finer: shift o is smaller by that
        channel_shifts = np.maximum(acc_exp - qm.shifts[point] - octaves, -8)
        half = np.where(channel_shifts > 0, np.left_shift(1, np.maximum(channel_shifts - 1, 0)), 0)
    bound = _prove(bound + int(np.max(half)) + offset, where)
    common = dict(codebook=codebook, indices=lc.indices, bits=lc.bits, bias=bias + half + offset, shift=shift,
                  max_code=point_max_code(arch, point, qm.shifts[point], qm.bits_at(point)), acc_bound=bound,
                  layer_index=point, zero_point=zero)
    if isinstance(layer, Conv):
        return _conv_op(layer, in_shape, out_shape, common, in_shifts, channel_shifts)
    return DenseRequant(in_shape[0], out_shape[0], **common)


def _to_step(shift_in: int, shift_out: int) -> tuple[int, int]:
    """(scale, right shift) taking codes on step 2^-shift_in to step 2^-shift_out: a left shift becomes the
    scale, clamped at 2^8 (a non-zero code shifted that far saturates any 8-bit range either way)."""
    r = shift_in - shift_out
    return (1, r) if r >= 0 else (2 ** min(-r, 8), 0)


def _add_op(qm: QuantizedModel, i: int, shape, signed: set, where: str) -> AddRequant:
    arch = qm.arch
    fused = activation_reads(arch, i)
    point = i + 1 if fused else i
    (pa, pb) = merge_inputs(arch, i)
    zeros = [signed_zero_point(qm.bits_at(p)) if p in signed else 0 for p in (pa, pb)]
    extents = [z if z else 2 ** qm.bits_at(p) - 1 for p, z in zip((pa, pb), zeros)]  # max |code - zero|
    common = max(qm.shifts[pa], qm.shifts[pb])  # the finer step: both inputs reach it by left shifts
    scale, shift = _to_step(common, qm.shifts[point])
    scales = [2 ** (common - qm.shifts[p]) * scale for p in (pa, pb)]
    rounding = 2 ** (shift - 1) if shift > 0 else 0
    bound = extents[0] * scales[0] + extents[1] * scales[1] + rounding
    if bound > INT32_MAX:
        raise SiqError(f"{where}: the sum of its inputs on their common step can reach {bound} > 2^31-1: their "
                       f"steps 2^-{qm.shifts[pa]} and 2^-{qm.shifts[pb]} are too far apart")
    return AddRequant(shape, zeros[0], scales[0], zeros[1], scales[1], rounding, shift,
                      point_max_code(arch, point, qm.shifts[point], qm.bits_at(point)), bound, point)


def _concat_op(qm: QuantizedModel, i: int, channels: list[int], shape, where: str) -> ConcatRequant:
    arch = qm.arch
    scales, roundings, shifts = [], [], []
    for p in merge_inputs(arch, i):
        scale, shift = _to_step(qm.shifts[p], qm.shifts[i])
        rounding = 2 ** (shift - 1) if shift > 0 else 0
        if (2 ** qm.bits_at(p) - 1) * scale + rounding > INT32_MAX:  # unreachable with scale <= 2^8
            raise SiqError(f"{where}: requantizing input {p} overflows int32")
        scales.append(scale)
        roundings.append(rounding)
        shifts.append(shift)
    return ConcatRequant(tuple(channels), shape, tuple(scales), tuple(roundings), tuple(shifts),
                         point_max_code(arch, i, qm.shifts[i], qm.bits_at(i)), i)


def _conv_op(layer: Conv, in_shape, out_shape, common: dict, in_shifts=None, channel_shifts=None):
    """Conv2dRequant where it fits (square kernel, one stride, the same pad on all four sides, no groups: the
    kernels with fast variants), else the general conv. in_shifts (a pointwise conv) and channel_shifts (a
    depthwise conv) come only where quant.aligned_channel_points admits them, so each lands on its op."""
    (kh, kw), (sh, sw) = layer.kernel, layer.strides
    pads = layer.padding(*in_shape[1:])
    if kh == kw and sh == sw and len(set(pads)) == 1 and layer.groups == 1:
        assert channel_shifts is None, "a step per channel after a conv that is not depthwise"
        return Conv2dRequant(in_shape, out_shape, kh, sh, pads[0], **common,
                             in_shifts=None if in_shifts is None else in_shifts.astype(np.uint8))
    assert in_shifts is None, "aligned input channels on a conv that is not pointwise"
    return Conv2dGeneralRequant(in_shape, out_shape, (kh, kw), (sh, sw), pads, layer.groups, **common,
                                channel_shifts=None if channel_shifts is None else channel_shifts.astype(np.int8))


def fuse(model: IntegerModel) -> list[KernelStep]:
    """The model's ops as C kernel calls: conv -> relu -> max-pool becomes one Conv2dRequantMaxpool."""
    steps, ops, k = [], model.ops, 0
    while k < len(ops):
        op = ops[k]
        if isinstance(op, Conv2dRequant) and op.in_shifts is None and k + 1 < len(ops) and \
                isinstance(ops[k + 1], MaxPool2d) and model.readers(k) == [k + 1]:
            steps.append(KernelStep(Conv2dRequantMaxpool(op, ops[k + 1]), [k, k + 1]))
            k += 2
        else:
            steps.append(KernelStep(op, [k]))
            k += 1
    return steps

"""The fast dense kernels (dense_requant_fast, dense_scores_fast) against their numpy twins (dense_requant,
dense_scores in training/integer/reference.py) and the reference C, across shapes and every index width.

Paths (kernels.dense_path): 8-bit indices whose values fit int8 are stored as the int8 weights themselves
(index_is_value: four rows a pass, SMLAD on SIQ_DSP cores, plain C elsewhere); 1, 2 and 4-bit indices whose rows
start on a byte are unpacked a byte at a time; other widths and shapes go through the index stream. The shapes
cover every in_features mod 4 (the word loop's tail) and out_features mod 4 (the last, short group of rows).
Builds: host C default (portable), -DSIQ_EMULATE_DSP (the SMLAD code on portable twins of the intrinsics),
-DSIQ_REFERENCE_KERNELS; and the real thing on Cortex-M4 (SMLAD, unaligned words) and Cortex-M0/M3 (plain C).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from operator_cases import check_four_ways, random_images
from siq.codegen.export import write_sources
from siq.codegen.host import build_host
from siq.codegen.kernels import INT8_IDENTITY_CODEBOOK, dense_path
from siq.codegen.lower import lower
from siq.codegen.pack import unpack_indices
from siq.training.arch import Arch
from siq.training.integer import DenseRequant, DenseScores, integer_scores
from siq.training.quantizers import QuantizeConfig, quantize_model
from test_kernels import BUILDS


def mlp(name: str, input_shape, hidden: int, classes: int) -> Arch:
    return Arch.from_dict({"name": name, "input": list(input_shape),
                           "layers": [{"type": "flatten"}, {"type": "dense", "out": hidden}, {"type": "relu"},
                                      {"type": "dense", "out": classes}]})


# (input shape, hidden rows, classes): in_features 13/60/64/7 (mod 4: 1, 0, 0, 3) then 7/9/16/6 (3, 1, 0, 2)
SHAPES = {"13-7-5": ((1, 1, 13), 7, 5), "60-9-3": ((3, 4, 5), 9, 3), "64-16-4": ((1, 8, 8), 16, 4),
          "7-6-2": ((1, 1, 7), 6, 2)}


def dense_ops(lm):
    return [op for op in lm.ops if isinstance(op.ir, (DenseRequant, DenseScores))]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bits", range(1, 9))
def test_dense_fast_equals_reference_every_index_width(bits, shape, tmp_path):
    """torch == numpy == C in the portable, emulated-DSP and reference builds, exactly."""
    input_shape, hidden, classes = SHAPES[shape]
    arch = mlp(f"mlp-{shape}", input_shape, hidden, classes)
    act_bits = 8 if bits % 2 == 0 else 4
    _, lm = check_four_ways(arch, 10 * bits + len(shape), tmp_path, act_bits=act_bits, weight_bits=bits,
                            builds=("default", "dsp", "reference"))
    ops = dense_ops(lm)
    assert [op.fast_kernel for op in ops] == ["dense_requant_fast", "dense_scores_fast"]
    assert [op.weights.index_is_value for op in ops] == [bits == 8] * 2
    assert [dense_path(op.ir, op.weights.index_is_value) for op in ops] == \
        [expected_path(bits, n) for n in (int(np.prod(input_shape)), hidden)]


def expected_path(bits: int, in_features: int) -> str:
    if bits == 8:
        return "values"
    return f"b{bits}" if bits in (1, 2, 4) and in_features % (8 // bits) == 0 else "stream"


def test_the_shapes_reach_every_dense_path():
    paths = {expected_path(bits, n) for bits in range(1, 9) for shape, hidden, _ in SHAPES.values()
             for n in (int(np.prod(shape)), hidden)}
    assert paths == {"values", "b1", "b2", "b4", "stream"}


def _quantized(arch: Arch, images: np.ndarray, bits: int, act_bits: int, seed: int = 0):
    from operator_cases import random_net
    cfg = QuantizeConfig(method="kmeans", conv_bits=bits, fc_bits=bits, act_bits=act_bits,
                         calibration_images=len(images), seed=seed)
    classes = arch.num_classes
    return quantize_model(random_net(arch, seed), images, np.arange(len(images)) % classes, cfg,
                          [f"c{k}" for k in range(classes)])[0]


def test_int8_weights_are_the_same_weights_and_reach_both_ends(rng, tmp_path):
    """The stored bytes decode through the identity codebook to exactly codebook[indices]; a layer holding -128
    and 127 on all-255 inputs (the widest products an SMLAD lane pair takes) stays bit-exact in every build."""
    arch = mlp("mlp-ends", (1, 1, 37), 11, 3)
    images = random_images(arch, rng)
    qm = copy.deepcopy(_quantized(arch, images, 8, 8))
    first = qm.arch.weighted_layers()[0]
    lc = qm.layers[first]
    lc.codebook = lc.codebook.copy()
    lc.codebook[0], lc.codebook[-1] = -128, 127
    lc.indices = lc.indices.copy()
    lc.indices[:, ::3] = 0
    lc.indices[:, 1::3] = len(lc.codebook) - 1
    lm = lower(qm)
    for op in dense_ops(lm):
        w = op.weights
        stored = unpack_indices(w.packed, w.count, 8).reshape(op.ir.indices.shape)
        assert w.codebook == list(INT8_IDENTITY_CODEBOOK) and w.codebook_stride == 0
        np.testing.assert_array_equal(np.asarray(w.codebook)[stored], np.asarray(op.ir.codebook)[op.ir.indices])
    write_sources(lm, tmp_path)
    expected = integer_scores(lm.integer, images)
    for name, flags in BUILDS.items():
        scores, _ = build_host(tmp_path, lm.prefix, tmp_path / f"build-{name}", extra_flags=flags).infer(images)
        bad = np.flatnonzero(np.any(scores != expected, axis=1))
        assert len(bad) == 0, f"{name} build: {len(bad)} images differ, first {bad[:1]}"


# in_features per index width on the targets: 61 puts 8-bit rows at every byte offset (unaligned words), 62 and
# 64 give byte-aligned 4 and 1-bit rows, 61 makes 3-bit rows start inside a byte
TARGET_INPUTS = {8: 61, 4: 62, 3: 61, 1: 64}


@pytest.mark.parametrize("cpu", ["cortex-m4", "cortex-m3", "cortex-m0"])
@pytest.mark.parametrize("bits", sorted(TARGET_INPUTS, reverse=True))
def test_dense_kernels_bit_exact_on_cortex_m(cpu, bits, rng, tmp_path):
    """SMLAD with unaligned word loads on the Cortex-M4, plain C on M3 and M0; 9 rows: two groups of four and a
    lone row (values), four pairs and a lone row (byte-aligned widths)."""
    from siq.codegen import target
    arch = mlp("mlp-target", (1, 1, TARGET_INPUTS[bits]), 9, 3)
    images = random_images(arch, rng, n=64)
    lm = lower(_quantized(arch, images, bits, 4))
    assert [dense_path(op.ir, op.weights.index_is_value) for op in dense_ops(lm)] == \
        [expected_path(bits, TARGET_INPUTS[bits]), expected_path(bits, 9)]
    write_sources(lm, tmp_path / "model")
    scores = integer_scores(lm.integer, images)
    result = target.run_self_test(tmp_path / "model", lm.prefix, cpu, None, images.reshape(len(images), -1),
                                  scores.argmax(axis=1), scores, "-O2", work_dir=tmp_path / cpu)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert np.array_equal(result["scores"], scores)

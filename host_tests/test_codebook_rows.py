"""Per-channel conv codebooks whose output channels share rows (codegen/weights.py): the C stores each distinct row
once plus a uint16_t table of row offsets, and every conv kernel finds output channel o's row through
codebook_row(). Checked on two networks whose convs together run every conv template (the fused conv + pool's
unrolled rows, the band kernel, the depthwise kernel's 3x3 and two-channel paths, the pointwise kernel's nibble
and index decoders, the general fast kernel, and the reference loops):
  (a) the host C (default, emulated-DSP and reference builds) and the Cortex-M4 in QEMU equal the numpy integer
      reference, which reads the [C_OUT, K] codebook itself, on random inputs; PyTorch fake-quant agrees;
  (b) the generated C holds only the distinct rows, in order of first appearance, and the offset table, and a
      table of zeros computes the row-0 model (so the checks in (a) would see a C that ignored the table);
  (c) flash drops by E * K * (C_OUT - R) - 2 * C_OUT per shared layer, in the lowered model, its report and the
      linked Cortex-M4 image.
Rows are the layer's own codebook scaled by 2^s_o (s_o cycling through 2, 1, 0 over the output channels: a step
per output channel) or shifted by s_o - 1, so three distinct rows per layer.
"""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from siq.codegen.export import model_report, render_sources, write_sources
from siq.codegen.fit.cost import rodata_sections
from siq.codegen.lower import lower
from siq.codegen.weights import WeightTable, share_rows, shared_rows
from siq.training.arch import Arch
from siq.training.integer import (Conv2dGeneralRequant, Conv2dRequant, Conv2dRequantMaxpool, DenseScores,
                                  integer_scores)
from siq.training.nets import Net
from siq.training.quant import LayerCodebook, QuantizedModel, evaluate_exact
from siq.training.quantizers import QuantizeConfig, quantize_model

from operator_cases import random_images, random_net
from test_per_channel import assert_scores_equal, host_scores

# [3, 16, 16] -> conv 3x3 + pool (conv2d_requant_maxpool_k3: kernels/conv2d_rows.c.j2) -> conv 3x3 pad 1 (band)
# -> depthwise 3x3 pad 1 (one channel a pass) -> pointwise 8 -> 12 -> depthwise 3x2 stride 2, two output channels
# an input channel (two channels a pass: the second one's row) -> conv 2x3 stride 2 'same' (band) -> dense.
SHAPES = Arch.from_dict({"name": "shared-rows", "input": [3, 16, 16], "layers": [
    {"type": "conv", "out": 8, "k": 3}, {"type": "relu"}, {"type": "maxpool", "k": 2},
    {"type": "conv", "out": 8, "k": 3, "pad": 1}, {"type": "relu"},
    {"type": "conv", "out": 8, "k": 3, "pad": 1, "groups": 8}, {"type": "relu"},
    {"type": "conv", "out": 12, "k": 1}, {"type": "relu"},
    {"type": "conv", "out": 24, "k": [3, 2], "stride": 2, "groups": 12}, {"type": "relu"},
    {"type": "conv", "out": 8, "k": [2, 3], "stride": 2, "pad": "same"}, {"type": "relu"},
    {"type": "flatten"}, {"type": "dense", "out": 3}]})
SHAPES_KERNELS = ["conv2d_requant_maxpool_k3", "conv2d_general_requant_band", "conv2d_general_requant_depthwise",
                  "conv2d_requant_1x1", "conv2d_general_requant_depthwise", "conv2d_general_requant_band"]
# 48 input channels of 5x5 taps: a pair of output channels does not fit the band kernel's scratch beside its
# ring (kernels.band_layout), so the general fast kernel runs; then a pointwise conv on an odd channel count
# (its SIQ_DSP decoder's index path with a zero upper lane).
WIDE = Arch.from_dict({"name": "shared-rows-wide", "input": [48, 7, 7], "layers": [
    {"type": "conv", "out": 9, "k": 5}, {"type": "relu"},
    {"type": "conv", "out": 8, "k": 1}, {"type": "relu"},
    {"type": "flatten"}, {"type": "dense", "out": 3}]})
WIDE_KERNELS = ["conv2d_general_requant_fast", "conv2d_requant_1x1"]
BUILDS = ("fast", "dsp", "reference")
CONVS = (Conv2dRequant, Conv2dRequantMaxpool, Conv2dGeneralRequant)


def steps(channels: int) -> np.ndarray:
    """s_o = 2, 1, 0, 2, 1, 0, ...: three distinct rows, first seen in the order s = 2, 1, 0 (not sorted)."""
    return (2 - np.arange(channels)) % 3


def scaled(lc: LayerCodebook) -> LayerCodebook:
    """Row o = codebook * 2^s_o (sorted, as the codebook): a per-channel output step on a shared codebook."""
    rows = lc.codebook[None, :] << steps(lc.indices.shape[0])[:, None]
    return LayerCodebook(lc.bits, rows.astype(np.int64), lc.exponent, lc.indices.copy())


def shifted(lc: LayerCodebook) -> LayerCodebook:
    """Row o = codebook + s_o - 1, clipped to int8 (still sorted): int8 entries."""
    rows = np.clip(lc.codebook[None, :] + steps(lc.indices.shape[0])[:, None] - 1, -128, 127)
    return LayerCodebook(lc.bits, rows.astype(np.int64), lc.exponent, lc.indices.copy())


def distinct(lc: LayerCodebook) -> LayerCodebook:
    """Row o = codebook + o - C_OUT / 2, clipped to int8: a row of its own per output channel."""
    channels = lc.indices.shape[0]
    rows = np.clip(lc.codebook[None, :] + np.arange(channels)[:, None] - channels // 2, -128, 127)
    return LayerCodebook(lc.bits, rows.astype(np.int64), lc.exponent, lc.indices.copy())


def conv_layers(qm: QuantizedModel) -> list[int]:
    return [i for i in qm.arch.weighted_layers() if qm.layers[i].indices.ndim > 2]


def converted(qm: QuantizedModel, convert) -> QuantizedModel:
    out = copy.deepcopy(qm)
    for i in conv_layers(qm):
        out.layers[i] = convert(out.layers[i])
    return out


def quantized(arch: Arch, weight_bits: int, seed: int = 3):
    """A random net of arch, every codebook one for the layer (per_channel none), and its random inputs."""
    images = random_images(arch, np.random.default_rng(seed), n=40)
    cfg = QuantizeConfig(method="kmeans", conv_bits=weight_bits, fc_bits=4, act_bits=4, per_channel="none",
                         calibration_images=len(images), calibration="float", seed=1)
    qm = quantize_model(random_net(arch, seed), images, np.arange(len(images)) % 3, cfg, ["a", "b", "c"])[0]
    return qm, images


def full_layout(qm: QuantizedModel, monkeypatch):
    """qm lowered with one codebook row per output channel (row sharing off)."""
    import siq.codegen.lower as lowering
    with monkeypatch.context() as patch:
        patch.setattr(lowering, "share_rows", lambda w, entry: w)
        return lower(qm)


def c_array(text: str, name: str) -> tuple[str, list[int]]:
    """(declared length, values) of a static array of the generated C, comments dropped."""
    found = re.search(rf"{name}\[([^\]]*)\] = \{{(.*?)\}};", text, flags=re.S)
    assert found, f"no {name}[...] in the C"
    return found.group(1), [int(v) for v in re.findall(r"-?\d+", re.sub(r"/\*.*?\*/", "", found.group(2)))]


@pytest.fixture(scope="module", params=[(SHAPES, 4, scaled), (SHAPES, 3, shifted), (WIDE, 4, scaled)],
                ids=["every-conv-W4-scaled", "every-conv-W3-shifted", "wide-W4-scaled"])
def shared(request):
    arch, weight_bits, convert = request.param
    qm, images = quantized(arch, weight_bits)
    return converted(qm, convert), images, SHAPES_KERNELS if arch is SHAPES else WIDE_KERNELS


# ---------------------------------------------------------------- (a) bit-exact: host builds, torch, Cortex-M4

def test_shared_rows_every_build_bit_exact(shared, tmp_path):
    qm, images, kernels = shared
    lm = lower(qm)
    convs = [op for op in lm.ops if isinstance(op.ir, CONVS)]
    assert [op.fast_kernel for op in convs] == kernels
    assert all(op.weights.row_offsets is not None for op in convs), "every conv must share rows here"
    expected = integer_scores(lm.integer, images)
    assert_scores_equal(evaluate_exact(qm, Net(qm.arch), images), expected, "PyTorch fake-quant")
    write_sources(lm, tmp_path)
    for build in BUILDS:
        assert_scores_equal(host_scores(lm, tmp_path, build, images), expected, f"{build} build")


def test_convs_with_and_without_a_table_in_one_model(tmp_path):
    """Every other conv shares rows, the rest hold a row per channel (their codebook_rows NULL): the kernels test
    the pointer per layer."""
    qm, images = quantized(SHAPES, 4)
    mixed = copy.deepcopy(qm)
    for n, i in enumerate(conv_layers(qm)):
        mixed.layers[i] = (scaled if n % 2 == 0 else distinct)(qm.layers[i])
    lm = lower(mixed)
    assert [op.weights.row_offsets is not None for op in lm.ops if isinstance(op.ir, CONVS)] == \
        [True, False, True, False, True, False]
    text = render_sources(lm)[f"{lm.prefix}.c"]
    assert len(re.findall(r"^ +\.codebook_rows = NULL,$", text, flags=re.M)) == 3
    write_sources(lm, tmp_path)
    expected = integer_scores(lm.integer, images)
    for build in BUILDS:
        assert_scores_equal(host_scores(lm, tmp_path, build, images), expected, f"{build} build")


@pytest.mark.parametrize("defines", [[], ["-DSIQ_EMULATE_DSP"], ["-DSIQ_REFERENCE_KERNELS"]],
                         ids=["portable", "emulated-dsp", "reference"])
def test_no_read_outside_the_stored_rows_under_sanitizers(defines, tmp_path):
    """ASan: no kernel reads past the R * K stored entries (a row found by o * stride would, for o >= R)."""
    import subprocess
    from test_sanitizers import DRIVER, SANITIZE
    qm, images = quantized(SHAPES, 4)
    lm = lower(converted(qm, scaled))
    write_sources(lm, tmp_path)
    (tmp_path / "driver.c").write_text(DRIVER)
    build = subprocess.run(["gcc", *SANITIZE, *defines, "-I", str(tmp_path), str(tmp_path / f"{lm.prefix}.c"),
                            str(tmp_path / "driver.c"), "-o", str(tmp_path / "driver")], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (tmp_path / "images.bin").write_bytes(np.ascontiguousarray(images).tobytes())
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    result = subprocess.run([str(tmp_path / "driver"), str(tmp_path / "images.bin"), str(tmp_path / "scores.bin"),
                             str(len(images))], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0 and "runtime error" not in result.stderr and "Sanitizer" not in result.stderr, \
        result.stderr[-3000:]
    scores = np.fromfile(tmp_path / "scores.bin", dtype=np.int32)[:len(images) * 3].reshape(len(images), 3)
    assert_scores_equal(scores, integer_scores(lm.integer, images), "sanitized build")


def test_shared_rows_bit_exact_on_cortex_m4(shared, tmp_path):
    """The SIQ_DSP bodies (band lane pairs, depthwise pairs, pointwise quads) run only on the target."""
    from siq.codegen import target
    qm, images, _ = shared
    lm = lower(qm)
    write_sources(lm, tmp_path / "model")
    scores = integer_scores(lm.integer, images)
    result = target.run_self_test(tmp_path / "model", lm.prefix, "cortex-m4", None, images.reshape(len(images), -1),
                                  scores.argmax(axis=1), scores, "-O2", work_dir=tmp_path / "m4")
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert np.array_equal(result["scores"], scores)


# ---------------------------------------------------------------- (b) what the C holds

def test_c_holds_each_distinct_row_once_and_the_offsets(shared):
    qm, _, _ = shared
    lm = lower(qm)
    text = render_sources(lm)[f"{lm.prefix}.c"]
    for i, op in zip(qm.arch.weighted_layers(), [op for op in lm.ops if op.weights]):
        table, name = qm.layers[i].codebook, op.weights.name
        if i not in conv_layers(qm):  # the dense layer: one codebook, no table
            assert f"{name}_codebook_rows" not in text
            continue
        channels, k = table.shape
        firsts = [o for o in range(channels) if not any(np.array_equal(table[o], table[p]) for p in range(o))]
        assert firsts == [0, 1, 2]
        dims, values = c_array(text, f"{name}_codebook")
        assert dims == f"3 * {k}" and values == table[firsts].reshape(-1).tolist()
        dims, offsets = c_array(text, f"{name}_codebook_rows")
        assert dims == str(channels) and offsets == [k * (o % 3) for o in range(channels)]
        # the C's row of every output channel is the numpy reference's
        assert all(values[offsets[o]:offsets[o] + k] == table[o].tolist() for o in range(channels))
        params = re.search(rf"\.codebook_rows = {name}_codebook_rows,\n +\.weights = {name}_weights,", text)
        assert params, f"{name}'s params do not point at its row table"
    for body in re.findall(r"= \{\n(.*?)\n\};", text, re.S):  # initializers within 100 characters a line
        assert all(len(line) <= 100 for line in body.splitlines())


def test_a_table_of_zeros_computes_the_row_zero_model(tmp_path):
    """Every offset 0 in the generated C gives exactly the scores of the model whose channels all use row 0, which
    differ from the shared-rows model's: the bit-exact checks would see kernels that ignored the table."""
    qm, images = quantized(SHAPES, 4)
    qm = converted(qm, scaled)
    lm = lower(qm)
    expected = integer_scores(lm.integer, images)
    row_zero = converted(qm, lambda lc: LayerCodebook(lc.bits, np.tile(lc.codebook[0], (lc.codebook.shape[0], 1)),
                                                      lc.exponent, lc.indices.copy()))
    ignored = integer_scores(lower(row_zero).integer, images)
    assert np.mean(np.any(expected != ignored, axis=1)) > 0.5
    for name, text in render_sources(lm).items():
        if name.endswith(".c"):
            text, count = re.subn(r"(_codebook_rows\[\d+\] = \{)(.*?)(\};)",
                                  lambda m: m.group(1) + re.sub(r"\d+u", "0u", m.group(2)) + m.group(3), text,
                                  flags=re.S)
            assert count == len(conv_layers(qm))
        (tmp_path / name).write_text(text)
    for build in BUILDS:
        assert_scores_equal(host_scores(lm, tmp_path, build, images), ignored, f"{build} build, offsets 0")


def test_distinct_rows_keep_one_row_per_channel_and_no_table(monkeypatch):
    """Rows of their own per output channel: the C is the one lowering emits with row sharing off."""
    qm, _ = quantized(SHAPES, 4)
    qm = converted(qm, distinct)
    lm = lower(qm)
    assert all(op.weights.row_offsets is None for op in lm.ops if op.weights)
    assert render_sources(lm) == render_sources(full_layout(qm, monkeypatch))
    text = render_sources(lm)[f"{lm.prefix}.c"]
    assert "_codebook_rows[" not in text
    assert len(re.findall(r"^ +\.codebook_rows = NULL,$", text, flags=re.M)) == len(conv_layers(qm))


# ---------------------------------------------------------------- (c) flash

def test_flash_drops_by_the_rows_not_stored(shared, monkeypatch):
    qm, _, _ = shared
    lm, full = lower(qm), full_layout(qm, monkeypatch)
    entry = lm.codebook_entry_bytes
    assert entry == (2 if int(np.max(np.abs(qm.layers[0].codebook))) > 127 else 1)
    saved = 0
    for i in conv_layers(qm):
        channels, k = qm.layers[i].codebook.shape
        saved += entry * k * (channels - 3) - 2 * channels
    assert saved > 0
    assert full.weights_bytes() - lm.weights_bytes() == saved
    assert model_report(full)["footprint"]["weights_bytes"] - model_report(lm)["footprint"]["weights_bytes"] == saved
    report = model_report(lm)
    assert sum(op["weights_bytes"] for op in report["ops"]) == lm.weights_bytes()
    for i, layer in zip(qm.arch.weighted_layers(), report["footprint"]["layers"]):
        lc = qm.layers[i]
        if i in conv_layers(qm):
            channels, k = lc.codebook.shape
            assert (layer["codebook_rows"], layer["codebook_entries"]) == (3, k)
            assert layer["codebook_bytes"] == entry * 3 * k + 2 * channels
        assert layer["codebook"] == lc.codebook.tolist()  # the table QuantizedModel holds, rows repeated
    sections = rodata_sections(lm)
    for i, op in zip(qm.arch.weighted_layers(), [op for op in lm.ops if op.weights]):
        if i in conv_layers(qm):
            assert sections[f"{op.weights.name}_codebook_rows"] == 2 * qm.layers[i].codebook.shape[0]


def test_linked_image_holds_the_counted_bytes(tmp_path):
    """On the Cortex-M4 image: each shared layer's codebook and offset table link with the bytes counted."""
    from test_fit import linked_rodata
    qm, _ = quantized(SHAPES, 4)
    qm = converted(qm, scaled)
    lm, linked = lower(qm), linked_rodata(qm, tmp_path)
    counted = rodata_sections(lm)
    names = [op.weights.name for op in lm.ops if op.weights and op.weights.row_offsets is not None]
    assert len(names) == len(conv_layers(qm))
    for name in names:
        for array in (f"{name}_codebook", f"{name}_codebook_rows"):
            assert linked[array] == counted[array], array


# ---------------------------------------------------------------- the layout rule

def _table(name: str, rows: list[list[int]]) -> WeightTable:
    return WeightTable(name, [v for row in rows for v in row], b"", 4, 0, [0] * len(rows),
                       codebook_rows=len(rows), codebook_stride=len(rows[0]))


def test_rows_are_shared_only_where_that_takes_fewer_bytes():
    a, b = list(range(-8, 8)), list(range(-16, 16, 2))
    shared_table = share_rows(_table("l", [a, b, a, a, b, a]), 1)
    assert shared_table.codebook == a + b and shared_table.codebook_rows == 2
    assert shared_table.row_offsets == [0, 16, 0, 0, 16, 0] and shared_table.codebook_table() == [a, b, a, a, b, a]
    assert shared_table.codebook_bytes(1) == 32 + 12 < 6 * 16
    # 2 entries of 1 byte a row cost what a 2-byte offset costs: every row stays
    assert share_rows(_table("l", [[0, 1]] * 8), 1).row_offsets is None
    assert share_rows(_table("l", [[0, 1]] * 8), 2).row_offsets == [0] * 8   # 2 x 2 bytes a row: worth it
    # every row distinct, or one row for the layer: nothing to share
    assert share_rows(_table("l", [[o, o + 1] for o in range(8)]), 2).row_offsets is None
    one = WeightTable("l", a, b"", 4, 0, [0], codebook_rows=1, codebook_stride=0)
    assert share_rows(one, 2) is one
    # offsets past a uint16_t: the rows stay one per channel
    wide = np.repeat(np.arange(260)[:, None] + np.arange(256)[None, :], 2, axis=0)
    assert shared_rows(wide, 2) is None
    assert shared_rows(wide[:258], 2)[1][-1] == 128 * 256


def test_dense_layers_keep_a_row_per_feature(tmp_path):
    """Dense kernels read rows by stride only: repeated rows of a per-feature dense codebook stay, every row."""
    qm, images = quantized(SHAPES, 4)
    dense = qm.arch.weighted_layers()[-1]
    qm = converted(qm, scaled)
    lc = qm.layers[dense]
    qm.layers[dense] = LayerCodebook(lc.bits, np.tile(lc.codebook, (3, 1)), lc.exponent, lc.indices.copy())
    lm = lower(qm)
    *convs, w = [op for op in lm.ops if op.weights]
    assert all(op.weights.row_offsets is not None for op in convs) and isinstance(w.ir, DenseScores)
    w = w.weights
    assert (w.row_offsets, w.codebook_rows, w.codebook_stride) == (None, 3, lc.entries)
    write_sources(lm, tmp_path)
    assert_scores_equal(host_scores(lm, tmp_path, "fast", images), integer_scores(lm.integer, images), "fast")


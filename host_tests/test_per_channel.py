"""Per-output-channel codebooks ([C_OUT, K]: row o holds output channel o's values) through lowering and every C
kernel path, bit-exact against the numpy integer reference (training/integer/reference.py).

Per-channel models are built from per-layer ones two ways:
  * shifted rows: row o = codebook + (o mod 3) - 1 (clipped to the codebook range, still sorted), indices kept,
    so neighbouring channels compute with different weights;
  * compact rows: row o holds only the values channel o uses (padded with its last value to the longest row),
    indices renumbered into the row: the same weights as the per-layer model through a different layout, so its
    scores must equal the per-layer model's (the same thing computed two ways).
The C reads row o at codebook + o * codebook_stride; a stride of 0 (one codebook for the layer) must make the
shifted-rows model compute the row-0 model exactly, which shows the bit-exact checks would see a C that ignores
the row.
"""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from siq.codegen.export import model_report, render_sources, report_markdown, write_sources
from siq.codegen.host import build_host
from siq.codegen.lower import lower
from conftest import tiny_arch
from siq.training.arch import load_arch
from siq.training.errors import SiqError
from siq.training.integer import build_integer_model, integer_scores
from siq.training.nets import Net
from siq.training.quant import LayerCodebook, QuantizedModel, codebook_entry_bytes, pad_rows
from siq.training.quantizers import QuantizeConfig, quantize_model
from test_kernels import BUILDS  # the fast, emulated-DSP and reference builds


# ---------------------------------------------------------------- per-channel models from per-layer ones

def shifted_rows(lc: LayerCodebook, codebook_bits: int) -> LayerCodebook:
    """Row o = codebook + (o mod 3) - 1, clipped to the signed codebook_bits range (monotone: rows stay sorted)."""
    offsets = np.arange(lc.indices.shape[0]) % 3 - 1
    top = 2 ** (codebook_bits - 1) - 1
    rows = np.clip(lc.codebook[None, :] + offsets[:, None], -top - 1, top)
    return LayerCodebook(lc.bits, rows.astype(np.int64), lc.exponent, lc.indices.copy())


def compact_rows(lc: LayerCodebook) -> LayerCodebook:
    """Row o = the codebook values channel o uses, padded to the longest row; the same weights, new indices."""
    rows, indices = [], np.empty_like(lc.indices)
    for o, channel in enumerate(lc.indices):
        used = np.unique(channel)
        rows.append(lc.codebook[used])
        indices[o] = np.searchsorted(used, channel)
    return LayerCodebook(lc.bits, pad_rows(rows).astype(np.int64), lc.exponent, indices.astype(np.uint8))


def row_zero(lc: LayerCodebook) -> LayerCodebook:
    """One codebook for the layer: row 0 of a per-channel one (what a C ignoring the rows would compute)."""
    return LayerCodebook(lc.bits, lc.codebook[0].copy(), lc.exponent, lc.indices.copy())


def converted(qm: QuantizedModel, convert, layers=None) -> QuantizedModel:
    """A copy of qm with convert(codebook) applied to `layers` (every weighted layer by default)."""
    out = copy.deepcopy(qm)
    for i in (qm.arch.weighted_layers() if layers is None else layers):
        out.layers[i] = convert(out.layers[i])
    return out


def quantized(net: Net, images, conv_bits: int, fc_bits: int, act_bits: int, codebook_bits: int = 8):
    # per-channel codebooks' bit-exactness: how the steps were chosen plays no part, so the seconds-fast tensor rule
    cfg = QuantizeConfig(method="kmeans", conv_bits=conv_bits, fc_bits=fc_bits, act_bits=act_bits,
                         calibration_images=100, calibration="float", codebook_bits=codebook_bits)
    labels = np.arange(len(images)) % net.arch.num_classes
    return quantize_model(net, images, labels, cfg, [f"c{i}" for i in range(net.arch.num_classes)])[0]


def host_scores(lm, directory, build: str, images) -> np.ndarray:
    host = build_host(directory, lm.prefix, directory / f"build-{build}", extra_flags=BUILDS[build])
    scores, classes = host.infer(images)
    np.testing.assert_array_equal(classes, scores.argmax(axis=1))
    return scores


def assert_scores_equal(got, expected, what: str) -> None:
    bad = np.argwhere(got != expected)
    assert len(bad) == 0, (f"{what}: {len(np.unique(bad[:, 0]))} of {len(got)} images differ, first image "
                           f"{bad[0][0]} score {bad[0][1]}: expected {expected[bad[0][0]].tolist()}, "
                           f"got {got[bad[0][0]].tolist()}")


def check_builds(qm: QuantizedModel, images, directory, builds=tuple(BUILDS)):
    """Every build of qm's generated C gives the numpy reference's scores exactly; returns (lowered, scores)."""
    lm = lower(qm)
    write_sources(lm, directory)
    expected = integer_scores(lm.integer, images)
    for build in builds:
        assert_scores_equal(host_scores(lm, directory, build, images), expected, f"{build} build")
    return lm, expected


@pytest.fixture(scope="module")
def tiny_setup():
    """conv pad 1 -> pool (reference conv2d_requant_maxpool in every build) -> lrn -> conv without pool
    (reference conv2d_requant) -> dense -> dense, untrained, on structured random 8x8 images."""
    import torch
    torch.manual_seed(2)
    rng = np.random.default_rng(2)
    images = (rng.random((80, 1, 8, 8)) ** 2 * 255).astype(np.uint8)
    return Net(tiny_arch(lrn=True)), images


# ---------------------------------------------------------------- (a) host C, every kernel path

# (conv index bits, fc index bits, activation bits, codebook bits): 8-bit fc indices run dense_quad_u8 and the
# byte branch of dense_row, others the index stream; activations <= 4 bits run the nibble conv/lrn kernels;
# 12-bit codebooks are int16 in the C.
CASES = {"W8A8": (8, 8, 8, 8), "W2A4": (2, 2, 4, 8), "W4-FC8-A4": (4, 8, 4, 8), "W3-FC5-A8": (3, 5, 8, 8),
         "W4-FC8-A4-int16": (4, 8, 4, 12)}
FAST_KERNELS = {8: [None, "conv2d_requant_maxpool_k3", "lrn_requant_window", "conv2d_requant_maxpool_k5",
                    "dense_requant_fast", "dense_scores_fast"],
                4: [None, "conv2d_requant_maxpool_k3_o4", "lrn_requant_window_i4", "conv2d_requant_maxpool_k5_i4",
                    "dense_requant_fast", "dense_scores_fast"]}


@pytest.mark.parametrize("case", CASES)
def test_per_channel_every_build_bit_exact(case, fast_setup, tmp_path):
    """Every weighted layer per channel: fast, DSP-emulated and reference builds equal the numpy reference."""
    conv_bits, fc_bits, act_bits, codebook_bits = CASES[case]
    net, images = fast_setup
    qm = converted(quantized(net, images, conv_bits, fc_bits, act_bits, codebook_bits),
                   lambda lc: shifted_rows(lc, codebook_bits))
    lm, _ = check_builds(qm, images, tmp_path)
    assert [op.fast_kernel for op in lm.ops] == FAST_KERNELS[8 if act_bits > 4 else 4]
    assert [op.weights.codebook_stride for op in lm.ops if op.weights] == \
        [qm.layers[i].entries for i in qm.arch.weighted_layers()]
    assert lm.codebook_type == ("int8_t" if codebook_bits == 8 else "int16_t")


@pytest.mark.parametrize("act_bits", [4, 8])
def test_mixed_per_channel_and_per_layer_with_padded_reference_convs(act_bits, tiny_setup, tmp_path):
    """Padded convs (a fused padded conv + pool: reference kernel in every build) and a conv without pooling (run
    as the general conv); the first conv and the class scores per channel, the others one codebook per layer."""
    net, images = tiny_setup
    qm = quantized(net, images, 3, 8, act_bits)
    first, *middle, last = qm.arch.weighted_layers()
    mixed = converted(qm, lambda lc: shifted_rows(lc, 8), [first, last])
    lm, _ = check_builds(mixed, images, tmp_path)
    assert {op.kernel for op in lm.ops} >= {"conv2d_requant_maxpool", "conv2d_general_requant", "dense_scores"}
    assert [op.weights.codebook_stride > 0 for op in lm.ops if op.weights] == [True, False, False, True]


@pytest.mark.parametrize("conv_bits, fc_bits", [(4, 8), (2, 3)])
def test_compact_rows_compute_the_per_layer_model(conv_bits, fc_bits, fast_setup, tmp_path):
    """The same weights held as per-channel rows of different lengths (padded) and renumbered indices: the
    C and the reference of the per-channel model equal the per-layer model's scores."""
    net, images = fast_setup
    qm = quantized(net, images, conv_bits, fc_bits, 4)
    compact = converted(qm, compact_rows)
    lengths = {i: [len(np.unique(row)) for row in lc.codebook] for i, lc in compact.layers.items()}
    assert any(len(set(v)) > 1 for v in lengths.values()), "some rows must be padded for this test to mean much"
    lm, scores = check_builds(compact, images, tmp_path, builds=("fast", "reference"))
    assert_scores_equal(scores, integer_scores(build_integer_model(qm), images), "compact rows vs per layer")


# ---------------------------------------------------------------- (d) a C that ignores the rows is caught

def test_stride_zero_computes_row_zero_and_is_caught(fast_setup, tmp_path):
    """Setting every codebook_stride of the generated C to 0 and every row-offset table to NULL (one codebook per
    layer: row 0 for every channel) gives exactly the row-0 model's scores, which differ from the per-channel
    model's on most images."""
    net, images = fast_setup
    qm = converted(quantized(net, images, 8, 8, 4), lambda lc: shifted_rows(lc, 8))
    expected = integer_scores(build_integer_model(qm), images)
    ignored = integer_scores(build_integer_model(converted(qm, row_zero)), images)
    assert np.mean(np.any(expected != ignored, axis=1)) > 0.9
    lm = lower(qm)
    source = render_sources(lm)
    strides = re.findall(r"^ +\.codebook_stride = (\d+),$", source[f"{lm.prefix}.c"], flags=re.M)
    assert [int(s) for s in strides] == [qm.layers[i].entries for i in qm.arch.weighted_layers()]
    directory = tmp_path / "stride0"
    directory.mkdir()
    for name, text in source.items():
        if name.endswith(".c"):
            text = re.sub(r"^( +)\.codebook_stride = \d+,$", r"\g<1>.codebook_stride = 0,", text, flags=re.M)
            text = re.sub(r"^( +)\.codebook_rows = \w+,$", r"\g<1>.codebook_rows = NULL,", text, flags=re.M)
        (directory / name).write_text(text)
    for build in ("fast", "reference"):
        assert_scores_equal(host_scores(lm, directory, build, images), ignored, f"{build} build with stride 0")


# ---------------------------------------------------------------- (c) flash accounting

def stored_rows(lc: LayerCodebook, entry: int, conv: bool) -> tuple[int, int]:
    """(codebook rows the C stores, bytes of its row-offset table): a conv's output channels sharing rows get each
    distinct row once and 2 bytes a channel where that is smaller (codegen/weights.py); else every row."""
    if not lc.per_channel:
        return 1, 0
    channels, distinct = lc.codebook.shape[0], len(np.unique(lc.codebook, axis=0))
    if conv and entry * distinct * lc.entries + 2 * channels < entry * channels * lc.entries:
        return distinct, 2 * channels
    return channels, 0


@pytest.mark.parametrize("codebook_bits", [8, 12])
def test_flash_counts_every_stored_codebook_row(codebook_bits, fast_setup, tmp_path):
    """Rows o and o + 3 of shifted_rows are equal: the first conv's 4 channels share 3 rows. At 1 byte an entry
    (and K <= 8) sharing them would not be smaller, at 2 bytes it is."""
    net, images = fast_setup
    qm = converted(quantized(net, images, 3, 8, 4, codebook_bits), lambda lc: shifted_rows(lc, codebook_bits),
                   [0, 10])  # first conv and class scores per channel, the others per layer
    entry = codebook_entry_bytes([lc.codebook for lc in qm.layers.values()])
    assert entry == (1 if codebook_bits == 8 else 2)
    lm = lower(qm)
    # the per-layer 8-bit dense layer holds its int8 weights as indices (kernels.index_is_value): no codebook of
    # its own, the model's shared 256-entry identity codebook instead
    tables = dict(zip(qm.arch.weighted_layers(), (op.weights for op in lm.ops if op.weights)))
    shared = [i for i, w in tables.items() if w.index_is_value]
    assert shared == ([qm.arch.weighted_layers()[2]] if codebook_bits == 8 else [])
    convs = {i for i, lc in qm.layers.items() if lc.indices.ndim > 2}
    rows = {i: stored_rows(lc, entry, i in convs) for i, lc in qm.layers.items()}
    assert (rows[0][0] < 4) == (codebook_bits == 12)
    own = sum(0 if i in shared else entry * rows[i][0] * lc.entries + rows[i][1] for i, lc in qm.layers.items())
    expected = sum((lc.indices.size * lc.bits + 7) // 8 for lc in qm.layers.values()) + own + entry * 256 * bool(shared)
    report = model_report(lm)
    assert lm.weights_bytes() == report["footprint"]["weights_bytes"] == expected
    # QuantizedModel.weights_bytes shares rows by the same rule; it counts the 8-bit dense layer's own codebook
    # where the C holds the identity codebook
    assert qm.weights_bytes() == expected - entry * 256 * bool(shared) + sum(entry * qm.layers[i].codebook.size
                                                                              for i in shared)
    for i, layer in zip(qm.arch.weighted_layers(), report["footprint"]["layers"]):
        lc = qm.layers[i]
        if i in shared:
            assert layer["index_is_value"] and layer["codebook_bytes"] == 0
            continue
        assert (layer["codebook_rows"], layer["codebook_entries"]) == (rows[i][0], lc.entries)
        assert layer["codebook_bytes"] == entry * rows[i][0] * lc.entries + rows[i][1]
        assert layer["codebook"] == lc.codebook.tolist()
    assert f"| layer0 | 3 | 36 | 14 | {rows[0][0]} x {qm.layers[0].entries} |" in report_markdown({"model": report})
    # the C arrays hold exactly those entries: the stored rows of K for per-channel layers, K for the others
    write_sources(lm, tmp_path)
    text = (tmp_path / f"{lm.prefix}.c").read_text()
    assert (f"int8_identity_codebook[256] = {{" in text) == bool(shared)
    for op in (op for op in lm.ops if op.weights and not op.weights.index_is_value):
        w = op.weights
        dims = f"{w.codebook_rows} * {w.codebook_entries}" if w.codebook_stride else f"{w.codebook_entries}"
        body = re.search(rf"{w.name}_codebook\[{re.escape(dims)}\] = \{{(.*?)\}};", text, flags=re.S)
        assert body, f"no {w.name}_codebook[{dims}] in the C"
        values = [int(v) for v in re.findall(r"-?\d+", re.sub(r"/\*.*?\*/", "", body.group(1)))]
        assert values == w.codebook and len(values) == w.codebook_rows * w.codebook_entries
    host_scores(lm, tmp_path, "fast", images[:4])  # the static asserts on the codebook sizes hold


def test_lowering_refuses_codebooks_that_do_not_fit(fast_setup):
    net, images = fast_setup
    qm = quantized(net, images, 2, 2, 4)
    wrong_rows = converted(qm, lambda lc: shifted_rows(lc, 8), [0])
    wrong_rows.layers[0].codebook = wrong_rows.layers[0].codebook[:3]  # 3 rows for 4 output channels
    with pytest.raises(SiqError, match=r"layer 0 \(conv\): 3 codebook rows for 4 output channels"):
        build_integer_model(wrong_rows)
    extra_rows = converted(qm, lambda lc: shifted_rows(lc, 8), [0])
    extra_rows.layers[0].codebook = np.concatenate([extra_rows.layers[0].codebook] * 2)  # 8 rows for 4 channels
    with pytest.raises(SiqError, match=r"layer 0 \(conv\): 8 codebook rows for 4 output channels"):
        lower(extra_rows)  # refused while lowering to the integer model, before any C exists
    too_long = converted(qm, lambda lc: shifted_rows(lc, 8), [0])
    too_long.layers[0].codebook = np.tile(np.arange(5) - 2, (4, 1))  # 5 entries a row for 2-bit indices
    with pytest.raises(SiqError, match="layer0: 5 codebook entries per row for 2-bit indices"):
        lower(too_long)


# ---------------------------------------------------------------- (b) Cortex-M4 in QEMU

def test_per_channel_bit_exact_on_cortex_m4(preset_nets, rng, tmp_path):
    """paper-mnist W4A4 FC8 (the firmware defaults), every layer per channel: the SMLAD conv path with nibble
    codes and the 8-bit-index dense quads on the emulated Cortex-M4. A missing toolchain fails (SiqError)."""
    from siq.codegen import target
    net = preset_nets["paper-mnist"]
    images = (rng.random((64, 1, 28, 28)) ** 3 * 255).astype(np.uint8)
    qm = converted(quantized(net, images, 4, 8, 4), lambda lc: shifted_rows(lc, 8))
    lm = lower(qm)
    assert all(op.weights.codebook_stride for op in lm.ops if op.weights)
    assert [op.fast_kernel for op in lm.ops if op.kernel == "conv2d_requant_maxpool"] == \
        ["conv2d_requant_maxpool_k5_i4_o4", "conv2d_requant_maxpool_k5_i4"]
    write_sources(lm, tmp_path / "model")
    scores = integer_scores(lm.integer, images)
    result = target.run_self_test(tmp_path / "model", lm.prefix, "cortex-m4", None, images.reshape(64, -1),
                                  scores.argmax(axis=1), scores, "-O2", work_dir=tmp_path / "m4")
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert np.array_equal(result["scores"], scores)


def test_depthwise_convs_get_a_codebook_row_per_channel_by_default():
    """The default gives the depthwise convs (each output channel reads one input channel) per-channel codebooks
    and no other layer: not a first conv on a one-channel input, so the paper's networks quantize as before."""
    dscnn = Net(load_arch("ds-cnn-28").folded())
    depthwise = {i for i, layer in enumerate(dscnn.arch.layers) if getattr(layer, "groups", 1) > 1}
    assert len(depthwise) == 4
    assert QuantizeConfig().per_channel_layers(dscnn) == depthwise
    assert QuantizeConfig(per_channel="none").per_channel_layers(dscnn) == set()
    assert QuantizeConfig(per_channel="conv").per_channel_layers(dscnn) > depthwise
    for name in ("paper-mnist", "paper-office", "resnet8"):
        assert QuantizeConfig().per_channel_layers(Net(load_arch(name).folded())) == set(), name

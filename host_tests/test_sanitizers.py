"""The generated C under AddressSanitizer and UndefinedBehaviorSanitizer: a standalone driver (no cffi, no
LD_PRELOAD) runs >= 10,000 inputs -- real digits, random images, all-0 and all-255 -- through a briefly trained
paper-mnist, and every score must equal the numpy integer reference. Any out-of-bounds read or write, signed
overflow, too-wide or negative shift or misaligned access aborts the run (-fno-sanitize-recover=all).

Each image sits in its own malloc'd block of exactly INPUT_BYTES and the scores in one of exactly NUM_CLASSES
int32, so reading a byte past the image or writing a score past the end is caught too."""
import subprocess

import numpy as np
import pytest

from siq.codegen.export import write_sources
from siq.codegen.lower import lower
from siq.training.arch import load_arch
from siq.training.integer import integer_scores
from siq.training.quantizers import QuantizeConfig, quantize_model
from siq.training.train import TrainConfig, train_float

SANITIZE = ["-std=c99", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
            "-g", "-O1"]

DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "siq_model.h"

/* usage: driver IMAGES SCORES COUNT -- IMAGES holds COUNT * INPUT_BYTES uint8, SCORES gets COUNT * NUM_CLASSES
 * int32 then the class of each image as int32. */
int main(int argc, char **argv)
{
    FILE *in, *out;
    long count, i;
    int32_t *all_classes;
    if (argc != 4) {
        return 2;
    }
    count = strtol(argv[3], NULL, 10);
    in = fopen(argv[1], "rb");
    out = fopen(argv[2], "wb");
    all_classes = malloc(sizeof(int32_t) * (size_t)count);
    if (in == NULL || out == NULL || all_classes == NULL) {
        return 3;
    }
    for (i = 0; i < count; ++i) {
        uint8_t *image = malloc(SIQ_MODEL_INPUT_BYTES);
        int32_t *scores = malloc(sizeof(int32_t) * SIQ_MODEL_NUM_CLASSES);
        if (image == NULL || scores == NULL || fread(image, 1, SIQ_MODEL_INPUT_BYTES, in) != SIQ_MODEL_INPUT_BYTES) {
            return 4;
        }
        all_classes[i] = siq_model_infer(image, scores);
        if (all_classes[i] < 0 || all_classes[i] >= SIQ_MODEL_NUM_CLASSES
            || siq_model_class_names[all_classes[i]] == NULL) {
            return 5;
        }
        fwrite(scores, sizeof(int32_t), SIQ_MODEL_NUM_CLASSES, out);
        free(image);
        free(scores);
    }
    fwrite(all_classes, sizeof(int32_t), (size_t)count, out);
    free(all_classes);
    fclose(in);
    return fclose(out) == 0 ? 0 : 6;
}
"""


@pytest.fixture(scope="module")
def trained(mnist5k):
    """paper-mnist after one epoch on 1,000 training digits: real, structured feature maps."""
    net, _ = train_float(load_arch("paper-mnist"), mnist5k.train_x[:1000], mnist5k.train_y[:1000],
                         TrainConfig(epochs=1, batch_size=32, lr=3e-3))
    return net


@pytest.fixture(scope="module")
def inputs(mnist5k):
    """10,002 images: the 1,000 test and 4,000 training digits, 5,000 random ones (uniform, and sparse bright
    dots on black), one all-0 and one all-255."""
    rng = np.random.default_rng(6)
    shape = mnist5k.test_x.shape[1:]
    uniform = rng.integers(0, 256, (2500, *shape), dtype=np.uint8)
    sparse = np.where(rng.random((2500, *shape)) < 0.2, 255, 0).astype(np.uint8)
    extremes = np.stack([np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8)])
    images = np.concatenate([mnist5k.test_x, mnist5k.train_x, uniform, sparse, extremes])
    assert images.dtype == np.uint8 and len(images) == 10_002
    return images


@pytest.mark.parametrize("conv_bits, fc_bits, act_bits, defines, count", [
    (4, 8, 4, ["-DSIQ_EMULATE_DSP"], 10_002),       # the default firmware's widths, optimised kernels, DSP path
    (1, 8, 8, [], 10_002),                          # extreme codes: 1-bit conv codebooks, activations up to 255
    (4, 8, 4, ["-DSIQ_REFERENCE_KERNELS"], 1_000),  # the plain reference loops (slow under ASan: fewer images)
    (8, 1, 1, [], 1_000),                           # 8-bit conv indices (byte path), 1-bit FC and activations
    (4, 4, 4, [], 2_000),                           # 4-bit FC indices a byte at a time (both FC layers)
], ids=["W4A4-FC8-dsp", "W1A8-FC8", "W4A4-FC8-reference", "W8A1-FC1", "W4A4-FC4"])
def test_sanitized_build_matches_the_reference(conv_bits, fc_bits, act_bits, defines, count, trained, mnist5k,
                                               inputs, tmp_path):
    inputs = np.concatenate([inputs[:count - 2], inputs[-2:]])  # always the all-0 and all-255 images
    # uniform codebooks: instant; at 8 bits they hold the extreme values -127 and 127, at 1 bit +-mean|w|
    cfg = QuantizeConfig(method="uniform", conv_bits=conv_bits, fc_bits=fc_bits, act_bits=act_bits,
                         calibration_images=500, calibration="float")  # the tensor rule: seconds, not a minute
    qm = quantize_model(trained, mnist5k.train_x, mnist5k.train_y, cfg, mnist5k.class_names)[0]
    lm = lower(qm)
    write_sources(lm, tmp_path)
    (tmp_path / "driver.c").write_text(DRIVER)
    binary = tmp_path / "driver"
    build = subprocess.run(["gcc", *SANITIZE, *defines, "-I", str(tmp_path), str(tmp_path / "siq_model.c"),
                            str(tmp_path / "driver.c"), "-o", str(binary)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (tmp_path / "images.bin").write_bytes(np.ascontiguousarray(inputs).tobytes())
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    result = subprocess.run([str(binary), str(tmp_path / "images.bin"), str(tmp_path / "scores.bin"),
                             str(len(inputs))], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0 and "runtime error" not in result.stderr and "Sanitizer" not in result.stderr, \
        result.stderr[-3000:]
    raw = np.fromfile(tmp_path / "scores.bin", dtype=np.int32)
    classes_count = lm.integer.num_classes
    scores = raw[:len(inputs) * classes_count].reshape(len(inputs), classes_count)
    classes = raw[len(inputs) * classes_count:]
    expected = integer_scores(lm.integer, inputs)
    differing = np.flatnonzero(np.any(scores != expected, axis=1))
    assert len(differing) == 0, (f"{len(differing)} of {len(inputs)} images differ; first: image {differing[0]}, "
                                 f"expected {expected[differing[0]].tolist()}, got {scores[differing[0]].tolist()}")
    assert np.array_equal(classes, np.argmax(expected, axis=1))  # first maximum on ties, as the C documents
    if act_bits > 1:  # a model that answers one class for everything would prove little
        assert len(np.unique(classes)) > 1


def test_requantization_shift_beyond_31_is_refused_or_safe(tmp_path):
    """A fine output step after a coarse accumulator (shift = s_in + e - s_out = 8 + 0 - 60 = -52): lowering must
    refuse it with a SiqError, or the C must compute it without a shift of 32 or more."""
    from siq.training.arch import Arch
    from siq.training.errors import SiqError
    from siq.training.quant import LayerCodebook, QuantizedModel
    arch = Arch.from_dict({"name": "shift", "input": [1, 2, 2], "layers": [
        {"type": "conv", "out": 1, "k": 1}, {"type": "relu"}, {"type": "flatten"}, {"type": "dense", "out": 2}]})
    layers = {0: LayerCodebook(1, np.array([1]), 0, np.zeros((1, 1, 1, 1), np.uint8)),
              3: LayerCodebook(1, np.array([1]), 0, np.zeros((2, 4), np.uint8))}
    qm = QuantizedModel(arch, 4, {-1: 8, 1: 60}, layers, {0: np.zeros(1, np.int64), 3: np.zeros(2, np.int64)},
                        ["a", "b"])
    try:
        lm = lower(qm)
    except SiqError:
        return
    write_sources(lm, tmp_path)
    (tmp_path / "driver.c").write_text(DRIVER)
    subprocess.run(["gcc", *SANITIZE, "-I", str(tmp_path), str(tmp_path / "siq_model.c"), str(tmp_path / "driver.c"),
                    "-o", str(tmp_path / "driver")], check=True)
    images = np.arange(0, 256, 16, dtype=np.uint8).reshape(4, 1, 2, 2)
    (tmp_path / "images.bin").write_bytes(images.tobytes())
    result = subprocess.run([str(tmp_path / "driver"), str(tmp_path / "images.bin"), str(tmp_path / "scores.bin"),
                             str(len(images))], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1000:]
    scores = np.fromfile(tmp_path / "scores.bin", dtype=np.int32)[:len(images) * 2].reshape(len(images), 2)
    assert np.array_equal(scores, integer_scores(lm.integer, images))

"""The fast conv kernels (pointwise with dual MACs, depthwise on staged planes, the general fast kernel) on
emulated Cortex-M4 (SIQ_DSP bodies), M3 and M0 (portable bodies), and on the host over random depthwise-separable
stacks: bit-exact with the numpy reference on every shape class the presets use (odd planes, odd channel counts,
strides 1 and 2, symmetric, asymmetric and 'same' padding, kh != kw, 1-D)."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from siq.codegen.export import model_report, write_sources
from siq.codegen.lower import lower
from siq.codegen.target import run_self_test
from siq.training.arch import PRESETS, Arch
from siq.training.integer import integer_scores
from siq.training.quantizers import QuantizeConfig, quantize_model

from operator_cases import check_four_ways, random_images, random_net
from test_conv_shapes import IN_PLACE_STACK

HEAD = [{"type": "flatten"}, {"type": "dense", "out": 3}]

# A DS-CNN-like stack on an odd plane (first conv 10x4 stride 2 'same' on one channel, depthwise 3x3 stride 1 and
# 2, pointwise with odd channel counts), and a 1-D stack with a grouped conv.
TARGET_ARCHS = {
    "kws": Arch.from_dict({"name": "kws", "input": [1, 15, 7], "layers": [
        {"type": "conv", "out": 5, "k": [10, 4], "stride": 2, "pad": "same"}, {"type": "relu"},
        {"type": "conv", "out": 5, "k": 3, "pad": "same", "groups": 5}, {"type": "relu"},
        {"type": "conv", "out": 7, "k": 1}, {"type": "relu"},
        {"type": "conv", "out": 7, "k": 3, "stride": 2, "pad": [0, 1, 1, 0], "groups": 7}, {"type": "relu"},
        {"type": "conv", "out": 3, "k": 1}, {"type": "relu"}] + HEAD}),
    "signal": Arch.from_dict({"name": "signal", "input": [4, 21], "layers": [
        {"type": "conv1d", "out": 4, "k": 5, "stride": 2, "pad": "same", "groups": 4}, {"type": "relu"},
        {"type": "conv1d", "out": 6, "k": 3, "pad": [2, 0], "groups": 2}, {"type": "relu"},
        {"type": "conv1d", "out": 5, "k": 1}, {"type": "relu"}] + HEAD}),
    # Pointwise and depthwise convs that run in place (kernels.runs_in_place) on an odd 9x7 plane (a full block of
    # POINTWISE_BLOCK pixels and an odd partial one): 8 channels (a multiple of 4, even channel pairs), 6 (an odd
    # count of channel pairs) and 5 (an odd channel), 3x3 and 2x3 depthwise kernels
    # (test_conv_shapes.IN_PLACE_STACK on the host at every activation width).
    "inplace": Arch.from_dict({"name": "inplace", "input": [2, 9, 7], "layers": IN_PLACE_STACK + HEAD}),
}


@pytest.fixture(scope="module", params=[("kws", 4), ("kws", 8), ("signal", 4), ("inplace", 4), ("inplace", 3),
                                        ("inplace", 8)],
                ids=["kws-A4", "kws-A8", "signal-A4", "inplace-A4", "inplace-A3", "inplace-A8"])
def exported(request, tmp_path_factory):
    name, act_bits = request.param
    arch = TARGET_ARCHS[name]
    rng = np.random.default_rng(7)
    images = random_images(arch, rng, n=40)
    net = random_net(arch, 7)
    # random weights: no trained function for the output rule to keep; each tensor's squared error sets its step
    cfg = QuantizeConfig(method="kmeans", conv_bits=4, fc_bits=4, act_bits=act_bits, calibration_images=len(images),
                         calibration="float", seed=1)
    qm = quantize_model(net, images, np.arange(len(images)) % 3, cfg, ["a", "b", "c"])[0]
    lm = lower(qm)
    directory = tmp_path_factory.mktemp(f"fw-{name}-a{act_bits}")
    write_sources(lm, directory)
    return lm, directory, images


@pytest.mark.parametrize("cpu", ["cortex-m4", "cortex-m3", "cortex-m0"])
def test_fast_conv_kernels_on_the_target(exported, cpu):
    lm, directory, images = exported
    kernels = {op.fast_kernel for op in lm.ops}
    assert {"conv2d_requant_1x1", "conv2d_general_requant_depthwise"} <= kernels
    scores = integer_scores(lm.integer, images)
    result = run_self_test(directory, lm.prefix, cpu, None, images, np.argmax(scores, axis=1), scores, "-O2")
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert np.array_equal(result["scores"], scores)


def _random_separable(seed: int) -> Arch:
    """A random stack of depthwise (3x3 or kh x kw, stride 1-2, any padding spelling) and pointwise convs on an
    input of 1-5 channels and 3-11 x 3-11 px."""
    rng = np.random.default_rng(2000 + seed)
    shape = [int(rng.integers(1, 6)), int(rng.integers(3, 12)), int(rng.integers(3, 12))]
    layers, c = [], shape[0]
    for _ in range(int(rng.integers(1, 3))):
        kh, kw = (3, 3) if rng.random() < 0.5 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        pad = ["valid", "same", 1, [int(v) for v in rng.integers(0, [kh, kh, kw, kw])]][int(rng.integers(0, 4))]
        probe = Arch.from_dict({"name": "probe", "input": shape, "layers": layers + [
            {"type": "conv", "out": c, "k": [kh, kw], "stride": int(rng.integers(1, 3)), "pad": pad, "groups": c},
            {"type": "relu"}] + HEAD})
        try:
            probe.shapes()
        except Exception:  # the window does not fit this map: keep the stack as it is
            break
        layers = probe.to_dict()["layers"][:-2]
        c = int(rng.integers(1, 8))
        layers += [{"type": "conv", "out": c, "k": 1}, {"type": "relu"}]
    return Arch.from_dict({"name": f"separable{seed}", "input": shape, "layers": layers + HEAD})


@pytest.mark.parametrize("seed", range(6))
def test_random_separable_stacks_bit_exact(seed, tmp_path):
    arch = _random_separable(seed)
    check_four_ways(arch, seed, tmp_path, act_bits=(4, 4, 8, 2, 4, 3)[seed],
                    builds=("default", "reference", "dsp"))


@pytest.mark.parametrize("preset, n", [("ds-cnn", 16), ("mobilenet-v1-0.25", 4)])
def test_presets_on_cortex_m4_run_the_dsp_kernels_bit_exact(preset, n, tmp_path):
    """The MLPerf Tiny presets (random weights, W4A4) on emulated Cortex-M4, where the SIQ_DSP bodies run (the
    host builds run the portable ones): scores equal the numpy reference's, and no conv is left on a reference
    kernel."""
    arch = PRESETS[preset]
    rng = np.random.default_rng(3)
    images = random_images(arch, rng, n=n)
    net = random_net(arch, 3)
    # random weights: no trained function for the output rule to keep; each tensor's squared error sets its step
    cfg = QuantizeConfig(method="kmeans", conv_bits=4, fc_bits=4, act_bits=4, calibration_images=len(images),
                         calibration="float", seed=0)
    classes = net.arch.num_classes
    qm = quantize_model(net, images, np.arange(len(images)) % classes, cfg, [f"c{k}" for k in range(classes)])[0]
    lm = lower(qm)
    assert model_report(lm)["reference_kernel_ops"] == []
    write_sources(lm, tmp_path)
    scores = integer_scores(lm.integer, images)
    result = run_self_test(tmp_path, lm.prefix, "cortex-m4", None, images, np.argmax(scores, axis=1), scores, "-O2")
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert np.array_equal(result["scores"], scores)


@pytest.mark.parametrize("defines", [[], ["-DSIQ_EMULATE_DSP"]], ids=["portable", "emulated-dsp"])
def test_fast_conv_kernels_under_sanitizers(exported, defines, tmp_path):
    """ASan and UBSan over the fast conv kernels (portable and SIQ_DSP bodies): no read past the arena (the staged
    planes' and the packed buffers' slack bytes are allocated), no undefined shift or overflow, same scores."""
    from test_sanitizers import DRIVER, SANITIZE  # the sanitizer suite's driver program and flags
    lm, directory, images = exported
    (tmp_path / "driver.c").write_text(DRIVER)
    binary = tmp_path / "driver"
    build = subprocess.run(["gcc", *SANITIZE, *defines, "-I", str(directory), str(directory / "siq_model.c"),
                            str(tmp_path / "driver.c"), "-o", str(binary)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (tmp_path / "images.bin").write_bytes(np.ascontiguousarray(images).tobytes())
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    result = subprocess.run([str(binary), str(tmp_path / "images.bin"), str(tmp_path / "scores.bin"),
                             str(len(images))], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0 and "runtime error" not in result.stderr and "Sanitizer" not in result.stderr, \
        result.stderr[-3000:]
    classes = lm.integer.num_classes
    scores = np.fromfile(tmp_path / "scores.bin", dtype=np.int32)[:len(images) * classes].reshape(len(images), -1)
    assert np.array_equal(scores, integer_scores(lm.integer, images))

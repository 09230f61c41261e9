"""Generated paper-mnist firmware on emulated Cortex-M0/M3/M4/M7: bit-exact against the integer reference.

A missing cross compiler or QEMU fails these tests (make setup installs them); nothing is skipped.
"""
import numpy as np
import pytest

from siq.codegen.export import write_sources
from siq.codegen.lower import lower
from siq.codegen.target import build_elf, footprint, run_self_test
from siq.training.arch import load_arch
from siq.training.integer import integer_scores
from siq.training.quantizers import QuantizeConfig, quantize_model
from siq.training.train import TrainConfig, train_float


@pytest.fixture(scope="module")
def paper_net(mnist5k):
    net, _ = train_float(load_arch("paper-mnist"), mnist5k.train_x[:2000], mnist5k.train_y[:2000],
                         TrainConfig(epochs=2, lr=3e-3))
    return net


@pytest.fixture(scope="module", params=[(4, 4), (2, 8)], ids=["W4A4", "W2A8"])
def exported(request, paper_net, mnist5k, tmp_path_factory):
    wbits, abits = request.param
    qm = quantize_model(paper_net, mnist5k.train_x, mnist5k.train_y,
                        QuantizeConfig(method="kmeans", conv_bits=wbits, act_bits=abits, fc_bits=8),
                        mnist5k.class_names)[0]
    lm = lower(qm)
    directory = tmp_path_factory.mktemp(f"fw-w{wbits}a{abits}")
    write_sources(lm, directory)
    return lm, directory


def _self_test(lm, directory, images, cpu, opt="-O2"):
    scores = integer_scores(lm.integer, images)
    result = run_self_test(directory, lm.prefix, cpu, None, images, np.argmax(scores, axis=1), scores, opt)
    assert result["n_images"] == len(images)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert np.array_equal(result["scores"], scores)


def test_cortex_m4_thousand_images(exported, mnist5k):
    lm, directory = exported
    _self_test(lm, directory, mnist5k.test_x[:1000], "cortex-m4")


@pytest.mark.parametrize("cpu", ["cortex-m0", "cortex-m3", "cortex-m7"])
def test_other_cores(exported, mnist5k, cpu):
    lm, directory = exported
    _self_test(lm, directory, mnist5k.test_x[:60], cpu)


@pytest.mark.parametrize("opt", ["-O2", "-Os"])
def test_strict_cross_build_and_footprint(exported, tmp_path, opt):
    """The model compiles warning-free (-Werror with the strict set) for Cortex-M at -O2 and -Os."""
    lm, directory = exported
    elf = build_elf(directory, lm.prefix, tmp_path, "cortex-m4", opt=opt)
    size = footprint(elf, lm.prefix)
    assert size["code_bytes"] > 0 and size["ram_bytes"] >= lm.arena_bytes
    assert size["weights_bytes"] >= lm.weights_bytes()

"""`make bench`'s networks (codegen/bench_networks.py): the row each network writes to bench.json, the presets
measured beside the CMSIS-NN anchors of the same shapes, and the README table generated from them."""
from __future__ import annotations

import numpy as np
import pytest

from operator_cases import random_images
from siq.codegen import bench_networks
from siq.codegen.export import model_report
from siq.codegen.lower import lower
from siq.codegen.preflight import arch_size
from siq.training.arch import PRESETS, load_arch
from siq.training.experiments.readme import networks_table
from test_dense_kernels import _quantized, mlp

SCHEMA = {"arch", "cpu", "opt", "weight_bits", "act_bits", "macs", "instructions_per_inference", "code_bytes",
          "weights_bytes", "activation_ram_bytes", "reference_kernel_ops"}


def test_a_network_row_holds_the_schema_and_the_counts_of_one_inference(rng, tmp_path):
    arch = mlp("mlp-bench", (1, 4, 6), 10, 3)
    images = random_images(arch, rng)
    lm = lower(_quantized(arch, images, 8, 4))
    row = bench_networks.measure(lm, images[0], "mlp-bench", {"weight_bits": 8, "fc_weight_bits": 8, "act_bits": 4},
                                 "cortex-m4", "-O2", tmp_path)
    assert SCHEMA <= set(row)
    assert (row["macs"], row["activation_ram_bytes"], row["weights_bytes"]) == \
        (lm.macs, lm.arena_bytes, lm.weights_bytes())
    assert row["reference_kernel_ops"] == model_report(lm)["reference_kernel_ops"] == []
    assert [op["kernel"] for op in row["per_op"]] == [op.fast_kernel or op.kernel for op in lm.ops]
    # the per-op counts come from the profiled build (a marker call after each op) and leave out the final
    # argmax: their sum is close to the total, not equal
    total, profiled = row["instructions_per_inference"], sum(op["instructions"] for op in row["per_op"])
    assert lm.macs < total and 0.9 * total < profiled < total + 40 * len(lm.ops)
    assert bench_networks.fc_instructions(row) == sum(op["instructions"] for op in row["per_op"][1:])
    assert row["code_bytes"] > 0


def test_a_preset_that_does_not_exist_yet_is_skipped_with_a_note(tmp_path):
    notes = []
    assert bench_networks.networks(None, None, tmp_path, ["no-such-preset"], log=notes.append) == []
    assert notes == ["no-such-preset: no such preset in this version, skipped"]


@pytest.mark.parametrize("name", [n for n in bench_networks.NETWORKS if n in PRESETS])
def test_every_preset_has_the_shape_of_its_cmsis_nn_anchor(name):
    """The anchors were measured on the MLPerf Tiny reference shapes: the same MACs as our presets."""
    anchor = bench_networks.load_anchors()["networks"][name]
    assert arch_size(load_arch(name))["macs"] == anchor["macs"]
    assert anchor["instructions_s8"]["-O2"] > anchor["macs"]


def test_random_preset_models_are_deterministic():
    first, image = bench_networks.random_model("ds-cnn", 4, 4)
    again, image_again = bench_networks.random_model("ds-cnn", 4, 4)
    assert lower(first).config_hash == lower(again).config_hash
    np.testing.assert_array_equal(image, image_again)


def test_the_readme_table_sets_each_network_beside_its_anchor():
    anchors = bench_networks.load_anchors()
    rows = [{"arch": "ds-cnn", "cpu": "cortex-m4", "opt": "-O2", "weight_bits": 4, "fc_weight_bits": 4,
             "act_bits": 4, "macs": 2_656_768, "instructions_per_inference": 3_785_997, "code_bytes": 4096,
             "weights_bytes": 11_000, "activation_ram_bytes": 9000, "reference_kernel_ops": ["op3 conv2d_requant"]},
            {"arch": "unknown-net", "cpu": "cortex-m4", "opt": "-O2", "weight_bits": 4, "fc_weight_bits": 8,
             "act_bits": 4, "macs": 100, "instructions_per_inference": 250, "code_bytes": 10, "weights_bytes": 10,
             "activation_ram_bytes": 10, "reference_kernel_ops": []}]
    text = "\n".join(networks_table(rows, anchors))
    assert "CMSIS-NN at commit 99f736a" in text
    assert ("| ds-cnn | W4A4 | 2,656,768 | 3,785,997 | 1.43 | 7,571,994 | 0.50 | 4,096 B | 11,000 B | 9,000 B "
            "(16,000 B) | op3 conv2d_requant |") in text
    assert "| unknown-net | W4A4, FC 8 bits | 100 | 250 | 2.50 | – | – |" in text

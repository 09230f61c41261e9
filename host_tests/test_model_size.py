"""A model's size, layer by layer (training/summary.py, `siq arch`), computed from the architecture and checked
against the integer IR that the C runs; and report.json's per-op record (kernel, MACs, parameters, bytes)."""
from __future__ import annotations

import numpy as np
import pytest

from siq.codegen.export import model_report, with_instructions
from siq.codegen.lower import lower
from siq.training.arch import PRESETS, load_arch
from siq.training.quant import aligned_channel_points, channel_step_points, quantization_points
from siq.training.quantizers import QuantizeConfig, quantize_model
from siq.training.summary import layer_sizes, size_table, totals


def _quantized(net, images, fc_bits=8):
    cfg = QuantizeConfig(method="kmeans", conv_bits=4, fc_bits=fc_bits, act_bits=4, calibration_images=len(images))
    classes = net.arch.num_classes
    return quantize_model(net, images, np.arange(len(images)) % classes, cfg, [str(k) for k in range(classes)])[0]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_layer_has_its_shape_macs_and_parameters(name):
    arch = load_arch(name)
    rows = layer_sizes(arch)
    assert [r.out_shape for r in rows] == arch.shapes()
    for i in arch.weighted_layers():
        shape = arch.weight_shape(i)
        assert rows[i].params == int(np.prod(shape)) + shape[0]
    assert sum(r.macs for r in rows) == totals(arch)["macs"] and rows[-1].params > 0
    table = size_table(arch).splitlines()
    folded = arch.folded()
    aligned = aligned_channel_points(folded)
    if aligned:  # the maps that can take a step per channel close the table where there are some
        assert table.pop().endswith(": " + ", ".join(map(str, aligned)))
    per_channel = channel_step_points(folded)
    if per_channel:
        assert table.pop().endswith(": " + ", ".join(map(str, per_channel)))
    assert len(table) == len(rows) + 5 and table[-3].split()[1:] == [f"{totals(arch)['macs']:,}",
                                                                     f"{totals(arch)['parameters']:,}"]
    assert table[-2].endswith(": " + ", ".join(map(str, folded.weighted_layers())))
    assert table[-1].endswith(": " + ", ".join(map(str, quantization_points(folded))))


def test_layer_macs_equal_the_integer_ops_and_the_report(preset_nets, rng):
    """The architecture's count (before quantization) and the IR's (what the C executes) agree op by op; the
    report's parameters are the weights and biases the C holds."""
    net = preset_nets["paper-mnist"]
    images = (rng.random((32, 1, 28, 28)) ** 3 * 255).astype(np.uint8)
    qm = _quantized(net, images)
    lm = lower(qm)
    rows = layer_sizes(qm.arch)
    by_layer = {op.ir.weights_layer if hasattr(op.ir, "weights_layer") else op.ir.conv.weights_layer: op.macs
                for op in lm.ops if op.macs}
    assert by_layer == {r.index: r.macs for r in rows if r.macs}
    report = model_report(lm)
    assert report["parameters"] == totals(qm.arch)["parameters"] == 22_278
    assert [op["params"] for op in report["ops"] if op["params"]] == [r.params for r in rows if r.params]
    # bytes: every weight table once (the FC layers share the identity codebook, counted once in the footprint)
    shared = 256 * lm.codebook_entry_bytes * lm.identity_codebook
    assert sum(op["weights_bytes"] for op in report["ops"]) + shared == lm.weights_bytes()
    assert sum(op["bias_bytes"] for op in report["ops"]) == report["footprint"]["bias_bytes"]
    for op, entry in zip(lm.ops, report["ops"]):
        assert entry["output_bytes"] == (lm.buffers[op.output][1] if op.output != "scores" else 0)
        assert entry["scratch_bytes"] == (lm.buffers[op.scratch][1] if op.scratch else 0)
    counted = with_instructions(report, list(range(10, 10 + len(lm.ops))))
    assert [op["instructions"] for op in counted["ops"]] == list(range(10, 10 + len(lm.ops)))
    assert "instructions" not in report["ops"][0]
    with pytest.raises(ValueError, match="instruction counts"):
        with_instructions(report, [1])

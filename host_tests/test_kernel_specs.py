"""The kernel specs (codegen/kernels.py) are the one source of each C parameter struct: the generated typedefs
and every op's designated initializer follow them field for field, and each reference kernel has a numpy twin of
the same name. One small model here runs all eleven reference kernels (and the fast variants that apply)."""
import re
import subprocess
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from siq.codegen import kernels
from siq.codegen.export import render_sources, write_sources
from siq.codegen.host import STRICT_FLAGS, build_host
from siq.codegen.lower import lower
from siq.codegen.render import TEMPLATE_ROOT
from siq.training import integer
from siq.training.arch import Arch
from siq.training.integer import integer_scores
from siq.training.nets import Net
from siq.training.quantizers import QuantizeConfig, quantize_model

# conv pad 1 -> relu -> pool (fused, reference only: padded), lrn, conv -> relu (unfused: run as the identical
# general conv, whose fast kernels take any shape), a 1x1 conv without relu added to it (relu fused), that
# concatenated with the relu's output, lrn -> a standalone pool, a grouped 2x1 conv with asymmetric padding -> relu,
# an average pool, dense -> relu, dense scores: every reference kernel once.
EVERY_KERNEL = {"name": "every-kernel", "input": [1, 12, 12], "layers": [
    {"type": "conv", "out": 4, "k": 3, "pad": 1}, {"type": "relu"}, {"type": "maxpool", "k": 2},
    {"type": "lrn", "size": 3, "alpha": 0.5, "beta": 0.75, "k": 1.0},
    {"type": "conv", "out": 4, "k": 3, "pad": 1}, {"type": "relu", "name": "r"},
    {"type": "conv", "out": 4, "k": 1, "name": "s"}, {"type": "add", "inputs": ["s", "r"]}, {"type": "relu"},
    {"type": "concat", "inputs": ["r", "r"]},
    {"type": "lrn", "size": 3, "alpha": 0.5, "beta": 0.75, "k": 1.0}, {"type": "maxpool", "k": 2},
    {"type": "conv", "out": 4, "k": [2, 1], "pad": [1, 0, 0, 0], "groups": 2}, {"type": "relu"},
    {"type": "avgpool", "k": 2, "stride": 1},
    {"type": "flatten"}, {"type": "dense", "out": 8}, {"type": "relu"}, {"type": "dense", "out": 3}]}


@pytest.fixture(scope="module")
def every_kernel():
    arch = Arch.from_dict(EVERY_KERNEL)
    torch.manual_seed(0)
    images = np.random.default_rng(0).integers(0, 255, (40, 1, 12, 12), dtype=np.uint8)
    qm = quantize_model(Net(arch), images, np.zeros(40, np.int64), QuantizeConfig(method="kmeans", act_bits=4),
                        ["a", "b", "c"])[0]
    lm = lower(qm)
    return lm, render_sources(lm)["siq_model.c"], images, qm


def _uncommented(text: str) -> str:
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def test_the_model_runs_every_reference_kernel(every_kernel):
    lm, _, _, _ = every_kernel
    assert [op.kernel for op in lm.ops] == ["quantize_input", "conv2d_requant_maxpool", "lrn_requant",
                                            "conv2d_general_requant", "conv2d_requant", "add_requant", "concat_requant",
                                            "concat_requant", "lrn_requant", "maxpool2d",
                                            "conv2d_general_requant", "avgpool2d", "dense_requant", "dense_scores"]
    assert {op.kernel for op in lm.ops} == {spec.name for spec in kernels.KERNELS.values()}


def test_each_typedef_declares_its_spec_fields_in_order(every_kernel):
    _, source, _, _ = every_kernel
    for params in kernels.PARAMS:
        found = re.findall(r"typedef struct \{\n([^}]*)\n\} %s;" % params.STRUCT, source)
        assert len(found) == 1, f"{params.STRUCT}: {len(found)} typedefs"
        declarations = [d.strip() for d in _uncommented(found[0]).split(";") if d.strip()]
        expected = [(f.metadata["ctype"].format(codebook="int8_t"), f.name) for f in fields(params)]
        got = [(d[:-len(d.split()[-1].lstrip("*"))].strip(), d.split()[-1].lstrip("*")) for d in declarations]
        assert got == expected, params.STRUCT


def test_every_initializer_names_exactly_its_spec_fields(every_kernel):
    lm, source, _, _ = every_kernel
    for index, op in enumerate(lm.ops):
        match = re.search(rf"static const (\w+) op{index}_{op.kernel}_params = \{{\n(.*?)\n\}};", source, re.S)
        assert match, f"op {index}: no parameter struct"
        assert match.group(1) == type(op.params).STRUCT == op.spec.params.STRUCT
        items = re.findall(r"^\s*\.(\w+) = (.*),$", match.group(2), re.M)
        assert len(items) == len(match.group(2).splitlines())
        assert [name for name, _ in items] == [f.name for f in fields(op.params)]
        numbers = {name: int(value.rstrip("u")) for name, value in items
                   if re.fullmatch(r"-?\d+u?", value)}
        assert numbers == kernels.scalars(op.params)


def test_struct_numbers_come_from_the_ir(every_kernel):
    """A spot check that lowering copies the IR's numbers: the shift, bound-carrying op and layouts."""
    lm, _, _, _ = every_kernel
    assert lm.ops[3].params.pad_top == 1 and lm.ops[3].params.groups == 1  # the 3x3 conv run as the general one
    conv = lm.ops[4]
    assert conv.params.shift == conv.ir.shift and conv.params.max_code == conv.ir.max_code
    assert (conv.params.in_bits, conv.params.out_bits) == (conv.in_bits, conv.out_bits)
    assert conv.params.index_bits == conv.ir.bits and conv.params.pool == 1
    fused = lm.ops[1]
    assert fused.params.pool == fused.ir.pool.k and fused.params.conv_width == fused.ir.conv.out_shape[2]
    assert lm.ops[-1].params.shift == 0 and lm.ops[-1].params.max_code == 0


def test_numpy_twins_of_the_kernel_steps_equal_the_op_by_op_reference(every_kernel):
    """Each C kernel call (fused conv + pool as one) run by its numpy twin gives the op-by-op reference's output
    at its last source op: the fusion changes nothing."""
    lm, _, images, _ = every_kernel
    per_op = integer.run_integer(lm.integer, images)
    # the C runs a conv without a fast kernel of its own as the identical general conv: its twin computes it here
    steps = [integer.KernelStep(kernels.general_conv(s.op), s.sources) for s in integer.fuse(lm.integer)]
    # a concat is one C call per input, all running the one step
    calls = [op for k, op in enumerate(lm.ops) if k == 0 or op.source_ops != lm.ops[k - 1].source_ops]
    assert [type(s.op) for s in steps] == [type(op.ir) for op in calls]
    assert [s.sources for s in steps] == [op.source_ops for op in calls]
    outputs = {}  # integer op -> the output of the step computing it, fed to the steps reading it
    for step in steps:
        reads = [outputs[j] for j in lm.integer.inputs[step.sources[0]]] or [images]
        codes = integer.OP_FUNCTIONS[step.op.name](reads if len(reads) > 1 else reads[0], step.op)
        assert np.array_equal(codes, per_op[step.sources[-1]]), step.op.name
        outputs.update({k: codes for k in step.sources})


def test_reference_kernels_and_numpy_twins_share_names():
    for spec in kernels.KERNELS.values():
        assert integer.OP_FUNCTIONS[spec.name] is getattr(integer, spec.name)


@pytest.mark.parametrize("defines", [[], ["-DSIQ_REFERENCE_KERNELS"], ["-DSIQ_EMULATE_DSP"]])
def test_every_build_of_every_kernel_is_strict_and_bit_exact(defines, every_kernel, tmp_path):
    lm, _, images, _ = every_kernel
    write_sources(lm, tmp_path)
    result = subprocess.run(["gcc", *STRICT_FLAGS, *defines, "-c", str(tmp_path / "siq_model.c"),
                             "-o", str(tmp_path / "m.o")], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    host = build_host(tmp_path, lm.prefix, tmp_path / "build", extra_flags=defines)
    scores, _ = host.infer(images)
    assert np.array_equal(scores, integer_scores(lm.integer, images))


def test_reference_only_lowering_emits_no_fast_kernel_and_no_build_guard(every_kernel, tmp_path):
    """lower(fast=False): every function is called by both builds, so none is guarded and -Werror still holds."""
    _, source, images, qm = every_kernel
    assert "#ifndef SIQ_REFERENCE_KERNELS" in source and "#ifdef SIQ_REFERENCE_KERNELS" in source
    slow = lower(qm, fast=False)
    assert all(op.fast_kernel is None for op in slow.ops)
    text = render_sources(slow)["siq_model.c"]
    assert "SIQ_REFERENCE_KERNELS" not in _uncommented(text)
    write_sources(slow, tmp_path)
    host = build_host(tmp_path, slow.prefix, tmp_path / "build")
    assert np.array_equal(host.infer(images)[0], integer_scores(slow.integer, images))


def test_templates_and_initializers_stay_readable(every_kernel):
    _, source, _, _ = every_kernel
    for template in Path(TEMPLATE_ROOT, "kernels").glob("*.j2"):
        assert len(template.read_text().splitlines()) <= 250, template.name
    arrays = re.findall(r"= \{\n(.*?)\n\};", source, re.S)
    assert arrays
    for body in arrays:
        for line in body.splitlines():
            assert len(line) <= 100, line


def test_scores_in_batches_equal_the_whole_run(every_kernel):
    """integer_scores keeps only the scores of each batch (memory); the batches change nothing."""
    lm, _, images, _ = every_kernel
    assert len(images) > 3
    assert np.array_equal(integer.integer_scores(lm.integer, images, batch=3),
                          integer.run_integer(lm.integer, images)[-1])

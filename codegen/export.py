"""Render a lowered model to C sources (model.c.j2 / model.h.j2 over the typed context of codegen/emit.py) and
write the export bundle's reports."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import kernels
from .emit import (BufferSlot, IdentityCodebook, KernelContext, OpCall, TableArray, WeightArrays, identity_codebook,
                   kernel_context, op_calls, weight_arrays)
from .lower import LoweredModel
from .render import render


def c_string(text: str) -> str:
    """A C string literal body: printable ASCII kept, everything else escaped in octal."""
    out = []
    for ch in text.encode("utf-8"):
        if ch in (0x22, 0x5C):
            out.append("\\" + chr(ch))
        elif 0x20 <= ch < 0x7F and ch != 0x3F:  # '?' escaped: no trigraphs
            out.append(chr(ch))
        else:
            out.append(f"\\{ch:03o}")
    return "".join(out)


def number_lines(values, per_line: int, fmt=str, separator: str = ", ") -> list[str]:
    """Numbers as C initialiser lines of `per_line` values, each line ending with a comma."""
    values = list(values)
    return [separator.join(fmt(v) for v in values[i:i + per_line]) + "," for i in range(0, len(values), per_line)]


def header_macros(header: str, prefix: str) -> dict[str, int]:
    """The integer macros `#define <PREFIX>_NAME <int>` of a generated header's text, by NAME (INPUT_BYTES, ...)."""
    pattern = re.compile(rf"^\s*#\s*define\s+{re.escape(prefix.upper())}_(\w+)\s+\(?\s*(-?\d+)[uUlL]*\s*\)?\s*$",
                         re.M)
    return {name: int(value) for name, value in pattern.findall(header)}


def int32_literal(v: int) -> str:
    return kernels.literal(v, "int32_t")


@dataclass
class ModelContext:
    """The typed context model.c.j2 and model.h.j2 receive (kernels/*.c.j2 read its `kernels`)."""
    prefix: str
    upper: str
    guard: str
    version: str
    config_hash: str
    summary: str
    input_channels: int
    input_height: int
    input_width: int
    input_bytes: int
    num_classes: int
    arena_bytes: int
    weights_bytes: int
    act_bits: int
    input_bits: int
    score_exponent: int
    class_names: list[str]
    kernels: KernelContext
    weights: list[WeightArrays]
    identity_codebook: IdentityCodebook | None
    tables: list[TableArray]
    ops: list[OpCall]
    buffers: list[BufferSlot]


def model_context(lm: LoweredModel) -> ModelContext:
    im = lm.integer
    c, h, w = im.input_shape
    calls, tables = op_calls(lm)
    return ModelContext(
        prefix=lm.prefix, upper=lm.prefix.upper(), guard=f"{lm.prefix.upper()}_H", version=lm.version,
        config_hash=lm.config_hash,
        summary=(f"{lm.meta.get('arch', '')} {lm.meta.get('method', '')} activations {im.act_bits} bits, "
                 + (f"input {im.input_bits} bits, " if im.input_bits != im.act_bits else "")
                 + "".join(f"point {p} {w} bits, " for p, w in sorted(im.point_widths.items()))
                 + f"weights {', '.join(str(op.weights.bits) for op in lm.ops if op.weights)} bits per layer, "
                 f"{lm.macs} MACs").strip(),
        input_channels=c, input_height=h, input_width=w, input_bytes=c * h * w, num_classes=im.num_classes,
        arena_bytes=lm.arena_bytes, weights_bytes=lm.weights_bytes(), act_bits=im.act_bits,
        input_bits=im.input_bits, score_exponent=im.score_exponent,
        class_names=[c_string(n) for n in im.class_names], kernels=kernel_context(lm),
        weights=weight_arrays(lm), identity_codebook=identity_codebook(lm), tables=tables, ops=calls,
        buffers=sorted((BufferSlot(n, o, s) for n, (o, s) in lm.buffers.items()), key=lambda b: b.offset))


def render_sources(lm: LoweredModel) -> dict[str, str]:
    """{file name: text} of the model's C sources."""
    ctx = model_context(lm)
    return {f"{lm.prefix}.h": render("model.h.j2", m=ctx), f"{lm.prefix}.c": render("model.c.j2", m=ctx)}


def model_report(lm: LoweredModel) -> dict:
    """Footprint and configuration of the generated model (the report.json 'footprint'/'model' parts)."""
    per_layer = lm.weights_report()
    return {
        "prefix": lm.prefix, "config_hash": lm.config_hash, "generator_version": lm.version,
        "macs": lm.macs,
        "macs_per_op": [{"op": op.kernel, "macs": op.macs} for op in lm.ops],
        "footprint": {"weights_bytes": lm.weights_bytes(), "arena_bytes": lm.arena_bytes,
                      "bias_bytes": sum(l["bias_bytes"] for l in per_layer), "layers": per_layer},
        "act_bits": lm.integer.act_bits, "input_bits": lm.integer.input_bits,
        "point_widths": {str(p): w for p, w in sorted(lm.integer.point_widths.items())},
        # per op: the reference kernel, the kernel the default build runs (its fast variant where one applies),
        # MACs, parameters, bytes (its weights and codebook, biases, output buffer and kernel scratch in the
        # arena; the class scores live in the caller's buffer) and stored code widths; a run on the target adds
        # its instructions. reference_kernel_ops names the MAC-bearing ops without a fast kernel.
        "parameters": sum(_params(op) for op in lm.ops),
        "ops": [{"kernel": op.kernel, "default_build_kernel": op.fast_kernel or op.kernel, "macs": op.macs,
                 "params": _params(op), **_op_bytes(lm, op),
                 "in_bits": op.in_bits, "out_bits": op.out_bits, "comment": op.comment} for op in lm.ops],
        "reference_kernel_ops": [f"op{index} {op.kernel}" for index, op in enumerate(lm.ops)
                                 if op.macs and not op.fast_kernel],
    }


def _params(op) -> int:
    return op.weights.count + len(op.weights.bias) if op.weights else 0


def _op_bytes(lm: LoweredModel, op) -> dict[str, int]:
    w = op.weights
    return {"weights_bytes": len(w.packed) + w.codebook_bytes(lm.codebook_entry_bytes) if w else 0,
            "bias_bytes": 4 * len(w.bias) if w else 0,
            "output_bytes": lm.buffers[op.output][1] if op.output in lm.buffers else 0,
            "scratch_bytes": lm.buffers[op.scratch][1] if op.scratch else 0}


def with_instructions(report: dict, per_op: list[int]) -> dict:
    """The model report with each op's instructions on the target (instructions_per_inference's per_op)."""
    if len(per_op) != len(report["ops"]):
        raise ValueError(f"{len(per_op)} instruction counts for {len(report['ops'])} ops")
    return {**report, "ops": [{**op, "instructions": count} for op, count in zip(report["ops"], per_op)]}


def write_sources(lm: LoweredModel, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_sources(lm).items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths


def report_markdown(report: dict) -> str:
    lines = [f"# siq report: {report.get('title', report['model']['prefix'])}", ""]
    acc = report.get("accuracy", {})
    if acc:
        lines += ["| evaluator | accuracy |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in acc.items() if v is not None]
        lines.append("")
    mism = report.get("mismatches", {})
    if mism:
        lines += ["| check | images with differing integer scores |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in mism.items()]
        lines.append("")
    fp = report["model"]["footprint"]
    lines += [f"- MACs per inference: {report['model']['macs']:,}",
              f"- weights flash: {fp['weights_bytes']:,} bytes (packed indices + codebooks, every stored row of "
              "a per-channel codebook and its row-offset table), "
              f"biases {fp['bias_bytes']:,} bytes",
              f"- activation arena: {fp['arena_bytes']:,} bytes", ""]
    lines += ["| layer | bits | weights | packed bytes | codebook rows x entries | codebook bytes |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {l['layer']} | {l['bits']} | {l['count']} | {l['packed_bytes']} | "
              f"{l['codebook_rows']} x {l['codebook_entries']} | {l['codebook_bytes']} |" for l in fp["layers"]]
    if "target" in report:
        lines += ["", "## Cortex-M", "", "```", json.dumps(report["target"], indent=2), "```"]
    if "config" in report:
        lines += ["", "## Configuration", "", "```", json.dumps(report["config"], indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)

"""Render a lowered model to C sources and write the export bundle (sources, report.json, report.md, vectors)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .lower import DSP_PAIRS, LoweredModel, filter_row_words
from .render import render

PARAMS_TYPE = {
    "quantize_input": "quantize_input_params",
    "conv2d_requant": "conv2d_params",
    "conv2d_requant_maxpool": "conv2d_params",
    "maxpool2d": "maxpool2d_params",
    "lrn_requant": "lrn_params",
    "dense_requant": "dense_params",
    "dense_scores": "dense_params",
}
# Struct field order as declared in kernels.c.j2; pointers are filled from the layer's arrays.
FIELDS = {
    "quantize_input_params": ["size", "shift", "max_code", "out_bits"],
    "conv2d_params": ["in_channels", "in_height", "in_width", "out_channels", "conv_height", "conv_width",
                      "kernel", "stride", "pad", "pool", "index_bits", "shift", "max_code", "in_bits", "out_bits",
                      "codebook_stride", "*codebook", "*weights", "*bias", "*scratch"],
    "maxpool2d_params": ["channels", "in_height", "in_width", "pool"],
    "lrn_params": ["channels", "plane", "window_before", "window_after", "index_shift", "frac_bits", "max_code",
                   "bits", "*table"],
    "dense_params": ["in_features", "out_features", "index_bits", "shift", "max_code", "codebook_stride",
                     "*codebook", "*weights", "*bias"],
}
UNSIGNED = {"index_bits", "index_shift", "frac_bits", "in_bits", "out_bits", "bits"}


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
    # -2147483648 is the negation of a constant that does not fit in int: spell INT32_MIN (<stdint.h>) instead.
    return "INT32_MIN" if v == -2**31 else str(v)


@dataclass
class ModelContext:
    """The typed context model.c.j2 / model.h.j2 / kernels.c.j2 receive."""
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
    kernels: set[str]
    uses_weights: bool
    uses_requantize: bool
    uses_conv: bool
    uses_dense: bool
    uses_codes: bool
    reference_kernels: list[str] = field(default_factory=list)   # every reference kernel of the model's ops
    reference_in_fast: set[str] = field(default_factory=set)     # those the default (optimised) build still runs
    fast_kernels: set[str] = field(default_factory=set)
    fast_convs: list[dict] = field(default_factory=list)         # one per (K, input layout): filter + row bodies
    conv_kernels: list[dict] = field(default_factory=list)       # one per fast conv function (K, in, out layout)
    filter_size: int = 0        # int16 taps of the largest decoded filter (portable builds; SIQ_DSP uses the arena)
    uses_dsp: bool = False
    uses_stream: bool = False
    dense_u8: bool = False
    codebook_type: str = "int8_t"   # C type of every codebook entry (int16_t when a value needs more than 8 bits)
    dense_stream: bool = False
    lrn_max_channels: int = 0
    lrn_max_squares: int = 0
    weights: list[dict] = field(default_factory=list)
    tables: list[dict] = field(default_factory=list)
    ops: list[dict] = field(default_factory=list)
    buffers: list[dict] = field(default_factory=list)


def model_context(lm: LoweredModel) -> ModelContext:
    im = lm.integer
    kernels = {op.kernel for op in lm.ops}
    c, h, w = im.input_shape
    ctx = ModelContext(
        prefix=lm.prefix, upper=lm.prefix.upper(), guard=f"{lm.prefix.upper()}_H", version=lm.version,
        config_hash=lm.config_hash,
        summary=(f"{lm.meta.get('arch', '')} {lm.meta.get('method', '')} activations {im.act_bits} bits, "
                 + (f"input {im.input_bits} bits, " if im.input_bits != im.act_bits else "")
                 + f"weights {', '.join(str(op.weights.bits) for op in lm.ops if op.weights)} bits per layer, "
                 f"{lm.macs} MACs").strip(),
        input_channels=c, input_height=h, input_width=w, input_bytes=c * h * w, num_classes=im.num_classes,
        arena_bytes=lm.arena_bytes, weights_bytes=lm.weights_bytes(), act_bits=im.act_bits,
        input_bits=im.input_bits, score_exponent=im.score_exponent,
        class_names=[c_string(n) for n in im.class_names], kernels=kernels,
        uses_weights=any(op.weights for op in lm.ops),
        uses_requantize=bool(kernels & {"conv2d_requant", "conv2d_requant_maxpool", "dense_requant"}),
        uses_conv=bool(kernels & {"conv2d_requant", "conv2d_requant_maxpool"}),
        uses_dense=bool(kernels & {"dense_requant", "dense_scores"}),
        uses_codes=bool(kernels & {"quantize_input", "conv2d_requant", "conv2d_requant_maxpool", "lrn_requant"}))
    ctx.codebook_type = lm.codebook_type
    _fast_context(ctx, lm)
    for index, op in enumerate(lm.ops):
        name = f"op{index}_{op.kernel}"
        arrays = {}
        if op.weights:
            wt = op.weights
            # a per-channel codebook reads best as one initialiser line per output channel's row
            ctx.weights.append({"name": wt.name, "codebook": wt.codebook, "packed": wt.packed, "bits": wt.bits,
                                "count": wt.count, "bias": wt.bias, "rows": wt.codebook_rows,
                                "entries": wt.codebook_entries, "stride": wt.codebook_stride,
                                "codebook_lines": number_lines(wt.codebook, wt.codebook_entries),
                                "packed_lines": number_lines(wt.packed, 16, lambda v: f"0x{v:02x}"),
                                "bias_lines": number_lines(wt.bias, 8, int32_literal)})
            arrays = {"*codebook": f"{wt.name}_codebook", "*weights": f"{wt.name}_weights",
                      "*bias": f"{wt.name}_bias", "*scratch": "NULL"}
            if op.scratch:
                offset = lm.buffers[op.scratch][0]
                assert offset % 4 == 0
                arrays["*scratch"] = f"(int32_t *)(arena_words + {offset // 4})"
        if op.table is not None:
            table_name = f"op{index}_lrn_table"
            ctx.tables.append({"name": table_name, "entries": op.table,
                               "lines": number_lines(op.table, 8, lambda v: f"{v}u")})
            arrays = {"*table": table_name}
        params_type = PARAMS_TYPE[op.kernel]
        fields = []
        for f in FIELDS[params_type]:
            if f.startswith("*"):
                fields.append((f[1:], arrays[f]))
            else:
                value = op.params[f]
                fields.append((f, f"{value}u" if f in UNSIGNED else str(value)))
        ctx.ops.append({"index": index, "name": name, "kernel": op.kernel, "comment": op.comment,
                        "params_type": params_type, "fields": fields, "fast_kernel": op.fast_kernel,
                        "input_expr": _buffer_expr(lm, op.input), "output_expr": _buffer_expr(lm, op.output)})
    ctx.buffers = [{"name": n, "offset": o, "size": s} for n, (o, s) in sorted(lm.buffers.items(),
                                                                                key=lambda kv: kv[1][0])]
    return ctx




def _fast_context(ctx: ModelContext, lm: LoweredModel) -> None:
    ctx.reference_kernels = sorted({op.kernel for op in lm.ops})
    ctx.reference_in_fast = {op.kernel for op in lm.ops if not op.fast_kernel}
    ctx.fast_kernels = {op.fast_kernel for op in lm.ops if op.fast_kernel}
    convs, mains = {}, {}
    for op in lm.ops:
        if op.fast_kernel and op.fast_kernel.startswith("conv2d_requant_maxpool_k"):
            k, c = op.params["kernel"], op.params["in_channels"]
            in4, out4 = op.params["in_bits"] == 4, op.params["out_bits"] == 4
            key = (k, op.params["in_bits"])
            name = f"k{k}" + ("_i4" if in4 else "")
            conv = convs.setdefault(key, {"k": k, "in4": in4, "name": name, "dsp": key in DSP_PAIRS,
                                          "pairs": DSP_PAIRS.get(key, []), "words": len(DSP_PAIRS.get(key, [])),
                                          "channels": 0})
            assert (conv["words"] if conv["dsp"] else k) == filter_row_words(k, op.params["in_bits"])
            conv["channels"] = max(conv["channels"], c)
            conv["pairs_text"] = " ".join(f"(w{lo}, {f'w{hi}' if hi < k else 0})" for lo, hi in conv["pairs"])
            mains[op.fast_kernel] = {"name": op.fast_kernel, "k": k, "in4": in4, "out4": out4, "row": name}
    ctx.fast_convs = [convs[key] for key in sorted(convs)]
    ctx.conv_kernels = [mains[name] for name in sorted(mains)]
    ctx.filter_size = max((c["channels"] * c["k"] * c["k"] for c in ctx.fast_convs), default=0)
    ctx.uses_dsp = any(c["dsp"] for c in ctx.fast_convs)
    dense = [op for op in lm.ops if op.fast_kernel in ("dense_requant_fast", "dense_scores_fast")]
    ctx.dense_u8 = any(op.params["index_bits"] == 8 for op in dense)
    ctx.dense_stream = any(op.params["index_bits"] != 8 for op in dense)
    ctx.uses_stream = bool(ctx.fast_convs or dense)
    ctx.lrn_max_channels = max((op.params["channels"] for op in lm.ops
                                if op.fast_kernel and op.fast_kernel.startswith("lrn_requant_window")), default=0)
    ctx.lrn_max_squares = max((op.params["window_before"] + op.params["channels"] + op.params["window_after"] + 1
                               for op in lm.ops if op.fast_kernel and op.fast_kernel.startswith("lrn_requant_window")),
                              default=0)


def _buffer_expr(lm: LoweredModel, name: str) -> str:
    if name == "image":
        return "image"
    if name == "scores":
        return "out"
    offset = lm.buffers[name][0]
    return "arena" if offset == 0 else f"arena + {offset}"


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
        "ops": [{"kernel": op.kernel, "comment": op.comment} for op in lm.ops],
    }


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
              f"- weights flash: {fp['weights_bytes']:,} bytes (packed indices + codebooks, every row of a "
              "per-channel codebook), "
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

"""`make bench`'s networks: paper-mnist (the trained `make firmware` model) and the MLPerf Tiny presets with
random weights, each on one core and counted as the CMSIS-NN anchors were (executed instructions between the
markers around one inference), beside those anchors (docs/results/cmsis-nn-anchors.json, with their conditions).

A preset's model is quantized from a seeded random initialisation (k-means, every layer at the same weight bits,
calibrated on seeded random inputs): instruction counts depend on the shapes and kernels, not on the weights
(no kernel skips zeros), so a deterministic random model measures what a trained one would.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from siq.codegen import target
from siq.codegen.export import model_report, write_sources
from siq.codegen.lower import LoweredModel, lower
from siq.training.arch import PRESETS, load_arch
from siq.training.errors import SiqError
from siq.training.nets import Net
from siq.training.quant import QuantizedModel
from siq.training.quantizers import QuantizeConfig, quantize_model

ANCHORS = Path(__file__).resolve().parents[1] / "docs" / "results" / "cmsis-nn-anchors.json"
NETWORKS = ("paper-mnist", "ds-cnn", "resnet8", "mobilenet-v1-0.25")


def load_anchors(path: str | Path = ANCHORS) -> dict:
    """The CMSIS-NN figures and the conditions they were measured under."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SiqError(f"cannot read the CMSIS-NN anchors {path}: {exc} (run make bench from the repository)") \
            from None


def random_model(arch_name: str, weight_bits: int, act_bits: int, seed: int = 0,
                 calibration: int = 16) -> tuple[QuantizedModel, np.ndarray]:
    """A preset quantized from a seeded random initialisation, and one seeded random input image."""
    arch = load_arch(arch_name)
    torch.manual_seed(seed)
    net = Net(arch).eval()
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (calibration, *arch.input), dtype=np.uint8)
    # random weights: no trained function for the output rule to keep, each tensor's squared error sets its step
    cfg = QuantizeConfig(method="kmeans", conv_bits=weight_bits, fc_bits=weight_bits, act_bits=act_bits,
                         calibration_images=calibration, calibration="float", seed=seed)
    classes = [str(k) for k in range(arch.num_classes)]
    qm = quantize_model(net, images, np.arange(calibration) % arch.num_classes, cfg, classes,
                        {"arch": arch_name, "weights": f"random, seed {seed}"})[0]
    return qm, images[0]


def measure(lm: LoweredModel, image: np.ndarray, arch: str, bits: dict, cpu: str, opt: str, work: Path) -> dict:
    """One network's row of bench.json's `networks`: instructions between the markers around one inference,
    the model's code and weights, its activation arena (kernel scratch included) and the ops left on a
    reference kernel; per op its kernel, MACs and instructions (from the -DSIQ_PROFILE build)."""
    write_sources(lm, work / "model")
    insn = target.instructions_per_inference(work / "model", lm.prefix, cpu, None, image, opt, work_dir=work / "count")
    size = target.footprint(work / "count" / "plain" / "firmware.elf", lm.prefix)
    report = model_report(lm)
    per_op = [{"kernel": op["default_build_kernel"], "macs": op["macs"], "instructions": count}
              for op, count in zip(report["ops"], insn["per_op"])]
    return {"arch": arch, "cpu": cpu, "opt": opt, **bits, "macs": lm.macs,
            "instructions_per_inference": insn["total"], "instructions_per_mac": round(insn["total"] / lm.macs, 3),
            "code_bytes": size["code_bytes"], "weights_bytes": lm.weights_bytes(), "rodata_bytes":
            size["weights_bytes"], "activation_ram_bytes": lm.arena_bytes, "stack_bytes": size["stack_bytes"],
            "reference_kernel_ops": report["reference_kernel_ops"], "per_op": per_op}


def networks(paper: QuantizedModel, paper_image: np.ndarray, work: Path, names=NETWORKS, cpu: str = "cortex-m4",
             opt: str = "-O2", weight_bits: int = 4, act_bits: int = 4, log=print) -> list[dict]:
    """The rows of `names` that exist: paper-mnist from `paper` (make firmware's model, FC 8 bits), the presets
    with random weights at W{weight_bits}A{act_bits}; a preset not defined (yet) is skipped with a note."""
    rows = []
    for name in names:
        if name == "paper-mnist":
            lm, image = lower(paper), paper_image
            bits = {"weight_bits": paper.layers[min(paper.layers)].bits,
                    "fc_weight_bits": paper.layers[max(paper.layers)].bits,
                    "act_bits": paper.act_bits}
        elif name in PRESETS:
            qm, image = random_model(name, weight_bits, act_bits)
            lm = lower(qm)
            bits = {"weight_bits": weight_bits, "fc_weight_bits": weight_bits, "act_bits": act_bits}
        else:
            log(f"{name}: no such preset in this version, skipped")
            continue
        row = measure(lm, image, name, bits, cpu, opt, work / f"network-{name}")
        rows.append(row)
        log(f"{name}: {row['instructions_per_inference']:,} instructions ({row['instructions_per_mac']:.2f}/MAC)")
    return rows


def table(rows: list[dict], anchors: dict) -> list[str]:
    """Each network beside CMSIS-NN s8 on the same core: instructions, their ratio, code and activation RAM."""
    conditions = anchors["conditions"]
    lines = [f"networks on {rows[0]['cpu'] if rows else 'cortex-m4'} {rows[0]['opt'] if rows else '-O2'} against "
             f"{conditions['library']} ({conditions['kernels'].split(' (')[0]}, {conditions['compiler']}, "
             f"{conditions['board']}):",
             f"{'network':18s} {'bits':>6s} {'MACs':>11s} {'instructions':>12s} {'/MAC':>5s} {'CMSIS-NN s8':>11s} "
             f"{'ratio':>5s} {'code':>7s} {'weights':>8s} {'act RAM':>8s} {'(CMSIS)':>8s}  reference ops"]
    for row in rows:
        anchor = anchors["networks"].get(row["arch"], {})
        s8 = anchor.get("instructions_s8", {}).get(row["opt"])
        ratio = f"{row['instructions_per_inference'] / s8:.2f}" if s8 else "-"
        ram = anchor.get("activation_ram_bytes")
        bits = f"W{row['weight_bits']}A{row['act_bits']}" + ("" if row["fc_weight_bits"] == row["weight_bits"]
                                                             else f"/{row['fc_weight_bits']}")
        lines.append(f"{row['arch']:18s} {bits:>6s} {row['macs']:>11,} {row['instructions_per_inference']:>12,} "
                     f"{row['instructions_per_mac']:>5.2f} {(f'{s8:,}' if s8 else '-'):>11s} {ratio:>5s} "
                     f"{row['code_bytes']:>5,} B {row['weights_bytes']:>6,} B {row['activation_ram_bytes']:>6,} B "
                     f"{(f'{ram:,} B' if ram else '-'):>8s}  {', '.join(row['reference_kernel_ops']) or 'none'}")
        if "fc_instructions_s8" in anchor:
            fc = fc_instructions(row)
            lines.append(f"{'':18s} FC layers {fc:,} instructions, CMSIS-NN s8 {anchor['fc_instructions_s8']:,} "
                         f"({fc / anchor['fc_instructions_s8']:.2f} x)")
    return lines


def fc_instructions(row: dict) -> int:
    """Instructions of a network's dense ops (from the profiled build's per-op counts)."""
    return sum(op["instructions"] for op in row["per_op"] if op["kernel"].startswith("dense_"))

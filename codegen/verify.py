"""The four-way check: PyTorch fake-quant, numpy integer reference, host C (and the target, in codegen/target/).

Integer scores are compared exactly. On a mismatch the first differing op, image and index is named: for the
host C through a profile build that snapshots the arena after every op, for PyTorch through its per-layer
outputs scaled back to codes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from siq.training.graph import point_of
from siq.training.integer import DenseScores, first_mismatch, run_integer, unpack_codes
from siq.training.nets import Net, images_to_input
from siq.training.quant import ExactHooks, QuantizedModel, evaluate_exact, step_scale
from siq.training.train import accuracy

from .host import HostModel, build_host
from .lower import LoweredModel


def torch_op_outputs(qm: QuantizedModel, lm: LoweredModel, images: np.ndarray) -> list[np.ndarray]:
    """The exact PyTorch model's output at every integer op, as integer codes (scores for the last op)."""
    net = Net(qm.arch).double().eval()
    collect: list = []
    hooks = ExactHooks(qm)
    with torch.no_grad():
        x = images_to_input(images, torch.float64)
        codes_in = hooks.input(x) * 2.0 ** qm.shifts[-1]
        net(x, hooks, collect=collect)
    out = []
    for op in lm.integer.ops:
        index = op.layer_index
        if index < 0:
            values = codes_in
        elif isinstance(op, DenseScores):
            values = collect[index] * 2.0 ** lm.integer.score_exponent
        else:  # pools keep their input's step; a signed point's stored codes carry its zero point
            point = point_of(qm.arch, index)
            values = collect[index] * step_scale(collect[index], qm.shifts[point], qm.channel_octaves.get(point)) + \
                getattr(op, "zero_point", 0)
        out.append(values.numpy().astype(np.int64))
    return out


def host_op_outputs(host: HostModel, lm: LoweredModel, image: np.ndarray) -> dict[int, np.ndarray]:
    """Integer-op index -> the host C's output for one image (from arena snapshots of a profile build)."""
    snaps, scores = host.arena_snapshots(image, len(lm.ops))
    out = {}
    for k, op in enumerate(lm.ops):
        if op.output == "scores":
            out[op.source_ops[-1]] = scores.astype(np.int64)
        else:
            offset, size = lm.buffers[op.output]  # op.out_bits per stored code (integer/reference.py pack_codes)
            stored = unpack_codes(snaps[k, offset:offset + size], op.out_bits, op.out_count)
            out[op.source_ops[-1]] = stored.astype(np.int64)
    return out


def locate_host_mismatch(model_dir: Path, lm: LoweredModel, image: np.ndarray, reference: list[np.ndarray],
                         build_dir: Path | None = None) -> dict | None:
    host = build_host(model_dir, lm.prefix, build_dir, profile=True)
    got = host_op_outputs(host, lm, image)
    ops = sorted(got)
    return first_mismatch([reference[k] for k in ops], [got[k][None] for k in ops],
                          [lm.integer.ops[k] for k in ops], ops)


def verify(qm: QuantizedModel, lm: LoweredModel, model_dir: Path, images: np.ndarray, labels: np.ndarray,
           groups: np.ndarray | None = None, build_dir: Path | None = None) -> dict:
    """Run all host-side legs on `images`; returns accuracies, mismatch counts and first-mismatch details."""
    reference_ops = run_integer(lm.integer, images)
    reference = reference_ops[-1]
    torch_scores = evaluate_exact(qm, Net(qm.arch), images)
    host = build_host(model_dir, lm.prefix, build_dir)
    host_scores, host_classes = host.infer(images)
    result = {
        "n_test": int(len(images)),
        "n_test_images": int(len(np.unique(groups))) if groups is not None else int(len(images)),
        "accuracy": {
            "torch_quant": accuracy(torch_scores, labels, groups),
            "int_reference": accuracy(reference, labels, groups),
            "host_c": accuracy(host_scores, labels, groups),
        },
        "mismatches": {
            "torch_quant": int(np.sum(np.any(torch_scores != reference, axis=1))),
            "host_c": int(np.sum(np.any(host_scores != reference, axis=1))),
            "host_c_class": int(np.sum(host_classes != np.argmax(reference, axis=1))),
        },
        "first_mismatch": {},
    }
    if result["mismatches"]["torch_quant"]:
        bad = int(np.flatnonzero(np.any(torch_scores != reference, axis=1))[0])
        torch_ops = torch_op_outputs(qm, lm, images[bad:bad + 1])
        detail = first_mismatch([r[bad:bad + 1] for r in reference_ops], torch_ops, lm.integer.ops)
        if detail:
            detail["image"] = bad
        result["first_mismatch"]["torch_quant"] = detail
    if result["mismatches"]["host_c"]:
        bad = int(np.flatnonzero(np.any(host_scores != reference, axis=1))[0])
        detail = locate_host_mismatch(model_dir, lm, images[bad], [r[bad:bad + 1] for r in reference_ops],
                                      build_dir and Path(build_dir) / "profile")
        if detail:
            detail["image"] = bad
        result["first_mismatch"]["host_c"] = detail
    return result


def describe_mismatch(leg: str, detail: dict | None) -> str:
    if not detail:
        return f"{leg}: scores differ but no op output does (check the argmax)"
    return (f"{leg}: first mismatch at op {detail['op']} ({detail['name']}, arch layer {detail['layer']}), "
            f"image {detail['image']}, index {detail['index']}: expected {detail['expected']}, got {detail['got']}")

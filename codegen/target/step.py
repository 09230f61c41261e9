"""The Cortex-M step of a run: self-test on the test split, instructions per inference and footprint, for a report."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from siq.training.errors import SiqError
from siq.training.fileio import atomic_directory
from siq.training.integer import integer_scores

from .boards import resolve_target
from .build import FIRMWARE
from .footprint import footprint
from .qemu import instructions_per_inference
from .selftest import run_self_test, without_deleted_logs
from .toolchain import require_toolchain


def run_target_step(model_dir: str | Path, prefix: str, lm, data, cpu: str | None, board: str | None = None,
                    n_images: int = 1000, log=print, opt: str = "-O2") -> dict:
    """Self-test on the first n_images test images, instructions per inference and footprint, for a report.

    lm is the codegen.lower.LoweredModel of the sources in model_dir (its integer model gives the expected
    scores), data a training.data.Dataset. The first chunk's firmware (.elf/.bin/.hex/.map, build.log) is
    kept in model_dir/target-<board>/; every other build happens in a temporary directory.
    """
    cpu, board = resolve_target(cpu, board)
    require_toolchain(host_cc=True)
    start = time.time()
    images = np.asarray(data.test_x[:n_images])
    if len(images) == 0:
        raise SiqError("no test images for the target self-test")
    scores = integer_scores(lm.integer, images)
    classes = scores.argmax(axis=1)
    keep = Path(model_dir) / f"target-{board}"
    with tempfile.TemporaryDirectory(prefix="siq-target-") as scratch, without_deleted_logs(True):
        work = Path(scratch)
        test = run_self_test(model_dir, prefix, cpu, board, images, classes, scores, opt, work_dir=work / "test")
        insn = instructions_per_inference(model_dir, prefix, cpu, board, images[0], opt, work_dir=work / "insn")
        first = work / "test" / "chunk000"
        size = footprint(first / f"{FIRMWARE}.elf", prefix)
        with atomic_directory(keep, force=True) as staging:  # the old firmware stays until the new one is whole
            for name in [f"{FIRMWARE}.{ext}" for ext in ("elf", "bin", "hex", "map")] + ["build.log"]:
                shutil.copy2(first / name, staging / name)
    result = {
        "cpu": cpu, "board": board, "opt": opt, "n_images": test["n_images"], "mismatches": test["mismatches"],
        "first_mismatch": test["first_mismatch"], "chunks": test["chunks"],
        "instructions": {key: insn[key] for key in ("total", "per_op", "epilogue")},
        # per op: the kernel the default build runs, its MACs and its instructions (the profiled build)
        "ops": [{"kernel": op.fast_kernel or op.kernel, "macs": op.macs, "instructions": count}
                for op, count in zip(lm.ops, insn["per_op"])],
        "footprint": {key: value for key, value in size.items() if key != "model_symbols"},
        "firmware": str(keep), "seconds": round(time.time() - start, 1),
    }
    log(f"{cpu} ({board}, {opt}): {result['n_images']} test images, {result['mismatches']} mismatches against "
        f"the integer reference; {insn['total']:,} instructions per inference; model code {size['code_bytes']:,} B, "
        f"weights {size['weights_bytes']:,} B, RAM {size['ram_bytes']:,} B "
        f"(static {size['data_bytes'] + size['bss_bytes']:,} + stack {size['stack_bytes']:,})")
    if test["first_mismatch"] is not None:
        log(f"first target mismatch: {test['first_mismatch']}")
    return result

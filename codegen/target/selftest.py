"""The on-target self-test: test vectors in chunks that fit the board's flash, one firmware build and QEMU run per
chunk, and the harness's printed results parsed and compared with the expected classes and scores.

The harness prints one line per image ("index class score...") and "mismatches N", and exits with
min(N, 98); 99 = fault.
"""
from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path

import numpy as np

from siq.codegen.vectors import check_vectors
from siq.training.errors import SiqError

from .boards import BOARDS, resolve_target
from .build import build_elf, model_macros
from .footprint import flash_used
from .qemu import EXIT_FAULT, run_elf

EXIT_MAX_MISMATCHES = 98  # target_main.c.j2: the status saturates here
MAX_CHUNK_IMAGES = 2000   # vectors per firmware image even when flash allows more (keeps compiles short)


def _vector_bytes(input_bytes: int, num_classes: int) -> int:
    """Flash taken by one test vector: image, class byte, int32 scores."""
    return input_bytes + 1 + 4 * num_classes


def chunk_size(model_dir: str | Path, prefix: str, cpu: str, board: str | None, opt: str, work_dir: str | Path,
               max_chunk: int = MAX_CHUNK_IMAGES) -> int:
    """How many test vectors fit one firmware image: a probe build with one vector measures the fixed part."""
    cpu, board = resolve_target(cpu, board)
    macros = model_macros(model_dir, prefix)
    per_vector = _vector_bytes(macros["INPUT_BYTES"], macros["NUM_CLASSES"])
    probe = (np.zeros((1, macros["INPUT_BYTES"]), np.uint8), np.zeros(1, np.int64),
             np.zeros((1, macros["NUM_CLASSES"]), np.int64))
    elf = build_elf(model_dir, prefix, Path(work_dir) / "probe", cpu, board, opt, probe)
    free = BOARDS[board]["flash_bytes"] - flash_used(elf) + per_vector - 64  # 64: section alignment slack
    fits = free // per_vector
    if fits < 1:
        raise SiqError(f"the model and harness leave no flash for test vectors on {board} "
                       f"({BOARDS[board]['flash_bytes']} bytes of flash)")
    return int(min(fits, max_chunk))


def flash_overflow(message: str) -> int | None:
    """Bytes by which the linker said the flash region overflowed, or None for any other build failure."""
    found = re.search(r"region .FLASH. overflowed by (\d+) bytes?", message)
    return int(found.group(1)) if found else None


@contextlib.contextmanager
def without_deleted_logs(temporary: bool):
    """Build errors name their build.log; when that log is in a temporary folder about to be removed, the
    message keeps the compiler's first error and drops the path (it would point at nothing)."""
    try:
        yield
    except SiqError as exc:
        if not temporary or "(full log: " not in str(exc):
            raise
        raise SiqError(re.sub(r" \(full log: [^)]*\)", " (build folder removed)", str(exc))) from None


def _parse_output(text: str, first: int, count: int, num_classes: int, where: str
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """(classes [count], scores [count, K], harness mismatch count) from one chunk's semihosting output."""
    classes = np.empty(count, np.int64)
    scores = np.empty((count, num_classes), np.int64)
    seen = 0
    harness_mismatches = None
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] == ["mismatches"] and len(fields) == 2:
            harness_mismatches = int(fields[1])
        elif fields and re.fullmatch(r"-?\d+", fields[0]):
            values = [int(v) for v in fields]
            if len(values) != 2 + num_classes or values[0] != first + seen or seen >= count:
                raise SiqError(f"unexpected harness line from {where}: {line!r}")
            classes[seen] = values[1]
            scores[seen] = values[2:]
            seen += 1
        elif line.strip():
            raise SiqError(f"unexpected harness output from {where}: {line!r}")
    if seen != count or harness_mismatches is None:
        raise SiqError(f"{where} printed {seen} of {count} results"
                       f"{'' if harness_mismatches is not None else ' and no mismatch count'}")
    return classes, scores, harness_mismatches


def run_self_test(model_dir: str | Path, prefix: str, cpu: str, board: str | None, images: np.ndarray,
                  classes: np.ndarray, scores: np.ndarray, opt: str = "-O2", chunk: int | None = None,
                  work_dir: str | Path | None = None, timeout: float | None = None) -> dict:
    """Run the model on the board for every test image and compare with the expected classes and scores.

    The vectors are split into chunks that fit the board's flash (or `chunk` images each); every chunk is a
    firmware build and a QEMU run in work_dir/chunkNNN (a temporary directory when work_dir is None). The
    comparison is done here, on the parsed output (authoritative), and cross-checked with the count the
    harness printed and its exit status. Returns {"n_images", "mismatches", "first_mismatch" (None or
    {"index", "expected": {"class", "scores"}, "got": {...}}), "classes", "scores" (what the target computed),
    "chunks", "chunk_size", "cpu", "board"}. timeout is per QEMU run (default 60 s + 0.1 s per image).
    """
    cpu, board = resolve_target(cpu, board)
    images, classes, scores = check_vectors(images, classes, scores)
    if classes is None:
        raise SiqError("run_self_test needs expected classes and scores")
    with tempfile.TemporaryDirectory(prefix="siq-target-") as scratch, without_deleted_logs(work_dir is None):
        work = Path(work_dir) if work_dir is not None else Path(scratch)
        if chunk is None:
            chunk = chunk_size(model_dir, prefix, cpu, board, opt, work)
        if chunk < 1:
            raise SiqError(f"chunk size must be at least 1, got {chunk}")
        macros = model_macros(model_dir, prefix)
        per_vector = _vector_bytes(macros["INPUT_BYTES"], macros["NUM_CLASSES"])
        n, num_classes = scores.shape
        got_classes = np.empty(n, np.int64)
        got_scores = np.empty((n, num_classes), np.int64)
        start = number = 0
        while start < n:
            stop = min(start + chunk, n)
            piece = (images[start:stop], classes[start:stop], scores[start:stop])
            try:
                elf = build_elf(model_dir, prefix, work / f"chunk{number:03d}", cpu, board, opt, piece,
                                first_index=start)
            except SiqError as exc:
                # The one-vector probe only estimates the harness's code size: when the real chunk does not
                # fit, the linker says by how much, and the chunk shrinks by that many vectors (and one more).
                over = flash_overflow(str(exc))
                if over is None or stop - start == 1:
                    raise
                chunk = max(1, stop - start - (over + per_vector - 1) // per_vector - 1)
                continue
            status, text = run_elf(elf, board, timeout if timeout is not None else 60 + 0.1 * (stop - start))
            where = f"{elf} on {board}"
            if status == EXIT_FAULT:
                raise SiqError(f"{where} faulted after {len(text.splitlines())} lines: "
                               f"{(text.strip().splitlines() or ['no output'])[-1]}")
            got_classes[start:stop], got_scores[start:stop], harness_count = _parse_output(
                text, start, stop - start, num_classes, where)
            wrong = (got_classes[start:stop] != classes[start:stop]) | \
                (got_scores[start:stop] != scores[start:stop]).any(axis=1)
            if harness_count != int(wrong.sum()) or status != min(harness_count, EXIT_MAX_MISMATCHES):
                raise SiqError(f"harness and host disagree on {where}: harness counted {harness_count} "
                               f"mismatches (exit status {status}), host counted {int(wrong.sum())}")
            start, number = stop, number + 1
    wrong = (got_classes != classes) | (got_scores != scores).any(axis=1)
    first_mismatch = None
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        first_mismatch = {"index": i,
                          "expected": {"class": int(classes[i]), "scores": scores[i].tolist()},
                          "got": {"class": int(got_classes[i]), "scores": got_scores[i].tolist()}}
    return {"n_images": n, "mismatches": int(wrong.sum()), "first_mismatch": first_mismatch,
            "classes": got_classes, "scores": got_scores, "chunks": number, "chunk_size": chunk,
            "cpu": cpu, "board": board}

"""Running a firmware image on qemu-system-arm, and counting its executed instructions exactly.

The firmware prints through semihosting and exits with its status (startup.c: 99 on any fault). Exact
instruction counts come from a QEMU TCG plugin (firmware_template/qemu/insn_count.c) that records the
executed-instruction count at every call of `siq_profile_mark`.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from siq.codegen.render import template_path
from siq.training.errors import SiqError

from .boards import check_board, resolve_target
from .build import build_elf
from .toolchain import first_error, require_toolchain, run_tool

EXIT_FAULT = 99          # startup.c: any fault


def _qemu(elf: Path, board: str, extra: list[str], timeout: float) -> subprocess.CompletedProcess:
    check_board(board)
    command = [require_toolchain()["qemu-system-arm"], "-M", board, "-display", "none", "-serial", "null",
               "-monitor", "none", "-semihosting-config", "enable=on,target=native,chardev=sh0",
               "-chardev", "stdio,id=sh0", *extra, "-kernel", str(elf)]
    try:
        return subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SiqError(f"{elf} did not finish on qemu-system-arm -M {board} within {timeout:g} s "
                       "(a hang in the model, or a fault QEMU cannot report)") from None


def run_elf(elf: str | Path, board: str, timeout: float = 120) -> tuple[int, str]:
    """(exit status, semihosting output) of the firmware on QEMU. 0..98 = mismatches, 99 = fault."""
    result = _qemu(Path(elf), board, [], timeout)
    return result.returncode, result.stdout


def _marker_address(elf: Path) -> int:
    status, output = run_tool([require_toolchain()["arm-none-eabi-nm"], str(elf)])
    match = re.search(r"^([0-9a-fA-F]+) T siq_profile_mark$", output, re.M)
    if status != 0 or not match:
        raise SiqError(f"{elf} has no global function siq_profile_mark (was it built by build_elf?)")
    return int(match.group(1), 16) & ~1  # clear the Thumb bit: QEMU reports even instruction addresses


def plugin_library(cache_dir: str | Path) -> Path:
    """The instruction-count plugin, compiled with the host cc into cache_dir once per plugin source."""
    source = template_path("qemu/insn_count.c")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    cache_dir = Path(cache_dir)
    library = cache_dir / f"insn_count-{digest}.so"
    if library.exists():
        return library
    cc = require_toolchain(host_cc=True)["cc"]
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f".{library.name}.{os.getpid()}"
    status, output = run_tool([cc, "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra",
                               "-o", str(partial), str(source)])
    if status != 0:
        raise SiqError(f"building the QEMU plugin {source} failed: {first_error(output)}")
    partial.replace(library)  # atomic: concurrent builders never see a half-written library
    return library


def count_instructions(elf: str | Path, board: str, timeout: float = 120,
                       cache_dir: str | Path | None = None) -> list[int]:
    """Executed-instruction counts at each call of siq_profile_mark, in call order (deterministic).

    The harness calls mark(-1) before and mark(-2) after the first inference, and a -DSIQ_PROFILE model calls
    mark(op) after each op: differences of consecutive counts are instructions per interval. The plugin is
    built into cache_dir (default: the ELF's directory).
    """
    elf = Path(elf).resolve()
    library = plugin_library(cache_dir or elf.parent)
    log = elf.with_suffix(".insn.log")
    log.unlink(missing_ok=True)
    result = _qemu(elf, board, ["-plugin", f"{library},marker={_marker_address(elf):#x}", "-d", "plugin",
                                "-D", str(log)], timeout)
    if result.returncode == EXIT_FAULT:
        raise SiqError(f"{elf} faulted on {board}: {result.stdout.strip().splitlines()[-1:]}")
    text = log.read_text() if log.exists() else ""
    match = re.search(r"^siq-insn-count (\d+)((?: \d+)*)$", text, re.M)
    if not match:
        raise SiqError(f"the instruction-count plugin reported nothing for {elf} on {board} "
                       f"(QEMU exit {result.returncode}: {result.stderr.strip()[-300:]})")
    counts = [int(v) for v in match.group(2).split()]
    if len(counts) != int(match.group(1)):
        raise SiqError(f"malformed instruction-count report in {log}")
    return counts


def instructions_per_inference(model_dir: str | Path, prefix: str, cpu: str, board: str | None,
                               image: np.ndarray, opt: str = "-O2", work_dir: str | Path | None = None,
                               timeout: float = 120) -> dict:
    """Executed instructions for one inference of `image` on the board's CPU (exact, deterministic).

    total: from a normal build, count at mark(-2) minus count at mark(-1); it includes the handful of
    instructions of the call itself (argument setup, bl, the marker's bx lr). per_op: from a -DSIQ_PROFILE
    build, instructions from the previous mark to op i's mark (op 0 from mark(-1)); epilogue: from the last
    op's mark to mark(-2) (argmax, return). The profiling calls add a few instructions to each interval, so
    sum(per_op) + epilogue is slightly above total.
    """
    cpu, board = resolve_target(cpu, board)
    image = np.asarray(image).reshape(1, -1)
    with tempfile.TemporaryDirectory(prefix="siq-insn-") as scratch:
        work = Path(work_dir) if work_dir is not None else Path(scratch)
        counts = {}
        for profile in (False, True):
            elf = build_elf(model_dir, prefix, work / ("profile" if profile else "plain"), cpu, board, opt,
                            (image, None, None), profile=profile)
            counts[profile] = count_instructions(elf, board, timeout, cache_dir=work)
    plain, profiled = counts[False], counts[True]
    if len(plain) != 2:
        raise SiqError(f"expected 2 marker hits without SIQ_PROFILE, got {len(plain)}: does the model call "
                       "siq_profile_mark outside #ifdef SIQ_PROFILE?")
    if len(profiled) < 3:
        raise SiqError("the model never calls siq_profile_mark when compiled with -DSIQ_PROFILE")
    per_op = [b - a for a, b in zip(profiled[:-2], profiled[1:-1])]
    return {"total": plain[1] - plain[0], "per_op": per_op, "epilogue": profiled[-1] - profiled[-2],
            "profile_total": profiled[-1] - profiled[0], "cpu": cpu, "board": board}

"""Cross-compile a generated model with the self-test harness for a Cortex-M board and run it under QEMU.

A generated model is a directory with `<prefix>.h` and `<prefix>.c` (see firmware_template/model.h.j2). The
firmware is: board support (firmware_template/boards: startup.c, semihosting.c, mem.c, link.ld.j2), the model,
and the harness target_main.c.j2 with embedded test vectors (codegen/vectors.py). It runs on
`qemu-system-arm -M <board>`, prints one line per image through semihosting and exits with the number of
mismatches (min(n, 98); 99 = fault). Exact instruction counts come from a QEMU TCG plugin
(firmware_template/qemu/insn_count.c) that records the executed-instruction count at every call of
`siq_profile_mark`.

Public API:
    CPUS, BOARDS, DEFAULT_CPU, resolve_target(cpu, board)
    toolchain_status(), require_toolchain(host_cc=False)
    build_elf(...), run_elf(...), count_instructions(...)
    run_self_test(...), footprint(...), instructions_per_inference(...)
    run_target_step(...) and run_target_command(args): the `siq pipeline` step and `siq target DIR`.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from siq import __version__
from siq.codegen.export import header_macros
from siq.codegen.render import render, template_path
from siq.codegen.vectors import check_vectors, write_test_vectors
from siq.training.errors import SiqError
from siq.training.fileio import atomic_directory, atomic_write_bytes

KIB = 1024
MIB = 1024 * 1024

CPUS: dict[str, dict] = {
    "cortex-m0": {"board": "microbit", "mcpu": "cortex-m0", "dsp": False},
    "cortex-m3": {"board": "mps2-an385", "mcpu": "cortex-m3", "dsp": False},
    "cortex-m4": {"board": "mps2-an386", "mcpu": "cortex-m4", "dsp": True},
    "cortex-m7": {"board": "mps2-an500", "mcpu": "cortex-m7", "dsp": True},
}
DEFAULT_CPU = "cortex-m4"

# Memory maps as QEMU 7.2 models them (`info mtree`): the mps2 FPGA images have 4 MiB of code SSRAM at 0x0
# (standing in for flash) and 4 MiB of data SSRAM at 0x20000000. stack_bytes is the minimum RAM kept free for
# the stack; the linker fails ("region `RAM' overflowed") when .data + .bss + stack_bytes exceed RAM.
BOARDS: dict[str, dict] = {
    "microbit": {"cpu": "cortex-m0", "flash_origin": 0x0, "flash_bytes": 256 * KIB,
                 "ram_origin": 0x20000000, "ram_bytes": 16 * KIB, "stack_bytes": 2 * KIB},
    "mps2-an385": {"cpu": "cortex-m3", "flash_origin": 0x0, "flash_bytes": 4 * MIB,
                   "ram_origin": 0x20000000, "ram_bytes": 4 * MIB, "stack_bytes": 64 * KIB},
    "mps2-an386": {"cpu": "cortex-m4", "flash_origin": 0x0, "flash_bytes": 4 * MIB,
                   "ram_origin": 0x20000000, "ram_bytes": 4 * MIB, "stack_bytes": 64 * KIB},
    "mps2-an500": {"cpu": "cortex-m7", "flash_origin": 0x0, "flash_bytes": 4 * MIB,
                   "ram_origin": 0x20000000, "ram_bytes": 4 * MIB, "stack_bytes": 64 * KIB},
    "lm3s6965evb": {"cpu": "cortex-m3", "flash_origin": 0x0, "flash_bytes": 256 * KIB,
                    "ram_origin": 0x20000000, "ram_bytes": 64 * KIB, "stack_bytes": 4 * KIB},
}

OPT_LEVELS = ("-O0", "-O1", "-O2", "-O3", "-Os", "-Oz", "-Og")
INSTALL_HINT = ("install it with `apt-get install --no-install-recommends gcc-arm-none-eabi "
                "libnewlib-arm-none-eabi qemu-system-arm` (or `make setup`)")
CROSS_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-objcopy", "arm-none-eabi-nm", "arm-none-eabi-size",
               "qemu-system-arm")
EXIT_FAULT = 99          # startup.c: any fault
EXIT_MAX_MISMATCHES = 98  # target_main.c.j2: the status saturates here
MAX_CHUNK_IMAGES = 2000   # vectors per firmware image even when flash allows more (keeps compiles short)
FIRMWARE = "firmware"     # out_dir/firmware.{elf,bin,hex,map}

_BOARD_SOURCES = ("startup.c", "semihosting.c", "mem.c")
_FLASH_SECTIONS = (".isr_vector", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".data")
_RAM_SECTIONS = (".data", ".bss")


# ---------------------------------------------------------------- targets and toolchain

def resolve_target(cpu: str | None, board: str | None = None) -> tuple[str, str]:
    """(cpu, board) after defaults and checks: cpu defaults to cortex-m4, board to the cpu's default board."""
    cpu = cpu or DEFAULT_CPU
    if cpu not in CPUS:
        raise SiqError(f"unknown cpu '{cpu}': choose one of {', '.join(CPUS)}")
    board = board or CPUS[cpu]["board"]
    if board not in BOARDS:
        raise SiqError(f"unknown board '{board}': choose one of {', '.join(BOARDS)}")
    if BOARDS[board]["cpu"] != cpu:
        raise SiqError(f"board '{board}' has a {BOARDS[board]['cpu']}, not a {cpu}: "
                       f"use --cpu {BOARDS[board]['cpu']} or leave out --board")
    return cpu, board


def toolchain_status() -> dict:
    """{"ok": bool, "missing": [tool, ...], "tools": {tool: path or None}}.

    Tools: the cross toolchain, qemu-system-arm and the host C compiler `cc` (which builds the QEMU plugin);
    ok is True when none is missing.
    """
    tools: dict[str, str | None] = {tool: shutil.which(tool) for tool in CROSS_TOOLS}
    tools["cc"] = shutil.which("cc") or shutil.which("gcc")
    missing = [tool for tool, path in tools.items() if path is None]
    return {"ok": not missing, "missing": missing, "tools": tools}


def require_toolchain(host_cc: bool = False) -> dict[str, str]:
    """{tool: path}, or SiqError naming what is missing and how to install it (host cc only if host_cc)."""
    tools = toolchain_status()["tools"]
    missing = [tool for tool in CROSS_TOOLS if tools[tool] is None]
    if missing:
        raise SiqError(f"{', '.join(missing)} not found: {INSTALL_HINT}")
    if host_cc and tools["cc"] is None:
        raise SiqError("no host C compiler (cc) to build the QEMU instruction-count plugin: "
                       "install it with `apt-get install --no-install-recommends gcc`")
    return {tool: path for tool, path in tools.items() if path is not None}


def _check_prefix(prefix: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
        raise SiqError(f"model prefix '{prefix}' is not a C identifier")


def _check_opt(opt: str) -> None:
    if opt not in OPT_LEVELS:
        raise SiqError(f"unsupported optimisation level '{opt}': choose one of {', '.join(OPT_LEVELS)}")


def model_macros(model_dir: str | Path, prefix: str) -> dict[str, int]:
    """The integer `#define <PREFIX>_NAME <int>` macros of `<prefix>.h` (INPUT_BYTES, NUM_CLASSES, ...)."""
    _check_prefix(prefix)
    header = Path(model_dir) / f"{prefix}.h"
    source = Path(model_dir) / f"{prefix}.c"
    for path in (header, source):
        if not path.is_file():
            raise SiqError(f"{path} not found: is {model_dir} a generated model with prefix '{prefix}'?")
    macros = header_macros(header.read_text(), prefix)
    for name in ("INPUT_BYTES", "NUM_CLASSES"):
        if name not in macros:
            raise SiqError(f"{header} does not define {prefix.upper()}_{name} as an integer literal")
    return macros


# ---------------------------------------------------------------- build

def _run_tool(args: list[str], cwd: Path | None = None) -> tuple[int, str]:
    result = subprocess.run(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return result.returncode, result.stdout


def _first_error(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in lines:
        if re.search(r": (fatal )?error:|undefined reference|overflowed|cannot find|multiple definition", line):
            return line
    return lines[0] if lines else "no output"


# The generated model must also pass these on the cross compiler (the host build uses the same set).
MODEL_STRICT_FLAGS = ["-Wconversion", "-Wsign-conversion", "-Wshadow", "-Wcast-align"]


def _compile_flags(cpu: str, opt: str) -> list[str]:
    return [f"-mcpu={CPUS[cpu]['mcpu']}", "-mthumb", "-mfloat-abi=soft", opt, "-g",
            "-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
            "-ffreestanding", "-ffunction-sections", "-fdata-sections", "-fno-tree-loop-distribute-patterns",
            "-fstack-usage"]


def build_elf(model_dir: str | Path, prefix: str, out_dir: str | Path, cpu: str = DEFAULT_CPU,
              board: str | None = None, opt: str = "-O2",
              vectors: tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None = None,
              profile: bool = False, first_index: int = 0) -> Path:
    """Cross-compile model + harness + board support into out_dir/firmware.elf (+ .bin, .hex, .map); its path.

    vectors = (images, classes, scores) embeds those test vectors (classes/scores None: outputs are printed,
    not checked); vectors None embeds one all-zero image, unchecked. first_index numbers the printed lines.
    profile=True compiles the model with -DSIQ_PROFILE. Everything, including build.log, stays in out_dir.
    """
    cpu, board = resolve_target(cpu, board)
    _check_opt(opt)
    tools = require_toolchain()
    model_dir = Path(model_dir).resolve()
    macros = model_macros(model_dir, prefix)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    boards_dir = template_path("boards")

    if vectors is None:
        vectors = (np.zeros((1, macros["INPUT_BYTES"]), np.uint8), None, None)
    images, classes, scores = check_vectors(*vectors)
    if images.shape[1] != macros["INPUT_BYTES"]:
        raise SiqError(f"test images have {images.shape[1]} bytes, the model expects {macros['INPUT_BYTES']}")
    if scores is not None and scores.shape[1] != macros["NUM_CLASSES"]:
        raise SiqError(f"expected scores have {scores.shape[1]} classes, the model has {macros['NUM_CLASSES']}")
    write_test_vectors(out_dir, prefix, images, classes, scores, first_index=first_index)
    (out_dir / "target_main.c").write_text(render("target_main.c.j2", prefix=prefix, PREFIX=prefix.upper(),
                                                  version=__version__))
    layout = BOARDS[board]
    (out_dir / "link.ld").write_text(render("boards/link.ld.j2", board=board, cpu=cpu, **{
        key: layout[key] for key in ("flash_origin", "flash_bytes", "ram_origin", "ram_bytes", "stack_bytes")}))

    flags = _compile_flags(cpu, opt)
    gcc = tools["arm-none-eabi-gcc"]
    jobs = [(boards_dir / name, out_dir / name.replace(".c", ".o"), []) for name in _BOARD_SOURCES]
    jobs.append((model_dir / f"{prefix}.c", out_dir / f"{prefix}.o",
                 [f"-I{model_dir}", "-fcallgraph-info=su", *MODEL_STRICT_FLAGS]
                 + (["-DSIQ_PROFILE"] if profile else [])))
    jobs.append((out_dir / "target_main.c", out_dir / "target_main.o",
                 [f"-I{model_dir}", f"-I{out_dir}", f"-I{boards_dir}"]))
    # Stale outputs of an earlier build must not be mistaken for this one's.
    for path in [obj for _, obj, _ in jobs] + [out_dir / f"{FIRMWARE}.{ext}" for ext in ("elf", "bin", "hex", "map")]:
        path.unlink(missing_ok=True)

    def compile_one(job):
        source, obj, extra = job
        command = [gcc, *flags, *extra, "-c", str(source), "-o", str(obj)]
        return source, command, _run_tool(command, cwd=out_dir)

    log_path = out_dir / "build.log"
    log: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        results = list(pool.map(compile_one, jobs))
    failed = None
    for source, command, (status, output) in results:
        log.append(f"$ {' '.join(command)}\n-> exit {status}\n{output}")
        if status != 0 and failed is None:
            failed = (source, output)
    if failed:
        log_path.write_text("\n".join(log))
        raise SiqError(f"cross-compiling {failed[0].name} for {cpu} failed: {_first_error(failed[1])} "
                       f"(full log: {log_path})")

    elf = out_dir / f"{FIRMWARE}.elf"
    link = [gcc, *flags, "-nostdlib", f"-T{out_dir / 'link.ld'}", "-Wl,--gc-sections",
            f"-Wl,-Map={out_dir / (FIRMWARE + '.map')}", "-o", str(elf),
            *[str(obj) for _, obj, _ in jobs], "-lgcc"]
    status, output = _run_tool(link, cwd=out_dir)
    log.append(f"$ {' '.join(link)}\n-> exit {status}\n{output}")
    if status == 0:
        for fmt, ext in (("binary", "bin"), ("ihex", "hex")):
            command = [tools["arm-none-eabi-objcopy"], "-O", fmt, str(elf), str(out_dir / f"{FIRMWARE}.{ext}")]
            status, output = _run_tool(command)
            log.append(f"$ {' '.join(command)}\n-> exit {status}\n{output}")
            if status != 0:
                break
    log_path.write_text("\n".join(log))
    if status != 0:
        raise SiqError(f"linking the {board} firmware failed: {_first_error(output)} (full log: {log_path})")
    return elf


# ---------------------------------------------------------------- run

def _qemu(elf: Path, board: str, extra: list[str], timeout: float) -> subprocess.CompletedProcess:
    if board not in BOARDS:
        raise SiqError(f"unknown board '{board}': choose one of {', '.join(BOARDS)}")
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
    status, output = _run_tool([require_toolchain()["arm-none-eabi-nm"], str(elf)])
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
    status, output = _run_tool([cc, "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra",
                                "-o", str(partial), str(source)])
    if status != 0:
        raise SiqError(f"building the QEMU plugin {source} failed: {_first_error(output)}")
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


# ---------------------------------------------------------------- self-test

def _flash_used(elf: Path) -> int:
    return sum(size for name, size in _section_sizes(elf).items() if name in _FLASH_SECTIONS)


def _section_sizes(elf: Path) -> dict[str, int]:
    status, output = _run_tool([require_toolchain()["arm-none-eabi-size"], "-A", "-d", str(elf)])
    if status != 0:
        raise SiqError(f"arm-none-eabi-size failed on {elf}: {_first_error(output)}")
    sizes = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


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
    free = BOARDS[board]["flash_bytes"] - _flash_used(elf) + per_vector - 64  # 64: section alignment slack
    fits = free // per_vector
    if fits < 1:
        raise SiqError(f"the model and harness leave no flash for test vectors on {board} "
                       f"({BOARDS[board]['flash_bytes']} bytes of flash)")
    return int(min(fits, max_chunk))


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
    with tempfile.TemporaryDirectory(prefix="siq-target-") as scratch:
        work = Path(work_dir) if work_dir is not None else Path(scratch)
        if chunk is None:
            chunk = chunk_size(model_dir, prefix, cpu, board, opt, work)
        if chunk < 1:
            raise SiqError(f"chunk size must be at least 1, got {chunk}")
        n, num_classes = scores.shape
        got_classes = np.empty(n, np.int64)
        got_scores = np.empty((n, num_classes), np.int64)
        starts = range(0, n, chunk)
        for number, start in enumerate(starts):
            stop = min(start + chunk, n)
            piece = (images[start:stop], classes[start:stop], scores[start:stop])
            elf = build_elf(model_dir, prefix, work / f"chunk{number:03d}", cpu, board, opt, piece,
                            first_index=start)
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
    wrong = (got_classes != classes) | (got_scores != scores).any(axis=1)
    first_mismatch = None
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        first_mismatch = {"index": i,
                          "expected": {"class": int(classes[i]), "scores": scores[i].tolist()},
                          "got": {"class": int(got_classes[i]), "scores": got_scores[i].tolist()}}
    return {"n_images": n, "mismatches": int(wrong.sum()), "first_mismatch": first_mismatch,
            "classes": got_classes, "scores": got_scores, "chunks": len(starts), "chunk_size": chunk,
            "cpu": cpu, "board": board}


# ---------------------------------------------------------------- footprint

# An input-section line of a GNU ld map: " .text.name  0xADDRESS  0xSIZE  object" (the name may sit alone on
# the previous line when it is long).
_MAP_SECTION = re.compile(r"^ (\.\S+|COMMON)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")
_MAP_NAME_ONLY = re.compile(r"^ (\.\S+|COMMON)$")
_MAP_CONTINUATION = re.compile(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")


def _map_input_sections(map_path: Path) -> list[tuple[str, int, int, str]]:
    """[(input section, address, size, object)] of the linked image, from the map's memory-map part."""
    text = map_path.read_text()
    marker = "Linker script and memory map"
    if marker not in text:
        raise SiqError(f"{map_path} is not a GNU ld map file")
    sections = []
    pending = None
    for line in text[text.index(marker):].splitlines():
        match = _MAP_SECTION.match(line)
        if match:
            sections.append((match.group(1), int(match.group(2), 16), int(match.group(3), 16), match.group(4)))
            pending = None
            continue
        match = _MAP_NAME_ONLY.match(line)
        if match:
            pending = match.group(1)
            continue
        match = _MAP_CONTINUATION.match(line)
        if match and pending:
            sections.append((pending, int(match.group(1), 16), int(match.group(2), 16), match.group(3)))
        pending = None
    return sections


def _section_kind(name: str) -> str | None:
    for kind in ("text", "rodata", "data", "bss"):
        if name == f".{kind}" or name.startswith(f".{kind}."):
            return kind
    return "bss" if name == "COMMON" else None


def _stack_bound(callgraph: Path, root: str) -> tuple[int, list[str], bool]:
    """Worst-case stack from root: max over call paths of the sum of frame sizes (GCC -fcallgraph-info=su).

    Returns (bytes, external callees counted as 0 bytes, bounded). Calls the compiler inlined cost nothing
    extra: their locals are in the caller's frame. `bounded` is False for dynamic frames or recursion.
    """
    text = callgraph.read_text()
    frames: dict[str, int] = {}
    dynamic: set[str] = set()
    for title, label in re.findall(r'node: \{ title: "([^"]+)" label: "([^"]*)"', text):
        match = re.search(r"(\d+) bytes \(([^)]*)\)", label)
        if match:
            frames[title] = int(match.group(1))
            if "dynamic" in match.group(2) and "bounded" not in match.group(2):
                dynamic.add(title)
    calls: dict[str, list[str]] = {}
    for source, target in re.findall(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', text):
        calls.setdefault(source, []).append(target)
    if root not in frames:
        raise SiqError(f"{root} not found in {callgraph}")
    external: set[str] = set()
    bounded = True
    memo: dict[str, int] = {}

    def worst(function: str, path: tuple[str, ...]) -> int:
        nonlocal bounded
        if function in path:
            bounded = False
            return 0
        if function not in frames:
            external.add(function)
            return 0
        if function not in memo:
            if function in dynamic:
                bounded = False
            memo[function] = frames[function] + max(
                (worst(callee, path + (function,)) for callee in calls.get(function, [])), default=0)
        return memo[function]

    return worst(root, ()), sorted(external), bounded


def footprint(elf: str | Path, prefix: str) -> dict:
    """Flash and RAM taken by the model in a build_elf firmware (harness, vectors and startup excluded).

    code_bytes: .text of the model object <prefix>.o after --gc-sections (its functions and kernels);
    weights_bytes: its .rodata (weights, tables, op parameters, class names); data_bytes/bss_bytes: its
    .data/.bss (the arena and any other static state); stack_bytes: worst-case stack of <prefix>_infer, the
    maximum over call paths of summed frame sizes from the -fcallgraph-info/-fstack-usage output of the model
    object (calls into libgcc helpers such as __aeabi_idiv are listed in stack_external_calls and counted as 0);
    ram_bytes = data + bss + stack; model_flash_bytes = code + rodata + data. libgcc_bytes is the libgcc code
    in the image (integer division helpers on Cortex-M0), shared with the harness. flash_total_bytes and
    ram_static_total_bytes cover the whole firmware; sections lists `arm-none-eabi-size -A` of the ELF.
    """
    elf = Path(elf)
    _check_prefix(prefix)
    object_name = f"{prefix}.o"
    totals = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    libgcc = 0
    for name, _, size, origin in _map_input_sections(elf.with_suffix(".map")):
        kind = _section_kind(name)
        if kind is None or size == 0:
            continue
        if Path(origin).name == object_name:
            totals[kind] += size
        elif "libgcc.a(" in origin and kind == "text":
            libgcc += size
    callgraph = elf.parent / f"{prefix}.ci"
    if not callgraph.exists():
        raise SiqError(f"{callgraph} not found: footprint needs a firmware built by build_elf")
    stack, external, bounded = _stack_bound(callgraph, f"{prefix}_infer")
    sections = _section_sizes(elf)
    status, output = _run_tool([require_toolchain()["arm-none-eabi-nm"], "-S", "--size-sort", str(elf)])
    model_names = _defined_symbols(elf.parent / object_name)
    symbols = []
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] in model_names:
            symbols.append({"name": parts[3], "bytes": int(parts[1], 16), "type": parts[2]})
    return {
        "code_bytes": totals["text"],
        "weights_bytes": totals["rodata"],
        "data_bytes": totals["data"],
        "bss_bytes": totals["bss"],
        "stack_bytes": stack,
        "stack_bounded": bounded,
        "stack_external_calls": external,
        "ram_bytes": totals["data"] + totals["bss"] + stack,
        "model_flash_bytes": totals["text"] + totals["rodata"] + totals["data"],
        "libgcc_bytes": libgcc,
        "flash_total_bytes": sum(size for name, size in sections.items() if name in _FLASH_SECTIONS),
        "ram_static_total_bytes": sum(size for name, size in sections.items() if name in _RAM_SECTIONS),
        "sections": {name: size for name, size in sections.items() if name in _FLASH_SECTIONS + (".bss",)},
        "model_symbols": sorted(symbols, key=lambda s: -s["bytes"]),
    }


def _defined_symbols(obj: Path) -> set[str]:
    status, output = _run_tool([require_toolchain()["arm-none-eabi-nm"], "--defined-only", str(obj)])
    if status != 0:
        raise SiqError(f"arm-none-eabi-nm failed on {obj}: {_first_error(output)}")
    return {line.split()[-1] for line in output.splitlines() if len(line.split()) == 3}


# ---------------------------------------------------------------- instructions

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


# ---------------------------------------------------------------- pipeline step and `siq target`

def run_target_step(model_dir: str | Path, prefix: str, lm, data, cpu: str | None, board: str | None = None,
                    n_images: int = 1000, log=print, opt: str = "-O2") -> dict:
    """Self-test on the first n_images test images, instructions per inference and footprint, for a report.

    lm is the codegen.lower.LoweredModel of the sources in model_dir (its integer model gives the expected
    scores), data a training.data.Dataset. The first chunk's firmware (.elf/.bin/.hex/.map, build.log) is
    kept in model_dir/target-<board>/; every other build happens in a temporary directory.
    """
    import time

    from siq.training.integer import integer_scores

    cpu, board = resolve_target(cpu, board)
    require_toolchain(host_cc=True)
    start = time.time()
    images = np.asarray(data.test_x[:n_images])
    if len(images) == 0:
        raise SiqError("no test images for the target self-test")
    scores = integer_scores(lm.integer, images)
    classes = scores.argmax(axis=1)
    keep = Path(model_dir) / f"target-{board}"
    with tempfile.TemporaryDirectory(prefix="siq-target-") as scratch:
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
        "footprint": {key: value for key, value in size.items() if key != "model_symbols"},
        "firmware": str(keep), "seconds": round(time.time() - start, 1),
    }
    log(f"{cpu} ({board}, {opt}): {result['n_images']} test images, {result['mismatches']} mismatches against "
        f"the integer reference; {insn['total']:,} instructions per inference; model code {size['code_bytes']:,} B, "
        f"weights {size['weights_bytes']:,} B, RAM {size['ram_bytes']:,} B (static {size['data_bytes'] + size['bss_bytes']:,}"
        f" + stack {size['stack_bytes']:,})")
    if test["first_mismatch"] is not None:
        log(f"first target mismatch: {test['first_mismatch']}")
    return result


def run_target_command(args) -> int:
    """`siq target DIR --cpu C [--board B] [--prefix P] [--opt O] [--images N]`: 0 when the board agrees."""
    import json

    from siq.training.quant import load_quantized

    from .lower import lower
    from .pipeline import load_for_model

    resolve_target(args.cpu, args.board)  # a wrong core or board is named before anything is read
    _check_opt(args.opt)
    directory = Path(args.dir)
    model_macros(directory, args.prefix)
    quantized = directory / "quantized.pt"
    if not quantized.is_file():
        raise SiqError(f"{directory} holds no quantized.pt: pass a folder written by siq export or siq pipeline")
    qm = load_quantized(quantized)
    data = load_for_model(qm.meta.get("dataset", {}), qm.arch)
    n_images = args.images if args.images is not None else len(data.test_x)
    result = run_target_step(directory, args.prefix, lower(qm, args.prefix), data, args.cpu, args.board,
                             n_images, print, args.opt)
    atomic_write_bytes(directory / f"target-{result['board']}" / "target.json",
                       (json.dumps(result, indent=2) + "\n").encode())
    return 1 if result["mismatches"] else 0

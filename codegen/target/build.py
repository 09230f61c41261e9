"""Cross-compiling a generated model, the self-test harness and board support into one firmware image.

The firmware is board support (firmware_template/boards: startup.c, semihosting.c, mem.c, link.ld.j2), the
model (`<prefix>.h` and `<prefix>.c`, see firmware_template/model.h.j2) and the harness target_main.c.j2 with
embedded test vectors (codegen/vectors.py).
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from siq.codegen.export import header_macros
from siq.codegen.render import render, template_path
from siq.codegen.vectors import check_vectors, write_test_vectors
from siq.training.errors import SiqError
from siq.version import __version__

from .boards import BOARDS, DEFAULT_CPU, resolve_target
from .toolchain import MODEL_STRICT_FLAGS, check_opt, compile_flags, first_error, require_toolchain, run_tool

FIRMWARE = "firmware"     # out_dir/firmware.{elf,bin,hex,map}

_BOARD_SOURCES = ("startup.c", "semihosting.c", "mem.c")


def check_prefix(prefix: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
        raise SiqError(f"model prefix '{prefix}' is not a C identifier")


def model_macros(model_dir: str | Path, prefix: str) -> dict[str, int]:
    """The integer `#define <PREFIX>_NAME <int>` macros of `<prefix>.h` (INPUT_BYTES, NUM_CLASSES, ...)."""
    check_prefix(prefix)
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


def check_ram(macros: dict[str, int], board: str, cpu: str) -> None:
    """Refuse, in one line naming the bytes needed, a model whose arena and stack cannot fit the board's RAM (the
    linker would say only that region RAM overflowed). The harness's own buffers still meet the linker's check."""
    layout = BOARDS[board]
    arena = macros.get("ARENA_BYTES", 0)
    if arena + layout["stack_bytes"] > layout["ram_bytes"]:
        raise SiqError(f"the model needs {arena + layout['stack_bytes']:,} B of RAM ({arena:,} B activation arena "
                       f"+ {layout['stack_bytes']:,} B stack); board {board!r} ({cpu}) has {layout['ram_bytes']:,} B")


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
    check_opt(opt)
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
    check_ram(macros, board, cpu)
    (out_dir / "link.ld").write_text(render("boards/link.ld.j2", board=board, cpu=cpu, **{
        key: layout[key] for key in ("flash_origin", "flash_bytes", "ram_origin", "ram_bytes", "stack_bytes")}))

    flags = compile_flags(cpu, opt)
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
        return source, command, run_tool(command, cwd=out_dir)

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
        raise SiqError(f"cross-compiling {failed[0].name} for {cpu} failed: {first_error(failed[1])} "
                       f"(full log: {log_path})")

    elf = out_dir / f"{FIRMWARE}.elf"
    link = [gcc, *flags, "-nostdlib", f"-T{out_dir / 'link.ld'}", "-Wl,--gc-sections",
            f"-Wl,-Map={out_dir / (FIRMWARE + '.map')}", "-o", str(elf),
            *[str(obj) for _, obj, _ in jobs], "-lgcc"]
    status, output = run_tool(link, cwd=out_dir)
    log.append(f"$ {' '.join(link)}\n-> exit {status}\n{output}")
    if status == 0:
        for fmt, ext in (("binary", "bin"), ("ihex", "hex")):
            command = [tools["arm-none-eabi-objcopy"], "-O", fmt, str(elf), str(out_dir / f"{FIRMWARE}.{ext}")]
            status, output = run_tool(command)
            log.append(f"$ {' '.join(command)}\n-> exit {status}\n{output}")
            if status != 0:
                break
    log_path.write_text("\n".join(log))
    if status != 0:
        raise SiqError(f"linking the {board} firmware failed: {first_error(output)} (full log: {log_path})")
    return elf

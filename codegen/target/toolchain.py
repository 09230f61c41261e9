"""Finding the cross toolchain and QEMU, running a tool, and the compiler flags every target build uses."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from siq.training.errors import SiqError

from .boards import CPUS

OPT_LEVELS = ("-O0", "-O1", "-O2", "-O3", "-Os", "-Oz", "-Og")
INSTALL_HINT = ("install it with `apt-get install --no-install-recommends gcc-arm-none-eabi "
                "libnewlib-arm-none-eabi qemu-system-arm` (or `make setup`)")
CROSS_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-objcopy", "arm-none-eabi-nm", "arm-none-eabi-size",
               "qemu-system-arm")

# The generated model must also pass these on the cross compiler (the host build uses the same set).
MODEL_STRICT_FLAGS = ["-Wconversion", "-Wsign-conversion", "-Wshadow", "-Wcast-align"]


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


def check_opt(opt: str) -> None:
    if opt not in OPT_LEVELS:
        raise SiqError(f"unsupported optimisation level '{opt}': choose one of {', '.join(OPT_LEVELS)}")


def run_tool(args: list[str], cwd: Path | None = None) -> tuple[int, str]:
    """(exit status, stdout and stderr interleaved) of one tool run."""
    result = subprocess.run(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return result.returncode, result.stdout


def first_error(log: str) -> str:
    """The line of a compiler or linker log that names what went wrong (else its first line)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in lines:
        if re.search(r": (fatal )?error:|undefined reference|overflowed|cannot find|multiple definition", line):
            return line
    return lines[0] if lines else "no output"


def compile_flags(cpu: str, opt: str) -> list[str]:
    """Flags of every object in a target build: the core, soft float, strict C99, one section per symbol."""
    return [f"-mcpu={CPUS[cpu]['mcpu']}", "-mthumb", "-mfloat-abi=soft", opt, "-g",
            "-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
            "-ffreestanding", "-ffunction-sections", "-fdata-sections", "-fno-tree-loop-distribute-patterns",
            "-fstack-usage"]

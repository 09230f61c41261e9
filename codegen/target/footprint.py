"""How much flash, RAM and stack the model takes in a firmware image: from the link map, the ELF and GCC's
call graph (-fcallgraph-info=su), so the figures are the linker's, not estimates."""
from __future__ import annotations

import re
from pathlib import Path

from siq.training.errors import SiqError

from .build import check_prefix
from .toolchain import first_error, require_toolchain, run_tool

_FLASH_SECTIONS = (".isr_vector", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".data")
_RAM_SECTIONS = (".data", ".bss")


def flash_used(elf: Path) -> int:
    """Bytes of flash the whole firmware image takes."""
    return sum(size for name, size in section_sizes(elf).items() if name in _FLASH_SECTIONS)


def section_sizes(elf: Path) -> dict[str, int]:
    """{section: bytes} of the ELF (`arm-none-eabi-size -A`)."""
    status, output = run_tool([require_toolchain()["arm-none-eabi-size"], "-A", "-d", str(elf)])
    if status != 0:
        raise SiqError(f"arm-none-eabi-size failed on {elf}: {first_error(output)}")
    sizes = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


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
    check_prefix(prefix)
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
    sections = section_sizes(elf)
    status, output = run_tool([require_toolchain()["arm-none-eabi-nm"], "-S", "--size-sort", str(elf)])
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
    status, output = run_tool([require_toolchain()["arm-none-eabi-nm"], "--defined-only", str(obj)])
    if status != 0:
        raise SiqError(f"arm-none-eabi-nm failed on {obj}: {first_error(output)}")
    return {line.split()[-1] for line in output.splitlines() if len(line.split()) == 3}

"""The Cortex-M cores and QEMU boards siq builds for, and the (cpu, board) pair a command resolves to."""
from __future__ import annotations

from siq.training.errors import SiqError

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


def check_board(board: str) -> None:
    if board not in BOARDS:
        raise SiqError(f"unknown board '{board}': choose one of {', '.join(BOARDS)}")

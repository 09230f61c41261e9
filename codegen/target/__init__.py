"""Cross-compile a generated model with the self-test harness for a Cortex-M board and run it under QEMU.

One module per concern, in dependency order:
    boards     CPUS, BOARDS, DEFAULT_CPU, resolve_target(cpu, board)
    toolchain  toolchain_status(), require_toolchain(host_cc=False), the compiler flags, running a tool
    build      model_macros(...), build_elf(...): model + harness + board support -> firmware.elf/.bin/.hex/.map
    qemu       run_elf(...), count_instructions(...) (the counting plugin), instructions_per_inference(...)
    footprint  footprint(...): model code, weights, RAM and worst-case stack from the map and call graph
    selftest   chunk_size(...), run_self_test(...): every test image on the board, compared bit for bit
    step       run_target_step(...): the Cortex-M step of `siq pipeline` and `siq target DIR`

The names below are the package's public API (`from siq.codegen.target import build_elf`). The function
`footprint` shadows its module's name here on purpose: callers want the function; import the module as
`siq.codegen.target.footprint` only through `from siq.codegen.target.footprint import ...`.
"""
from .boards import BOARDS, CPUS, DEFAULT_CPU, KIB, MIB, resolve_target
from .build import FIRMWARE, build_elf, model_macros
from .footprint import footprint
from .qemu import EXIT_FAULT, count_instructions, instructions_per_inference, plugin_library, run_elf
from .selftest import EXIT_MAX_MISMATCHES, MAX_CHUNK_IMAGES, chunk_size, run_self_test
from .step import run_target_step
from .toolchain import (CROSS_TOOLS, INSTALL_HINT, MODEL_STRICT_FLAGS, OPT_LEVELS, check_opt, require_toolchain,
                        toolchain_status)

__all__ = ["BOARDS", "CPUS", "DEFAULT_CPU", "KIB", "MIB", "resolve_target", "FIRMWARE", "build_elf", "model_macros",
           "footprint", "EXIT_FAULT", "count_instructions", "instructions_per_inference", "plugin_library",
           "run_elf", "EXIT_MAX_MISMATCHES", "MAX_CHUNK_IMAGES", "chunk_size", "run_self_test", "run_target_step",
           "CROSS_TOOLS", "INSTALL_HINT", "MODEL_STRICT_FLAGS", "OPT_LEVELS", "check_opt", "require_toolchain",
           "toolchain_status"]

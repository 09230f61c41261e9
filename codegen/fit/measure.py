"""A quantized model measured for real: its sources generated, linked for the core and the sizes read from the
link map (codegen/target/footprint.py), its instructions per inference counted in QEMU when asked."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from siq.training.quant import QuantizedModel

from ..export import write_sources
from ..lower import lower
from ..target.build import build_elf
from ..target.footprint import footprint
from ..target.qemu import instructions_per_inference
from .cost import rodata_bytes

PREFIX = "siq_model"


def measure(qm: QuantizedModel, cpu: str | None, image: np.ndarray | None = None, work_dir: str | Path | None = None
            ) -> dict:
    """{"flash", "ram", "insns", "linked", "predicted_flash", "arena"} of the model.

    cpu None: nothing is built; flash is the predicted read-only bytes (an upper bound of the linked ones,
    cost.rodata_bytes) and ram the arena alone. With a cpu: flash = .rodata of the model object as linked,
    ram = its .data + .bss + worst-case stack (footprint's ram_bytes); with an image too, insns = instructions
    of one inference on the core (QEMU, exact)."""
    lm = lower(qm, PREFIX)
    out = {"predicted_flash": rodata_bytes(lm)["total"], "arena": lm.arena_bytes, "insns": None, "linked": False}
    if cpu is None:
        return {**out, "flash": out["predicted_flash"], "ram": lm.arena_bytes}
    with tempfile.TemporaryDirectory(prefix="siq-fit-") as scratch:
        work = Path(work_dir) if work_dir is not None else Path(scratch)
        model_dir = work / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        write_sources(lm, model_dir)
        elf = build_elf(model_dir, PREFIX, work / "build", cpu)
        size = footprint(elf, PREFIX)
        out.update(flash=size["weights_bytes"], ram=size["ram_bytes"], code=size["code_bytes"], linked=True)
        if image is not None:
            insn = instructions_per_inference(model_dir, PREFIX, cpu, None, image, work_dir=work / "insn")
            out.update(insns=insn["total"], insns_per_op=insn["per_op"])
    return out

"""Instructions per inference, estimated per kernel before anything is built: a weighted op costs
per_mac[kernel][bits] instructions per multiply-accumulate, any other op per_output[kernel] per output code.
The coefficients are measured in QEMU (exact counts per op, codegen/target/qemu.py) on stand-in models at every
index width and kept in insn_costs.json beside this module; `python -m siq.codegen.fit.insns --cpu cortex-m4`
measures them again.

The estimate is approximate (a kernel's loop overhead is spread over its MACs as they were in the calibration
models, and requantization branches depend on the data); the fit checks the budget on the real count of the
model it built, and takes the next candidate when the estimate was optimistic.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from siq.training.arch import Arch, load_arch
from siq.training.errors import SiqError
from siq.training.fileio import atomic_write_bytes

from ..export import write_sources
from ..lower import LoweredModel, lower
from ..target.qemu import instructions_per_inference
from .cost import CostModel, layer_shapes, stand_in

DATA_FILE = Path(__file__).with_name("insn_costs.json")
CALIBRATION_ARCHS = ("paper-mnist",)
# A small net whose convs run the reference kernels (padded conv, unfused conv): every kernel the presets use
CALIBRATION_EXTRA = {"name": "calibration", "input": [1, 12, 12], "layers": [
    {"type": "conv", "out": 4, "k": 3, "pad": 1}, {"type": "relu"}, {"type": "maxpool", "k": 2},
    {"type": "conv", "out": 6, "k": 3}, {"type": "relu"}, {"type": "flatten"},
    {"type": "dense", "out": 12}, {"type": "relu"}, {"type": "dense", "out": 10}]}


def executed(op) -> str:
    """The kernel the default build runs for an op."""
    return op.fast_kernel or op.kernel


@dataclass(frozen=True)
class InstructionModel:
    """Calibrated kernel costs on one core."""
    cpu: str
    per_mac: dict       # kernel -> {bits: instructions per MAC}
    per_output: dict    # kernel -> instructions per output code
    # The last cost model asked about and bits -> its stand-in lowered with every layer at bits: a layer's cost at
    # each width is read from one lowering per width, not one per layer and width. Only one cost model's lowerings
    # are kept (the fit asks about one activation-width combination at a time).
    _lowerings: dict = field(default_factory=lambda: {"model": None, "by_bits": {}}, compare=False, repr=False)

    def _lowered(self, cm: CostModel, bits: int) -> LoweredModel:
        if self._lowerings["model"] is not cm:
            self._lowerings.update(model=cm, by_bits={})
        by_bits = self._lowerings["by_bits"]
        if bits not in by_bits:
            by_bits[bits] = lower(stand_in(cm.arch, {l.index: bits for l in cm.layers}, act_bits=cm.act_bits,
                                           point_widths=dict(cm.point_widths)))
        return by_bits[bits]

    def _coefficient(self, kernel: str, bits: int) -> float:
        table = self.per_mac.get(kernel)
        if table and str(bits) in table:
            return table[str(bits)]
        known = [v for t in self.per_mac.values() for v in t.values()]
        if not known:
            raise SiqError(f"no calibrated instruction costs on {self.cpu}")
        return max(known)  # an uncalibrated kernel: assume the slowest per MAC seen

    def layer(self, cm: CostModel, index: int, bits: int) -> int:
        """Instructions of weighted layer `index` at `bits`."""
        for op in self._lowered(cm, bits).ops:
            if op.weights and op.weights.name == f"layer{index}":
                return int(round(self._coefficient(executed(op), bits) * op.macs))
        raise KeyError(index)

    def fixed(self, cm: CostModel) -> int:
        """Instructions of the ops without weights (input quantization, pools, LRN): width-independent."""
        lm = self._lowered(cm, 1)
        fallback = max(self.per_output.values(), default=0.0)
        return int(round(sum(self.per_output.get(executed(op), fallback) * max(1, op.out_count)
                             for op in lm.ops if not op.weights)))

    def smallest(self, cm: CostModel) -> int:
        return self.fixed(cm) + sum(min(self.layer(cm, l.index, b) for b in range(1, 9)) for l in cm.layers)


def load_instruction_model(cpu: str, path: Path = DATA_FILE) -> InstructionModel | None:
    """The committed costs of a core, or None when it was never calibrated."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    entry = data.get("cpus", {}).get(cpu)
    return None if entry is None else InstructionModel(cpu, entry["per_mac"], entry["per_output"])


def calibrate(cpu: str, archs=None, widths=range(1, 9), log=print) -> InstructionModel:
    """Count each op's instructions in QEMU on stand-in models of `archs` at every width (all layers alike)."""
    archs = archs or [load_arch(a) for a in CALIBRATION_ARCHS] + [Arch.from_dict(CALIBRATION_EXTRA)]
    per_mac: dict = {}
    per_output: dict = {}
    for arch in archs:
        for bits in widths:
            lm = lower(stand_in(arch, {l.index: bits for l in layer_shapes(arch)}))
            with tempfile.TemporaryDirectory(prefix="siq-calibrate-") as scratch:
                write_sources(lm, Path(scratch))
                image = np.full(int(np.prod(arch.input)), 128, np.uint8)
                counts = instructions_per_inference(scratch, lm.prefix, cpu, None, image)["per_op"]
            for op, count in zip(lm.ops, counts):
                if op.weights:
                    per_mac.setdefault(executed(op), {}).setdefault(str(bits), []).append(count / op.macs)
                else:
                    per_output.setdefault(executed(op), []).append(count / max(1, op.out_count))
            log(f"{arch.name} at {bits} bits on {cpu}: {sum(counts):,} instructions")
    return InstructionModel(cpu, {k: {b: max(v) for b, v in t.items()} for k, t in per_mac.items()},
                            {k: max(v) for k, v in per_output.items()})


def save_instruction_model(model: InstructionModel, path: Path = DATA_FILE) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault("cpus", {})[model.cpu] = {"per_mac": model.per_mac, "per_output": model.per_output}
    data["about"] = ("instructions per MAC (weighted ops, by index width) and per output code (other ops) of "
                     "each kernel, the largest seen on stand-in models in QEMU; python -m siq.codegen.fit.insns")
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="calibrate the per-kernel instruction costs of siq fit")
    parser.add_argument("--cpu", default="cortex-m4")
    args = parser.parse_args()
    save_instruction_model(calibrate(args.cpu))

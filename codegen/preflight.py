"""Pre-flight: the whole run checked before any training, so nothing is refused after minutes of work.

What is checked, in this order (the cheap checks first):
  - output files can be created (a probe file is made and removed: os.access says yes to root in /proc);
  - the data set loads, and both splits hold images of at least two classes;
  - the architecture fits the data set, and its size stays under SIZE_LIMITS unless allow_large;
  - the C back end can run it: the integer lowering itself (training.integer.build_integer_model) is run on
    a stand-in quantized model of the architecture's shapes (every weight zero), so its structural rules
    (relu after every weighted layer but the last, pools dividing their map, known layer types ...) are
    the lowering's own, not a copy of them; accumulator bounds depend on trained weights and stay there;
  - the quantization method has work on this architecture (siq retrains conv layers only) and --layer-bits
    names weighted layers only.
Option values themselves are checked where they are parsed (codegen/cli/options.py) and by the config checks
(api.check_schedule, check_quantize_config).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siq.training.arch import Arch, load_arch
from siq.training.data import Dataset, load_dataset
from siq.training.errors import SiqError
from siq.training.fileio import check_output_file
from siq.training.integer import build_integer_model
from siq.training.quant import LayerCodebook, QuantizedModel, quantization_points
from siq.training.quantizers import QuantizeConfig, check_method_fits
from siq.training.summary import totals

from .pipeline import fit_arch_to_data

SEED_MAX = 2**32 - 1  # numpy's and torch's seeds both take any value in 0..2^32-1

# The documented size cap (docs/bad-input.md): larger networks are refused unless --allow-large. An
# architecture typo (conv out = 100000) otherwise grows past the machine's memory and is killed without a word.
SIZE_LIMITS = {
    "parameters": 20_000_000,              # weights and biases
    "macs": 2_000_000_000,                 # multiply-accumulates per inference
    "activation_bytes": 4 * 2**30,         # float32 outputs of every layer for one training batch
}


@dataclass
class Checked:
    """What the pre-flight established: the architecture as it will be trained and the data set it loaded."""
    arch: Arch
    data: Dataset
    size: dict


def probe_output_file(path: str | Path) -> None:
    """check_output_file, then a real probe: create and remove a file in the nearest existing folder."""
    path = Path(path)
    check_output_file(path)
    folder = next((a for a in path.parents if a.exists()), Path("."))
    try:
        fd, probe = tempfile.mkstemp(prefix=".siq-probe-", dir=folder)
    except OSError as exc:
        raise SiqError(f"cannot write {path} ({exc.strerror or exc}): choose a writable output path") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def check_splits(data: Dataset) -> None:
    """Both splits non-empty with at least two classes: accuracy on an empty test split is NaN, and a single
    class trains nothing."""
    for split, labels in (("training", data.train_y), ("test", data.test_y)):
        labels = np.asarray(labels)
        if len(labels) == 0:
            raise SiqError(f"data set {data.name!r}: the {split} split holds no images")
        classes = len(np.unique(labels))
        if classes < 2:
            raise SiqError(f"data set {data.name!r}: the {split} split holds images of {classes} class; "
                           "at least 2 are needed")


def arch_size(arch: Arch, batch_size: int = 1) -> dict:
    """Parameters, MACs per inference (training/summary.py, which `siq arch` prints per layer) and float32
    activation bytes of one training batch."""
    shapes = [arch.input] + arch.shapes()
    activations = sum(int(np.prod(s)) for s in shapes)
    return {**totals(arch), "activation_bytes": 4 * activations * max(1, batch_size)}


def check_size(arch: Arch, batch_size: int = 1, allow_large: bool = False) -> dict:
    size = arch_size(arch, batch_size)
    over = [f"{k.replace('_', ' ')} {v:,} > {SIZE_LIMITS[k]:,}" for k, v in size.items() if v > SIZE_LIMITS[k]]
    if over and not allow_large:
        raise SiqError(f"architecture {arch.name!r} is larger than siq's limits ({'; '.join(over)}, with batch "
                       f"size {batch_size}): check its sizes, or pass --allow-large")
    return size


def check_backend(arch: Arch, act_bits: int = 4, input_bits: int | None = None,
                  point_widths: dict | None = None) -> None:
    """SiqError when the integer lowering refuses this architecture, whatever the trained weights will be
    (batch norm folded first, as quantization folds it)."""
    arch = arch.folded()
    layers = {i: LayerCodebook(1, np.zeros(1, np.int64), 0, np.zeros(arch.weight_shape(i), np.uint8))
              for i in arch.weighted_layers()}
    biases = {i: np.zeros(arch.weight_shape(i)[0], np.int64) for i in layers}
    shifts = {p: act_bits for p in [-1] + quantization_points(arch)}
    stand_in = QuantizedModel(arch, act_bits, shifts, layers, biases, [str(c) for c in range(arch.num_classes)],
                              input_bits=input_bits, point_widths=dict(point_widths or {}))
    try:
        build_integer_model(stand_in)
    except SiqError as exc:
        raise SiqError(f"architecture {arch.name!r} cannot run in the integer C client: {exc}") from None


def preflight(dataset: str, arch: str | Arch, *, data_dir: str | None = None, split_seed: int = 0,
              batch_size: int = 64, quant_cfg: QuantizeConfig | None = None, outputs=(),
              allow_large: bool = False) -> Checked:
    """Check a run that trains `arch` on `dataset` (then quantizes it with quant_cfg, when given) and writes
    `outputs` (files); SiqError naming the first problem, before any training."""
    for out in outputs:
        probe_output_file(out)
    declared = arch if isinstance(arch, Arch) else load_arch(arch)  # a typo is named before the data loads
    loaded = load_dataset(dataset, data_dir, split_seed)
    check_splits(loaded)
    fitted, data = fit_arch_to_data(declared, loaded)
    size = check_size(fitted, batch_size, allow_large)
    cfg = quant_cfg or QuantizeConfig()
    if quant_cfg is not None:
        check_method_fits(fitted, quant_cfg)  # per-layer and per-point indices first: the stand-in reads them
    check_backend(fitted, cfg.act_bits, cfg.input_bits, cfg.point_widths)
    return Checked(fitted, data, size)

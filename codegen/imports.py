"""Imported models become siq checkpoints: the step behind `siq import`, siq.from_torch and siq.load_onnx.

A checkpoint records the dataset its network is quantized and verified on, so an import names one (npz:PATH,
folder:PATH or a bundled set). The network sees that dataset the way siq feeds every network: a uint8 code q as
the real value q / 256 (float data in [0, 1] becomes q = floor(255 x + 1/2): training/data/npz.py). A model
trained on other inputs (mean/std normalized) imports exactly but classifies the codes as what they are.
"""
from __future__ import annotations

from pathlib import Path

from siq.training.data import load_dataset
from siq.training.errors import SiqError
from siq.training.importers import Imported, load_exported, load_onnx
from siq.training.train import accuracy, predict_scores, save_checkpoint

from .pipeline import dataset_meta, fit_arch_to_data
from .preflight import check_splits, probe_output_file

IMPORT_SUFFIXES = {".pt2": load_exported, ".onnx": load_onnx}


def load_model_file(path: str | Path) -> Imported:
    """An ONNX file (.onnx) or a torch.export program (.pt2) as a siq float model."""
    path = Path(path)
    if not path.is_file():
        raise SiqError(f"model file {path} not found")
    loader = IMPORT_SUFFIXES.get(path.suffix.lower())
    if loader is None:
        raise SiqError(f"{path}: siq imports ONNX files (.onnx) and torch.export programs (.pt2, written by "
                       "torch.export.save); a PyTorch module in Python goes through siq.from_torch")
    return loader(path)


def save_import(imported: Imported, out: str | Path, dataset: str, data_dir: str | None = None,
                split_seed: int = 0, log=print) -> Imported:
    """Write the imported network as a checkpoint on `dataset` (its float test accuracy is measured and logged)."""
    out = Path(out)
    probe_output_file(out)
    data = load_dataset(dataset, data_dir, split_seed)
    check_splits(data)
    arch = imported.arch
    if data.num_classes != arch.num_classes:
        raise SiqError(f"the imported model has {arch.num_classes} outputs, dataset {data.name!r} has "
                       f"{data.num_classes} classes")
    data = fit_arch_to_data(arch, data)[1]
    acc = accuracy(predict_scores(imported.net, data.test_x), data.test_y, data.test_groups)
    source = {"nodes": imported.report, "parameters": imported.mapping}
    save_checkpoint(out, imported.net, dataset_meta(data, dataset, data_dir, split_seed), None,
                    {"float_accuracy": acc}, source=source)
    imported.checkpoint, imported.accuracy = out, acc
    log(f"imported {arch.name}: {len(arch.layers)} layers, float test accuracy {acc:.4f} on {data.name}; "
        f"checkpoint {out.name}")
    return imported

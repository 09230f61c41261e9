"""Float training, prediction, and checkpoint files.

Deterministic on CPU: seeded initialisation, seeded shuffling, torch deterministic algorithms, and one intra-op
thread while training (TRAIN_THREADS), so the weights do not depend on the machine's core count.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from .arch import Arch
from .device import CPU, move_tensors, resolve_device, training_device
from .errors import SiqError
from .fileio import load_torch, save_torch
from .integer import check_lowerable
from .nets import FLOAT, Hooks, Net, images_to_input


@dataclass
class TrainConfig:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    lr_schedule: str = "cosine"  # "cosine" or "constant"
    augment_shift: int = 0       # random translation of each training image by up to this many pixels
    # Added after the first experiments; at these defaults a config means what it meant before (same cache keys,
    # same weights): see RECIPE_FIELDS.
    augment_flip: bool = False   # mirror each training image left-right with probability 1/2
    dropout: float | None = None  # training-time dropout rate replacing the architecture's (None = keep it)
    label_smoothing: float = 0.0


# Recipe fields with the default at which they change nothing; model cache keys leave them out at these values.
RECIPE_DEFAULTS = {"augment_flip": False, "dropout": None, "label_smoothing": 0.0}


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True)


def predict_scores(net: Net, images: np.ndarray, hooks: Hooks = FLOAT, batch: int = 1000) -> np.ndarray:
    """Float scores, computed on the device the net's parameters are on (fit's validation runs on the GPU)."""
    net.eval()
    out = []
    device = next(net.parameters(), torch.empty(0)).device
    with torch.no_grad():
        for start in range(0, len(images), batch):
            out.append(net(images_to_input(images[start:start + batch]).to(device), hooks).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, net.arch.num_classes), np.float32)


def accuracy(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Top-1 accuracy; with groups (crops of one image), the class of the summed scores of the group."""
    if groups is None:
        return float(np.mean(np.argmax(scores, axis=1) == labels))
    ids, first = np.unique(groups, return_index=True)
    summed = np.zeros((len(ids), scores.shape[1]), dtype=np.float64)
    np.add.at(summed, np.searchsorted(ids, groups), scores.astype(np.float64))
    return float(np.mean(np.argmax(summed, axis=1) == labels[first]))


def random_shift(batch: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by (dy, dx) in [-max_shift, max_shift], filling with zeros (background)."""
    n, c, h, w = batch.shape
    padded = torch.nn.functional.pad(batch, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return padded.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2)


def random_flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(batch), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], batch.flip(3), batch)


@contextlib.contextmanager
def dropout_rate(net: Net, p: float | None):
    """Train with dropout rate p in every dropout layer (None = the architecture's), restored afterwards."""
    modules = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    saved = [m.p for m in modules]
    if p is not None:
        if not 0.0 <= p < 1.0:
            raise SiqError(f"dropout must be in [0, 1), got {p}")
        for m in modules:
            m.p = p
    try:
        yield
    finally:
        for m, q in zip(modules, saved):
            m.p = q


# Intra-op threads while training. A parallel reduction (conv weight gradients) splits its sums by thread count, so
# two threads and one give different float roundings and, after a few epochs, different weights (mnist5k, 60
# epochs: 98.1 against 98.3 % test accuracy from one seed). One thread makes a seed's weights the same on any core
# count; sweeps get their parallelism from running cells side by side (--jobs).
TRAIN_THREADS = 1


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with `threads` torch intra-op threads (None = leave as is), then restore the setting."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fit(net: Net, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, hooks: Hooks = FLOAT,
        penalty=None, validation: tuple | None = None, desc: str = "train", on_epoch=None,
        extra_params: list | None = None, loss_fn=None, device=None) -> list[dict]:
    """Minibatch Adam(W) on cross-entropy (or loss_fn(batch, logits, labels)) + an optional penalty(net) term,
    over the net's parameters and `extra_params` (tensors, e.g. codebooks being fine-tuned, or torch param-group
    dicts with their own "lr"); returns per-epoch metrics. Weight decay is decoupled (AdamW; none by default).
    Runs on TRAIN_THREADS intra-op threads whatever the caller set, on `device` (None: the one in force, see
    device.on_device); the net and the extra tensors are back on the CPU when it returns."""
    device = training_device() if device is None else resolve_device(device)
    extra = [p for item in extra_params or [] for p in (item["params"] if isinstance(item, dict) else [item])]
    with torch_threads(TRAIN_THREADS):
        if device.type == "cpu":
            return _fit(net, x, y, cfg, hooks, penalty, validation, desc, on_epoch, extra_params, loss_fn, device)
        try:
            net.to(device)
            move_tensors(extra, device)
            return _fit(net, x, y, cfg, hooks, penalty, validation, desc, on_epoch, extra_params, loss_fn, device)
        finally:
            net.to(CPU)
            move_tensors(extra, CPU)


def _fit(net, x, y, cfg, hooks, penalty, validation, desc, on_epoch, extra_params, loss_fn, device) -> list[dict]:
    if len(x) == 0:
        raise SiqError("no training images")
    generator = torch.Generator().manual_seed(cfg.seed)
    groups = [{"params": list(net.parameters())}]
    loose = [p for p in extra_params or [] if not isinstance(p, dict)]
    groups += ([{"params": loose}] if loose else []) + [g for g in extra_params or [] if isinstance(g, dict)]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    if cfg.lr_schedule == "cosine":
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    else:
        schedule = None
    inputs = images_to_input(x)
    labels = torch.as_tensor(y, dtype=torch.long)
    history = []
    with dropout_rate(net, cfg.dropout):
        for epoch in range(cfg.epochs):
            net.train()
            order = torch.randperm(len(x), generator=generator)
            total, count = 0.0, 0
            bar = tqdm(range(steps_per_epoch), desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False,
                       unit="batch", disable=None)
            for step in bar:
                idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                batch = inputs[idx]
                if cfg.augment_shift:
                    batch = random_shift(batch, cfg.augment_shift, generator)
                if cfg.augment_flip:
                    batch = random_flip(batch, generator)
                # shuffling and augmentation stay on the CPU generator: the same batches on every device
                batch, batch_labels = batch.to(device), labels[idx].to(device)
                logits = net(batch, hooks)
                if loss_fn is None:
                    loss = torch.nn.functional.cross_entropy(logits, batch_labels,
                                                             label_smoothing=cfg.label_smoothing)
                else:
                    loss = loss_fn(batch, logits, batch_labels)
                if penalty is not None:
                    loss = loss + penalty(net)
                if not torch.isfinite(loss):
                    raise SiqError(f"{desc}: the loss became {loss.item()} (diverged) at epoch {epoch + 1}; "
                                   "lower the learning rate")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if schedule is not None:
                    schedule.step()
                total += loss.item() * len(idx)
                count += len(idx)
            if not all(bool(torch.all(torch.isfinite(p))) for p in net.parameters()):
                # the last step of an epoch can blow the weights up after a finite loss: never hand NaN onwards
                raise SiqError(f"{desc}: the weights became NaN/Inf (diverged) at epoch {epoch + 1}; "
                               "lower the learning rate")
            record = {"epoch": epoch + 1, "loss": total / count}
            if validation is not None:
                record["val_accuracy"] = accuracy(predict_scores(net, validation[0], hooks), validation[1])
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
    net.eval()
    return history


def train_float(arch: Arch, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, validation=None, on_epoch=None):
    check_lowerable(arch)  # a layer or shape the integer C cannot run is refused before any training
    seed_everything(cfg.seed)
    net = Net(arch)
    history = fit(net, x, y, cfg, validation=validation, desc="float", on_epoch=on_epoch)
    return net, history


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(path, net: Net, dataset: dict, config: TrainConfig | None, metrics: dict,
                    source: dict | None = None) -> None:
    """config None: the network was not trained by siq; `source` then says where it came from (an import)."""
    meta = {"arch": net.arch.to_dict(), "dataset": dataset, "train_config": None if config is None else asdict(config),
            "metrics": metrics}
    if source is not None:
        meta["source"] = source
    save_torch(path, "checkpoint", meta, {k: v.detach().clone() for k, v in net.state_dict().items()})


def load_checkpoint(path) -> tuple[Net, dict]:
    meta, tensors = load_torch(path, "checkpoint")
    try:
        arch = Arch.from_dict(meta["arch"])
    except KeyError:
        raise SiqError(f"{path}: checkpoint has no architecture") from None
    net = Net(arch)
    try:
        net.load_state_dict(tensors)
    except RuntimeError as exc:
        raise SiqError(f"{path}: weights do not match the architecture {arch.name!r} "
                       f"({str(exc).splitlines()[0][:100]})") from None
    for name, t in tensors.items():
        if not torch.all(torch.isfinite(t)):
            raise SiqError(f"{path}: tensor {name} holds NaN/Inf: retrain the model")
    net.eval()
    return net, meta

"""Where float and fake-quant training run: "cpu", "cuda", "cuda:N" or "auto" (CUDA when present, else CPU).

Only training moves: fit() takes the network (and the tensors trained beside it) to the device in force, trains,
and hands everything back on the CPU. What defines the firmware — calibration statistics that fix the shifts,
k-means and codebook snapping, the integer reference, export — runs on the CPU in float64/integer arithmetic
whatever device trained the weights, so the four-way bit-exact guarantee does not depend on the device.

Reproducibility: on the CPU a seed gives the same weights as it always did (one training thread, deterministic
algorithms). On a GPU, deterministic algorithms are on too (with the CUBLAS workspace setting they need), so a seed
gives the same weights on the same device type, driver and torch version; a GPU and a CPU give different float
roundings, hence different (equally good) weights. Cache keys therefore name the device type where it is not the
CPU (cache.py), and CPU keys stay those of every committed result.

The device in force is a context (`on_device`), like the intra-op thread count of `train.torch_threads`: the
quantizers call fit() several layers below the caller that knows the device.
"""
from __future__ import annotations

import contextlib
import contextvars
import os

import torch

from .errors import SiqError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
CPU = torch.device("cpu")
# cuBLAS needs a fixed workspace for deterministic matrix products (PyTorch's reproducibility notes); it must be
# set before the first CUDA call of the process, and it is inherited by the workers a study starts.
CUBLAS_WORKSPACE = ":4096:8"

_device: contextvars.ContextVar[torch.device] = contextvars.ContextVar("siq_training_device", default=CPU)


def check_device(spec: str) -> str:
    """The spec when this machine can train on it, else SiqError in one line (before anything is trained)."""
    if not isinstance(spec, str):
        raise SiqError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    text = spec.strip().lower()
    if text in ("auto", "cpu"):
        return text
    if text == "cuda" or text.startswith("cuda:"):
        index = text[5:] if text.startswith("cuda:") else "0"
        if not index.isdigit():
            raise SiqError(f"device {spec!r}: write cuda:N with N a GPU index (0, 1, ...)")
        if not torch.cuda.is_available():
            raise SiqError(f"device {spec!r}: CUDA is not available on this machine "
                           "(torch.cuda.is_available() is False); use --device cpu or --device auto")
        if int(index) >= torch.cuda.device_count():
            raise SiqError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                           f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
        return text
    raise SiqError(f"unknown device {spec!r} (choose from {', '.join(DEVICE_CHOICES)})")


def resolve_device(spec: str | torch.device | None = "cpu", log=None) -> torch.device:
    """The torch.device a spec names ("auto" picks CUDA when torch sees it, else the CPU, and logs its choice
    through `log`). A CUDA device is put in deterministic mode first."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = check_device("cpu" if spec is None else spec)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
        if log is not None:
            log(f"device: {text} (auto: " + ("CUDA is available)" if text == "cuda" else "no CUDA device found)"))
    device = torch.device(text)
    if device.type == "cuda":
        deterministic_cuda()
    return device


def deterministic_cuda() -> None:
    """Deterministic GPU training: fixed cuBLAS workspace, no cuDNN autotuning, deterministic algorithms only."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


def training_device() -> torch.device:
    """The device fit() trains on in this context (the CPU unless inside on_device)."""
    return _device.get()


@contextlib.contextmanager
def on_device(device: str | torch.device | None):
    """Train on `device` inside the block (None = keep the device in force)."""
    if device is None:
        yield training_device()
        return
    token = _device.set(resolve_device(device))
    try:
        yield _device.get()
    finally:
        _device.reset(token)


def move_tensors(tensors, device: torch.device) -> None:
    """Move parameters/tensors to `device` in place (their identity is kept, so modules and closures holding them
    follow); a no-op for tensors already there."""
    for t in tensors:
        if t.device != device:
            t.data = t.data.to(device)
            if t.grad is not None:
                t.grad = t.grad.to(device)

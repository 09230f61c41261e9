"""Artifacts are written whole or not at all: into a temporary sibling, then renamed into place.

Checkpoints and quantized models are torch files holding only tensors, numbers and strings, loaded with
weights_only=True (no arbitrary unpickling); structure travels as a JSON string inside.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import SiqError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    _ensure_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _ensure_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SiqError(f"cannot create output folder {path.parent}: {exc.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise SiqError(f"output folder {path.parent} is not writable: choose another output path")


@contextlib.contextmanager
def atomic_directory(path: str | Path, force: bool = False, marker: str | None = None):
    """Yield a temporary directory that replaces `path` when the block succeeds, and vanishes when it fails.

    An existing non-empty `path` is replaced only if `force` or if it holds `marker` (a file this tool writes,
    so re-running into its own previous output is allowed)."""
    path = Path(path)
    _ensure_parent(path)
    if path.exists():
        if not path.is_dir():
            raise SiqError(f"{path} exists and is not a folder: choose another output path")
        owned = marker is not None and (path / marker).exists()
        if any(path.iterdir()) and not (force or owned):
            raise SiqError(f"{path} already holds other files: choose an empty folder or pass --force")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_torch(path: str | Path, kind: str, meta: dict, tensors: dict) -> None:
    buf = io.BytesIO()
    torch.save({"format": f"siq-{kind}", "version": 1, "meta": json.dumps(meta, sort_keys=True),
                "tensors": tensors}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_torch(path: str | Path, kind: str) -> tuple[dict, dict]:
    path = Path(path)
    if not path.is_file():
        raise SiqError(f"{kind} file {path} not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, Exception) as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SiqError(f"{path} is not a readable siq {kind} file (corrupt or truncated: {first[:120]})") from None
    if not isinstance(blob, dict) or blob.get("format") != f"siq-{kind}":
        raise SiqError(f"{path} is not a siq {kind} file (format {blob.get('format') if isinstance(blob, dict) else type(blob).__name__!r})")
    try:
        meta = json.loads(blob["meta"])
        tensors = dict(blob["tensors"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise SiqError(f"{path}: corrupt siq {kind} file (metadata unreadable)") from None
    return meta, tensors

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
    if path.is_dir():
        raise SiqError(f"{path} is a folder: give the output a file name (e.g. {path / 'model.pt'})")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise _unwritable(path.parent, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _unwritable(path, exc) from None
        raise


def _unwritable(path: Path, exc: OSError) -> SiqError:
    return SiqError(f"cannot write {path} ({exc.strerror or exc}): choose a writable output path")


def check_output_file(path: str | Path) -> None:
    """Refuse an output file path that cannot be written, before any work is done (creates nothing)."""
    path = Path(path)
    if path.is_dir():
        raise SiqError(f"{path} is a folder: give the output a file name (e.g. {path / 'model.pt'})")
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise SiqError(f"{ancestor} is a file, not a folder: choose another output path for {path.name}")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise SiqError(f"output folder {ancestor} is not writable: choose another output path")
            return


def _ensure_parent(path: Path) -> None:
    for ancestor in path.parents:  # a regular file where a folder should be: name it (mkdir only says "exists")
        if ancestor.exists():
            if not ancestor.is_dir():
                raise SiqError(f"{ancestor} is a file, not a folder: choose another output path for {path.name}")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SiqError(f"cannot create output folder {path.parent} ({exc.strerror}): choose another output path"
                       ) from None
    if not os.access(path.parent, os.W_OK):
        raise SiqError(f"output folder {path.parent} is not writable: choose another output path")


@contextlib.contextmanager
def atomic_directory(path: str | Path, force: bool = False, marker: str | None = None, identity: str | None = None):
    """Yield a temporary directory that replaces `path` when the block succeeds, and vanishes when it fails.

    With `marker` (a file name), the finished folder gets that file holding `identity` (what this output is,
    e.g. "siq export <config hash>"). An existing non-empty `path` is replaced only if `force`, or if its
    marker holds the same identity (re-running the same job into its own previous output); a folder of other
    files, or of another siq output (a different model, or an export where a pipeline wrote), is refused."""
    path = Path(path)
    _ensure_parent(path)
    if path.exists():
        if not path.is_dir():
            raise SiqError(f"{path} exists and is not a folder: choose another output path")
        if any(path.iterdir()) and not force:
            found = _read_marker(path / marker) if marker else None
            if found is None:
                raise SiqError(f"{path} already holds other files: choose an empty folder or pass --force")
            if found != identity:
                raise SiqError(f"{path} holds a different siq output ({found or 'unmarked'}, not {identity}): "
                               "choose another folder or pass --force to replace it")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        raise _unwritable(path.parent, exc) from None
    try:
        yield tmp
        if marker:
            (tmp / marker).write_text(f"{identity}\n")
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "x")
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old / "x", path)  # put the previous output back
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, SiqError):
            raise _unwritable(path, exc) from None
        raise


def _read_marker(marker: Path) -> str | None:
    """The identity recorded in an output folder's marker file, or None when there is no marker."""
    try:
        return marker.read_text(errors="replace").strip()
    except OSError:
        return None


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

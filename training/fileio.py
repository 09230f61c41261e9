"""Artifacts are written whole or not at all: into a temporary sibling, then renamed into place.

Checkpoints and quantized models are torch files holding only tensors, numbers and strings, loaded with
weights_only=True (no arbitrary unpickling); structure travels as a JSON string inside, and a sha256 of the
content is checked on every load.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
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


# What a user holding a model from elsewhere should run instead (load_torch's refusals of foreign torch files).
IMPORT_HINT = ("bring a PyTorch model in with siq.from_torch(module, example_input) or `siq import model.pt2` "
               "(torch.export.save), an ONNX model with `siq import model.onnx`")
FORMAT_VERSION = 2  # 2: a content hash (sha256 of the metadata and every tensor) checked on load


def content_hash(kind: str, meta_text: str, tensors: dict) -> str:
    """sha256 over the kind, the metadata string and every tensor's name, dtype, shape and bytes (sorted by
    name): a changed byte anywhere in what siq reads back changes it. (torch does not check the zip CRCs.)"""
    h = hashlib.sha256(f"siq-{kind}\0{meta_text}\0".encode())
    for name in sorted(tensors, key=str):
        value = tensors[name]
        h.update(f"{name}\0".encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)  # flat: a 0-d tensor cannot change dtype
            h.update(f"{value.dtype}{tuple(value.shape)}\0".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def save_torch(path: str | Path, kind: str, meta: dict, tensors: dict) -> None:
    buf = io.BytesIO()
    meta_text = json.dumps(meta, sort_keys=True)
    torch.save({"format": f"siq-{kind}", "version": FORMAT_VERSION, "meta": meta_text, "tensors": tensors,
                "sha256": content_hash(kind, meta_text, tensors)}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_torch(path: str | Path, kind: str) -> tuple[dict, dict]:
    """(meta, tensors) of a file save_torch wrote, or SiqError naming the file: missing, unreadable (truncated,
    garbage), another kind of file, an older unhashed siq file, or content that no longer matches its hash."""
    path = Path(path)
    if not path.is_file():
        raise SiqError(f"{kind} file {path} not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises anything from RuntimeError to OSError [Errno 22] here
        if "Unsupported global" in str(exc):  # a pickled object: torch read it, the safe loader refused its class
            raise SiqError(f"{path} is a pickled Python object (a whole nn.Module?), not a siq {kind} file: "
                           f"{IMPORT_HINT}") from None
        raise SiqError(f"{path} is not a readable siq {kind} file (truncated, corrupt or not written by siq): "
                       f"re-create it with siq {'train' if kind == 'checkpoint' else 'quantize'}") from None
    if isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise SiqError(f"{path} is a PyTorch state_dict ({len(blob)} tensors, no architecture), not a siq {kind} "
                       f"file: {IMPORT_HINT}")
    found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
    if not isinstance(blob, dict) or found != f"siq-{kind}":
        hint = "" if isinstance(found, str) and found.startswith("siq-") else f": {IMPORT_HINT}"
        raise SiqError(f"{path} is not a siq {kind} file (format {found!r}){hint}")
    if blob.get("version") != FORMAT_VERSION or "sha256" not in blob:
        raise SiqError(f"{path} is a siq {kind} file of format version {blob.get('version')!r} without a content "
                       f"hash (this siq reads version {FORMAT_VERSION}): re-create it with this siq")
    try:
        meta_text, tensors = blob["meta"], dict(blob["tensors"])
        intact = isinstance(meta_text, str) and blob["sha256"] == content_hash(kind, meta_text, tensors)
    except (KeyError, TypeError, ValueError, RuntimeError):
        intact = False
    if not intact:
        raise SiqError(f"{path}: content does not match its hash (the file was changed or damaged after siq "
                       "wrote it): re-create it")
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError:
        raise SiqError(f"{path}: corrupt siq {kind} file (metadata unreadable)") from None
    return meta, tensors

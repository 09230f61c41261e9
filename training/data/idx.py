"""IDX files (MNIST, Fashion-MNIST), gzip-compressed or plain, with every header and length checked."""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import SiqError
from .bundled import DIGIT_CLASSES
from .dataset import Dataset

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (N, H, W)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (N,)


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """A uint8 IDX file (gzip-compressed or plain, detected from its content) as an array of its dimensions.

    Raises SiqError naming the file if it cannot be read, has the wrong magic number, or its data length
    does not match the dimensions in its header.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise SiqError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4:
        raise SiqError(f"IDX file {path} is truncated: {len(raw)} bytes, no header")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise SiqError(f"IDX file {path}: magic number 0x{found:08x}, expected 0x{magic:08x} "
                       f"({'images' if magic == IDX_IMAGES_MAGIC else 'labels'}): wrong or corrupt file")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise SiqError(f"IDX file {path} is truncated: header needs {header} bytes, file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        state = "truncated" if len(raw) - header < expected else "longer than its header says"
        raise SiqError(f"IDX file {path} is {state}: dimensions {list(dims)} need {expected} data bytes, "
                       f"found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx_images(path: str | Path) -> np.ndarray:
    """An IDX image file as uint8 [N, 1, H, W]."""
    images = read_idx(path, IDX_IMAGES_MAGIC)
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise SiqError(f"IDX file {path}: images have size {images.shape[1]}x{images.shape[2]}")
    return images[:, None, :, :]


def read_idx_labels(path: str | Path) -> np.ndarray:
    """An IDX label file as int64 [N]."""
    return read_idx(path, IDX_LABELS_MAGIC).astype(np.int64)


IDX_PARTS = {  # part -> accepted base names (both common spellings); each also accepted with .gz
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_idx_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """The IDX file found for each part, and a description of each part not found."""
    found, missing = {}, []
    for part, names in IDX_PARTS.items():
        candidates = [directory / (n + ext) for n in names for ext in (".gz", "")]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            missing.append(names[0] + "[.gz]")
        else:
            found[part] = hit
    return found, missing


def _load_idx_dataset(name: str, files: dict[str, Path], class_names: list[str]) -> Dataset:
    arrays = {}
    for split in ("train", "test"):
        x = read_idx_images(files[f"{split}_images"])
        y = read_idx_labels(files[f"{split}_labels"])
        if len(x) != len(y):
            raise SiqError(f"{name}: {files[f'{split}_images']} has {len(x)} images but "
                           f"{files[f'{split}_labels']} has {len(y)} labels")
        if len(y) and y.max() >= len(class_names):
            raise SiqError(f"{name}: {files[f'{split}_labels']} has label {int(y.max())}, "
                           f"expected 0..{len(class_names) - 1}")
        arrays[split] = (x, y)
    if arrays["train"][0].shape[1:] != arrays["test"][0].shape[1:]:
        raise SiqError(f"{name}: train images are {arrays['train'][0].shape[2:]} but test images are "
                       f"{arrays['test'][0].shape[2:]}")
    return Dataset(name=name, train_x=arrays["train"][0], train_y=arrays["train"][1],
                   test_x=arrays["test"][0], test_y=arrays["test"][1], class_names=list(class_names),
                   info={"source": {part: str(p) for part, p in files.items()}, "split": "official",
                         "train_size": int(len(arrays["train"][1])), "test_size": int(len(arrays["test"][1]))},
                   gray_images=True)


def load_fashion(data_dir: str | None) -> Dataset:
    directory = Path(data_dir) if data_dir is not None else FASHION_DIR
    files, missing = _find_idx_files(directory)
    if missing:
        raise SiqError(f"Fashion-MNIST not found in {directory} (missing {', '.join(missing)}): "
                       "install it with `apt-get install dataset-fashion-mnist` "
                       "or pass --data-dir DIR with the four IDX files")
    return _load_idx_dataset("fashion", files, FASHION_CLASSES)


def load_mnist(data_dir: str | None) -> Dataset:
    if data_dir is None:
        raise SiqError("dataset 'mnist' needs --data-dir DIR with the four MNIST IDX files "
                       "(train-images-idx3-ubyte[.gz] etc.); or use 'mnist5k', which needs no files")
    directory = Path(data_dir)
    if not directory.is_dir():
        raise SiqError(f"MNIST data directory {directory} does not exist")
    files, missing = _find_idx_files(directory)
    if missing:
        raise SiqError(f"MNIST IDX files missing in {directory}: {', '.join(missing)} "
                       "(the '.idx3-ubyte' spelling and .gz are accepted too)")
    return _load_idx_dataset("mnist", files, DIGIT_CLASSES)


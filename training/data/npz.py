"""Arrays from a NumPy .npz file: images, 1-D signals or feature maps with integer labels.

Keys: `x` [N, H, W], [N, C, H, W] or [N, L] (a 1-D signal: the map (1, 1, L); a C-channel signal is
[N, C, 1, L]) and `y` [N] integer labels 0..K-1; or the given split `x_train`, `y_train`, `x_test`, `y_test`
instead; optional `class_names` [K] strings (default "0".."K-1"). uint8 values are the input codes' pixels as
they are; float values must lie in [0, 1] and become pixels round_half_up(255 * x) — the network then sees
pixel / 256, the input quantization's grid (training/quant). A user's sensor data is scaled to [0, 1] (or to
uint8) by the user, the same way on the device before it calls the generated model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SiqError
from .dataset import Dataset
from .split import stratified_split

NPZ_TEST_FRACTION = 0.2  # seeded stratified split when the file gives no x_test


def _images(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim == 2:
        x = x[:, None, None, :]
    elif x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or min(x.shape[1:], default=0) < 1:
        raise SiqError(f"{what}: expected [N, H, W], [N, C, H, W] or [N, L], got shape {list(x.shape)}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise SiqError(f"{what}: values must be uint8 or float in [0, 1], got {x.dtype}")
    x = x.astype(np.float64)
    if x.size and (not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1):
        raise SiqError(f"{what}: {x.dtype} values must lie in [0, 1] (scale them, or give uint8 codes)")
    return np.floor(x * 255 + 0.5).astype(np.uint8)


def _labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0):
        raise SiqError(f"{what}: labels must be {n} integers >= 0, got {y.dtype} {list(y.shape)}")
    return y.astype(np.int64)


def load_npz(path: str, seed: int) -> Dataset:
    if not path:
        raise SiqError("dataset 'npz:' needs a path: npz:PATH to a .npz file with arrays x and y")
    file = Path(path).expanduser()
    try:
        with np.load(file, allow_pickle=False) as arrays:
            data = {k: arrays[k] for k in arrays.files}
    except (OSError, ValueError) as exc:
        raise SiqError(f"dataset npz:{path}: cannot read it as a .npz file ({exc})") from None
    given = all(k in data for k in ("x_train", "y_train", "x_test", "y_test"))
    if given:
        train_x, test_x = _images(data["x_train"], f"{file}: x_train"), _images(data["x_test"], f"{file}: x_test")
        train_y = _labels(data["y_train"], len(train_x), f"{file}: y_train")
        test_y = _labels(data["y_test"], len(test_x), f"{file}: y_test")
    elif "x" in data and "y" in data:
        x = _images(data["x"], f"{file}: x")
        y = _labels(data["y"], len(x), f"{file}: y")
        train, test = stratified_split(y, NPZ_TEST_FRACTION, seed, what=f"dataset {file}")
        train, test = np.sort(train), np.sort(test)
        train_x, train_y, test_x, test_y = x[train], y[train], x[test], y[test]
    else:
        raise SiqError(f"{file}: needs arrays x and y, or x_train, y_train, x_test and y_test "
                       f"(found {', '.join(sorted(data)) or 'none'})")
    classes = int(max(train_y.max(initial=-1), test_y.max(initial=-1))) + 1
    if "class_names" in data:
        names = [str(v) for v in np.asarray(data["class_names"]).reshape(-1)]
        if len(names) < classes:
            raise SiqError(f"{file}: {len(names)} class names for labels up to {classes - 1}")
    else:
        names = [str(k) for k in range(classes)]
    if train_x.shape[1:] != test_x.shape[1:]:
        raise SiqError(f"{file}: train samples {list(train_x.shape[1:])} differ from test {list(test_x.shape[1:])}")
    info = {"source": str(file.resolve()), "split": "given" if given else "stratified 80/20",
            "split_seed": None if given else int(seed), "train_size": int(len(train_y)),
            "test_size": int(len(test_y))}
    return Dataset(name=f"npz:{path}", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                   class_names=names, info=info)

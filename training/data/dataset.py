"""The one in-memory form every source ends up in: channel-first uint8 images with int64 labels."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import SiqError
from .split import select_groups, stratified_split


@dataclass
class Dataset:
    """A train/test pair of image sets (gray, except npz: arrays, which may have any channel count).

    Invariants (checked on construction): train_x/test_x are uint8 [N, C, H, W] with the same C, H, W;
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
    # The samples are gray pictures (their one channel is luminance), not arbitrary one-channel arrays: only then
    # may a 3-channel (RGB) network see them as R = G = B (with_channels). Set by the image sources (IDX files, the
    # bundled sets, image folders); npz: arrays are the user's own channels and never get it.
    gray_images: bool = False

    def __post_init__(self):
        for part in ("train", "test"):
            x, y = getattr(self, f"{part}_x"), getattr(self, f"{part}_y")
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] < 1:
                raise ValueError(f"{self.name}: {part}_x must be uint8 [N, C, H, W], got {x.dtype} {x.shape}")
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
            keep, held = stratified_split(self.train_y, fraction, seed, what=f"{self.name} training data")
            keep_groups = held_groups = None
        else:
            # One label per source image; split images, then take all crops of each image.
            n_images = int(self.train_groups.max()) + 1 if len(self.train_groups) else 0
            image_label = np.zeros(n_images, dtype=np.int64)
            image_label[self.train_groups] = self.train_y
            keep_img, held_img = stratified_split(image_label, fraction, seed,
                                                   what=f"{self.name} training images")
            keep_img, held_img = np.sort(keep_img), np.sort(held_img)
            keep, keep_groups = select_groups(self.train_groups, keep_img)
            held, held_groups = select_groups(self.train_groups, held_img)
        info = {"derived_from": self.name, "validation_fraction": float(fraction), "validation_seed": int(seed),
                "train_size": int(len(keep)), "validation_size": int(len(held)), "parent": self.info}
        if self.train_groups is not None and "train_files" in self.info:
            files = self.info["train_files"]
            info["train_files"] = [files[i] for i in keep_img]
            info["test_files"] = [files[i] for i in held_img]
        common = dict(train_x=self.train_x[keep], train_y=self.train_y[keep],
                      test_x=self.train_x[held], test_y=self.train_y[held],
                      class_names=list(self.class_names), test_groups=held_groups, info=info,
                      train_groups=keep_groups, gray_images=self.gray_images)
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
                picks[part] = np.sort(stratified_split(labels, int(size), seed, what=f"{self.name} {part}")[1])
        info = dict(self.info, subset={"train": len(picks["train"]), "test": len(picks["test"]), "seed": int(seed)})
        return Dataset(name=self.name, train_x=self.train_x[picks["train"]], train_y=self.train_y[picks["train"]],
                       test_x=self.test_x[picks["test"]], test_y=self.test_y[picks["test"]],
                       class_names=list(self.class_names), info=info, gray_images=self.gray_images)

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
                       test_groups=self.test_groups, info=info, train_groups=self.train_groups,
                       gray_images=self.gray_images)

    def with_channels(self, channels: int) -> "Dataset":
        """The dataset as a network with `channels` input channels sees it.

        The same channel count: unchanged. Gray pictures (gray_images) shown to a 3-channel network: every pixel
        replicated into R = G = B, the colour picture that looks the same (so Fashion-MNIST trains resnet8 as it
        is, 32x32x3). The device does the same: a gray camera frame is copied into the three channels before the
        generated model is called. Anything else (npz: arrays, other counts, colour to gray) is refused naming both
        counts, since no conversion is the obvious one.
        """
        have = self.image_shape[0]
        if have == channels:
            return self
        if not (self.gray_images and have == 1 and channels == 3):
            kind = "gray pictures" if self.gray_images else "arrays"
            raise SiqError(f"the architecture takes {channels} input channel(s), the dataset {self.name!r} has "
                           f"{have} ({kind}): only gray pictures are shown to a 3-channel network (as R = G = B); "
                           f"give the data {channels} channel(s) or use an architecture with input [{have}, H, W]")
        info = dict(self.info, channels_replicated=[have, channels])
        return Dataset(name=self.name, train_x=np.repeat(self.train_x, channels, axis=1), train_y=self.train_y,
                       test_x=np.repeat(self.test_x, channels, axis=1), test_y=self.test_y,
                       class_names=list(self.class_names), test_groups=self.test_groups, info=info,
                       train_groups=self.train_groups, gray_images=self.gray_images)


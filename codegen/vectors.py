"""Test vectors for the target self-test: images and the host model's expected outputs as a C header.

`write_test_vectors` writes `<prefix>_test_vectors.h` (template firmware_template/test_vectors.h.j2) with
  #define <PREFIX>_TEST_COUNT N, <PREFIX>_TEST_FIRST_INDEX, <PREFIX>_TEST_HAS_EXPECTED
  static const uint8_t <prefix>_test_images[N][<PREFIX>_INPUT_BYTES]
  static const uint8_t <prefix>_test_classes[N]                        (only with expected outputs)
  static const int32_t <prefix>_test_scores[N][<PREFIX>_NUM_CLASSES]   (only with expected outputs)
and `#error` guards that the header matches the model's INPUT_BYTES and NUM_CLASSES.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from siq.version import __version__
from siq.codegen.export import int32_literal, number_lines
from siq.codegen.render import render
from siq.training.errors import SiqError

IMAGE_NUMBERS_PER_LINE = 32
SCORE_NUMBERS_PER_LINE = 16
CLASS_NUMBERS_PER_LINE = 32

_INT32_MIN = -(2**31)


def check_vectors(images: np.ndarray, classes: np.ndarray | None, scores: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Validate and normalise: images -> uint8 [N, C*H*W], classes -> int64 [N], scores -> int64 [N, K]."""
    images = np.asarray(images)
    if images.ndim < 2 or images.shape[0] < 1:
        raise SiqError(f"test images must be an array [N, C*H*W] or [N, C, H, W] with N >= 1, got shape {images.shape}")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.integer) or images.min() < 0 or images.max() > 255:
            raise SiqError(f"test images must be uint8 pixels (0..255), got dtype {images.dtype}")
        images = images.astype(np.uint8)
    images = images.reshape(images.shape[0], -1)
    if (classes is None) != (scores is None):
        raise SiqError("give both expected classes and expected scores, or neither")
    if classes is None:
        return images, None, None
    classes = np.asarray(classes)
    scores = np.asarray(scores)
    n = images.shape[0]
    if classes.shape != (n,) or not np.issubdtype(classes.dtype, np.integer):
        raise SiqError(f"expected classes must be integers of shape ({n},), got {classes.dtype} {classes.shape}")
    if scores.ndim != 2 or scores.shape[0] != n or scores.shape[1] < 1 or not np.issubdtype(scores.dtype, np.integer):
        raise SiqError(f"expected scores must be integers of shape ({n}, K), got {scores.dtype} {scores.shape}")
    classes = classes.astype(np.int64)
    scores = scores.astype(np.int64)
    if scores.min() < _INT32_MIN or scores.max() > 2**31 - 1:
        raise SiqError("expected scores do not fit in int32")
    if classes.min() < 0 or classes.max() >= scores.shape[1] or scores.shape[1] > 256:
        raise SiqError(f"expected classes must lie in 0..{scores.shape[1] - 1} (and K <= 256)")
    return images, classes, scores


def write_test_vectors(path: str | Path, prefix: str, images: np.ndarray, classes: np.ndarray | None,
                       scores: np.ndarray | None, first_index: int = 0) -> Path:
    """Write `<prefix>_test_vectors.h` into `path` (a directory, or the header's own path); return its path.

    images: uint8 [N, C*H*W] or [N, C, H, W]; classes: [N] argmax; scores: int32 [N, K]. With classes and
    scores both None the header holds only images (<PREFIX>_TEST_HAS_EXPECTED 0). `first_index` is the
    index of image 0 in the whole test set; the harness prints global indices.
    """
    images, classes, scores = check_vectors(images, classes, scores)
    path = Path(path)
    if path.is_dir():
        path = path / f"{prefix}_test_vectors.h"
    image_lines = [number_lines(row, IMAGE_NUMBERS_PER_LINE, separator=",") for row in images.tolist()]
    class_lines: list[str] = []
    score_lines: list[list[str]] = []
    if classes is not None:
        class_lines = number_lines(classes.tolist(), CLASS_NUMBERS_PER_LINE)
        score_lines = [number_lines(row, SCORE_NUMBERS_PER_LINE, int32_literal) for row in scores.tolist()]
        # A one-line row is wrapped in braces by the template: drop its trailing comma.
        score_lines = [[lines[0][:-1]] if len(lines) == 1 else lines for lines in score_lines]
    text = render(
        "test_vectors.h.j2",
        prefix=prefix,
        PREFIX=prefix.upper(),
        version=__version__,
        count=images.shape[0],
        first_index=int(first_index),
        input_bytes=images.shape[1],
        num_classes=scores.shape[1] if scores is not None else None,
        has_expected=classes is not None,
        image_lines=image_lines,
        class_lines=class_lines,
        score_lines=score_lines,
    )
    path.write_text(text)
    return path


"""Seeded stratified splits, shared by the bundled sets, the image folders and Dataset's own splits."""
from __future__ import annotations

import numpy as np

from ..errors import SiqError


def stratified_split(labels: np.ndarray, test_size: float | int, seed: int, what: str
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of a seeded stratified split.

    scikit-learn's stratified train_test_split when it can (every class >= 2 samples and enough test
    slots for every class); otherwise a seeded per-class split. Either way every class keeps at least one
    sample on the train side, and the test side is never empty.
    """
    from sklearn.model_selection import train_test_split  # heavy: most callers never split

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


def select_groups(groups: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample indices of every sample whose group is in `chosen`, and their groups renumbered 0..len-1."""
    renumber = np.full(int(groups.max()) + 1, -1, dtype=np.int64)
    renumber[chosen] = np.arange(len(chosen))
    mask = renumber[groups] >= 0
    return np.flatnonzero(mask), renumber[groups[mask]]


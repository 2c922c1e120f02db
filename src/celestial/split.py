"""Stratified, seeded train/test split (numpy only, so it is easy to read and test)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_split(
    labels: Sequence[int], test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted (train_idx, test_idx): each class keeps `test_fraction` of its items aside.

    Per class, round(n * fraction) items go to the test set, at least one when the class
    has 2 or more items, and never all of them, so every class is seen in training.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"split must be in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_test = round(len(idx) * test_fraction)
        n_test = min(max(n_test, 1), len(idx) - 1) if len(idx) >= 2 else 0
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))

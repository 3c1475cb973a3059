"""Train and validation rows: enough of them, stratified by class where the classes allow."""

from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import train_test_split

from autoinit.data import _limits
from autoinit.data._notes import Notes
from autoinit.errors import DataError


def check_rows(n: int, val_fraction: float, name: str) -> None:
    """Enough rows for at least one in each split, counted as :func:`split` rounds, and
    MIN_ROWS."""
    needed = _limits.MIN_ROWS
    while needed - math.ceil(val_fraction * needed) < 1:  # no training row left
        needed += 1
    if n < needed:
        rows = "row" if n == 1 else "rows"
        raise DataError(
            f"{name} has only {n} usable {rows}; at least {needed} are needed to train and hold "
            f"out {val_fraction:.0%} for validation."
        )


def split(
    codes: np.ndarray, task: str, val_fraction: float, seed: int, notes: Notes
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the train and validation sets, shuffled; stratified by class when every
    class has at least two rows and each split can hold every class.

    ``train_test_split`` with ``test_size=ceil(val_fraction * n)`` rows: the same rows for the
    same seed, every row in one of the two sets.
    """
    n = len(codes)
    n_val = math.ceil(val_fraction * n)
    stratify = None
    if task == "classification":
        counts = np.bincount(codes)
        n_train = math.floor((1 - val_fraction) * n)
        if counts.min() < 2 or min(n_val, n_train) < len(counts):
            notes.warn(
                f"the rarest class has {counts.min()} rows, too few to stratify the split over "
                f"{len(counts)} classes; using a plain random split"
            )
        else:
            notes.add("train/validation split stratified by class")
            stratify = codes
    return train_test_split(np.arange(n), test_size=n_val, random_state=seed, stratify=stratify)

"""The target column: which one, classification or regression, and its values as tensors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from autoinit.data import _limits
from autoinit.data._columns import mostly_numeric
from autoinit.data._dtypes import is_number, is_whole
from autoinit.data._notes import Notes, listing
from autoinit.errors import DataError

TASKS = ("classification", "regression")


def choose_target(header: list[str], target: str | None, name: str, notes: Notes) -> str:
    """The requested target, or by default the last named column; there must be others."""
    named = [h for h in header if h.strip()]
    if not named:
        raise DataError(f"{name} has no column names in its first row; add a header row.")
    if target is None:
        target = named[-1]
        notes.add(f"target: {target!r} (the last column; choose another with --target)")
    elif target in named:
        notes.add(f"target: {target!r} (as requested)")
    else:
        raise DataError(
            f"target column {target!r} is not in {name}; available columns: {listing(named)}."
        )
    if len(named) < 2:
        raise DataError(
            f"{name} has only the column {target!r}, so there are no features; "
            "check the delimiter (comma, semicolon or tab) or add feature columns."
        )
    return target


def detect_task(y: pd.Series) -> tuple[str, str]:
    """Guess whether a target column holds class labels or quantities, and say why.

    Booleans, and integers or text with few distinct values (at most ``MAX_CLASSES`` and
    fewer than half the rows), are class labels; so is anything numeric with exactly two values.
    Whole-number floats (``1.0, 2.0``) count as integers, since a missing value turns an integer
    column into floats. Other numbers are quantities. Text with many distinct values is returned
    as regression, which then fails unless it is numeric: the caller can force classification.

    Returns:
        ``(task, reason)``, e.g. ``("classification", "target 'species' is text with 3 distinct
        values -> classification")``.
    """
    y = y.dropna()
    label = f"target {y.name!r}" if y.name is not None else "the target"
    k = int(y.nunique())
    max_classes = _limits.MAX_CLASSES
    few = k <= max_classes and k < len(y) / 2
    if pd.api.types.is_bool_dtype(y):
        return "classification", f"{label} is boolean -> classification"
    if pd.api.types.is_numeric_dtype(y):  # bool is numeric too, hence checked first
        if pd.api.types.is_integer_dtype(y):
            kind = "integer"
        elif is_whole(y):
            kind = "whole-number float"
        else:
            if k == 2:
                return "classification", (
                    f"{label} is a float with exactly 2 distinct values -> classification"
                )
            return "regression", f"{label} is a float with {k} distinct values -> regression"
        if k == 2 or few:
            return "classification", f"{label} is {kind} with {k} distinct values -> classification"
        return "regression", (
            f"{label} is {kind} with {k} distinct values "
            f"(more than {max_classes} or half the rows) -> regression"
        )
    if few:
        return "classification", f"{label} is text with {k} distinct values -> classification"
    return "regression", (
        f"{label} is text with {k} distinct values, too many to be class labels -> regression"
    )


def clean_target(y: pd.Series, name: str, notes: Notes) -> pd.Series:
    """The target without missing values (its index says which rows are kept); a column of
    numbers with some junk becomes numeric.

    Text with few distinct values stays text: those are class labels, even when most of them
    look like numbers (``0, 1, "other"``), so no class is dropped as junk.
    """
    if not is_number(y.dtype) and y.notna().any() and y.nunique() > _limits.MAX_CLASSES:
        converted = mostly_numeric(y, notes)
        y = y if converted is None else converted
    infinite = int(np.isinf(y).sum()) if pd.api.types.is_float_dtype(y) else 0
    if infinite:
        notes.add(f"target {y.name!r}: {infinite} infinite values treated as missing")
        y = y.where(np.isfinite(y))
    missing = int(y.isna().sum())
    if missing == len(y):
        raise DataError(
            f"target {y.name!r} in {name} has no values (all {missing} rows are missing); "
            "choose another column with --target."
        )
    if missing:
        notes.add(f"dropped {missing} rows with a missing target {y.name!r}")
        y = y.dropna()
    return y


def check_varies(y: pd.Series, name: str) -> None:
    """A target with one value leaves nothing to predict."""
    if y.nunique() < 2:
        value = y.iloc[0]
        value = value.item() if isinstance(value, np.generic) else value  # 0.0, not np.float64
        raise DataError(
            f"target {y.name!r} in {name} has a single value ({value!r}), so there is "
            "nothing to predict; choose another column with --target."
        )


def encode_classes(y: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Class indices 0..k-1 in sorted label order, and the labels as strings."""
    if pd.api.types.is_float_dtype(y) and is_whole(y):
        y = y.astype(np.int64)  # labels "1", not "1.0"
    elif not is_number(y.dtype):
        y = y.astype(str)  # True and "x" can share a column: see feature_table
    codes, labels = pd.factorize(y, sort=True)
    return codes.astype(np.int64, copy=False), [str(label) for label in labels]


def regression_values(y: pd.Series, target: str, name: str) -> np.ndarray:
    """The target as float64; text in it is an error that suggests classification."""
    if is_number(y.dtype):
        return y.to_numpy(dtype=np.float64)
    numbers = pd.to_numeric(y, errors="coerce")
    if numbers.notna().all():  # read as objects, yet numbers (booleans with gaps, say)
        return numbers.to_numpy(dtype=np.float64)
    example = y[numbers.isna()].iloc[0]
    raise DataError(
        f"target {target!r} in {name} must be numeric for regression but holds text such as "
        f"{example!r}; clean the column, or use task 'classification' if it holds class labels."
    )


def standardize(
    train: np.ndarray, val: np.ndarray, target: str, name: str
) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Standardize both splits with the training rows' mean and standard deviation (1 if they
    are all equal).

    Returns:
        ``(mean, scale, y_train, y_val)``, the targets as float32 columns of shape (n, 1).

    Raises:
        DataError: the values are too large to average, or one lies so far out that it does not
            fit in float32 once standardized.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        mean, scale = float(np.mean(train)), float(np.std(train))
    if not (math.isfinite(mean) and math.isfinite(scale)):
        raise DataError(
            f"target {target!r} in {name} has values too large to standardize "
            f"(up to {np.max(np.abs(train)):.3g}); rescale the column."
        )
    scale = scale if scale > 0 else 1.0
    tensors = []
    for y in (train, val):
        with np.errstate(over="ignore", invalid="ignore"):
            z = (y - mean) / scale
        outside = ~(np.abs(z) <= _limits.FLOAT32_MAX)
        if outside.any():
            raise DataError(
                f"target {target!r} in {name} has a value ({y[outside][0]:.3g}) too far from the "
                f"training rows' mean ({mean:.3g}, standard deviation {scale:.3g}) to "
                "standardize; rescale the column or remove the outlier."
            )
        tensors.append(torch.from_numpy(z.astype(np.float32).reshape(-1, 1)))
    return mean, scale, tensors[0], tensors[1]

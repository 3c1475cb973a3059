"""Arrays -> train and validation tensors: targets encoded, features standardized with the
training rows' statistics, written block by block (no full-size float64 copy on the way).

Used by the ``.npz``/``.npy`` reader and, for the targets, by the image-folder reader.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from autoinit.data import _limits
from autoinit.data._notes import Notes
from autoinit.data._target import TASKS
from autoinit.errors import DataError


@dataclasses.dataclass(frozen=True)
class Targets:
    """Targets decided: int64 class codes or float64 values, and the task with its reason."""

    task: str
    reason: str
    values: np.ndarray
    classes: list[str] | None


def check_task_option(task: str) -> None:
    if task != "auto" and task not in TASKS:
        raise DataError(f"task must be 'auto', 'classification' or 'regression' but got {task!r}.")


def encode_targets(y: np.ndarray, task: str, label: str, name: str) -> Targets:
    """Integer, boolean or text ``y`` means classification; float ``y`` means regression,
    unless ``task`` says otherwise.

    Args:
        y: one target per sample, shape (n,) or (n, 1).
        task: ``"auto"``, ``"classification"`` or ``"regression"``.
        label: how to name the targets in messages (``"array 'y'"``).
        name: the file's name, for messages.

    Raises:
        DataError: ``y`` has another shape, a type that cannot be targets, missing values, or
            a single value; or it holds text and regression was asked for.
    """
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"{label} in {name} must hold one target per sample, shape (N,), but has shape "
            f"{y.shape}; multi-output targets are not supported."
        )
    kind = y.dtype.kind
    if kind not in "biufUS":
        raise DataError(
            f"{label} in {name} has dtype {y.dtype}, which cannot be targets; save integer class "
            "labels or float values."
        )
    if kind == "f" and not np.isfinite(y).all():
        bad = int(np.count_nonzero(~np.isfinite(y)))
        raise DataError(
            f"{label} in {name} holds {bad} missing or infinite values (NaN or inf); remove "
            "those samples or fill in their targets."
        )
    if task == "auto":
        task = "regression" if kind == "f" else "classification"
        what = {"b": "boolean", "i": "integer", "u": "integer", "f": "float"}.get(kind, "text")
        reason = f"{label} is {what} -> {task}"
    else:
        reason = f"task {task!r} was requested"
    if len(y) and len(np.unique(y)) < 2:
        raise DataError(
            f"{label} in {name} has a single value ({y[0].item()!r}), so there is nothing to "
            "predict."
        )
    if task == "regression":
        if kind in "US":
            raise DataError(
                f"{label} in {name} holds text such as {y[0].item()!r}, which cannot be regressed; "
                "use task 'classification' if it holds class labels."
            )
        return Targets(task, reason, y.astype(np.float64), None)
    labels, codes = np.unique(y, return_inverse=True)
    if kind == "f" and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)  # classes "1", not "1.0"
    return Targets(
        task, reason, codes.reshape(-1).astype(np.int64), [_label(v) for v in labels.tolist()]
    )


def _label(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def target_tensors(
    targets: Targets, train_idx: np.ndarray, val_idx: np.ndarray, label: str, name: str
) -> tuple[torch.Tensor, torch.Tensor, float | None, float | None]:
    """``(y_train, y_val, target_mean, target_scale)``: class codes, or standardized values."""
    if targets.task == "classification":
        values = targets.values
        return torch.from_numpy(values[train_idx]), torch.from_numpy(values[val_idx]), None, None
    values = targets.values
    mean, scale, y_train, y_val = standardize_targets(values[train_idx], values[val_idx], label,
                                                      name)  # fmt: skip
    return y_train, y_val, mean, scale


def standardize_targets(
    train: np.ndarray, val: np.ndarray, label: str, name: str
) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Standardize both splits with the training values' mean and standard deviation (1 if
    they are all equal), as the CSV reader does.

    Returns:
        ``(mean, scale, y_train, y_val)``, the targets as float32 columns of shape (n, 1).

    Raises:
        DataError: the values are too large to average, or one lands beyond float32 once
            standardized.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        mean, scale = float(np.mean(train)), float(np.std(train))
    if not (math.isfinite(mean) and math.isfinite(scale)):
        raise DataError(f"{label} in {name} has values too large to standardize; rescale it.")
    scale = scale if scale > 0 else 1.0
    tensors = []
    for y in (train, val):
        with np.errstate(over="ignore", invalid="ignore"):
            z = (y - mean) / scale
        if not np.all(np.abs(z) <= _limits.FLOAT32_MAX):
            raise DataError(
                f"{label} in {name} has a value too far from the training mean ({mean:.3g}, "
                f"standard deviation {scale:.3g}) to standardize; rescale it or remove the "
                "outlier."
            )
        tensors.append(torch.from_numpy(z.astype(np.float32).reshape(-1, 1)))
    return mean, scale, tensors[0], tensors[1]


def channel_stats(
    x: np.ndarray, rows: np.ndarray, axis: int, label: str, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each index of ``axis`` of ``x`` (an axis of one sample:
    1 is the first), over the samples ``rows``, in float64 block by block (Chan's merge of
    block means and squared deviations). A standard deviation of 0 becomes 1.

    Raises:
        DataError: ``x`` holds a missing or infinite value in those rows.
    """
    channels = x.shape[axis]
    count, mean, m2 = 0, np.zeros(channels), np.zeros(channels)
    others = tuple(a for a in range(x.ndim) if a != axis)
    for start in range(0, len(rows), _limits.BLOCK_ROWS):
        block = np.asarray(x[np.sort(rows[start : start + _limits.BLOCK_ROWS])], dtype=np.float64)
        if not np.isfinite(block).all():
            raise _non_finite(x, label, name)
        n = block.size // channels
        block_mean = block.mean(axis=others)
        shape = [1] * x.ndim
        shape[axis] = channels
        block_m2 = ((block - block_mean.reshape(shape)) ** 2).sum(axis=others)
        delta = block_mean - mean
        total = count + n
        mean = mean + delta * n / total
        m2 = m2 + block_m2 + delta**2 * count * n / total
        count = total
    std = np.sqrt(m2 / max(count, 1))
    std[~(std > 0)] = 1.0
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise DataError(
            f"{label} in {name} has values too large to standardize (beyond float64); rescale it."
        )
    return mean, std


def standardized(
    x: np.ndarray,
    rows: np.ndarray,
    axis: int,
    mean: np.ndarray,
    std: np.ndarray,
    label: str,
    name: str,
) -> torch.Tensor:
    """``(x[rows] - mean) / std`` along ``axis`` as one float32 tensor, written block by block.

    Raises:
        DataError: a value is missing or infinite, or lands beyond float32 once standardized.
    """
    out = torch.empty((len(rows), *x.shape[1:]), dtype=torch.float32)
    view = out.numpy()
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    mean, std = mean.reshape(shape), std.reshape(shape)
    for start in range(0, len(rows), _limits.BLOCK_ROWS):
        block = np.asarray(x[rows[start : start + _limits.BLOCK_ROWS]], dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            z = (block - mean) / std
        if not np.all(np.abs(z) <= _limits.FLOAT32_MAX):
            if not np.isfinite(block).all():
                raise _non_finite(x, label, name)
            raise DataError(
                f"{label} in {name} has a value too far from the training mean to standardize in "
                "float32; rescale it or remove the outlier."
            )
        view[start : start + len(block)] = z
    return out


def _non_finite(x: np.ndarray, label: str, name: str) -> DataError:
    return DataError(
        f"{label} in {name} holds missing or infinite values (NaN or inf); fill or remove them "
        "(or save the data as CSV, whose reader imputes missing values)."
    )


def split_note(notes: Notes, n_train: int, n_val: int) -> None:
    notes.add(f"{n_train} training and {n_val} validation samples")

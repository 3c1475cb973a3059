"""``load_csv``: every step from a CSV file to :class:`~._tabular.TabularData`, in order; the
steps after reading (:func:`tabular_data`) serve any tabular reader."""

from __future__ import annotations

from pathlib import Path

import torch

from autoinit.data._columns import feature_table
from autoinit.data._frame import Table
from autoinit.data._layout import read_layout
from autoinit.data._notes import Notes
from autoinit.data._preprocess import preprocess
from autoinit.data._reading import read_table
from autoinit.data._sniff import sniff
from autoinit.data._split import check_rows, split
from autoinit.data._tabular import TabularData
from autoinit.data._target import (
    TASKS,
    check_varies,
    choose_target,
    clean_target,
    detect_task,
    encode_classes,
    regression_values,
    standardize,
)
from autoinit.errors import DataError


def load_csv(
    path: str | Path,
    *,
    target: str | None = None,
    task: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
) -> TabularData:
    """Read a CSV file and turn it into train/validation tensors.

    Args:
        path: a comma-, semicolon- or tab-separated UTF-8 file with a header row.
        target: the column to predict; the last column by default.
        task: ``"auto"`` (see :func:`detect_task`), ``"classification"`` or ``"regression"``.
        val_fraction: the share of rows held out for validation, in (0, 1).
        seed: seeds the train/validation split.

    Raises:
        DataError: the file or an option cannot be used; the message says what to change.
    """
    _check_options(task, val_fraction)
    path = Path(path)
    name = path.name
    notes = Notes()
    sniffed = sniff(path)
    notes.add(sniffed.note)
    target = choose_target(sniffed.header, target, name, notes)
    layout = read_layout(path, sniffed.delimiter, sniffed.header, target, name, notes)
    table = read_table(path, name, layout)
    if table.rows == 0:
        raise DataError(f"{name} has a header but no data rows; add rows below the header.")
    fingerprint = {
        "file": name,
        "sha256": table.sha256,
        "rows": table.rows,
        "columns": len(sniffed.header),
        "target": target,
    }
    data = tabular_data(
        table, layout.features, fingerprint, notes, task=task, val_fraction=val_fraction, seed=seed
    )
    notes.emit_warnings(stacklevel=2)
    return data


def tabular_data(
    table: Table,
    features: list[str],
    fingerprint: dict,
    notes: Notes,
    *,
    task: str,
    val_fraction: float,
    seed: int,
) -> TabularData:
    """A table as read -> :class:`TabularData`: the target cleaned, the task chosen, the
    ``features`` columns typed and preprocessed, the rows split. Any tabular reader can end here.

    ``fingerprint`` names the file (``"file"``) and the target (``"target"``); the task is
    added to it. Warnings are left in ``notes`` for the reader to emit at its caller.
    """
    name, target = fingerprint["file"], fingerprint["target"]
    check_rows(table.rows, val_fraction, name)  # before the target: too few rows is the problem
    y = clean_target(table.others[target], name, notes)
    check_rows(len(y), val_fraction, name)
    check_varies(y, name)
    kept = None if len(y) == table.rows else y.index.to_numpy()  # rows with a target
    if task == "auto":
        task, reason = detect_task(y)
    else:
        reason = f"task {task!r} was requested"
    fingerprint["task"] = task
    columns = feature_table(table, features, kept, notes)
    del table
    if not columns.numeric and not columns.categorical:
        raise DataError(
            f"{name} has no usable feature columns besides the target {target!r}; "
            "add feature columns (the notes say why others were dropped)."
        )
    if task == "classification":
        values, classes = encode_classes(y)
    else:
        values, classes = regression_values(y, target, name), None
    del y
    train_idx, val_idx = split(values, task, val_fraction, seed, notes)
    X_train, X_val, feature_names = preprocess(columns, train_idx, val_idx, name)
    if task == "classification":
        target_mean = target_scale = None
        y_train, y_val = torch.from_numpy(values[train_idx]), torch.from_numpy(values[val_idx])
    else:
        target_mean, target_scale, y_train, y_val = standardize(
            values[train_idx], values[val_idx], target, name
        )
    return TabularData(
        X_train=X_train,
        y_train=y_train,
        X_val=X_val,
        y_val=y_val,
        task=task,
        task_reason=reason,
        target=target,
        feature_names=feature_names,
        classes=classes,
        target_mean=target_mean,
        target_scale=target_scale,
        notes=list(notes),
        fingerprint=fingerprint,
    )


def _check_options(task: str, val_fraction: float) -> None:
    if task != "auto" and task not in TASKS:
        raise DataError(f"task must be 'auto', 'classification' or 'regression' but got {task!r}.")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not (
        0 < val_fraction < 1
    ):
        raise DataError(
            f"val_fraction must be a number strictly between 0 and 1 but got {val_fraction!r}."
        )

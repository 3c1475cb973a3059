"""The loaded table: train and validation tensors, and what was decided on the way."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch


@dataclasses.dataclass(frozen=True, eq=False)
class TabularData:
    """A CSV file split into preprocessed train and validation tensors.

    ``y`` holds int64 class indices of shape (n,) for classification and standardized float32
    values of shape (n, 1) for regression (``y * target_scale + target_mean`` undoes it).
    """

    kind: ClassVar[str] = "tabular"  # what a reader returned; other readers will say otherwise

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    task: str
    task_reason: str
    target: str
    feature_names: list[str]
    classes: list[str] | None
    target_mean: float | None
    target_scale: float | None
    notes: list[str]
    fingerprint: dict

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def describe(self) -> str:
        """One line, e.g. ``iris.csv: 150 rows, 4 features, target 'species' (classification, 3
        classes)``."""
        rows = len(self.X_train) + len(self.X_val)
        kind = f"{self.task}, {self.n_classes} classes" if self.classes is not None else self.task
        return (
            f"{self.fingerprint['file']}: {rows} rows, {self.n_features} features, "
            f"target {self.target!r} ({kind})"
        )

"""The loaded arrays or images: train and validation tensors, with what was decided on the way.

:class:`ArrayData` has the interface of :class:`~._tabular.TabularData` (the same tensors and
fields, ``describe()``, ``fingerprint``), so that the command line treats every kind of data
alike; only ``kind`` differs, and ``input_shape`` says what one sample looks like.
"""

from __future__ import annotations

import dataclasses

import torch

KINDS = ("tabular", "images", "sequences")


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayData:
    """Samples of one shape, split into normalised train and validation tensors.

    ``X`` is float32 of shape ``(n, F)`` (tabular), ``(n, C, H, W)`` (images) or ``(n, T, F)``
    (sequences). ``y`` holds int64 class indices of shape (n,) for classification and
    standardized float32 values of shape (n, 1) for regression (``y * target_scale +
    target_mean`` undoes it), as in :class:`~._tabular.TabularData`.
    """

    kind: str
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

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)} but got {self.kind!r}.")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape: ``(F,)``, ``(C, H, W)`` or ``(T, F)``."""
        return tuple(self.X_train.shape[1:])

    @property
    def n_features(self) -> int:
        """Features per sample (tabular), per time step (sequences), or ``C * H * W`` (images)."""
        if self.kind == "sequences":
            return self.input_shape[-1]
        return int(torch.Size(self.input_shape).numel())

    @property
    def n_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def describe(self) -> str:
        """One line, e.g. ``digits: 300 images 1x16x16 (L), 10 classes (classification)``."""
        n = len(self.X_train) + len(self.X_val)
        shape = self.input_shape
        if self.kind == "images":
            mode = self.fingerprint.get("mode")
            what = f"{n} images {'x'.join(map(str, shape))}" + (f" ({mode})" if mode else "")
        elif self.kind == "sequences":
            what = f"{n} sequences of {shape[0]} steps x {_plural(shape[1], 'feature')}"
        else:
            what = f"{n} rows, {_plural(shape[0], 'feature')}"
        task = f"{self.task}, {self.n_classes} classes" if self.classes is not None else self.task
        return f"{self.fingerprint['file']}: {what}, target {self.target!r} ({task})"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"

"""Every member's validation loss and metric, from one batched pass over the validation data."""

from __future__ import annotations

import math

import torch

from autoinit.errors import DataError
from autoinit.population._stack import _Stack
from autoinit.train import TrainingData


def _evaluate_stack(stack: _Stack, data: TrainingData) -> tuple[torch.Tensor, torch.Tensor]:
    """Every member's mean validation loss and metric (accuracy, or R²), as ``train.evaluate``."""
    k = stack.size
    stack.set_training(False)
    total = torch.zeros(k, dtype=torch.float64, device=data.device)
    correct = torch.zeros(k, dtype=torch.long, device=data.device)
    count = 0
    targets, predictions = [], []
    try:
        with torch.no_grad():
            for x, y in data.val_batches():
                output, loss = stack.forward(x, y, data.loss_fn, data.task, shared=True)
                total += loss.double() * len(y)
                count += len(y)
                if data.task == "classification":
                    correct += (output.argmax(dim=-1) == y).flatten(1).sum(1)
                else:
                    targets.append(y.float().flatten())
                    predictions.append(output.float().reshape(k, -1))
    finally:
        stack.set_training(True)
    if count == 0:
        raise DataError("the validation data is empty; give more samples or a val_loader.")
    if data.task == "classification":
        return total / count, correct.double() / count
    y, p = torch.cat(targets).double(), torch.cat(predictions, dim=1).double()
    spread = ((y - y.mean()) ** 2).sum()
    residual = ((y - p) ** 2).sum(dim=1)
    r2 = 1.0 - residual / spread if spread > 0 else torch.full_like(residual, math.nan)
    return total / count, r2

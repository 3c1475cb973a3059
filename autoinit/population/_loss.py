"""Each member's loss from the stacked outputs, as ``loss_fn`` gives it on the member alone."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap


def _fit_output(task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """As ``train`` does: a regression output (n, 1) for targets (n,) and vice versa."""
    if task == "regression" and output.shape != target.shape and output.numel() == target.numel():
        return output.reshape(target.shape)
    return output


def _member_loss(loss_fn: Callable, task: str) -> Callable:
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss_fn(_fit_output(task, output, target), target)

    return loss


def _batched_loss(
    loss_fn: Callable, task: str, output: torch.Tensor, target: torch.Tensor, shared: bool
) -> torch.Tensor:
    """Each member's loss ``(K,)``: what ``loss_fn`` gives on the member's output alone.

    PyTorch's cross-entropy and MSE losses with their default options are computed per sample
    and averaged per member (4x faster than a ``vmap`` of the loss, which decomposes it); any
    other loss runs under ``vmap``.
    """
    k = output.shape[0]
    targets = target.expand(k, *target.shape) if shared else target
    if type(loss_fn) is nn.CrossEntropyLoss and _plain_cross_entropy(loss_fn, output, target):
        per_sample = F.cross_entropy(
            output.movedim(2, 1), targets, reduction="none", ignore_index=loss_fn.ignore_index
        )  # the classes in dim 1, the members as the batch, the samples as a spatial dim
        counted = (targets != loss_fn.ignore_index).flatten(1).sum(1)
        return per_sample.flatten(1).sum(1) / counted
    fitted = _fit_output(task, output[0], targets[0])
    plain_mse = type(loss_fn) is nn.MSELoss and loss_fn.reduction == "mean"
    if plain_mse and fitted.shape == targets[0].shape:
        output = output.reshape(targets.shape)
        return F.mse_loss(output, targets, reduction="none").flatten(1).mean(1)
    return vmap(_member_loss(loss_fn, task), in_dims=(0, None if shared else 0))(output, target)


def _plain_cross_entropy(loss_fn: nn.CrossEntropyLoss, output: torch.Tensor, target) -> bool:
    return (
        loss_fn.weight is None and loss_fn.reduction == "mean" and loss_fn.label_smoothing == 0
        and output.dim() >= 3 and not target.is_floating_point()
    )  # fmt: skip

"""The optimizer state of the members that leave the stack (``train.make_optimizer`` builds it)."""

from __future__ import annotations

from typing import Any

import torch


def _keep_rows(
    optimizer: torch.optim.Optimizer,
    params: list[torch.Tensor],
    mapping: dict[torch.Tensor, torch.Tensor],
    rows: torch.Tensor,
    size: int,
) -> torch.optim.Optimizer:
    """The optimizer over ``params``, the new stacked tensors (``mapping``: old to new), with
    ``rows`` of every per-member state tensor of ``optimizer`` (stacked ``size`` members)."""
    replacement = type(optimizer)(params, **optimizer.defaults)
    for old, state in optimizer.state.items():
        replacement.state[mapping[old]] = {
            key: value[rows] if _is_stacked(value, size) else value for key, value in state.items()
        }
    return replacement


def _is_stacked(value: Any, size: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == size

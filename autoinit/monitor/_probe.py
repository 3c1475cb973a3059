"""Before training: the symmetry check, and the step-0 signal probe."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import torch
from torch import nn

from autoinit import records
from autoinit.monitor._stop import Diverged, Stop


def symmetry_stop(model: nn.Module) -> Stop | None:
    """A ``symmetric`` :class:`Stop` when a hidden layer's units all have equal weights.

    Such units receive equal gradients and stay equal: the layer acts as one unit (``zeros``
    init). The output layer is skipped (a single output unit is legitimately alone).
    """
    weights = [
        (name, p) for name, p in model.named_parameters() if p.dim() >= 2 and "weight" in name
    ]
    for name, weight in weights[:-1]:
        rows = weight.detach().flatten(1)
        if rows.shape[0] > 1 and bool((rows == rows[0]).all()):
            return Stop(
                "symmetric",
                f"symmetric weights at step 0: all {rows.shape[0]} units of {name} are "
                f"identical (value {rows[0, 0].item():.3g}), so they can never differ",
            )
    return None


def check_symmetry(model: nn.Module, trial: optuna.Trial | None = None) -> None:
    """Raise :class:`Diverged` (``symmetric``) when :func:`symmetry_stop` finds symmetry."""
    stop = symmetry_stop(model)
    if stop is not None:
        stop.store(trial)
        raise Diverged(stop.kind, stop.reason)


class SignalProbe:
    """Record each weight layer's output standard deviation on one forward pass.

    Used at step 0 to show how the signal propagates through depth (stored as ``probe``).
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers: list[str] = []
        self.output_std: list[float | None] = []
        self._handles = [
            module.register_forward_hook(self._hook(name))
            for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))
        ]

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.numel() > 1:
                self.layers.append(name)
                self.output_std.append(records.finite_or_none(float(output.detach().float().std())))

        return record

    def remove(self) -> dict[str, list[Any]]:
        """Detach the hooks and return the record."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return {"layers": self.layers, "output_std": self.output_std}

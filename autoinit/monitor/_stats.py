"""The statistics record that every rule reads: :class:`StepStats`, with its :class:`GradStats`.

The guard measures a step once, whatever the number of rules: the loss (one float), and on the
steps whose gradients are checked, the global, first-layer and output-layer gradient norms read
back in one device sync. Per-layer norms, which only a firing rule's message needs, are computed
on first use. Both records can be built from plain numbers, so that the same rules judge a probe
(one forward and backward pass before training) as well as the training steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
from torch import nn

NamedParams = Iterable[tuple[str, nn.Parameter]]
LayerNorms = Sequence[tuple[str, float]]


class GradStats(NamedTuple):
    """One step's gradient statistics.

    Attributes:
        total_norm: the global gradient norm (all parameters).
        first_norm, last_norm: the norms of the first and the last matrix-shaped gradient (the
            input layer's and the output layer's weights).
        first_rms, last_rms: the same per element (norm / sqrt(numel)), so that sizes cancel.
        first_layer, last_layer: those parameters' names.
    """

    total_norm: float
    first_norm: float
    last_norm: float
    first_rms: float
    last_rms: float
    first_layer: str = "?"
    last_layer: str = "?"


@dataclasses.dataclass(slots=True)
class StepStats:
    """What the rules read about one step.

    Attributes:
        step: the step's index (0 for the first step, or for a probe).
        loss: the training loss at this step.
        first_loss: the loss at step 0 (``nan`` when unknown).
        grads: the gradient statistics, or ``None`` on a step whose gradients were not read.
        layers: per-layer gradient norms as ``(name, norm)`` pairs, or a function that computes
            them (the guard passes one: they are computed only if asked for, then kept).

    Example:
        >>> stats = StepStats(0, 2.3, 2.3, GradStats(1e6, 3.0, 0.1, 0.2, 0.05, "0.weight"))
        >>> GradNormBound(1e5).check(stats).kind    # doctest: +SKIP
        'exploding'
    """

    step: int
    loss: float
    first_loss: float = math.nan
    grads: GradStats | None = None
    layers: LayerNorms | Callable[[], LayerNorms] = ()

    @property
    def layer_norms(self) -> LayerNorms:
        """The per-layer gradient norms (computed now if they were deferred)."""
        if callable(self.layers):
            self.layers = self.layers()
        return self.layers

    @property
    def worst_layer(self) -> str:
        """The first layer with a non-finite gradient norm, else the largest; ``?`` if none."""
        pairs = self.layer_norms
        if not pairs:
            return "?"
        bad = next((name for name, norm in pairs if not math.isfinite(norm)), None)
        return bad if bad is not None else max(pairs, key=lambda pair: pair[1])[0]

    @classmethod
    def measure(
        cls,
        step: int,
        loss: float,
        named_parameters: NamedParams,
        *,
        first_loss: float = math.nan,
        gradients: bool = True,
    ) -> StepStats:
        """Measure a step after ``loss.backward()``: one device sync for the gradient norms.

        With ``gradients=False`` the gradients are not read, except lazily for
        :attr:`layer_norms`. ``named_parameters`` may be a generator: it is read at most once.
        """
        if not gradients:
            return cls(step, loss, first_loss, None, lambda: layer_norms(named_parameters))
        pairs = _grads_of(named_parameters)
        if not pairs:
            return cls(step, loss, first_loss)
        names = [n for n, _ in pairs]
        grads = [g for _, g in pairs]
        norms = torch._foreach_norm(grads)
        first, last = _weight_indices(grads)
        total = torch.linalg.vector_norm(torch.stack(norms))
        total_norm, first_norm, last_norm = torch.stack([total, norms[first], norms[last]]).tolist()
        stats = GradStats(
            total_norm, first_norm, last_norm,
            first_norm / grads[first].numel() ** 0.5, last_norm / grads[last].numel() ** 0.5,
            names[first], names[last],
        )  # fmt: skip
        return cls(step, loss, first_loss, stats, lambda: _pairs(names, norms))


def _grads_of(named_parameters: NamedParams) -> list[tuple[str, torch.Tensor]]:
    """The parameters that have a gradient, as ``(name, grad)`` (each ``.grad`` read once)."""
    return [(n, g) for n, p in named_parameters if (g := p.grad) is not None]


def _pairs(names: list[str], norms: Sequence[torch.Tensor]) -> LayerNorms:
    return list(zip(names, torch.stack(list(norms)).tolist()))


def layer_norms(named_parameters: NamedParams) -> LayerNorms:
    """Each parameter's gradient norm, as ``(name, norm)`` pairs (one device sync)."""
    pairs = _grads_of(named_parameters)
    if not pairs:
        return []
    return _pairs([n for n, _ in pairs], torch._foreach_norm([g for _, g in pairs]))


def _weight_indices(grads: list[torch.Tensor]) -> tuple[int, int]:
    """The first and the last matrix-shaped gradients: the input and output layers' weights.

    Searched from both ends, so that biases in between are not looked at.
    """
    first = next((i for i, g in enumerate(grads) if g.dim() >= 2), None)
    if first is None:
        return 0, len(grads) - 1
    last = next(i for i in range(len(grads) - 1, first - 1, -1) if grads[i].dim() >= 2)
    return first, last

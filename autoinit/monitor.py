"""Divergence detection for any training loop, and the step-0 signal probe.

:class:`DivergenceGuard` is checked after ``loss.backward()`` and before ``optimizer.step()``,
the point where skorch calls ``on_grad_computed``. It raises :class:`Diverged`, an
``optuna.TrialPruned``, at once when:

- the loss or the gradient norm is non-finite (``non-finite``);
- the global gradient norm exceeds ``max_grad_norm``, or the loss exceeds ``max_loss``
  (``exploding``: catches a 20-layer ReLU net with N(0, 1) weights at step 0, whose gradient
  norm is ~1e16 and which Adam never turns into NaN);
- the gradient norm grows more than ``growth_factor`` times over its largest value in the first
  ``reference_steps`` steps while the loss is above its step-0 value (``exploding``: catches a
  too-large learning rate a few steps in; the loss condition spares a one-step spike of a run
  that is learning, such as PyTorch's default init whose step-0 norm is tiny);
- at step 0, the first layer's per-element gradient is more than ``max_depth_ratio`` times the
  output layer's (``exploding`` across depth: saturated tanh nets with unscaled weights, which
  otherwise train at chance without tripping any bound);
- the first layer's gradient norm stays below ``vanish_floor`` for ``vanish_patience`` checks
  (``vanishing``: deep sigmoid nets).

:func:`check_symmetry` catches the last failure mode before training: hidden units with identical
weights (``zeros`` init) get identical updates forever (``symmetric``).

The guard keeps its curves in memory and never touches storage in the loop; it writes the reason
to ``trial.user_attrs`` once, when it fires.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import optuna
import torch
from torch import nn

from autoinit import records

NamedParams = Iterable[tuple[str, nn.Parameter]]


class Diverged(optuna.TrialPruned):
    """A trial stopped by the guard; ``kind`` is one of :data:`records.PRUNE_KINDS`."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class DivergenceGuard:
    """Raise :class:`Diverged` as soon as a training run's gradients blow up or die out.

    Args:
        max_grad_norm: absolute bound on the global gradient norm.
        max_loss: absolute bound on the loss (e.g. ``100 * ln(classes)``); ``None`` for none.
        growth_factor: prune when the norm exceeds this multiple of its early value...
        reference_steps: ...the largest norm of this many first steps, and the loss has not
            fallen below its step-0 value.
        max_depth_ratio: bound on the first layer's RMS gradient over the output layer's, at
            step 0.
        vanish_floor: the first layer's gradient norm below this counts as vanished...
        vanish_patience: ...when it stays there for this many consecutive checks.
        dense_steps, check_every: gradients are checked every step for ``dense_steps`` steps,
            then every ``check_every`` steps (the loss is checked every step).
        trial: if given, the reason is stored on it (``prune_kind``, ``prune_reason``) on firing.

    Example:
        >>> guard = DivergenceGuard()
        >>> for x, y in loader:                          # doctest: +SKIP
        ...     loss = loss_fn(model(x), y)
        ...     optimizer.zero_grad(); loss.backward()
        ...     guard.check(loss, model.named_parameters())   # raises Diverged
        ...     optimizer.step()
    """

    def __init__(
        self,
        *,
        max_grad_norm: float = 1e5,
        max_loss: float | None = None,
        growth_factor: float = 1e3,
        reference_steps: int = 3,
        max_depth_ratio: float = 1e3,
        vanish_floor: float = 1e-8,
        vanish_patience: int = 5,
        dense_steps: int = 100,
        check_every: int = 25,
        trial: optuna.Trial | None = None,
    ) -> None:
        for name, value, low in [("max_grad_norm", max_grad_norm, 0), ("max_depth_ratio",
                                 max_depth_ratio, 1), ("growth_factor", growth_factor, 1)]:
            if not value > low:
                raise ValueError(f"{name} must be greater than {low} but got {value}.")
        for name, value in [("reference_steps", reference_steps), ("vanish_patience",
                            vanish_patience), ("check_every", check_every)]:
            if value < 1:
                raise ValueError(f"{name} must be at least 1 but got {value}.")
        self.max_grad_norm = max_grad_norm
        self.max_loss = max_loss
        self.growth_factor = growth_factor
        self.reference_steps = reference_steps
        self.max_depth_ratio = max_depth_ratio
        self.vanish_floor = vanish_floor
        self.vanish_patience = vanish_patience
        self.dense_steps = dense_steps
        self.check_every = check_every
        self.trial = trial
        self.losses: list[float] = []  # every step
        self.grad_steps: list[int] = []  # the steps whose gradients were checked...
        self.grad_norms: list[float] = []  # ...and their global norms
        self._reference_norm = 0.0
        self._vanished_checks = 0

    @property
    def step(self) -> int:
        """Number of steps checked so far."""
        return len(self.losses)

    def check(self, loss: torch.Tensor | float, named_parameters: NamedParams) -> None:
        """Record this step's loss (and gradient norms); raise :class:`Diverged` if unhealthy.

        The loss is checked every step. Gradients are checked every step for the first
        ``dense_steps`` steps, where divergence shows, then every ``check_every`` steps: their
        norms cost ~8% of a small MLP's step, and a non-finite gradient shows in the next loss.
        ``named_parameters`` may be a generator: it is read at most once.
        """
        step = self.step
        loss_value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        self.losses.append(loss_value)
        if not math.isfinite(loss_value):
            self._fire("non-finite", f"non-finite loss at step {step}: {loss_value}")
        if self.max_loss is not None and loss_value > self.max_loss:
            names, grads = _named_grads(named_parameters)
            norms = torch._foreach_norm(grads) if grads else []
            self._fire(
                "exploding",
                f"exploding loss at step {step}: {loss_value:.3g} > {self.max_loss:.3g} "
                f"(worst layer {_worst(names, norms)})",
            )
        if step >= self.dense_steps and step % self.check_every:
            return
        names, grads = _named_grads(named_parameters)
        if not grads:
            return
        norms = torch._foreach_norm(grads)
        first, last = _first_weight_index(grads), _last_weight_index(grads)
        total = torch.linalg.vector_norm(torch.stack(norms))
        total_norm, first_norm, last_norm = torch.stack([total, norms[first], norms[last]]).tolist()
        self.grad_steps.append(step)
        self.grad_norms.append(total_norm)
        self._check_gradients(step, names, grads, norms, first, last, total_norm, first_norm,
                              last_norm)  # fmt: skip

    def _check_gradients(
        self, step, names, grads, norms, first, last, total_norm, first_norm, last_norm
    ) -> None:
        if not math.isfinite(total_norm):
            layer = next(n for n, v in zip(names, norms) if not math.isfinite(v.item()))
            self._fire("non-finite", f"non-finite gradient at step {step} (layer {layer})")
        if total_norm > self.max_grad_norm:
            self._fire(
                "exploding",
                f"exploding gradient at step {step}: norm {total_norm:.3g} > "
                f"{self.max_grad_norm:.3g} (worst layer {_worst(names, norms)})",
            )
        if step == 0 and last_norm > 0:
            # Per-element (RMS) gradients, so that layer sizes do not matter.
            ratio = (first_norm / grads[first].numel() ** 0.5) / (
                last_norm / grads[last].numel() ** 0.5
            )
            if ratio > self.max_depth_ratio:
                self._fire(
                    "exploding",
                    f"exploding gradient across depth at step 0: the first layer's "
                    f"({names[first]}) gradients are {ratio:.3g}x the output layer's",
                )
        if step < self.reference_steps:
            self._reference_norm = max(self._reference_norm, total_norm, 1e-12)
        elif (
            total_norm > self.growth_factor * self._reference_norm
            and self.losses[-1] > self.losses[0]
        ):
            self._fire(
                "exploding",
                f"exploding gradient at step {step}: norm {total_norm:.3g} grew "
                f"{total_norm / self._reference_norm:.3g}x over the first {self.reference_steps} "
                f"steps while the loss rose to {self.losses[-1]:.3g} (worst layer "
                f"{_worst(names, norms)})",
            )
        self._vanished_checks = self._vanished_checks + 1 if first_norm < self.vanish_floor else 0
        if self._vanished_checks >= self.vanish_patience:
            self._fire(
                "vanishing",
                f"vanishing gradient at step {step}: first layer ({names[first]}) gradient norm "
                f"{first_norm:.3g} < {self.vanish_floor:.3g} for {self.vanish_patience} checks",
            )

    def _fire(self, kind: str, reason: str) -> None:
        raise_diverged(kind, reason, self.trial)


def raise_diverged(kind: str, reason: str, trial: optuna.Trial | None = None) -> None:
    """Store the reason on ``trial`` (two writes, once) and raise :class:`Diverged`."""
    if trial is not None:
        trial.set_user_attr(records.PRUNE_KIND, kind)
        trial.set_user_attr(records.PRUNE_REASON, reason)
    raise Diverged(kind, reason)


def _named_grads(named_parameters: NamedParams) -> tuple[list[str], list[torch.Tensor]]:
    pairs = [(n, p.grad) for n, p in named_parameters if p.grad is not None]
    return [n for n, _ in pairs], [g for _, g in pairs]


def _first_weight_index(grads: list[torch.Tensor]) -> int:
    """The earliest matrix-shaped gradient: the input layer's weight."""
    return next((i for i, g in enumerate(grads) if g.dim() >= 2), 0)


def _last_weight_index(grads: list[torch.Tensor]) -> int:
    """The latest matrix-shaped gradient: the output layer's weight."""
    return max((i for i, g in enumerate(grads) if g.dim() >= 2), default=len(grads) - 1)


def _worst(names: list[str], norms: list[torch.Tensor]) -> str:
    return names[int(torch.stack(norms).nan_to_num(math.inf).argmax())] if norms else "?"


def check_symmetry(model: nn.Module, trial: optuna.Trial | None = None) -> None:
    """Raise :class:`Diverged` (``symmetric``) when a hidden layer's units all have equal weights.

    Such units receive equal gradients and stay equal: the layer acts as one unit. The output
    layer is skipped (a single output unit is legitimately alone).
    """
    weights = [
        (name, p) for name, p in model.named_parameters() if p.dim() >= 2 and "weight" in name
    ]
    for name, weight in weights[:-1]:
        rows = weight.detach().flatten(1)
        if rows.shape[0] > 1 and bool((rows == rows[0]).all()):
            raise_diverged(
                "symmetric",
                f"symmetric weights at step 0: all {rows.shape[0]} units of {name} are "
                f"identical (value {rows[0, 0].item():.3g}), so they can never differ",
                trial,
            )


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

    def _hook(self, name: str):
        def record(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.numel() > 1:
                self.layers.append(name)
                self.output_std.append(records.finite_or_none(output.detach().float().std()))

        return record

    def remove(self) -> dict[str, list]:
        """Detach the hooks and return the record."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return {"layers": self.layers, "output_std": self.output_std}

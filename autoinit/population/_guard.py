"""The default guard rules judged on ``(K,)`` statistics: every member at once."""

from __future__ import annotations

import math
from typing import Any

import torch

from autoinit.monitor import LOSS_BOUND_FACTOR, Stop
from autoinit.population._limits import GuardLimits


class _Guard:
    """The default rules on ``(K,)`` statistics: every member at once, no loop over members.

    Each step gives, per member, the index of the first rule that fires (in the order of
    :func:`~autoinit.monitor.default_rules`), or -1.
    """

    RULES = ("NonFinite", "NonFinite", "LossBound", "GradNormBound", "DepthRatio", "Growth",
             "Vanishing")  # fmt: skip
    KINDS = ("non-finite", "non-finite", "exploding", "exploding", "exploding", "exploding",
             "vanishing")  # fmt: skip

    def __init__(self, limits: GuardLimits, size: int, device: torch.device) -> None:
        self.limits = limits
        self.max_loss = limits.max_loss  # set from the classes at step 0 when None
        self.reference = torch.zeros(size, dtype=torch.float64, device=device)
        self.vanished = torch.zeros(size, dtype=torch.long, device=device)
        self.grown = torch.zeros(size, dtype=torch.long, device=device)  # Growth's checks in a row
        self.first_loss: torch.Tensor | None = None

    def start(self, classes: int | None) -> None:
        if self.max_loss is None and classes is not None:
            self.max_loss = LOSS_BOUND_FACTOR * math.log(max(classes, 2))

    def due(self, step: int) -> bool:
        return step < self.limits.dense_steps or step % self.limits.check_every == 0

    def check(
        self, step: int, loss: torch.Tensor, named_grads: list[tuple[str, torch.Tensor]]
    ) -> tuple[torch.Tensor | None, dict[str, Any]]:
        """Judge one step: the rule index per member (-1: healthy; ``None`` when all are healthy)
        and the statistics the messages need (``stats["total"]``: the gradient norm per member,
        on the steps whose gradients are read)."""
        limits = self.limits
        loss = loss.detach().double()
        if self.first_loss is None:
            self.first_loss = loss.clone()
        stats: dict[str, Any] = {"loss": loss, "names": [n for n, _ in named_grads]}
        false = torch.zeros_like(loss, dtype=torch.bool)
        bound = self.max_loss if self.max_loss is not None else math.inf
        if not (self.due(step) and named_grads):
            rules = [~torch.isfinite(loss), false, loss > bound] + [false] * 4
        else:
            grads = [g for _, g in named_grads]
            norms = _norms(named_grads)  # (parameters, K)
            first = next((i for i, g in enumerate(grads) if g.dim() >= 3), 0)
            last = max((i for i, g in enumerate(grads) if g.dim() >= 3), default=len(grads) - 1)
            total = torch.linalg.vector_norm(norms, dim=0)
            stats.update(norms=norms, total=total, first=first)
            rules = [~torch.isfinite(loss), ~torch.isfinite(total), loss > bound,
                     total > limits.max_grad_norm]  # fmt: skip
            if step == 0:  # per-element (RMS) norms, so that layer sizes cancel
                ratio = (norms[first] / grads[first][0].numel() ** 0.5) / (
                    norms[last] / grads[last][0].numel() ** 0.5
                )
                stats["ratio"] = ratio
                rules.append((norms[last] > 0) & (ratio > limits.max_depth_ratio))
            else:
                rules.append(false)
            if step < limits.reference_steps:
                self.reference = torch.maximum(self.reference, total.clamp_min(1e-12))
                rules.append(false)
            else:
                grew = (total > limits.growth_factor * self.reference) & (loss > self.first_loss)
                self.grown = torch.where(grew, self.grown + 1, 0)
                spaced_out = not self.due(step - 1)  # as Growth: the previous step was not read
                rules.append(self.grown >= (limits.growth_patience if spaced_out else 1))
            self.vanished = torch.where(norms[first] < limits.vanish_floor, self.vanished + 1, 0)
            rules.append(self.vanished >= limits.vanish_patience)
        fired = torch.stack(rules)  # (rules, K)
        if not bool(fired.any()):
            return None, stats
        if "norms" not in stats and named_grads:  # the loss fired between gradient reads
            stats["norms"] = _norms(named_grads)
        return torch.where(fired.any(0), fired.int().argmax(0), -1), stats

    def stop(self, step: int, row: int, code: int, stats: dict[str, Any]) -> Stop:
        """Member ``row``'s stop, worded as the sequential rule words it."""
        limits, names = self.limits, stats["names"]
        loss = float(stats["loss"][row])
        norms = stats.get("norms")
        # The first layer with a non-finite norm, else the largest (StepStats.worst_layer).
        worst = "?" if norms is None else names[int(norms[:, row].nan_to_num(math.inf).argmax())]
        kind = self.KINDS[code]
        if code == 0:
            return Stop(kind, f"non-finite loss at step {step}: {loss}")
        if code == 1:
            return Stop(kind, f"non-finite gradient at step {step} (layer {worst})")
        if code == 2:
            return Stop(kind, f"exploding loss at step {step}: {loss:.3g} > {self.max_loss:.3g} "
                              f"(worst layer {worst})")  # fmt: skip
        total = float(stats["total"][row])
        first = names[stats["first"]]
        if code == 3:
            return Stop(kind, f"exploding gradient at step {step}: norm {total:.3g} > "
                              f"{limits.max_grad_norm:.3g} (worst layer {worst})")  # fmt: skip
        if code == 4:
            return Stop(kind, f"exploding gradient across depth at step 0: the first layer's "
                              f"({first}) gradients are {float(stats['ratio'][row]):.3g}x the "
                              f"output layer's")  # fmt: skip
        if code == 5:
            reference = float(self.reference[row])
            return Stop(
                kind,
                f"exploding gradient at step {step}: norm {total:.3g} grew "
                f"{total / reference:.3g}x over the first {limits.reference_steps} "
                f"steps while the loss rose to {loss:.3g} (worst layer {worst})",
            )
        if code == 6:
            first_norm = float(stats["norms"][stats["first"], row])
            return Stop(kind, f"vanishing gradient at step {step}: first layer ({first}) gradient "
                              f"norm {first_norm:.3g} < {limits.vanish_floor:.3g} for "
                              f"{limits.vanish_patience} checks")  # fmt: skip
        raise ValueError(f"unknown guard rule {code}; valid: 0 to {len(self.RULES) - 1}.")

    def keep(self, rows: torch.Tensor) -> None:
        """Keep the state of ``rows`` only."""
        self.reference, self.vanished = self.reference[rows], self.vanished[rows]
        self.grown = self.grown[rows]
        self.first_loss = self.first_loss[rows] if self.first_loss is not None else None


def _norms(named_grads: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
    """Each parameter's gradient norm per member: ``(parameters, K)``, in float64."""
    return torch.stack(
        [torch.linalg.vector_norm(g.flatten(1), dim=1) for _, g in named_grads]
    ).double()

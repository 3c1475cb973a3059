"""Why a run stops: the :class:`Stop` record, and :class:`Diverged`, the exception for it."""

from __future__ import annotations

import dataclasses

import optuna

from autoinit import records

PRUNER = "pruner"  # the kind of a stop made by the study's learning-curve pruner


@dataclasses.dataclass(frozen=True)
class Stop:
    """Why a run was stopped: ``kind`` is one of :data:`records.PRUNE_KINDS`, ``reason`` a sentence.

    Rules return one; the training loop returns one with the run's partial result.
    """

    kind: str
    reason: str

    def error(self) -> optuna.TrialPruned:
        """The exception for Optuna: :class:`Diverged` for the guard, plain ``TrialPruned`` else."""
        if self.kind == PRUNER:
            return optuna.TrialPruned(self.reason)
        return Diverged(self.kind, self.reason)

    def store(self, trial: optuna.Trial | None) -> None:
        """Write ``prune_kind`` and ``prune_reason`` on ``trial`` (two writes) if there is one."""
        if trial is not None:
            trial.set_user_attr(records.PRUNE_KIND, self.kind)
            trial.set_user_attr(records.PRUNE_REASON, self.reason)


class Diverged(optuna.TrialPruned):
    """A trial stopped by the guard; ``kind`` is one of :data:`records.PRUNE_KINDS`."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason

    @property
    def stop(self) -> Stop:
        return Stop(self.kind, self.reason)


def raise_diverged(kind: str, reason: str, trial: optuna.Trial | None = None) -> None:
    """Store the reason on ``trial`` (two writes, once) and raise :class:`Diverged`."""
    Stop(kind, reason).store(trial)
    raise Diverged(kind, reason)

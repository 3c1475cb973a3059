"""Each member's result, and the ``on_eval`` callback that can stop a member."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import optuna

from autoinit.train import RunResult

OnEval = Callable[[int, int, float, float], bool]
"""``on_eval(member, step, value, metric) -> stop``: called after each evaluation of a member."""


@dataclasses.dataclass
class MemberResult(RunResult):
    """One member's :class:`~autoinit.train.RunResult` (``stop`` says why it stopped, if it did).

    ``seconds`` is the member's share of the group's wall time: each span is split evenly among
    the members that were training during it, so the shares add up to the group's time.
    """

    index: int = 0  # the member's position in ``models``
    engine: str = "vmap"  # "bmm", "vmap" or "sequential"

    @property
    def kind(self) -> str | None:
        """The stop's kind (one of ``records.PRUNE_KINDS``), or None when it ran its budget."""
        return self.stop.kind if self.stop is not None else None

    @property
    def reason(self) -> str | None:
        return self.stop.reason if self.stop is not None else None


def trial_reporter(trials: Sequence[optuna.Trial]) -> OnEval:
    """An ``on_eval`` that reports member ``i`` to ``trials[i]`` and asks its pruner."""

    def on_eval(member: int, step: int, value: float, metric: float) -> bool:
        trials[member].report(value, step)
        return trials[member].should_prune()

    return on_eval

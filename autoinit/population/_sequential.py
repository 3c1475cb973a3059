"""The fallback for members that cannot batch: each trains on its own with ``train.fit``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import cast

import optuna
from torch import nn

from autoinit.monitor import DivergenceGuard
from autoinit.population._limits import GuardLimits, GuardOption
from autoinit.population._results import MemberResult, OnEval
from autoinit.train import Budget, RunResult, TrainingData, fit


class _Reporter:
    """The two methods of ``optuna.Trial`` that ``train.fit`` calls, answered by ``on_eval``."""

    def __init__(self, index: int, on_eval: OnEval) -> None:
        self.index, self.on_eval, self.prune = index, on_eval, False

    def report(self, value: float, step: int) -> None:
        self.prune = bool(self.on_eval(self.index, step, value, math.nan))

    def should_prune(self) -> bool:
        return self.prune


def _sequential_guard(option: GuardOption) -> DivergenceGuard:
    if isinstance(option, GuardLimits):
        return option.guard()
    return DivergenceGuard.from_option(False if option is None else option)


def _train_sequentially(
    models: Sequence[nn.Module],
    data: TrainingData,
    budget: Budget,
    seeds: Sequence[int],
    guard: GuardOption,
    on_eval: OnEval | None,
) -> list[MemberResult]:
    results = []
    for index, (model, seed) in enumerate(zip(models, seeds)):
        # fit calls only report and should_prune, which _Reporter answers: a stand-in trial.
        trial = cast(optuna.Trial, _Reporter(index, on_eval)) if on_eval is not None else None
        result = fit(model, data, budget, seed=seed, guard=_sequential_guard(guard), trial=trial)
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(RunResult)}
        results.append(MemberResult(**fields, index=index, engine="sequential"))
    return results

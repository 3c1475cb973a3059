"""The search loop for ``population > 1``: several trials asked at once and trained together.

:meth:`autoinit._search.SearchRun.optimize` runs this loop instead of ``study.optimize`` when the
search's ``population`` is above 1. Each round asks the sampler for up to ``population`` trials
(TPE's ``constant_liar`` keeps them apart), resolves the duplicates as a trial would
(:func:`~autoinit._search._finished_twin`), groups the rest (the built-in MLP: all of them, since
its batched engine runs each activation on its own members; other models: by activation, since an
initializer only changes the starting weights) and trains each group with
:func:`autoinit.population.train_population`. Every member reports its own validation losses to
its own trial (:func:`~autoinit.population.trial_reporter`), so the study's pruner
judges it as it would judge a trial trained alone; a member the guard or the pruner stops is
removed from the group and told ``PRUNED`` with the stop's kind and reason.

What each trial records is what :class:`~autoinit._search.Objective` records: the host and PID
first, the seed, the run's telemetry and probe; a duplicate of a finished trial reuses its result.
The study-wide budget holds as in :func:`autoinit.workers.optimize_here`: the study is recounted
before every ask (finished and running trials of every process), so a round never asks for more
trials than the study has left.

A group whose members cannot be batched (see :func:`autoinit.population.can_batch`) trains member
by member, after one warning. With the same configs in the same order, a population search gives
the results of a sequential one within float tolerance, pruning included when a round
trains as one group (the MLP's rounds, or a round of one activation): the successive-halving
pruner then sees the same values at each rung; across groups a later group's trial is compared
with fewer of its round's trials.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import TrialState

from autoinit import records
from autoinit import study as studies
from autoinit.errors import ConfigError
from autoinit.population import one_bmm_structure, train_population, trial_reporter
from autoinit.space import Config, suggest
from autoinit.train import RunResult

if TYPE_CHECKING:
    import torch

    from autoinit._search import Objective

AUTO = "auto"
# Measured (benchmarks/README.md, issue 13): in the search's CPU time, 4 gained as much as 8 on
# configs of few activations (1.92x, 1.85x with the fused optimizer) and lost less in a free TPE
# search (0.90x, 0.86x: one trial at a time is faster there, so the default stays 1).
AUTO_SIZE = 4


def resolve_population(population: int | str, n_trials: int) -> int:
    """The group size: ``population`` itself, or for ``"auto"`` :data:`AUTO_SIZE` (at most
    ``n_trials``)."""
    if population == AUTO:
        return max(1, min(AUTO_SIZE, n_trials))
    if isinstance(population, bool) or not isinstance(population, int) or population < 1:
        raise ConfigError(
            f"population must be a positive integer or 'auto' but got {population!r}."
        )
    return population


def optimize_population(
    study: optuna.Study,
    objective: Objective,
    n_trials: int,
    timeout: float | None,
    callbacks: Sequence[Callable],
    size: int,
) -> None:
    """Run rounds of up to ``size`` trials until the study holds ``n_trials`` taken trials.

    ``callbacks`` are called after each trial, as ``study.optimize`` calls them (one may call
    ``study.stop()``: the loop ends after the round). An error fails the round's unfinished
    trials and is raised, as ``study.optimize`` does for one trial.
    """
    started = time.monotonic()
    study._stop_flag = False
    study._thread_local.in_optimize_loop = True  # study.stop() works from a callback
    try:
        while not study._stop_flag:
            if timeout is not None and time.monotonic() - started >= timeout:
                break
            if studies.taken_trials(study) >= n_trials:
                break
            _round(study, objective, n_trials, size, callbacks)
    finally:
        study._thread_local.in_optimize_loop = False


class _Member:
    """One asked trial of a round and what became of it."""

    def __init__(self, trial: optuna.Trial, config: Config) -> None:
        self.trial, self.config = trial, config
        self.model: torch.nn.Module | None = None
        self.probe: dict[str, Any] = {}
        self.result: RunResult | None = None


def _round(
    study: optuna.Study, objective: Objective, n_trials: int, size: int,
    callbacks: Sequence[Callable],
) -> None:  # fmt: skip
    if is_heartbeat_enabled(study._storage):  # what study.optimize does before each trial
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    trials = [study.ask()]
    # Recounted before each ask: an asked trial runs, so it is taken at once, for every process
    # on the storage; other processes asking now can overshoot only as with one trial each.
    while len(trials) < size and studies.taken_trials(study) < n_trials:
        trials.append(study.ask())
    open_trials = {trial.number: trial for trial in trials}
    try:
        with contextlib.ExitStack() as beats:
            for trial in trials:
                beat = get_heartbeat_thread(trial._trial_id, study._storage)
                beats.enter_context(beat)  # type: ignore[arg-type]  # a context manager, untyped
            for frozen in _run(study, objective, trials, open_trials):
                for callback in callbacks:
                    callback(study, frozen)
    except BaseException:
        for trial in open_trials.values():  # as study.optimize fails a trial that raised
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise


def _run(study, objective, trials, open_trials):  # type: ignore[no-untyped-def]
    """Yield each trial of the round, frozen, as it is told."""
    from autoinit._search import _finished_twin, _repeat, _set_user_attrs

    def tell(member_trial: optuna.Trial, value: float | None, state: TrialState):
        del open_trials[member_trial.number]
        return study.tell(member_trial, value, state=state)

    def repeat(trial: optuna.Trial, twin: optuna.trial.FrozenTrial):
        try:
            return tell(trial, _repeat(trial, twin), TrialState.COMPLETE)
        except optuna.TrialPruned:
            return tell(trial, None, TrialState.PRUNED)

    members: list[_Member] = []
    later: list[optuna.Trial] = []  # same params as an earlier trial of this round
    for trial in trials:
        _set_user_attrs(trial, studies.this_process())  # first: a dead process's trial is known
        config = suggest(trial, objective.inits, objective.activations)
        twin = _finished_twin(trial)
        if twin is not None:
            yield repeat(trial, twin)
        elif any(m.config == config for m in members):
            later.append(trial)
        else:
            trial.set_user_attr(records.SEED, objective.seed)
            members.append(_Member(trial, config))
    for member in members:  # built in trial order, as the sequential search builds them
        model, member.probe, stop = objective.start(
            member.config, objective.seed, guard=objective.guard, screen=objective.prescreen
        )  # fmt: skip
        if stop is not None:
            member.result = RunResult.unstarted(objective.data.metric_name, stop)
        else:
            member.model = model
    for group in _groups([m for m in members if m.model is not None]):
        results = train_population(
            [m.model for m in group], objective.data, objective.budget, seeds=objective.seed,
            guard=False if objective.guard is None else objective.guard,
            on_eval=trial_reporter([m.trial for m in group]),
            engine="auto" if len(group) > 1 else "sequential",  # one member: train.fit
        )  # fmt: skip
        for member, result in zip(group, results):
            member.result, member.model = result, None
    for member in members:
        result = member.result
        assert result is not None
        attrs = result.telemetry()  # a stopped run's too, with its reason
        if member.probe:
            attrs[records.PROBE] = member.probe
        _set_user_attrs(member.trial, attrs)
        if result.stop is not None:
            yield tell(member.trial, None, TrialState.PRUNED)
        else:
            yield tell(member.trial, result.value, TrialState.COMPLETE)
    for trial in later:  # its twin has finished now: reuse it, or train it alone if pruned
        twin = _finished_twin(trial)
        if twin is not None:
            yield repeat(trial, twin)
        else:
            yield _alone(study, objective, trial, tell)


def _alone(study, objective, trial, tell):  # type: ignore[no-untyped-def]
    """A trial trained by itself, through the objective, as ``study.optimize`` would."""
    try:
        value = objective(trial)
    except optuna.TrialPruned:
        return tell(trial, None, TrialState.PRUNED)
    return tell(trial, value, TrialState.COMPLETE)


def _groups(members: list[_Member]) -> list[list[_Member]]:
    """All members in one group, ordered by activation, when they differ only in activations on
    the ``bmm`` engine (the built-in MLP); else members of one activation (and slope) together,
    in order of their first member."""
    if one_bmm_structure([m.model for m in members if m.model is not None]):
        return [sorted(members, key=lambda m: m.config.activation_key)]
    groups: dict[tuple[str, float], list[_Member]] = {}
    for member in members:
        groups.setdefault(member.config.activation_key, []).append(member)
    return list(groups.values())

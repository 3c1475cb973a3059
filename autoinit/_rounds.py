"""The confirmation's training: its rounds batched, on every core, the likely runs ahead.

A round of the race trains (config, seed) runs, batched
(:func:`autoinit.population.train_population`), and on a CPU with several cores in forked
children (:mod:`autoinit.workers`).

With several processes the race trains *parts*: the seeds of one config in one round, as one
batched model, each in a child, a new one started as soon as a child is free. A part is
computed the same way whichever process trains it and whenever, so the race's numbers do not
depend on the number of cores or on timing. With one process a round trains as one batched
model (the fastest there; the same up to float rounding).

PyTorch's default is in every race, whatever the search finds, and the search's best configs
so far are likely to be, so their parts can train before the search ends: :class:`Ahead` forks
them onto the cores that the search (one trial at a time) leaves idle, and the race takes their
outcomes instead of training them again.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna

from autoinit import records
from autoinit.population import train_population
from autoinit.space import Config
from autoinit.workers import Forked, wait_any

if TYPE_CHECKING:
    from autoinit._search import Objective
    from autoinit.train import RunResult

Outcome = tuple[float, float | None, str | None]  # a run's loss (inf: diverged), metric, stop
Part = tuple[Config, tuple[int, ...]]  # one config's seeds, trained as one batched model


def outcome_of(result: RunResult) -> Outcome:
    """A run's :data:`Outcome`; a run the guard stopped counts as inf."""
    if result.stop is not None:
        return math.inf, None, result.stop.reason
    if not math.isfinite(result.value):
        return math.inf, None, "non-finite validation loss"
    return result.value, records.finite_or_none(result.metric), None


def train_together(
    objective: Objective, runs: Sequence[tuple[Config, int]], guard: Any
) -> list[Outcome]:
    """Each (config, seed) run, trained as one batched model where they can be (each member
    with its seed's weights and batch order); models that cannot batch train one after
    another, without the population's warning: nothing is lost but the speed-up."""
    # Members of one activation side by side: the batched model runs each activation on one
    # slice of rows instead of gathering them (see ``population._stack._Elementwise``).
    order = sorted(range(len(runs)), key=lambda i: runs[i][0].activation_key)
    started = {i: objective.start(*runs[i], guard=guard) for i in order}
    outcomes: dict[int, Outcome] = {i: (math.inf, None, stop.reason)
                                    for i, (_, _, stop) in started.items() if stop is not None}
    ready = [i for i in order if i not in outcomes]
    if ready:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"the \d+ members train one after another")
            trained = train_population([started[i][0] for i in ready], objective.data,
                                       objective.budget, seeds=[runs[i][1] for i in ready],
                                       guard=guard)  # fmt: skip
        outcomes.update((i, outcome_of(result)) for i, result in zip(ready, trained))
    return [outcomes[i] for i in range(len(runs))]


def parts_of(runs: Sequence[tuple[Config, int]]) -> list[Part]:
    """A round's parts: each config's seeds, configs in the order they first come."""
    seeds: dict[Config, list[int]] = {}
    for config, seed in runs:
        seeds.setdefault(config, []).append(seed)
    return [(config, tuple(sorted(s))) for config, s in seeds.items()]


def train_parts(objective: Objective, parts: Sequence[Part], guard: Any) -> list[list[Outcome]]:
    """Each part trained as one batched model, one after another."""
    return [train_together(objective, [(c, s) for s in seeds], guard) for c, seeds in parts]


class Ahead:
    """The race's parts, trained in forked children: while the search runs, for the race to
    take (:meth:`want`), and in the race's rounds (:meth:`train_round`).

    At most ``jobs`` children train at once, one part each. A config trained ahead trains all
    its seeds as one part (:meth:`part_of`), which batches them all (3 seeds cost about 1.6
    trainings, against 2.35 for the race's 2 then 1); a config that leaves the race after
    two seeds wastes its third, on a core that was idle. :meth:`after_trial` (an Optuna
    callback) collects the finished parts and starts the next, and asks for the best configs
    so far besides the default: k - 1 of the ``top_k`` that would enter the race if the search
    ended now, at most k - 1 configs in all. A part the race does not take (the config fell
    out of the top k, left the race, or the race ended early) only cost a core that was idle.
    """

    def __init__(
        self, objective: Objective, seeds: Sequence[int], top_k: int, jobs: int, threads: int
    ) -> None:
        self._objective, self._seeds, self._top_k = objective, tuple(seeds), top_k
        self._jobs, self._threads = jobs, threads
        self._queue: list[Part] = []
        self._running: dict[Part, Forked[list[list[Outcome]]]] = {}
        self._done: dict[Part, list[Outcome]] = {}
        self._pinned: set[Config] = set()  # always wanted (the default)
        self._guessed: set[Config] = set()  # the search's best so far, ever asked for

    def part_of(self, config: Config, seeds: Sequence[int]) -> Part:
        """The part that trains ``config`` on ``seeds``: a config ever asked for ahead trains
        all its seeds at once, whenever and wherever it trains, so that its numbers do not
        depend on timing; any other trains the seeds of its round."""
        whole = config in self._pinned or config in self._guessed
        return config, self._seeds if whole else tuple(seeds)

    def want(self, configs: Sequence[Config], pin: bool = True) -> None:
        """Queue the parts of ``configs`` (unless queued, running or done) and start what fits;
        ``pin``: they stay queued whatever the search finds (the default)."""
        if pin:
            self._pinned.update(configs)
        for config in configs:
            part = self.part_of(config, self._seeds)
            if part not in self and part not in self._queue:
                self._queue.append(part)
        self._collect_finished()
        self._start_queued()

    def train_round(
        self, parts: Sequence[Part], spare: Sequence[Part], jobs: int
    ) -> dict[Part, list[Outcome]]:
        """A round of the race: its ``parts`` that were not trained ahead, on up to ``jobs``
        children at once, each started as soon as one is free (none waits for the slowest of a
        fixed share); a child the round leaves free trains one of the ``spare`` parts (a later
        round's), which goes on after the round for the next one to take."""
        self._jobs = jobs
        self._queue = [part for part in dict.fromkeys([*parts, *spare]) if part not in self]
        while True:
            self._collect_finished()
            if all(part in self._done for part in parts):
                return {part: self._done[part] for part in parts}
            self._start_queued()
            wait_any(self._running.values())

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from autoinit._recommend import top_configs

        if not self._jobs:
            return
        # The last of the top k is the likeliest to be pushed out by the end; and at most k - 1
        # configs are ever guessed, so that a search whose leaders keep changing (short trials,
        # small data) wastes at most their runs. The default, trained anyway, takes no guess.
        room = max(self._top_k - 1, 1)
        leaders = [c for c in top_configs(study, self._top_k) if c not in self._pinned][:room]
        for config in leaders:
            if len(self._guessed) < room:
                self._guessed.add(config)
        configs = [c for c in leaders if c in self._guessed]
        keep = set(configs) | self._pinned
        self._queue = [part for part in self._queue if part[0] in keep]  # not yet started
        self.want(configs, pin=False)

    def __contains__(self, part: Part) -> bool:
        return part in self._done or part in self._running

    def take(self, part: Part) -> list[Outcome]:
        """The part's outcomes, waiting for its child if it is still training."""
        if part in self._running:
            self._done[part] = self._running.pop(part).result()[0]
        return self._done[part]

    def keep_only(self, configs: Sequence[Config]) -> None:
        """Forget the queue and kill the children that train other configs than ``configs``."""
        self._queue.clear()
        for part in [p for p in self._running if p[0] not in configs]:
            self._running.pop(part).kill()

    def close(self) -> None:
        self._queue.clear()
        for child in self._running.values():
            child.kill()
        self._running.clear()

    def _start_queued(self) -> None:
        while self._queue and len(self._running) < self._jobs:
            part = self._queue.pop(0)
            task = functools.partial(train_parts, self._objective, [part],
                                     self._objective.guard or {})  # fmt: skip
            self._running[part] = Forked(task, self._threads)

    def _collect_finished(self) -> None:
        for part in [p for p, child in self._running.items() if child.finished()]:
            self.take(part)

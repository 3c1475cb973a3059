"""The confirmation's training: its rounds batched, shared among cores, the default's ahead.

A round of the race trains (config, seed) runs, batched
(:func:`autoinit.population.train_population`), and on a CPU with several cores in forked
children (:mod:`autoinit.workers`).

PyTorch's default is in every race, whatever the search finds, and the search's best configs
so far are likely to be, so their runs can train before the search ends: :class:`Ahead` forks
them onto the cores that the search (one trial at a time) leaves idle, and the race takes their
outcomes instead of training them again.

With several processes the race trains *parts*: the seeds of one config in one round, as one
batched model. A part is computed the same way whichever process trains it, and whether it was
trained ahead or in its round, so the race's numbers do not depend on the number of cores or
on timing. With one process a round trains as one batched model (the fastest there; the same up
to float rounding).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import optuna
import torch

from autoinit import records
from autoinit.population import train_population
from autoinit.space import Config
from autoinit.workers import Forked, in_processes

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


def shares(items: Sequence[Any], count: int) -> list[list[Any]]:
    """``items`` cut into up to ``count`` contiguous shares whose sizes differ by at most one."""
    count = max(min(count, len(items)), 1)
    size, extra = divmod(len(items), count)
    bounds = [0]
    for index in range(count):
        bounds.append(bounds[-1] + size + (index < extra))
    return [list(items[start:end]) for start, end in zip(bounds, bounds[1:])]


def train_shared(
    objective: Objective, parts: Sequence[Part], guard: Any, jobs: int
) -> list[list[Outcome]]:
    """:func:`train_parts` with the parts shared out among ``jobs`` processes."""
    tasks = [functools.partial(train_parts, objective, share, guard)
             for share in shares(parts, jobs)]  # fmt: skip
    return [got for share in in_processes(tasks, torch.get_num_threads()) for got in share]


def race_parts(config: Config, seeds: Sequence[int], race: bool) -> list[Part]:
    """Every part a config gets if it stays in the race to the end (:func:`_recommend._race`):
    its first two seeds (every seed without the race), then one seed a round."""
    first = 2 if race else len(seeds)
    return [(config, tuple(seeds[:first])), *((config, (s,)) for s in seeds[first:])]


class Ahead:
    """Parts of the race trained in forked children while the search runs, for the race to take.

    At most ``jobs`` children train at once, one part each (:meth:`want`); :meth:`after_trial`
    (an Optuna callback) collects the finished ones and starts the next, and asks for the parts
    of the best configs so far: the top k - 1 of the ``top_k`` that would enter the race if
    the search ended now, at most k - 1 configs in all. A part the race does not take (the
    config fell out of the top k, left the race, or the race ended early) only cost a core that
    was idle.
    """

    def __init__(
        self, objective: Objective, seeds: Sequence[int], race: bool, top_k: int, jobs: int,
        threads: int,
    ) -> None:  # fmt: skip
        self._objective, self._seeds, self._race, self._top_k = objective, seeds, race, top_k
        self._jobs, self._threads = jobs, threads
        self._queue: list[Part] = []
        self._running: dict[Part, Forked[list[list[Outcome]]]] = {}
        self._done: dict[Part, list[Outcome]] = {}
        self._pinned: set[Config] = set()  # always wanted (the default)
        self._guessed: set[Config] = set()  # the search's best so far, ever asked for

    def want(self, parts: Sequence[Part], pin: bool = True) -> None:
        """Queue ``parts`` (those not already queued, running or done) and start what fits;
        ``pin``: their configs stay queued whatever the search finds (the default's).

        The queue runs by round: a first round's part (the first two seeds) before a later
        round's (one seed), since every config in the race trains its first round.
        """
        for part in parts:
            if part not in self and part not in self._queue:
                self._queue.append(part)
            if pin:
                self._pinned.add(part[0])
        self._queue.sort(key=lambda part: part[1][0] != self._seeds[0])  # stable
        self._collect_finished()
        while self._queue and len(self._running) < self._jobs:
            part = self._queue.pop(0)
            task = functools.partial(train_parts, self._objective, [part],
                                     self._objective.guard or {})  # fmt: skip
            self._running[part] = Forked(task, self._threads)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from autoinit._recommend import top_configs

        if not self._jobs:
            return
        # The last of the top k is the likeliest to be pushed out by the end; and at most k - 1
        # configs are ever guessed, so that a search whose leaders keep changing (short trials,
        # small data) wastes at most their runs.
        room = max(self._top_k - 1, 1)
        configs = [c for c in top_configs(study, room)
                   if c in self._guessed or len(self._guessed) < room]  # fmt: skip
        self._guessed.update(configs)
        keep = set(configs) | self._pinned
        self._queue = [part for part in self._queue if part[0] in keep]  # not yet started
        self.want([p for c in configs for p in race_parts(c, self._seeds, self._race)], pin=False)

    def __contains__(self, part: Part) -> bool:
        return part in self._done or part in self._running

    def take(self, part: Part) -> list[Outcome]:
        """The part's outcomes, waiting for its child if it is still training."""
        if part in self._running:
            self._done[part] = self._running.pop(part).result()[0]
        return self._done[part]

    def put(self, done: Iterable[tuple[Part, list[Outcome]]]) -> None:
        """Keep parts trained elsewhere (a race's spare processes) for the race to take."""
        self._done.update(done)

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

    def _collect_finished(self) -> None:
        for part in [p for p, child in self._running.items() if child.finished()]:
            self.take(part)

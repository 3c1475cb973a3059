"""Every option of a search as one frozen value, checked in one place.

``search()`` and ``recommend()`` spell their keyword arguments out (so IDEs and ``help()`` show
them) and turn them into a :class:`SearchOptions` at once; the CLI builds one directly. After
that the options travel as this value, never as ``**kwargs``, so a typo fails at construction
and a worker process receives exactly what the parent checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import optuna
import torch

from autoinit.errors import ConfigError
from autoinit.monitor import GuardOption

MAX_SEED = 2**31 - 1 - 1000 * 64  # workers offset the sampler's seed by 1000 each
# Trials train on a stratified subsample of this many training rows when there are more; the
# confirmation trains on all of them. Set by measurement: benchmarks/README.md, "cost".
DEFAULT_SEARCH_ROWS = 20_000


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer but got {value!r}.")


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """The options of :func:`autoinit.search` (see its docstring for each one's meaning).

    The per-trial budget (``epochs``, ``max_steps``, ``trial_time_limit``, ``batch_size``,
    ``optimizer``, ``lr``) is checked by :class:`autoinit.train.Budget` and the search space by
    :func:`autoinit.space.resolve_space`, both when the search is prepared.
    """

    n_trials: int = 50
    timeout: float | None = None
    epochs: int | None = 10
    max_steps: int | None = None
    trial_time_limit: float | None = None
    batch_size: int | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    inits: tuple[str, ...] | None = None
    activations: tuple[str, ...] | None = None
    loss_fn: Callable | None = None
    task: str | None = None
    storage: str | optuna.storages.BaseStorage | None = None
    study_name: str | None = None
    sampler: optuna.samplers.BaseSampler | None = None
    pruner: optuna.pruners.BasePruner | None = None
    guard: GuardOption = True
    seed: int = 0
    device: str | torch.device = "auto"
    n_jobs: int = 1
    threads: int | None = None
    val_fraction: float = 0.2
    callbacks: tuple[Callable, ...] = ()
    # True: each trial probes itself and a collapse stops it at 0 steps; "space": also the
    # whole space up front, its collapsed configs added as trials (fewer trials trained)
    prescreen: bool | str = True
    population: int | str = 1  # trials trained together as one batched model; "auto": 4
    search_rows: int | None = DEFAULT_SEARCH_ROWS  # None: search on every training row

    def __post_init__(self) -> None:
        _positive_int("n_trials", self.n_trials)
        _positive_int("n_jobs", self.n_jobs)
        if self.threads is not None:
            _positive_int("threads", self.threads)
        if not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be an integer in [0, {MAX_SEED}] but got {self.seed!r}.")
        if not isinstance(self.prescreen, bool) and self.prescreen != "space":
            raise ConfigError(f"prescreen must be True, False or 'space' but got "
                              f"{self.prescreen!r}.")  # fmt: skip
        if self.population != "auto":
            if not isinstance(self.population, int) or isinstance(self.population, bool) or (
                    self.population < 1):  # fmt: skip
                raise ConfigError(f"population must be a positive integer or 'auto' but got "
                                  f"{self.population!r}.")  # fmt: skip
            if self.population > 1 and self.n_jobs > 1:
                raise ConfigError(f"population={self.population} trains in one process; use "
                                  "n_jobs=1 with it, or population=1 with n_jobs.")  # fmt: skip
        if self.search_rows is not None:
            _positive_int("search_rows", self.search_rows)
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"timeout must be positive seconds but got {self.timeout!r}.")
        for name in ("inits", "activations", "callbacks"):  # lists become tuples: frozen, hashable
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                if isinstance(value, str):
                    raise ConfigError(
                        f"{name} must be a list of names but got the string {value!r}."
                    )
                object.__setattr__(self, name, tuple(value))

"""``search()``: the one core path that the CLI, the Python API and the benchmarks all take.

:func:`prepare_search` checks every option and opens (or resumes) the study, training nothing;
:meth:`SearchRun.optimize` runs the trials, here or in worker processes (:mod:`autoinit.workers`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
import torch

from autoinit import __version__, records
from autoinit import study as studies
from autoinit._apply import ModelFn, build
from autoinit._probe import fixed_batch, prescreen_study, trial_probe
from autoinit.monitor import DivergenceGuard, Rule, Stop, symmetry_stop
from autoinit.options import DEFAULT_SEARCH_ROWS, GuardOption, SearchOptions
from autoinit.population_search import optimize_population, resolve_population
from autoinit.space import Config, baselines, resolve_space, suggest
from autoinit.train import Budget, DataLike, RunResult, TrainingData, fit, prepare_data
from autoinit.workers import (
    check_workers_possible,
    optimize_here,
    optimize_in_workers,
    resolve_device,
    torch_threads,
)


@dataclasses.dataclass
class Objective:
    """One trial: suggest a config, build and initialise the model, train it under the guard.

    Picklable (for worker processes) when ``model_fn`` and the data are.
    """

    model_fn: ModelFn
    data: TrainingData
    budget: Budget
    inits: tuple[str, ...]
    activations: tuple[str, ...]
    seed: int
    # DivergenceGuard options (a dict) or rules (a list); None turns the guard off
    guard: Mapping[str, Any] | Sequence[Rule] | None
    # the fixed training batch (CPU): every trial's step-0 probe and data-dependent init use it
    batch: tuple[torch.Tensor, torch.Tensor] | None = None
    prescreen: bool = False  # stop a search trial whose probe collapses, at 0 steps

    def __call__(self, trial: optuna.Trial) -> float:
        _set_user_attrs(trial, studies.this_process())  # first: a dead worker's trial is known
        config = suggest(trial, self.inits, self.activations)
        duplicate = _finished_twin(trial)
        if duplicate is not None:
            return _repeat(trial, duplicate)
        trial.set_user_attr(records.SEED, self.seed)
        result = self.attempt(config, self.seed, guard=self.guard, trial=trial,
                              screen=self.prescreen)  # fmt: skip
        attrs = result.telemetry()  # a stopped run's too, with its reason
        if result.probe:  # the step-0 probe, also of a run stopped before its first step
            attrs[records.PROBE] = result.probe
        _set_user_attrs(trial, attrs)
        result.raise_if_stopped()
        return result.value

    def train(
        self,
        config: Config,
        seed: int,
        *,
        guard: Mapping[str, Any] | Sequence[Rule] | None,
    ) -> RunResult:
        """:meth:`attempt` outside a trial (the confirmation), raising ``optuna.TrialPruned``
        (``Diverged`` for the guard) when the run is stopped."""
        result = self.attempt(config, seed, guard=guard)
        result.raise_if_stopped()
        return result

    def attempt(
        self,
        config: Config,
        seed: int,
        *,
        guard: Mapping[str, Any] | Sequence[Rule] | None,
        trial: optuna.Trial | None = None,
        screen: bool = False,
    ) -> RunResult:
        """Build ``config``'s model and train it once; a stopped run returns its partial result.

        ``guard=None`` turns the guard off: no symmetry check, and only non-finite losses stop.
        With the fixed batch, the step-0 probe goes into ``result.probe``; with ``screen``, a
        collapsed probe stops the run before its first step (``prescreen``).
        """
        model, probe, stop = self.start(config, seed, guard=guard, screen=screen)
        if stop is not None:
            result = RunResult.unstarted(self.data.metric_name, stop)
        else:
            monitor = DivergenceGuard.from_option(False if guard is None else guard)
            result = fit(model, self.data, self.budget, seed=seed, guard=monitor, trial=trial)
        result.probe = probe or result.probe
        return result

    def start(
        self,
        config: Config,
        seed: int,
        *,
        guard: Mapping[str, Any] | Sequence[Rule] | None,
        screen: bool = False,
    ) -> tuple[torch.nn.Module, dict[str, Any], Stop | None]:
        """``config``'s model, built and initialised on the device, untrained; its step-0 probe
        (empty without the fixed batch); and why it must not train (symmetry, the pre-screen
        with ``screen``), or None. :meth:`attempt` and the population search both start here."""
        inputs = None if self.batch is None else self.batch[0]
        model = build(self.model_fn, config, seed=seed, batch=inputs).to(self.data.device)
        probe, verdict = ({}, None) if self.batch is None else trial_probe(
            model, self.batch, self.data.loss_fn)  # fmt: skip
        stop = symmetry_stop(model) if guard is not None else None
        return model, probe, stop or (verdict if screen else None)

    def with_data(self, data: TrainingData) -> Objective:
        """The same objective on other data (the confirmation's: every training row)."""
        return dataclasses.replace(self, data=data)


def _set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Write the trial's telemetry, once, at its end (never inside the training loop)."""
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _finished_twin(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    """An earlier trial with the same params whose result is deterministic to reuse.

    Every search trial trains with the study's seed, so the same config gives the same result:
    a complete twin's value, or a divergence twin's reason, is reused instead of retrained.
    Twins pruned by the study's pruner are retrained, since that verdict depends on the others.
    """
    for other in trial.study.get_trials(deepcopy=False, states=studies.COUNTED_STATES):
        if other.params == trial.params and other.number != trial.number:
            if records.prune_kind(other) == "pruner":  # Optuna stores its last value: ignore
                continue
            return other
    return None


def _repeat(trial: optuna.Trial, twin: optuna.trial.FrozenTrial) -> float:
    trial.set_user_attr(records.TRIAL_DUPLICATE_OF, twin.number)
    for key in (records.SEED, records.STEPS, records.METRIC_NAME, records.METRIC):
        if key in twin.user_attrs:
            trial.set_user_attr(key, twin.user_attrs[key])
    if twin.state == optuna.trial.TrialState.PRUNED:
        kind = twin.user_attrs.get(records.PRUNE_KIND, "pruner")
        reason = f"same config as trial {twin.number}: {twin.user_attrs.get(records.PRUNE_REASON)}"
        trial.set_user_attr(records.PRUNE_KIND, kind)
        trial.set_user_attr(records.PRUNE_REASON, reason)
        raise optuna.TrialPruned(reason)
    return records.loss_of(twin)


def search(
    model_fn: ModelFn,
    train_loader: DataLike,
    val_loader: DataLike | None = None,
    *,
    n_trials: int = 50,
    timeout: float | None = None,
    epochs: int | None = 10,
    max_steps: int | None = None,
    trial_time_limit: float | None = None,
    batch_size: int | None = None,
    optimizer: str = "adam",
    lr: float = 1e-3,
    inits: Sequence[str] | None = None,
    activations: Sequence[str] | None = None,
    loss_fn: Callable | None = None,
    task: str | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    guard: GuardOption = True,
    seed: int = 0,
    device: str | torch.device = "auto",
    n_jobs: int = 1,
    threads: int | None = None,
    val_fraction: float = 0.2,
    callbacks: Sequence[Callable] = (),
    prescreen: bool | str = True,
    population: int | str = 1,
    search_rows: int | None = DEFAULT_SEARCH_ROWS,
) -> optuna.Study:
    """Search initializers x activations for ``model_fn`` on the data; return the Optuna study.

    Args:
        model_fn: makes a fresh model: a class, function or lambda. If it has an ``activation``
            argument it receives the activation as a zero-argument factory (like ``nn.ReLU``);
            otherwise the model's activation modules are swapped.
        train_loader: a DataLoader, a TensorDataset or an ``(inputs, targets)`` tuple.
        val_loader: the same kinds; default: ``val_fraction`` split off the training data.
        n_trials: the study's total of finished trials, shared by every process on the
            storage; a rerun resumes up to it.
        timeout: this process stops starting trials after this many seconds.
        epochs, max_steps, trial_time_limit: each trial's budget (the first reached stops it).
        batch_size, optimizer, lr: how each trial trains (``"adam"``, ``"adamw"`` or ``"sgd"``).
        inits, activations: narrow the space (names or aliases; default: everything).
        loss_fn, task: default from the targets: integers mean classification with
            cross-entropy, floats mean regression with MSE.
        storage: an Optuna storage or URL; default ``sqlite:///studies/autoinit.db``.
        study_name: default: derived from the model and a hash of the data.
        sampler, pruner: default: seeded multivariate TPE; successive halving over epochs
            (:func:`autoinit.study.default_pruner`; the median rule when epochs are short).
        guard: True for the divergence guard's default rules; a dict of
            :class:`DivergenceGuard` options; or a list of rules. False keeps only
            :class:`~autoinit.monitor.NonFinite` (and skips the symmetry check).
        seed: seeds the sampler and every trial (all search trials share it, so they differ
            only by their config).
        device: "auto" (CUDA if present), "cpu" or "cuda"; the data moves there once.
        n_jobs: worker processes on one storage (each with ``threads`` torch threads).
        threads: torch threads per worker; default 1 on the CPU.
        val_fraction: the share split off for validation when no ``val_loader`` is given.
        callbacks: Optuna callbacks, called in this process after each of its trials.
        prescreen: each trial probes its model at step 0 (one forward and backward pass on
            one fixed training batch) and a collapsed probe stops it at 0 steps (kind
            ``prescreen``). ``"space"``: also probe every config of the space before any
            training, add the collapsed as pruned trials (they count toward ``n_trials``, so
            fewer trials train) and queue the best probed after the baselines. False: train
            every config.
        population: trials trained together as one batched model: each round asks the
            sampler for this many trials and trains those of one activation as one model
            (:mod:`autoinit.population_search`). ``"auto"``: 4, or 1 with ``n_jobs > 1``;
            1: one trial at a time. A number above 1 needs ``n_jobs=1``.
        search_rows: trials train on a stratified subsample of this many training rows when
            there are more (the confirmation trains on all of them); None: every row.

    Returns:
        The ``optuna.Study``, stored in ``storage``.
    """
    options = SearchOptions(
        n_trials=n_trials, timeout=timeout, epochs=epochs, max_steps=max_steps,
        trial_time_limit=trial_time_limit, batch_size=batch_size, optimizer=optimizer, lr=lr,
        inits=tuple(inits) if inits is not None else None,
        activations=tuple(activations) if activations is not None else None,
        loss_fn=loss_fn, task=task, storage=storage, study_name=study_name, sampler=sampler,
        pruner=pruner, guard=guard, seed=seed, device=device, n_jobs=n_jobs, threads=threads,
        val_fraction=val_fraction, callbacks=tuple(callbacks), prescreen=prescreen,
        population=population, search_rows=search_rows,
    )  # fmt: skip
    return prepare_search(model_fn, train_loader, val_loader, options).optimize().study


@dataclasses.dataclass
class SearchRun:
    """A search made ready (study opened or resumed, baselines queued) or run.

    ``objective`` trains on every training row: the confirmation retrains with it.
    ``search_objective`` is the trials' (a stratified subsample of ``search_rows`` rows when
    there are more; None: ``objective``).
    """

    study: optuna.Study
    objective: Objective
    options: SearchOptions
    device: torch.device
    search_objective: Objective | None = None

    def optimize(self, callbacks: Sequence[Callable] = ()) -> SearchRun:
        """Run trials until the study holds ``n_trials`` finished ones (or the timeout)."""
        o = self.options
        every = [*o.callbacks, *callbacks]
        objective = self.search_objective or self.objective
        size = resolve_population(o.population, o.n_trials) if o.n_jobs == 1 else 1
        with torch_threads(o.threads, self.device):
            if size > 1:
                optimize_population(self.study, objective, o.n_trials, o.timeout, every, size)
            elif o.n_jobs == 1:
                optimize_here(self.study, objective, o.n_trials, o.timeout, every)
            else:
                optimize_in_workers(self.study, objective, o, every)
        _save_for_dashboard(self.study)
        return self


def _save_for_dashboard(study: optuna.Study) -> None:
    """Put the summary note and the heatmap where optuna-dashboard shows them (if installed)."""
    from autoinit.dashboard import save_to_dashboard

    save_to_dashboard(study)


def prepare_search(
    model_fn: ModelFn,
    train_loader: DataLike,
    val_loader: DataLike | None,
    options: SearchOptions,
    *,
    data_info: Mapping[str, Any] | None = None,
) -> SearchRun:
    """Check everything, open (or resume) the study and queue the baselines; train nothing.

    Every user error surfaces here, before any trial runs: bad options, bad data, a study
    made on other data. ``data_info`` describes the data for the study (the CLI's file name
    and hash, which then is the data's fingerprint).
    """
    o = options
    device = resolve_device(o.device)
    budget = Budget(o.epochs, o.max_steps, o.trial_time_limit, o.batch_size, o.optimizer, o.lr)
    inits, activations = resolve_space(o.inits, o.activations)
    data = prepare_data(
        train_loader, val_loader, task=o.task, loss_fn=o.loss_fn, batch_size=o.batch_size,
        val_fraction=o.val_fraction, seed=o.seed, device=device,
    )  # fmt: skip
    guard = None if o.guard is False else ({} if o.guard is True else o.guard)
    DivergenceGuard.from_option(o.guard)  # check the options or rules now, not in a trial
    if o.n_jobs > 1:
        check_workers_possible(o, model_fn, data)
    search_data = _search_rows(data, o.search_rows, o.seed)  # the trials'; data: confirmation's
    fingerprint = studies.data_fingerprint(data)
    if data_info and "sha256" in data_info:
        fingerprint = str(data_info["sha256"])[:12]
    metadata = {
        records.STUDY_VERSION: __version__,
        records.STUDY_MODEL: studies.describe_model(model_fn),
        records.STUDY_DATA: dict(data_info or {"description": data.describe()}),
        records.STUDY_DATA_FINGERPRINT: fingerprint,
        records.STUDY_BUDGET: {**budget.to_dict(), "batch_size": data.batch_size, "seed": o.seed,
                               **_subsampled(data, search_data)},
        records.STUDY_SPACE: {"inits": inits, "activations": activations},
        records.STUDY_TASK: data.task,
        records.STUDY_METRIC_NAME: records.metric_for(data.task),
    }
    study = studies.open_study(
        storage=studies.open_storage(o.storage),
        study_name=o.study_name or f"{studies.model_name(model_fn)}-{fingerprint}",
        sampler=o.sampler or studies.default_sampler(o.seed),
        pruner=o.pruner or studies.default_pruner(
            _planned_steps(budget, search_data), search_data.steps_per_epoch),
        metadata=metadata,
    )
    if o.sampler is None and study.trials:  # a resumed study: don't replay the first run's draws
        study.sampler = studies.default_sampler(o.seed + len(study.trials))
    studies.clear_dead_trials(study, include_self=True)  # a killed run's trial, at once
    queue_baselines(study, baselines(inits, activations))
    batch = fixed_batch(data, o.seed)  # the same for every trial
    objective = Objective(model_fn, search_data, budget, inits, activations, o.seed, guard, batch,
                          o.prescreen is not False)  # fmt: skip
    if o.prescreen == "space":  # once per study, right after the baselines
        prescreen_study(study, objective, n_trials=o.n_trials)
    return SearchRun(study, objective.with_data(data), o, device, search_objective=objective)


def queue_baselines(study: optuna.Study, configs: Sequence[Config]) -> None:
    """Queue the baselines once per study, however many processes start at the same moment."""
    from autoinit import claims

    if not claims.try_claim(study, "baselines"):
        return
    for config in configs:
        params = {k: v for k, v in config.to_dict().items() if v is not None}
        study.enqueue_trial(params, skip_if_exists=True)


def _search_rows(data: TrainingData, rows: int | None, seed: int) -> TrainingData:
    """The trials' data: a stratified subsample of ``rows`` training rows when there are more
    (in-memory data only; a DataLoader is searched whole)."""
    if rows is None or data.train is None or len(data.train[0]) <= rows:
        return data
    return subsample_rows(data, rows, seed=seed)


def _subsampled(data: TrainingData, search_data: TrainingData) -> dict[str, int]:
    """The study's record of the rows searched, only when they are a subsample (so a study made
    before subsampling existed resumes)."""
    if search_data is data or search_data.train is None:
        return {}
    return {"search_rows": len(search_data.train[0])}


def _planned_steps(budget: Budget, data: TrainingData) -> int | None:
    steps = [s for s in (budget.max_steps,) if s]
    if budget.epochs:
        steps.append(budget.epochs * data.steps_per_epoch)
    return min(steps) if steps else None


def subsample_rows(data: TrainingData, rows: int, *, seed: int) -> TrainingData:
    """``data`` with ``rows`` of its training rows, stratified; validation rows all kept.

    Classification keeps each class's share of the rows (every class present keeps at least
    one); regression keeps the share of each of 20 quantile bins of the (first) target. The
    draw is seeded, so every process of a study searches the same rows, kept in their order.
    """
    if data.train is None:
        raise ValueError("only in-memory data can be subsampled.")
    x, y = data.train
    n = len(x)
    if rows >= n:
        return data
    generator = torch.Generator().manual_seed(seed)
    target = y.detach().reshape(n, -1)[:, 0].cpu()
    if data.task == "classification":
        strata = target.long()
    else:
        edges = torch.quantile(target.double(), torch.linspace(0, 1, 21, dtype=torch.float64)[1:-1])
        strata = torch.bucketize(target.double(), edges)
    shuffled = torch.randperm(n, generator=generator)
    order = shuffled[torch.sort(strata[shuffled], stable=True).indices]  # by stratum, random within
    # Every (n / rows)-th row of that order gives each stratum its share of the rows, rounded;
    # a class too rare to get one keeps one row (so the subsample can hold a few more).
    positions = ((torch.arange(rows, dtype=torch.float64) + 0.5) * n / rows).long()
    chosen = order[positions]
    if data.task == "classification":
        missing = [c for c in torch.unique(strata).tolist() if not (strata[chosen] == c).any()]
        extra = [order[(strata[order] == c).nonzero()[0, 0]] for c in missing]
        if extra:
            chosen = torch.cat([chosen, torch.stack(extra)])
    index = torch.sort(chosen).values.to(x.device)
    return dataclasses.replace(data, train=(x[index], y[index]))

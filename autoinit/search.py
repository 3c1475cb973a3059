"""``search()``: the one core path that the CLI, the Python API and the benchmarks all take."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import inspect
import math
import pickle
import time
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
import torch

from autoinit import __version__, records
from autoinit import study as studies
from autoinit.apply import ModelFn, build
from autoinit.errors import ConfigError
from autoinit.monitor import DivergenceGuard, check_symmetry
from autoinit.space import PYTORCH_DEFAULT, Config, baselines, resolve_space, suggest
from autoinit.train import Budget, DataLike, RunResult, TrainingData, prepare_data, run

GUARD_OFF = {
    "max_grad_norm": math.inf, "max_loss": math.inf, "growth_factor": math.inf,
    "max_depth_ratio": math.inf, "vanish_patience": 1 << 62,
}  # fmt: skip


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
    guard: Mapping[str, Any] | None  # DivergenceGuard options; None turns the guard off

    def __call__(self, trial: optuna.Trial) -> float:
        config = suggest(trial, self.inits, self.activations)
        duplicate = _finished_twin(trial)
        if duplicate is not None:
            return _repeat(trial, duplicate)
        trial.set_user_attr(records.SEED, self.seed)
        try:
            result = self.train(config, self.seed, guard=self.guard, trial=trial)
        except optuna.TrialPruned as stopped:
            partial = getattr(stopped, "partial", None)
            attrs = partial.telemetry() if partial else {records.STEPS: 0}
            attrs[records.PRUNE_KIND] = getattr(stopped, "kind", "pruner")
            attrs[records.PRUNE_REASON] = str(stopped)
            _set_user_attrs(trial, attrs)
            raise
        _set_user_attrs(trial, result.telemetry())
        return result.value

    def train(
        self,
        config: Config,
        seed: int,
        *,
        guard: Mapping[str, Any] | None,
        trial: optuna.Trial | None = None,
    ) -> RunResult:
        """Build ``config``'s model and train it once; ``guard=None`` turns the guard off.

        Raises ``optuna.TrialPruned`` (``Diverged`` for the guard) when the run is stopped.
        """
        model = build(self.model_fn, config, seed=seed).to(self.data.device)
        if guard is not None:
            check_symmetry(model)
        monitor = DivergenceGuard(**(guard if guard is not None else GUARD_OFF))
        return run(model, self.data, self.budget, seed=seed, guard=monitor, trial=trial)


def _set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Write the trial's telemetry, once, at its end (never inside the training loop)."""
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _finished_twin(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    """An earlier trial with the same params whose result is deterministic to reuse.

    Every search trial trains with the study's seed, so the same config gives the same result:
    a complete twin's value, or a divergence twin's reason, is reused instead of retrained.
    Twins pruned by the median rule are retrained, since that verdict depends on the others.
    """
    for other in trial.study.get_trials(deepcopy=False, states=studies.COUNTED_STATES):
        if other.params == trial.params and other.number != trial.number:
            if records.prune_kind(other) in (None, "pruner") and other.value is None:
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
    return twin.value


def data_fingerprint(data: TrainingData) -> str:
    """A short hash of the data's shapes and a strided sample of its values."""
    digest = hashlib.sha256(data.task.encode())
    if data.in_memory:
        for tensor in (*data.train, *data.val):
            flat = tensor.detach().reshape(-1)
            stride = max(1, flat.numel() // 100_000)
            digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
            digest.update(flat[::stride].cpu().numpy().tobytes())
    else:
        digest.update(repr((len(data.train_loader.dataset), len(data.val_loader.dataset))).encode())
        digest.update(type(data.train_loader.dataset).__qualname__.encode())
    return digest.hexdigest()[:12]


def describe_model(model_fn: ModelFn) -> str:
    """A short, stable description: class, its extra repr, layer counts and parameter count.

    Built with PyTorch's defaults and the RNG state restored; nothing is trained.
    """
    with torch.random.fork_rng():
        model = build(model_fn, PYTORCH_DEFAULT)
    extra = model.extra_repr()
    name = type(model).__name__ + (f"({extra})" if extra and len(extra) <= 60 else "")
    layers = collections.Counter(
        type(m).__name__ for m in model.modules() if m is not model and not list(m.children())
    )
    parts = ", ".join(f"{n} {kind}" for kind, n in layers.items())
    count = sum(p.numel() for p in model.parameters())
    return f"{name}: {parts}; {count:,} parameters" if parts else f"{name}; {count:,} parameters"


def _model_name(model_fn: ModelFn) -> str:
    name = getattr(model_fn, "__name__", None) or type(model_fn).__name__
    if name == "<lambda>" or name == "partial":
        name = getattr(getattr(model_fn, "func", None), "__name__", "model")
    return name.strip("<>") or "model"


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` means CUDA when it is there, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available; use cpu.")
    return resolved


@contextlib.contextmanager
def torch_threads(threads: int | None, device: torch.device):
    """Pin torch's intra-op threads for the duration (1 on the CPU unless told otherwise).

    Small models on 2 cores trained 10-100x slower with 2 threads than with 1 when anything
    else was busy (thread hand-off costs more than the matrices); see the README's Performance.
    """
    if threads is None:
        threads = 1 if device.type == "cpu" else torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    guard: bool | Mapping[str, Any] = True,
    seed: int = 0,
    device: str | torch.device = "auto",
    n_jobs: int = 1,
    threads: int | None = None,
    val_fraction: float = 0.2,
    data_info: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable] = (),
) -> optuna.Study:
    """Search initializers x activations for ``model_fn`` on the data; return the Optuna study.

    Args:
        model_fn: makes a fresh model: a class, function or lambda. If it has an ``activation``
            argument it receives the activation as a zero-argument factory (like ``nn.ReLU``);
            otherwise the model's activation modules are swapped.
        train_loader: a DataLoader, a TensorDataset or an ``(inputs, targets)`` tuple.
        val_loader: the same kinds; default: ``val_fraction`` split off the training data.
        n_trials: the study's total of finished trials; a rerun resumes up to it.
        timeout: stop starting trials after this many seconds.
        epochs, max_steps, trial_time_limit: each trial's budget (the first reached stops it).
        inits, activations: narrow the space (names or aliases; default: everything).
        loss_fn, task: default from the targets: integers mean classification with
            cross-entropy, floats mean regression with MSE.
        storage: an Optuna storage or URL; default ``sqlite:///studies/autoinit.db``.
        study_name: default: derived from the model and a hash of the data.
        sampler, pruner: default: seeded multivariate TPE; the median rule after a warm-up.
        guard: the divergence guard's options (see :class:`DivergenceGuard`); False disables it.
        seed: seeds the sampler and every trial (all search trials share it, so they differ
            only by their config).
        device: "auto" (CUDA if present), "cpu" or "cuda"; the data moves there once.
        n_jobs: worker processes on one storage (each with ``threads`` torch threads).
        threads: torch threads per worker; default 1 on the CPU.
        data_info: extra description of the data stored with the study (the CLI's file hash).
        callbacks: Optuna callbacks, called in this process after each of its trials.

    Returns:
        The ``optuna.Study``, stored in ``storage``.
    """
    return run_search(**locals()).study


def search_defaults(**options: Any) -> dict[str, Any]:
    """:func:`search`'s keyword arguments: its defaults, updated with ``options`` (checked)."""
    bound = inspect.signature(search).bind_partial(**options)
    defaults = {
        name: p.default for name, p in inspect.signature(search).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }  # fmt: skip
    return {**defaults, **bound.arguments}


@dataclasses.dataclass
class SearchRun:
    """A search made ready (study opened or resumed, baselines queued) or run.

    The objective is kept so that :func:`autoinit.recommend.confirm` can retrain with it.
    """

    study: optuna.Study
    objective: Objective
    options: types.SimpleNamespace
    device: torch.device

    def optimize(self, callbacks: Sequence[Callable] = ()) -> "SearchRun":
        """Run trials until the study holds ``n_trials`` finished ones (or the timeout)."""
        o = self.options
        with torch_threads(o.threads, self.device):
            if o.n_jobs == 1:
                _optimize(self.study, self.objective, o.n_trials, o.timeout,
                          [*o.callbacks, *callbacks])  # fmt: skip
            else:
                _optimize_in_workers(self.study, self.objective, o, [*o.callbacks, *callbacks])
        _save_for_dashboard(self.study)
        return self


def _save_for_dashboard(study: optuna.Study) -> None:
    """Put the summary note and the heatmap where optuna-dashboard shows them (if installed)."""
    from autoinit.dashboard import save_to_dashboard

    save_to_dashboard(study)


MAX_SEED = 2**31 - 1 - 1000 * 64  # workers offset the sampler's seed by 1000 each


def run_search(
    model_fn: ModelFn, train_loader: DataLike, val_loader: DataLike | None, **options: Any
) -> SearchRun:
    """:func:`search`'s body; ``options`` are all of search's keyword arguments."""
    return prepare_search(model_fn, train_loader, val_loader, **options).optimize()


def prepare_search(
    model_fn: ModelFn, train_loader: DataLike, val_loader: DataLike | None, **options: Any
) -> SearchRun:
    """Check everything, open (or resume) the study and queue the baselines; train nothing.

    Every user error surfaces here, before any trial runs: bad options, bad data, a study
    made on other data.
    """
    o = types.SimpleNamespace(**options)
    for name in ("n_trials", "n_jobs"):
        value = options[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer but got {value!r}.")
    if not isinstance(o.seed, int) or not 0 <= o.seed <= MAX_SEED:
        raise ConfigError(f"seed must be an integer in [0, {MAX_SEED}] but got {o.seed!r}.")
    device = resolve_device(o.device)
    budget = Budget(o.epochs, o.max_steps, o.trial_time_limit, o.batch_size, o.optimizer, o.lr)
    inits, activations = resolve_space(o.inits, o.activations)
    data = prepare_data(
        train_loader, val_loader, task=o.task, loss_fn=o.loss_fn, batch_size=o.batch_size,
        val_fraction=o.val_fraction, seed=o.seed, device=device,
    )  # fmt: skip
    guard = None if o.guard is False else ({} if o.guard is True else dict(o.guard))
    if guard:
        DivergenceGuard(**guard)  # check the options now, not in the first trial
    if o.n_jobs > 1:
        _check_workers_possible(o, model_fn, data)
    fingerprint = data_fingerprint(data)
    if o.data_info and "sha256" in o.data_info:
        fingerprint = str(o.data_info["sha256"])[:12]
    metadata = {
        records.STUDY_VERSION: __version__,
        records.STUDY_MODEL: describe_model(model_fn),
        records.STUDY_DATA: dict(o.data_info or {"description": data.describe()}),
        records.STUDY_DATA_FINGERPRINT: fingerprint,
        records.STUDY_BUDGET: {**budget.to_dict(), "batch_size": data.batch_size, "seed": o.seed},
        records.STUDY_SPACE: {"inits": inits, "activations": activations},
        records.STUDY_TASK: data.task,
        records.STUDY_METRIC_NAME: "accuracy" if data.task == "classification" else "r2",
    }
    study = studies.open_study(
        storage=studies.open_storage(o.storage),
        study_name=o.study_name or f"{_model_name(model_fn)}-{fingerprint}",
        sampler=o.sampler or studies.default_sampler(o.seed),
        pruner=o.pruner or studies.default_pruner(_planned_steps(budget, data)),
        metadata=metadata,
    )
    if o.sampler is None and study.trials:  # a resumed study: don't replay the first run's draws
        study.sampler = studies.default_sampler(o.seed + len(study.trials))
    for config in baselines(inits, activations):
        params = {k: v for k, v in config.to_dict().items() if v is not None}
        study.enqueue_trial(params, skip_if_exists=True)
    objective = Objective(model_fn, data, budget, inits, activations, o.seed, guard)
    return SearchRun(study, objective, o, device)


def _planned_steps(budget: Budget, data: TrainingData) -> int | None:
    steps = [s for s in (budget.max_steps,) if s]
    if budget.epochs:
        steps.append(budget.epochs * data.steps_per_epoch)
    return min(steps) if steps else None


def _optimize(
    study: optuna.Study,
    objective: Objective,
    n_trials: int,
    timeout: float | None,
    callbacks: Sequence[Callable],
    *,
    shared: bool = False,
) -> None:
    """Run trials in this process until the study holds ``n_trials`` finished ones.

    With other workers on the study (``shared``), each finished trial re-counts the study's
    trials so that all stop at the total; alone, the count is taken once.
    """
    remaining = n_trials - studies.counted_trials(study)
    if remaining <= 0:
        return
    if shared:
        # Running trials count too: no worker starts a trial that the others will not need.
        running = (*studies.COUNTED_STATES, optuna.trial.TrialState.RUNNING)
        callbacks = [optuna.study.MaxTrialsCallback(n_trials, states=running), *callbacks]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(
            objective, n_trials=remaining, timeout=timeout, callbacks=callbacks,
            gc_after_trial=False,
        )  # fmt: skip


def _optimize_in_workers(
    study: optuna.Study,
    objective: Objective,
    o: types.SimpleNamespace,
    callbacks: Sequence[Callable],
) -> None:
    """``n_jobs`` processes on one storage: this one plus ``n_jobs - 1`` spawned workers.

    Queued trials (the baselines) run here first: SQLite has no row locks, so two processes
    could take the same queued trial (optuna#4002). If this process is interrupted, the workers
    are terminated too; their running trials are then failed by the heartbeat and retried by
    the next search.
    """
    import torch.multiprocessing as mp

    started = time.monotonic()
    queued = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    done = studies.counted_trials(study)
    _optimize(study, objective, min(o.n_trials, done + queued), o.timeout, callbacks)
    timeout = None if o.timeout is None else max(o.timeout - (time.monotonic() - started), 1e-3)
    url = studies.storage_url(o.storage)
    context = mp.get_context("spawn")
    workers = [
        context.Process(
            target=_worker,
            args=(url, study.study_name, objective, o.n_trials, timeout, o.sampler,
                  study.pruner, o.seed, index, o.threads),
            daemon=True,
        )  # fmt: skip
        for index in range(1, o.n_jobs)
    ]
    for worker in workers:
        worker.start()
    try:
        _optimize(study, objective, o.n_trials, timeout, callbacks, shared=True)
    except BaseException:
        for worker in workers:
            worker.terminate()
        raise
    finally:
        for worker in workers:
            worker.join()
    dead = [w.exitcode for w in workers if w.exitcode]
    if dead:
        warnings.warn(
            f"{len(dead)} worker process(es) exited abnormally (exit codes {dead}); their "
            "finished trials are stored, and a trial they left running is retried by the next "
            "search on this study.",
            stacklevel=3,
        )


def _worker(url, study_name, objective, n_trials, timeout, sampler, pruner, seed, index, threads):
    """Entry point of a spawned worker process."""
    torch.set_num_threads(threads or 1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=study_name,
        storage=studies.open_storage(url),
        sampler=sampler or studies.default_sampler(seed, worker=index),
        pruner=pruner,
    )
    try:
        _optimize(study, objective, n_trials, timeout, (), shared=True)
    except KeyboardInterrupt:  # Ctrl+C reaches the whole process group; the parent reports it
        pass


def _check_workers_possible(
    o: types.SimpleNamespace, model_fn: ModelFn, data: TrainingData
) -> None:
    """Worker processes need a shared database and a model_fn and data they can be sent."""
    if studies.storage_url(o.storage) is None:
        raise ConfigError("n_jobs > 1 needs a database storage URL (workers share it).")
    try:
        pickle.dumps((model_fn, data))
    except Exception as error:  # noqa: BLE001 - any pickling failure means the same fix
        raise ConfigError(
            f"n_jobs > 1 needs a picklable model_fn and data ({type(error).__name__}: {error}); "
            "use a module-level function or class instead of a lambda, or n_jobs=1."
        ) from None

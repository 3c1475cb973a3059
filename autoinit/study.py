"""Study lifecycle: the storage, the study and its metadata, sampler and pruner, resumption.

SQLite is the default (``sqlite:///studies/autoinit.db``, relative to the working directory).
Optuna's SQLite storage syncs to disk on every write at SQLite's default settings (~130 ms of
overhead per trial measured here); autoinit turns on WAL with ``synchronous=NORMAL`` through a
SQLAlchemy connect hook, which keeps every committed trial safe from a killed process and makes
writes cheap, and waits up to a minute for a lock so that several worker processes can share
one file. Any other URL Optuna accepts (PostgreSQL for many machines) is used as given.

Every RDB storage gets a heartbeat: a worker that dies mid-trial leaves a trial that the next
run marks failed and queues again, so no finished trial is lost and none is left hanging.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import pathlib
import random
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import optuna
import sqlalchemy
import torch
from sqlalchemy.engine import make_url

from autoinit import records
from autoinit.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from autoinit._apply import ModelFn
    from autoinit.train import TrainingData

DEFAULT_STORAGE = "sqlite:///studies/autoinit.db"
HEARTBEAT_SECONDS = 30
SQLITE_LOCK_TIMEOUT = 60
COUNTED_STATES = records.FINISHED_STATES
T = TypeVar("T")


def parse_storage_url(url: str) -> sqlalchemy.engine.URL:
    """Check a storage URL's syntax (nothing is opened or created)."""
    try:
        return make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(
            f"bad storage URL {url!r}: expected e.g. {DEFAULT_STORAGE} or "
            "postgresql://user:password@host/dbname."
        ) from None


def display_url(url: str | None) -> str:
    """The storage URL to print: the default spelled out, any password hidden."""
    url = url or DEFAULT_STORAGE
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def open_storage(
    url: str | optuna.storages.BaseStorage | None = None, *, create: bool = True
) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url`` (default :data:`DEFAULT_STORAGE`), tuned for SQLite.

    With ``create=False`` (commands that only read) a missing SQLite file is an error rather
    than a new empty database.

    Raises:
        StorageError: the URL is malformed, its driver is missing, or it cannot be opened.
    """
    if isinstance(url, optuna.storages.BaseStorage):
        return url
    url = url or DEFAULT_STORAGE
    parsed = parse_storage_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    engine_kwargs: dict[str, Any] = {}
    if is_sqlite:
        if not create and not _sqlite_exists(parsed.database):
            raise StorageError(
                f"no study database at {parsed.database}: run `autoinit search` first, or pass "
                "--storage with the URL the search used."
            )
        _check_sqlite_path(parsed.database, url)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_LOCK_TIMEOUT}
    def make() -> optuna.storages.RDBStorage:
        with _quiet_experimental():
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=3 * HEARTBEAT_SECONDS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=1
                ),
            )

    try:
        storage = retry_race(make)
    except ImportError:
        raise StorageError(
            f"the database driver for {parsed.drivername} is not installed; for PostgreSQL "
            "install it with: pip install 'autoinit[postgres]'."
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise StorageError(f"cannot open storage {_redact(parsed)}: {first_line}.") from None
    if is_sqlite:
        _tune_sqlite(storage.engine)
    return storage


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    """Heartbeats and grouped TPE are marked experimental by Optuna; autoinit relies on both."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


RACE_ATTEMPTS = 12


def retry_race(create: Callable[[], T], attempts: int = RACE_ATTEMPTS) -> T:
    """Run ``create`` again, after a short random wait, when another process raced it.

    Workers started at the same moment on a fresh database all create Optuna's tables and the
    study: one wins, the others hit a unique constraint (SQLite's ``alembic_version``,
    PostgreSQL's ``pg_type``) or a lock. The second attempt finds the work done.
    """
    for attempt in range(attempts):
        try:
            return create()
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.ProgrammingError):  # fmt: skip
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0.05, 0.25) * (attempt + 1))
    raise AssertionError("unreachable")


def _sqlite_exists(database: str | None) -> bool:
    if not database or database == ":memory:" or database.startswith("file:"):
        return True
    return pathlib.Path(database).expanduser().exists()


def _redact(parsed: sqlalchemy.engine.URL) -> str:
    return parsed.render_as_string(hide_password=True)


def _check_sqlite_path(database: str | None, url: str) -> None:
    """Create the SQLite file's folder; refuse early, with the path, if it is not writable."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    folder = pathlib.Path(database).expanduser().resolve().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(
            f"cannot create the studies folder {folder} for {url}: {error.strerror}; "
            "pass --storage with a writable location."
        ) from None
    target = pathlib.Path(database).expanduser().resolve()
    writable = os.access(target, os.W_OK) if target.exists() else os.access(folder, os.W_OK)
    if not writable:
        raise StorageError(
            f"{target if target.exists() else folder} is not writable; "
            "pass --storage with a writable location."
        )


def _tune_sqlite(engine: sqlalchemy.engine.Engine) -> None:
    """WAL, ``synchronous=NORMAL`` and ``BEGIN IMMEDIATE`` on every connection.

    WAL makes commits cheap and keeps readers off writers' backs. ``BEGIN IMMEDIATE`` takes the
    write lock when a transaction starts, so a transaction that reads then writes (Optuna's pop
    of a queued trial, a state change) can never fail half-way with "database is locked" because
    another process wrote in between: it waits its turn (up to the lock timeout) instead. This
    is SQLAlchemy's documented recipe for pysqlite; it makes several workers on one SQLite file
    safe, queued trials included (optuna#4002).
    """

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN, not the driver
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    def on_begin(connection: sqlalchemy.engine.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    sqlalchemy.event.listen(engine, "connect", on_connect)
    sqlalchemy.event.listen(engine, "begin", on_begin)
    engine.dispose()


def storage_url(storage: str | optuna.storages.BaseStorage | None) -> str | None:
    """The URL of a storage, for messages and for worker processes (None when in memory)."""
    if storage is None:
        return DEFAULT_STORAGE
    if isinstance(storage, str):
        return storage
    if isinstance(storage, optuna.storages.RDBStorage):
        return storage.url
    if isinstance(storage, optuna.storages._CachedStorage):  # what optuna wraps RDB in
        return storage_url(storage._backend)
    return None


def default_sampler(seed: int, *, worker: int = 0) -> optuna.samplers.BaseSampler:
    """TPE over the joint space (the slope is conditional), seeded per worker."""
    with _quiet_experimental():
        return optuna.samplers.TPESampler(
            seed=seed + 1000 * worker, multivariate=True, group=True, constant_liar=True
        )


# Successive halving judges a trial at its first rung, one epoch in; on data whose epoch has
# fewer steps than this, that verdict is mostly noise (measured on the bundled sets, 6-8 steps an
# epoch: 0.01-0.03 lower confirmed accuracy/R² than the median rule), so those use the median.
MIN_RUNG_STEPS = 20
# The best quarter goes on after one epoch (of 10), then trains to the end. With 3 (a third
# after 1 and after 3 epochs) the second verdict stopped PyTorch's default + GELU, the best config
# of a 20,000-row table, at an epoch where its validation loss had swung up (it moves 2x from one
# epoch to the next there): replayed over 5 tables, 4 is within 0.011 of the median rule's pick
# on all of them (3: about 0.05 worse on one), for 0.9-3.3 FTE more than 3.
REDUCTION_FACTOR = 4


class SuccessiveHalving(optuna.pruners.SuccessiveHalvingPruner):
    """Optuna's asynchronous successive halving, with no rung in the last part of the budget.

    Rungs are at ``min_resource * reduction_factor**k`` steps, as Optuna's; those beyond
    ``max_resource / reduction_factor`` are left out. A rung that late saves little (a trial
    pruned at 9 of 10 epochs has cost 90%), and it leaves the confirmation few complete trials
    to choose from; a trial past the last rung trains to the end.
    """

    def __init__(self, min_resource: int, reduction_factor: int, max_resource: int | None) -> None:
        super().__init__(min_resource=min_resource, reduction_factor=reduction_factor)
        if max_resource is not None and max_resource < min_resource:
            raise ValueError(
                f"max_resource must be at least min_resource ({min_resource}) but got "
                f"{max_resource}."
            )
        self.max_resource = max_resource
        self.min_resource = min_resource  # Optuna's own attribute may be None ("auto")

    def rung_steps(self) -> list[int] | None:
        """The steps at which a trial is judged, or None when they go on without end."""
        if self.max_resource is None:
            return None
        steps: list[int] = []
        step = self.min_resource
        while step * self._reduction_factor <= self.max_resource:
            steps.append(step)
            step *= self._reduction_factor
        return steps

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        rungs = self.rung_steps()
        passed = sum(key.startswith("completed_rung_") for key in trial.system_attrs)
        if rungs is not None and passed >= len(rungs):
            return False  # past the last rung: it trains to the end
        return super().prune(study, trial)


def default_pruner(
    total_steps: int | None, steps_per_epoch: int | None = None
) -> optuna.pruners.BasePruner:
    """Successive halving over epochs when an epoch is long enough, else the median rule.

    :class:`SuccessiveHalving` (reduction factor 4) keeps a trial past a rung only if its
    validation loss is in the best quarter of those that reached that rung: rungs at 1, 4, 16...
    epochs, up to a quarter of the budget (1 of 10 epochs). Trials report after every epoch,
    at step ``epoch * steps_per_epoch``, so each rung is a report step. It is used when an epoch
    has at least :data:`MIN_RUNG_STEPS` steps and the budget holds a rung before its end;
    otherwise :func:`median_pruner`. See the README's Performance section for the measurements.
    """
    fits = total_steps is None or total_steps >= REDUCTION_FACTOR * (steps_per_epoch or 0)
    if steps_per_epoch and steps_per_epoch >= MIN_RUNG_STEPS and fits:
        return SuccessiveHalving(steps_per_epoch, REDUCTION_FACTOR, total_steps)
    return median_pruner(total_steps)


def median_pruner(total_steps: int | None) -> optuna.pruners.BasePruner:
    """The median rule, after 5 finished trials and the first 30% of each trial's steps."""
    warmup = int(0.3 * total_steps) if total_steps else 0
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)


def counted_trials(study: optuna.Study) -> int:
    """Trials that count toward the budget: finished, whether complete or pruned."""
    return len(study.get_trials(deepcopy=False, states=COUNTED_STATES))


def taken_trials(study: optuna.Study) -> int:
    """Finished trials plus those running now (in any process): what no worker should repeat."""
    states = (*COUNTED_STATES, optuna.trial.TrialState.RUNNING)
    return len(study.get_trials(deepcopy=False, states=states))


class StopAtBudget:
    """An Optuna callback: stop this process once the study holds ``n_trials`` taken trials.

    Like Optuna's ``MaxTrialsCallback``, it recounts the study after every trial, so processes
    started separately on one storage (``--jobs``, several machines, two shells) share one
    budget. Running trials count as taken, so at most the trials already in flight overshoot it.
    """

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if taken_trials(study) >= self.n_trials:
            study.stop()


# --- the process that runs a trial -----------------------------------------------------------


def this_process() -> dict[str, Any]:
    """The host and PID recorded on each trial, so a dead worker's trial can be told apart."""
    return {records.HOST: socket.gethostname(), records.PID: os.getpid()}


def pid_alive(pid: Any) -> bool:
    """Whether process ``pid`` exists on this host (a zombie, exited but not reaped, is dead)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def clear_dead_trials(study: optuna.Study, *, include_self: bool = False) -> list[int]:
    """Fail, and queue again, the RUNNING trials of processes on this host that no longer exist.

    Optuna's heartbeat does this for every host, but only after its grace period; a worker
    killed on this machine is known dead at once. With ``include_self``, this process's own
    RUNNING trials count as dead too (it is starting, so it runs none). A trial that names its
    host but not yet its PID is another process between its first two writes: left alone (it
    was failed here once, and that process then crashed on its next write). Returns their
    numbers.
    """
    host, cleared = socket.gethostname(), []
    with _quiet_experimental():
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        attrs = trial.user_attrs
        pid = attrs.get(records.PID)
        if attrs.get(records.HOST) != host or pid is None:  # not (yet) known to be ours
            continue
        if pid_alive(pid) and not (include_self and pid == os.getpid()):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another process cleared it first
        retry(study, study._storage.get_trial(trial._trial_id))
        cleared.append(trial.number)
    return cleared


def rdb_backend(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The study's RDB storage (unwrapped from Optuna's cache), or None for other storages."""
    storage = study._storage
    storage = getattr(storage, "_backend", storage)
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


def open_study(
    *,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    metadata: Mapping[str, Any],
) -> optuna.Study:
    """Create the study, or resume it if ``metadata`` says it was made the same way.

    ``metadata`` holds the study user_attrs (data, model, budget, space, task...). Resuming a
    study made on other data, with another budget or another space, would mix results that
    cannot be compared (and a changed categorical space breaks Optuna's samplers), so it is
    refused with the difference named.
    """
    study = retry_race(lambda: optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=sampler,
        pruner=pruner,
        direction="minimize",
        load_if_exists=True,
    ))  # fmt: skip
    stored = study.user_attrs
    for key in (records.STUDY_DATA_FINGERPRINT, records.STUDY_MODEL, records.STUDY_BUDGET,
                records.STUDY_SPACE):
        if key in stored and key in metadata and stored[key] != _jsonable(metadata[key]):
            raise StorageError(
                f"study {study_name!r} was made with another {key.replace('_', ' ')} "
                f"({_short(stored[key])}, now {_short(metadata[key])}); resume it with the same "
                "data and options, or choose another study name."
            )
    for key, value in metadata.items():
        if key not in stored:
            retry_race(lambda: study.set_user_attr(key, _jsonable(value)))  # noqa: B023
    return study


def _jsonable(value: Any) -> Any:
    """What the value reads back as from storage (tuples become lists)."""
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """Names of the studies in ``storage``, oldest first."""
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def load_study(storage: optuna.storages.BaseStorage, study_name: str | None) -> optuna.Study:
    """Load a stored study by name, or the only/latest one when no name is given."""
    names = study_names(storage)
    if not names:
        raise StorageError("the storage holds no study yet; run `autoinit search` first.")
    if study_name is None:
        study_name = names[-1]
    elif study_name not in names:
        raise ConfigError(
            f"no study named {study_name!r} in this storage; stored studies: {', '.join(names)}."
        )
    return optuna.load_study(study_name=study_name, storage=storage)


# --- what a study records about its data and model ------------------------------------------


def data_fingerprint(data: TrainingData) -> str:
    """A short hash of the data's shapes and a strided sample of its values."""
    digest = hashlib.sha256(data.task.encode())
    if data.train is not None and data.val is not None:
        for tensor in (*data.train, *data.val):
            flat = tensor.detach().reshape(-1)
            stride = max(1, flat.numel() // 100_000)
            digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
            digest.update(flat[::stride].cpu().numpy().tobytes())
    elif data.train_loader is not None and data.val_loader is not None:
        train, val = data.train_loader.dataset, data.val_loader.dataset
        digest.update(repr((len(train), len(val))).encode())  # type: ignore[arg-type]
        digest.update(type(train).__qualname__.encode())
    return digest.hexdigest()[:12]


def describe_model(model_fn: ModelFn) -> str:
    """A short, stable description: class, its extra repr, layer counts and parameter count.

    Built with PyTorch's defaults and the RNG state restored; nothing is trained.
    """
    from autoinit._apply import build
    from autoinit.space import PYTORCH_DEFAULT

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


def model_name(model_fn: ModelFn) -> str:
    """The model's name for a default study name (the function or class behind a partial)."""
    name = getattr(model_fn, "__name__", None) or type(model_fn).__name__
    if name == "<lambda>" or name == "partial":
        name = getattr(getattr(model_fn, "func", None), "__name__", "model")
    return name.strip("<>") or "model"

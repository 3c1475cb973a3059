"""Where and how trials run: the device, torch's threads, and worker processes on one storage.

Each worker is a spawned process that loads the study from the shared database and runs the same
:class:`~autoinit._search.Objective` until the study's budget is taken. Queued trials (the
baselines) are taken by whichever process is free: SQLite runs with ``BEGIN IMMEDIATE`` (see
:mod:`autoinit.study`), so two processes can never pop the same one.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import optuna
import torch

from autoinit import study as studies
from autoinit.errors import ConfigError

if TYPE_CHECKING:
    from autoinit._apply import ModelFn
    from autoinit._search import Objective
    from autoinit.options import SearchOptions
    from autoinit.train import TrainingData


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
def torch_threads(threads: int | None, device: torch.device) -> Iterator[None]:
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


def optimize_here(
    study: optuna.Study,
    objective: Objective,
    n_trials: int,
    timeout: float | None,
    callbacks: Sequence[Callable],
) -> None:
    """Run trials in this process until the study holds ``n_trials`` taken trials.

    The study is recounted before the first trial and after every one (:class:`StopAtBudget`),
    so every process on the storage, here or on other machines, stops at the same total.
    """
    remaining = n_trials - studies.taken_trials(study)
    if remaining <= 0:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(
            objective, n_trials=remaining, timeout=timeout,
            callbacks=[studies.StopAtBudget(n_trials), *callbacks], gc_after_trial=False,
        )  # fmt: skip


def optimize_in_workers(
    study: optuna.Study,
    objective: Objective,
    options: SearchOptions,
    callbacks: Sequence[Callable],
) -> None:
    """``n_jobs`` processes on one storage: this one plus ``n_jobs - 1`` spawned workers.

    The workers start first and every process takes queued and new trials alike. If this
    process is interrupted, the workers are terminated too (each fails its running trial,
    which the next search retries).
    """
    import torch.multiprocessing as mp

    url = studies.storage_url(options.storage)
    context = mp.get_context("spawn")
    workers = [
        context.Process(
            target=_worker,
            args=(url, study.study_name, objective, options.n_trials, options.timeout,
                  options.sampler, study.pruner, options.seed, index, options.threads),
            daemon=True,
        )  # fmt: skip
        for index in range(1, options.n_jobs)
    ]
    for worker in workers:
        worker.start()
    try:
        optimize_here(study, objective, options.n_trials, options.timeout, callbacks)
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


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _worker(
    url: str, study_name: str, objective: Objective, n_trials: int, timeout: float | None,
    sampler: optuna.samplers.BaseSampler | None, pruner: optuna.pruners.BasePruner, seed: int,
    index: int, threads: int | None,
) -> None:  # fmt: skip
    """Entry point of a spawned worker process.

    SIGTERM (what ``terminate()``, systemd and batch schedulers send) is handled like Ctrl+C:
    Optuna then fails the running trial instead of leaving it RUNNING.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    torch.set_num_threads(threads or 1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = studies.retry_race(lambda: optuna.load_study(
        study_name=study_name,
        storage=studies.open_storage(url),
        sampler=sampler or studies.default_sampler(seed, worker=index),
        pruner=pruner,
    ))  # fmt: skip
    try:
        optimize_here(study, objective, n_trials, timeout, ())
    except KeyboardInterrupt:  # Ctrl+C reaches the whole process group; the parent reports it
        pass


def check_workers_possible(
    options: SearchOptions, model_fn: ModelFn, data: TrainingData
) -> None:
    """Worker processes need a shared database and a model_fn and data they can be sent."""
    if studies.storage_url(options.storage) is None:
        raise ConfigError("n_jobs > 1 needs a database storage URL (workers share it).")
    try:
        pickle.dumps((model_fn, data))
    except Exception as error:  # noqa: BLE001 - any pickling failure means the same fix
        raise ConfigError(
            f"n_jobs > 1 needs a picklable model_fn and data ({type(error).__name__}: {error}); "
            "use a module-level function or class instead of a lambda, or n_jobs=1."
        ) from None

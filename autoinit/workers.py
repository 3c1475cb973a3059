"""Where and how trials run: the device, torch's threads, and worker processes.

Two kinds of worker process:

- the search's workers (``n_jobs``): each is a spawned process that loads the study from the
  shared database and runs the same :class:`~autoinit._search.Objective` until the study's
  budget is taken. Queued trials (the baselines) are taken by whichever process is free: SQLite
  runs with ``BEGIN IMMEDIATE`` (see :mod:`autoinit.study`), so two processes can never pop the
  same one;
- the confirmation's (:class:`Forked`): forked children that each train a part of the
  confirmation's runs and send their outcomes back through a pipe. They touch no storage, and
  a fork needs nothing pickled (a user's lambda ``model_fn`` works).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar, cast

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


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def can_fork(device: torch.device) -> bool:
    """Whether :class:`Forked` can run children: on Linux, on the CPU, and where PyTorch
    has no GPU (the autograd engine of a CUDA build that sees a GPU refuses to run in a forked
    child; one GPU is shared by batching instead)."""
    return (sys.platform.startswith("linux") and device.type == "cpu"
            and not torch.cuda.is_available())  # fmt: skip


def resolve_jobs(jobs: int | str, device: torch.device, threads: int | None = None) -> int:
    """``"auto"``: one process per usable core (per ``threads`` cores) where :func:`can_fork`,
    else 1. A number is checked and kept (1 where forking is impossible)."""
    if jobs == "auto":
        return max(1, usable_cores() // (threads or 1)) if can_fork(device) else 1
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"confirm_jobs must be a positive integer or 'auto' but got {jobs!r}.")
    return jobs if can_fork(device) else 1


T = TypeVar("T")


def wait_any(children: Iterable[Forked[Any]]) -> None:
    """Wait until one of ``children`` has finished (at once if one has, or if there is none)."""
    children = list(children)
    if children and not any(child.finished() for child in children):
        select.select(children, [], [])


class Forked(Generic[T]):
    """``task`` running in a forked child with ``threads`` torch threads; :meth:`result` waits
    for it and unpickles what the child sent through a pipe.

    A child that fails (an exception, a kill, a result that cannot be pickled) sends nothing,
    and :meth:`result` runs the task here instead: a fault costs time, not a result, and an
    error in the task is raised here with its own traceback. The child touches nothing of its
    parent's but the task: it never returns into the caller's code and leaves with ``os._exit``
    (no atexit handler, no flush of the parent's buffers, no storage connection closed).
    """

    def __init__(self, task: Callable[[], T], threads: int = 1) -> None:
        self.task = task
        for stream in (sys.stdout, sys.stderr):  # else the child would flush them once more
            with contextlib.suppress(Exception):
                stream.flush()
        self._read, write = os.pipe()
        try:
            with warnings.catch_warnings():  # Python 3.12+ warns of forking a threaded
                warnings.simplefilter("ignore", DeprecationWarning)  # process; the child
                self._pid = os.fork()  # takes no lock
        except OSError:  # no process to be had (a limit, memory): the task runs here later
            os.close(self._read)
            self._read, self._pid = -1, 0
        else:
            if self._pid == 0:
                _child(task, threads, self._read, write)
        os.close(write)

    def fileno(self) -> int:  # for select(): the pipe the result comes through
        return self._read

    def finished(self) -> bool:
        """Whether the child has sent its result or ended (without waiting)."""
        return self._pid == 0 or bool(select.select([self._read], [], [], 0)[0])

    def result(self) -> T:
        if self._pid == 0:  # the fork failed
            return self.task()
        with os.fdopen(self._read, "rb") as pipe:
            self._read = -1
            payload = pipe.read()
        _, status = os.waitpid(self._pid, 0)
        self._pid = 0
        if os.waitstatus_to_exitcode(status) == 0 and payload:
            return cast(T, pickle.loads(payload))
        return self.task()

    def kill(self) -> None:
        """Stop the child now (a no-op once :meth:`result` has returned)."""
        if self._pid:
            with contextlib.suppress(OSError):
                os.kill(self._pid, signal.SIGKILL)
                os.waitpid(self._pid, 0)
            self._pid = 0
        if self._read >= 0:
            os.close(self._read)
            self._read = -1


def _child(task: Callable[[], Any], threads: int, read: int, write: int) -> NoReturn:
    code = 1
    try:
        os.close(read)
        # Fresh streams, to nowhere: a lock of the parent's (a thread writing to a notebook's
        # stream at the fork) cannot hang the child, and the task's warnings, which the
        # search's trials showed already, are not printed once more per child.
        sys.stdout = sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
        torch.set_num_threads(threads)
        payload = pickle.dumps(task())
        with os.fdopen(write, "wb") as pipe:
            pipe.write(payload)
        code = 0
    finally:
        os._exit(code)


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

"""Worker processes really share the work: on SQLite, on PostgreSQL, and from the CLI.

Each trial records the PID (and host) of the process that ran it, so the tests ask the stored
trials who trained them instead of only counting finished trials: a worker that returns
without training anything leaves every trial to the main process, and these tests fail.
"""

import dataclasses
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings

import optuna
import pytest
import torch
from click.testing import CliRunner

from autoinit import records, search, workers
from autoinit import study as studies
from autoinit._search import SearchRun, prepare_search
from autoinit.cli import main
from autoinit.options import SearchOptions
from autoinit.testing import tiny_mlp

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
# No baseline fits this space, so no trial is queued and the workers start at once.
NO_BASELINES = {"inits": ["orthogonal", "lecun_uniform", "xavier_normal"],
                "activations": ["elu", "gelu", "silu"]}  # fmt: skip


def pids(study: optuna.Study) -> set[int]:
    return {t.user_attrs[records.PID] for t in study.get_trials(deepcopy=False)
            if records.PID in t.user_attrs}  # fmt: skip


def wait_for_another_process(timeout: float = 60.0):
    """An Optuna callback (it runs in the main process only) that, after the main process's
    first sampled trial, waits until a trial run by another process is stored.

    Spawned workers take seconds to import torch; without this, the main process could finish
    every trial of a small search before a worker starts, and the test would prove nothing.
    A worker that trains nothing makes this wait time out, and the test then fails.
    """
    waited = []

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if waited or "fixed_params" in trial.system_attrs:  # a queued baseline: no worker yet
            return
        waited.append(True)
        deadline = time.monotonic() + timeout
        while not pids(study) - {os.getpid()} and time.monotonic() < deadline:
            time.sleep(0.1)

    return callback


def assert_shared(study: optuna.Study, n_trials: int, *, main_pid: int | None) -> None:
    finished = study.get_trials(states=FINISHED)
    assert n_trials <= len(finished) <= n_trials + 1  # each worker stops at the total
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    # Trials added by the prescreen (probed before the search, never run) name no process.
    unstamped = [(t.number, t.state.name, sorted(t.user_attrs)) for t in finished
                 if records.PID not in t.user_attrs
                 and t.user_attrs.get(records.PRUNE_KIND) != "prescreen"]  # fmt: skip
    assert not unstamped, f"trials without the process that ran them: {unstamped}"
    assert len(pids(study)) >= 2, f"one process ran every trial: {pids(study)}"
    assert len(pids(study)) <= 2, f"more processes than n_jobs=2: {pids(study)}"
    if main_pid is not None:
        assert main_pid in pids(study)
    hosts = {t.user_attrs[records.HOST] for t in finished if records.HOST in t.user_attrs}
    assert hosts == {socket.gethostname()}


def test_two_workers_share_a_sqlite_study(blobs, storage_url):
    study = search(tiny_mlp(8, 3), blobs, n_trials=8, storage=storage_url, n_jobs=2, epochs=2,
                   callbacks=[wait_for_another_process()], **NO_BASELINES)  # fmt: skip
    assert_shared(optuna.load_study(study_name=study.study_name, storage=storage_url), 8,
                  main_pid=os.getpid())  # fmt: skip


def test_two_workers_share_a_sqlite_study_with_baselines(blobs, storage_url):
    # A first search makes the study: the baselines are queued (one ran) and, where the search
    # prescreens, the configs whose probe collapsed are stored. Two workers then share the rest.
    first = search(tiny_mlp(8, 3), blobs, n_trials=1, storage=storage_url, study_name="b",
                   epochs=2)  # fmt: skip
    queued = first.get_trials(states=(optuna.trial.TrialState.WAITING,))
    total = len(first.get_trials(states=FINISHED)) + len(queued) + 4
    study = search(tiny_mlp(8, 3), blobs, n_trials=total, storage=storage_url, study_name="b",
                   n_jobs=2, epochs=2, callbacks=[wait_for_another_process()])  # fmt: skip
    baselines = [t for t in study.trials if "fixed_params" in t.system_attrs]
    assert queued and len(baselines) >= len(queued) + 1
    assert len(baselines) == len({tuple(sorted(t.params.items())) for t in baselines})  # once
    assert_shared(study, total, main_pid=os.getpid())


def test_search_with_two_jobs_from_the_cli_uses_two_processes(tmp_path):
    # No callback can reach the CLI's search: the trials are made slow enough (~1 s each,
    # 10 of them) that the worker, started at once, takes some of them.
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = CliRunner().invoke(main, [
        "search", "--data", str(EXAMPLES / "breast_cancer.csv"), "--trials", "10",
        "--epochs", "40", "--jobs", "2", "--storage", url, "--study-name", "jobs",
        "--inits", ",".join(NO_BASELINES["inits"]),
        "--activations", ",".join(NO_BASELINES["activations"]),
        "--seeds", "1", "--top-k", "1", "--device", "cpu",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert_shared(optuna.load_study(study_name="jobs", storage=url), 10, main_pid=os.getpid())


# The body of a worker process, run here in the test's process: mutmut (benchmarks/mutation.py)
# sees only what runs in its own process, and the spawned worker above is invisible to it.


def _worker_here(url: str, name: str, objective, *, index: int = 1, n_trials: int = 3,
                 timeout: float | None = None, threads: int | None = None, pruner=None):
    """Run ``workers._worker`` in this process; return the thread count and SIGTERM handler
    it leaves (a worker process keeps them), restoring this process's own afterwards."""
    threads_before, handler_before = torch.get_num_threads(), signal.getsignal(signal.SIGTERM)
    verbosity_before = optuna.logging.get_verbosity()
    signal.signal(signal.SIGTERM, _not_handled)  # not pytest's death if the worker sets none
    try:
        pruner = pruner or optuna.pruners.NopPruner()
        workers._worker(url, name, objective, n_trials, timeout, None, pruner, 0, index, threads)
        return torch.get_num_threads(), signal.getsignal(signal.SIGTERM)
    finally:
        torch.set_num_threads(threads_before)
        signal.signal(signal.SIGTERM, handler_before)
        optuna.logging.set_verbosity(verbosity_before)


def _not_handled(signum, frame):
    raise RuntimeError("the worker left SIGTERM to the process it runs in")


def _prepared(blobs, url: str, name: str) -> SearchRun:
    options = SearchOptions(n_trials=3, epochs=1, storage=url, study_name=name, prescreen=False,
                            device="cpu", inits=tuple(NO_BASELINES["inits"]),
                            activations=tuple(NO_BASELINES["activations"]))  # fmt: skip
    return prepare_search(tiny_mlp(8, 3), blobs, None, options)


def _configs(url: str, name: str) -> list[tuple]:
    trials = optuna.load_study(study_name=name, storage=url).get_trials(states=FINISHED)
    return [tuple(sorted(t.params.items())) for t in trials]


def test_a_worker_trains_the_study_with_a_sampler_seeded_by_its_index(blobs, storage_url):
    for name in ("one", "again", "two"):
        run = _prepared(blobs, storage_url, name)
        index = 2 if name == "two" else 1
        threads, handler = _worker_here(storage_url, name, run.search_objective, index=index,
                                        threads=2 if name == "again" else None)  # fmt: skip
        assert threads == (2 if name == "again" else 1)  # one torch thread unless told
        assert handler is workers._interrupt
    main_run = _prepared(blobs, storage_url, "main").optimize()
    stored = optuna.load_study(study_name="one", storage=storage_url)
    assert len(stored.get_trials(states=FINISHED)) == 3  # the study's total, not n_jobs' share
    assert pids(stored) == {os.getpid()}
    assert _configs(storage_url, "one") == _configs(storage_url, "again")  # seeded
    # Not the main process's draws (two processes with one seed would train the same configs),
    # nor another worker's.
    assert _configs(storage_url, "one") != _configs(storage_url, main_run.study.study_name)
    assert _configs(storage_url, "one") != _configs(storage_url, "two")


def test_a_terminated_worker_fails_its_trial_and_returns(blobs, storage_url):
    run = _prepared(blobs, storage_url, "term")

    def terminated(trial):  # what terminate() does to a worker in the middle of a trial
        os.kill(os.getpid(), signal.SIGTERM)
        return run.search_objective(trial)

    _worker_here(storage_url, "term", terminated)  # returns: the parent reports the stop
    states = [t.state for t in optuna.load_study(study_name="term", storage=storage_url).trials]
    assert states == [optuna.trial.TrialState.FAIL]  # not left RUNNING, no trial after it


def _slow(trial: optuna.Trial) -> float:
    time.sleep(0.1)
    return trial.suggest_float("x", 0.0, 1.0)


def test_the_timeout_stops_starting_trials_here_and_in_a_worker(storage_url):
    storage = studies.open_storage(storage_url)  # makes the folder, as a search does
    optuna.create_study(study_name="w", storage=storage)
    _worker_here(storage_url, "w", _slow, n_trials=20, timeout=0.25)
    here = optuna.create_study(study_name="h", storage=storage)
    workers.optimize_here(here, _slow, n_trials=20, timeout=0.25, callbacks=())
    for name in ("w", "h"):
        finished = optuna.load_study(study_name=name, storage=storage_url).trials
        assert 1 <= len(finished) < 20, name


def test_optimize_here_stops_at_the_study_total(storage_url):
    study = optuna.create_study(study_name="t", storage=studies.open_storage(storage_url))
    workers.optimize_here(study, _slow, n_trials=2, timeout=None, callbacks=())
    workers.optimize_here(study, _slow, n_trials=2, timeout=None, callbacks=())  # nothing left
    workers.optimize_here(study, _slow, n_trials=3, timeout=None, callbacks=())
    assert len(study.trials) == 3


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_a_worker_prunes_with_the_studys_pruner(blobs, storage_url):
    run = _prepared(blobs, storage_url, "pruned")
    _worker_here(storage_url, "pruned", run.search_objective, pruner=_AlwaysPrune())
    trials = optuna.load_study(study_name="pruned", storage=storage_url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 3
    assert all(t.user_attrs["prune_kind"] == "pruner" for t in trials)


class _RecordedProcess:
    """What ``optimize_in_workers`` asks of a spawned process, recorded instead of started."""

    made: list[dict] = []
    exitcode = 0

    def __init__(self, target, args, daemon):
        self.exitcode = _RecordedProcess.exitcode
        _RecordedProcess.made.append({"target": target, "args": args, "daemon": daemon})

    def start(self):
        pass

    def join(self):
        pass

    def terminate(self):
        pass


def test_n_jobs_starts_one_worker_per_extra_job_each_with_its_index(storage_url, monkeypatch):
    """The arguments each worker process gets (the real processes are tested above; their
    sampler index is not visible there, since both processes draw from one shared study)."""
    import torch.multiprocessing as mp

    contexts = []
    monkeypatch.setattr(mp, "get_context", lambda name: contexts.append(name) or
                        type("Context", (), {"Process": _RecordedProcess}))  # fmt: skip
    study = optuna.create_study(study_name="spy", storage=studies.open_storage(storage_url))
    options = SearchOptions(n_trials=2, n_jobs=3, timeout=30.0, storage=storage_url, seed=7,
                            threads=2)  # fmt: skip
    for exitcode in (0, -9):
        _RecordedProcess.made, _RecordedProcess.exitcode = [], exitcode
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            workers.optimize_in_workers(study, _slow, options, callbacks=())
        assert contexts[-1] == "spawn"  # fork would copy this process's torch threads and locks
        made = _RecordedProcess.made
        assert [m["args"][8] for m in made] == [1, 2]  # the worker's index: its sampler seed
        assert all(m["target"] is workers._worker and m["daemon"] for m in made)
        assert made[0]["args"] == (storage_url, "spy", _slow, 2, 30.0, None, study.pruner, 7,
                                   1, 2)  # fmt: skip
        messages = [str(w.message) for w in caught]
        if exitcode:
            assert messages == [
                "2 worker process(es) exited abnormally (exit codes [-9, -9]); their finished "
                "trials are stored, and a trial they left running is retried by the next search "
                "on this study."]  # fmt: skip
        else:
            assert not messages
    assert len(study.trials) == 2  # this process ran the trials (the workers were not started)
    _RecordedProcess.exitcode = 0
    timed = optuna.create_study(study_name="timed", storage=studies.open_storage(storage_url))
    workers.optimize_in_workers(timed, _slow, dataclasses.replace(options, n_trials=20,
                                                                   timeout=0.25), callbacks=())
    assert 1 <= len(timed.trials) < 20  # this process keeps the timeout too


def _skip_or_fail(reason: str) -> None:
    """Skip where PostgreSQL is missing, but fail in CI, which installs it (.ci/run)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the PostgreSQL test (.ci/run installs it)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster on a free local port, stopped afterwards."""
    binaries = {name: shutil.which(name) for name in ("initdb", "pg_ctl", "createdb")}
    if not all(binaries.values()):
        _skip_or_fail("PostgreSQL (initdb, pg_ctl, createdb) is not installed")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _skip_or_fail("psycopg is missing: install autoinit[postgres] for this test")
    root = pathlib.Path(tempfile.mkdtemp(prefix="autoinit-pg-"))  # outside pytest's 0700 tree
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def pg(name, *args):
        subprocess.run([*as_user, binaries[name], *args], check=True, capture_output=True,
                       timeout=120)  # fmt: skip

    pg("initdb", "-D", str(data), "-U", "autoinit", "--auth=trust")
    pg("pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "-o",
       f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "autoinit", "studies")
        yield f"postgresql://autoinit@127.0.0.1:{port}/studies"
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_postgres_study(postgres_url, blobs):
    study = search(tiny_mlp(8, 3), blobs, n_trials=10, epochs=2, storage=postgres_url,
                   study_name="pg", n_jobs=2, callbacks=[wait_for_another_process()],
                   **NO_BASELINES)  # fmt: skip
    stored = optuna.load_study(study_name="pg", storage=postgres_url)
    assert_shared(stored, 10, main_pid=os.getpid())
    assert stored.user_attrs["task"] == "classification"
    assert study.best_trial.user_attrs["loss_curve"]

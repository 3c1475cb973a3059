"""Many processes on one study, as a cluster job starts them: the budget, one confirmation,
dead workers and signals. Every test runs the real command line in real processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from test_workers import postgres_url  # noqa: F401 - the throwaway PostgreSQL cluster

from autoinit import records

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BREAST_CANCER = EXAMPLES / "breast_cancer.csv"
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
RUNNING = (optuna.trial.TrialState.RUNNING,)
QUICK = ["--epochs", "1", "--depth", "2", "--width", "8", "--seeds", "2", "--top-k", "1"]


def start(storage: str, name: str, *extra: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "autoinit", "search", "--data", str(BREAST_CANCER), "--storage",
         storage, "--study-name", name, *extra],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def trials(storage: str, name: str, states=None) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials(states=states)


def wait_for(condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def assert_one_budget_and_one_confirmation(storage, name, results, n_trials, pids) -> None:
    for code, _out, err in results:
        assert code == 0, err[-3000:]
        assert "Traceback" not in err
    finished = trials(storage, name, FINISHED)
    assert n_trials <= len(finished) <= n_trials + len(results) - 1  # only in-flight overshoot
    assert not trials(storage, name, RUNNING)
    study = optuna.load_study(study_name=name, storage=storage)
    confirmer = study.user_attrs[records.STUDY_CONFIRMED]
    assert confirmer["pid"] in pids
    told = [err for _, _, err in results if "the confirmation was run by" in err]
    assert len(told) == len(results) - 1  # every other process read the stored result
    headlines = {out.strip().splitlines()[0] for _, out, _ in results}
    assert len(headlines) == 1 and headlines.pop().startswith("Recommended: ")


@pytest.mark.parametrize("processes", [2, 3])
def test_processes_started_together_on_a_fresh_sqlite_file(tmp_path: Path, processes: int):
    storage = f"sqlite:///{tmp_path / 'fresh.db'}"
    running = [start(storage, "c", "--trials", "10", *QUICK, cwd=tmp_path)
               for _ in range(processes)]  # fmt: skip
    pids = [p.pid for p in running]
    results = [finish(p) for p in running]
    assert_one_budget_and_one_confirmation(storage, "c", results, 10, pids)


def test_three_processes_on_a_fresh_postgres_database(postgres_url, tmp_path: Path):  # noqa: F811
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("CREATE DATABASE fresh_race")
    storage = postgres_url.rsplit("/", 1)[0] + "/fresh_race"
    running = [start(storage, "pg", "--trials", "9", *QUICK, cwd=tmp_path) for _ in range(3)]
    pids = [p.pid for p in running]
    results = [finish(p) for p in running]
    assert_one_budget_and_one_confirmation(storage, "pg", results, 9, pids)


SLOW = ["--trials", "6", "--epochs", "30", "--seeds", "1", "--top-k", "1"]


def _mid_trial(storage: str, name: str, process: subprocess.Popen) -> list:
    """Wait until the process has finished a trial and is running the next; the finished ones."""

    def ready() -> bool:
        assert process.poll() is None, process.communicate()[1][-2000:]
        try:
            return bool(trials(storage, name, FINISHED)) and bool(trials(storage, name, RUNNING))
        except KeyError:  # the study is not created yet
            return False

    wait_for(ready)
    return [(t.number, t.value, t.state) for t in trials(storage, name, FINISHED)]


def test_kill_9_mid_trial_then_rerun_at_once(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 'k.db'}"
    first = start(storage, "k", *SLOW, cwd=tmp_path)
    kept = _mid_trial(storage, "k", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    code, out, err = finish(start(storage, "k", *SLOW, cwd=tmp_path))  # at once: no grace period
    assert code == 0, err[-3000:]
    assert not trials(storage, "k", RUNNING)
    finished = trials(storage, "k", FINISHED)
    assert len(finished) == 6  # one process: the budget exactly
    now = {t.number: (t.value, t.state) for t in finished}
    assert all(now[n] == (v, s) for n, v, s in kept)  # every finished trial kept, untouched
    failed = trials(storage, "k", (optuna.trial.TrialState.FAIL,))
    assert len(failed) == 1 and failed[0].user_attrs[records.PID] == first.pid


def test_sigterm_closes_the_trial_prints_the_summary_exits_143_and_resumes(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 't.db'}"
    first = start(storage, "t", *SLOW, cwd=tmp_path)
    _mid_trial(storage, "t", first)
    first.send_signal(signal.SIGTERM)
    code, out, err = finish(first)
    assert code == 143, err[-3000:]
    assert "Traceback" not in err
    assert "terminated: the finished trials are stored" in err
    assert "Study 't' stored in" in out  # the summary of what is done so far
    assert not trials(storage, "t", RUNNING)  # the running trial was closed, not left behind
    code, out, err = finish(start(storage, "t", *SLOW, cwd=tmp_path))
    assert code == 0, err[-3000:]
    assert len(trials(storage, "t", FINISHED)) == 6


def test_a_study_already_confirmed_prints_at_once_and_trains_nothing(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 'done.db'}"
    args = ["--trials", "4", *QUICK]
    code, first, err = finish(start(storage, "d", *args, cwd=tmp_path))
    assert code == 0, err[-3000:]
    before = [(t.number, t.datetime_complete) for t in trials(storage, "d")]
    stored = optuna.load_study(study_name="d", storage=storage).user_attrs
    code, again, err = finish(start(storage, "d", *args, cwd=tmp_path))
    assert code == 0, err[-3000:]
    assert [(t.number, t.datetime_complete) for t in trials(storage, "d")] == before
    after = optuna.load_study(study_name="d", storage=storage).user_attrs
    assert after[records.STUDY_CONFIRMED] == stored[records.STUDY_CONFIRMED]  # not re-confirmed
    assert again.splitlines()[:3] == first.splitlines()[:3]

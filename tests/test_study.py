"""Storage: SQLite tuning, clear errors, a killed worker (PostgreSQL workers: test_workers)."""

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import optuna
import pytest

from autoinit import records, search
from autoinit import study as studies
from autoinit.errors import StorageError
from autoinit.testing import tiny_mlp

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def test_sqlite_storage_uses_wal_and_creates_its_folder(tmp_path):
    path = tmp_path / "deep" / "er" / "s.db"
    storage = studies.open_storage(f"sqlite:///{path}")
    optuna.create_study(storage=storage, study_name="x")
    assert path.exists()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with storage.engine.connect() as connection:
        synchronous = connection.exec_driver_sql("PRAGMA synchronous").scalar()
    assert synchronous == 1  # NORMAL


@pytest.mark.parametrize(
    "url, message",
    [("not a url", "bad storage URL"), ("mysql://u@localhost/db", "driver for mysql"),
     ("sqlite:////dev/null/sub/x.db", "cannot create the studies folder")],
)
def test_bad_storage_urls_give_one_clear_line(url, message):
    with pytest.raises(StorageError, match=message) as caught:
        studies.open_storage(url)
    assert "\n" not in str(caught.value)


def test_postgres_password_is_not_echoed():
    with pytest.raises(StorageError) as caught:
        studies.open_storage("postgresql://user:secret@127.0.0.1:1/db")
    assert "secret" not in str(caught.value)


def test_load_study_errors_name_the_stored_studies(tmp_path):
    storage = studies.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    with pytest.raises(StorageError, match="no study yet"):
        studies.load_study(storage, None)
    optuna.create_study(storage=storage, study_name="alpha")
    with pytest.raises(Exception, match="alpha"):
        studies.load_study(storage, "beta")
    assert studies.load_study(storage, None).study_name == "alpha"


KILLABLE_WORKER = textwrap.dedent(
    """
    import sys, time
    import optuna
    from autoinit import records, search
    from autoinit.testing import tiny_mlp, toy_classification

    def slow_after_two(study, trial):
        print("finished", trial.number, flush=True)

    search(tiny_mlp(8, 3), toy_classification(n=240), n_trials=50, epochs=400,
           storage=sys.argv[1], study_name="killed", seed=0, callbacks=[slow_after_two])
    """
)


def test_a_killed_worker_loses_no_finished_trial_and_its_trial_is_retried(
    tmp_path, monkeypatch
):
    url = f"sqlite:///{tmp_path / 's.db'}"
    worker = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_WORKER, url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout.readline().startswith("finished 0")
        time.sleep(0.5)  # trial 1 is training now (each trial takes ~1 s)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    before = optuna.load_study(study_name="killed", storage=url)
    finished_before = {t.number: t.value for t in before.get_trials(states=FINISHED)}
    running = [t.number for t in before.get_trials(states=(optuna.trial.TrialState.RUNNING,))]
    assert finished_before and running  # a trial was cut off mid-training

    monkeypatch.setattr(studies, "HEARTBEAT_SECONDS", 1)  # grace period: 3 s
    time.sleep(3.5)
    from autoinit.testing import toy_classification

    study = search(tiny_mlp(8, 3), toy_classification(n=240), n_trials=len(finished_before) + 1,
                   epochs=400, storage=url, study_name="killed", seed=0)
    after = {t.number: t for t in study.trials}
    assert all(after[n].value == v for n, v in finished_before.items())
    assert after[running[0]].state == optuna.trial.TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == running[0]]
    assert retried and retried[0].params == after[running[0]].params


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # trials asked, not optimized
def test_only_running_trials_of_dead_processes_on_this_host_are_cleared(tmp_path):
    study = optuna.create_study(storage=studies.open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid, here = int(dead.stdout), studies.this_process()
    owners = {
        "dead here": {**here, records.PID: dead_pid},
        "alive here": here,
        "dead elsewhere": {records.HOST: "another-host", records.PID: dead_pid},
        # Between a starting trial's first two writes (host, then PID): not known to be dead.
        "host only": {records.HOST: here[records.HOST]},
        "nobody": {},
    }
    numbers = {}
    for name, attrs in owners.items():
        trial = study.ask()
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        numbers[name] = trial.number
    assert studies.clear_dead_trials(study) == [numbers["dead here"]]
    assert studies.clear_dead_trials(study, include_self=True) == [numbers["alive here"]]
    states = {t.number: t.state for t in study.trials}
    failed = {name for name, n in numbers.items() if states[n] == optuna.trial.TrialState.FAIL}
    assert failed == {"dead here", "alive here"}
    # Each cleared trial is queued again (Optuna's retry).
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 2

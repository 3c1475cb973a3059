"""Worker processes really share the work: on SQLite, on PostgreSQL, and from the CLI.

Each trial records the PID (and host) of the process that ran it, so the tests ask the stored
trials who trained them instead of only counting finished trials: a worker that returns
without training anything leaves every trial to the main process, and these tests fail.
"""

import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import optuna
import pytest
from click.testing import CliRunner

from autoinit import records, search
from autoinit.cli import main
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

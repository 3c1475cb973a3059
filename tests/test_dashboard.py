from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pytest
from study_factory import make_study, mixed_trials, sqlite_url

from autoinit import records
from autoinit.dashboard import (
    CONFIRMATION_ID,
    HEATMAP_ID,
    dashboard_command,
    run_dashboard,
    save_to_dashboard,
)
from autoinit.errors import ConfigError
from autoinit.report import summary_markdown

optuna_dashboard = pytest.importorskip(
    "optuna_dashboard", reason="optional extra: pip install 'autoinit[dashboard]'"
)


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    return make_study(tmp_path, mixed_trials(), with_recommendation=True)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def dashboard_url(tmp_path: Path, study: optuna.Study) -> Iterator[str]:
    """optuna-dashboard's own app on the study's storage, served on 127.0.0.1 only.

    The study comes first: the dashboard opens SQLite without creating Optuna's tables.
    """
    app = optuna_dashboard.wsgi(sqlite_url(tmp_path))
    server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _get(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # local, no proxy
    with opener.open(url, timeout=10) as resp:
        return json.load(resp)


def _study_detail(base_url: str, study: optuna.Study) -> dict[str, Any]:
    """The dashboard's view of ``study``, found by name as a user would."""
    studies = _get(f"{base_url}/api/studies")["study_summaries"]
    study_id = next(s["study_id"] for s in studies if s["study_name"] == study.study_name)
    return _get(f"{base_url}/api/studies/{study_id}")


def _graph_ids(detail: dict[str, Any]) -> list[str]:
    return sorted(g["id"] for g in detail["plotly_graph_objects"])


def test_save_to_dashboard_writes_the_note_and_figures(
    study: optuna.Study, dashboard_url: str
) -> None:
    assert save_to_dashboard(study) is True
    assert save_to_dashboard(study) is True  # saving again replaces, never duplicates
    assert optuna_dashboard.get_note(study) == summary_markdown(study)

    detail = _study_detail(dashboard_url, study)
    assert detail["note"] == {"version": 2, "body": summary_markdown(study)}
    assert _graph_ids(detail) == sorted([HEATMAP_ID, CONFIRMATION_ID])
    heatmap = next(g for g in detail["plotly_graph_objects"] if g["id"] == HEATMAP_ID)
    assert json.loads(heatmap["graph_object"])["data"][0]["type"] == "heatmap"


def test_without_recommendation_only_the_heatmap_is_saved(
    tmp_path: Path, dashboard_url: str
) -> None:
    study = make_study(tmp_path, mixed_trials(), name="unconfirmed")  # same storage
    assert save_to_dashboard(study) is True
    detail = _study_detail(dashboard_url, study)
    assert "No confirmation over seeds was run" in detail["note"]["body"]
    assert _graph_ids(detail) == [HEATMAP_ID]


def test_dashboard_server_shows_our_records(study: optuna.Study, dashboard_url: str) -> None:
    detail = _study_detail(dashboard_url, study)
    served = {t["number"]: t for t in detail["trials"]}
    assert sorted(served) == [t.number for t in study.trials]
    for trial in study.trials:
        got = served[trial.number]
        assert got["state"] == trial.state.name.capitalize()
        params = {p["name"]: p["param_external_value"] for p in got["params"]}
        assert params == {k: str(v) for k, v in trial.params.items()}
        attrs = {a["key"]: a["value"] for a in got["user_attrs"]}
        assert set(attrs) == set(trial.user_attrs)
        if records.PRUNE_REASON in trial.user_attrs:
            assert attrs[records.PRUNE_REASON] == trial.user_attrs[records.PRUNE_REASON]
        values = {v["step"]: v["value"] for v in got["intermediate_values"]}
        assert values == trial.intermediate_values


def test_dashboard_command_is_quoted_for_the_shell() -> None:
    assert dashboard_command("sqlite:///studies/autoinit.db") == (
        "optuna-dashboard sqlite:///studies/autoinit.db"
    )
    assert dashboard_command("sqlite:///my studies/a.db") == (
        "optuna-dashboard 'sqlite:///my studies/a.db'"
    )


def _command(*args: str) -> list[str]:
    """The installed ``autoinit`` entry point (or, where it is missing, the same ``main``)."""
    script = Path(sys.executable).with_name("autoinit")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from autoinit.cli import main; main()", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _served(command: list[str], port: int, *, wait: float = 60.0) -> Iterator[str]:
    """Run ``command`` (a dashboard server) until it answers on ``port``; stop it afterwards."""
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + wait
        while True:
            if process.poll() is not None:
                pytest.fail(f"the dashboard exited ({process.returncode}): {process.stdout.read()}")
            try:
                _get(f"{base}/api/studies")
                break
            except OSError:  # not listening yet (URLError and ConnectionError are OSErrors)
                if time.monotonic() > deadline:
                    pytest.fail(f"the dashboard did not answer on {base} within {wait:.0f} s")
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        process.stdout.close()


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on ``port`` (Linux: /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def test_autoinit_dashboard_serves_the_study_on_localhost_only(
    study: optuna.Study, tmp_path: Path
) -> None:
    port = _free_port()
    command = _command("dashboard", "--storage", sqlite_url(tmp_path), "--port", str(port))
    with _served(command, port) as base_url:
        names = [s["study_name"] for s in _get(f"{base_url}/api/studies")["study_summaries"]]
        assert names == [study.study_name]
        detail = _study_detail(base_url, study)
        assert sorted(t["number"] for t in detail["trials"]) == [t.number for t in study.trials]
        if Path("/proc/net/tcp").exists():  # no --host: 127.0.0.1 (0100007F) and nothing else
            assert _listening_addresses(port) == {"0100007F"}


def test_run_dashboard_defaults_to_localhost_port_8080(
    study: optuna.Study, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind(("127.0.0.1", 8080))
        except OSError:
            pytest.skip("port 8080 is taken on this machine; run_dashboard's default needs it")
    command = [sys.executable, "-c", "import sys; from autoinit.dashboard import run_dashboard; "
               "run_dashboard(sys.argv[1])", sqlite_url(tmp_path)]  # fmt: skip
    with _served(command, 8080) as base_url:
        assert _study_detail(base_url, study)["name"] == study.study_name
        if Path("/proc/net/tcp").exists():
            assert _listening_addresses(8080) == {"0100007F"}


def test_autoinit_dashboard_on_a_taken_port_says_so_in_one_line(
    study: optuna.Study, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            _command("dashboard", "--storage", sqlite_url(tmp_path), "--port", str(port)),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    # Bottle announces the server before it binds; autoinit's one error line comes last.
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and done.stderr.strip().endswith(errors[0]), done.stderr
    assert f"cannot serve on 127.0.0.1:{port}" in errors[0] and "--port" in errors[0]


def test_missing_dashboard_is_reported(
    study: optuna.Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A mock, because the real thing cannot run here: optuna-dashboard is installed for these
    # tests, so its absence is simulated by making its import fail.
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # makes the import fail
    assert save_to_dashboard(study) is False
    with pytest.raises(ConfigError, match=r"pip install 'autoinit\[dashboard\]'"):
        run_dashboard("sqlite:///x.db")

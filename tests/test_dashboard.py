from __future__ import annotations

import json
import sys
import threading
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


def test_run_dashboard_serves_on_localhost_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda *a, **kw: calls.append((a, kw)))
    run_dashboard("sqlite:///x.db")
    assert calls == [(("sqlite:///x.db",), {"host": "127.0.0.1", "port": 8080})]


def test_missing_dashboard_is_reported(
    study: optuna.Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # makes the import fail
    assert save_to_dashboard(study) is False
    with pytest.raises(ConfigError, match=r"pip install 'autoinit\[dashboard\]'"):
        run_dashboard("sqlite:///x.db")

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import optuna
import plotly.offline
import pytest
from study_factory import EDGE_CASES, complete, make_study, mixed_trials, pruned, study_attrs

from autoinit import plots, records
from autoinit.report import default_report_path, summary_markdown, write_report

PAYLOAD = "<script>alert(1)</script>"


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    return make_study(tmp_path, mixed_trials(), with_recommendation=True)


def _snippet_line(label_args: str) -> str:
    return f"model = apply(model, Config({label_args}))"


def test_report_has_the_summary_and_the_snippet(study: optuna.Study, tmp_path: Path) -> None:
    page = write_report(study, tmp_path / "report.html").read_text(encoding="utf-8")
    rec = study.user_attrs[records.STUDY_RECOMMENDATION]
    assert "kaiming_normal + leaky_relu(0.02)" in page
    assert f"{rec['mean']:.4g} ± {rec['std']:.2g}" in page  # the winner's evidence
    assert f"{rec['default']['mean']:.4g} ± {rec['default']['std']:.2g}" in page
    assert f"({rec['improvement_pct']:.1f}%)" in page
    assert "over seeds 0, 1, 2" in page
    assert "MLP(30 -&gt; 8x64 -&gt; 2)" in page
    assert "breast_cancer.csv" in page and "epochs: 10" in page
    assert "7 pruned (non-finite 1, exploding 2" in page
    snippet = _snippet_line('"kaiming_normal", "leaky_relu", leaky_slope=0.02')
    assert html.escape(snippet) in page
    assert page.count('class="plotly-graph-div"') == len(plots.FIGURES)


def test_report_embeds_plotly_js_once(study: optuna.Study, tmp_path: Path) -> None:
    page = write_report(study, tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count(plotly.offline.get_plotlyjs()[:200]) == 1
    assert re.search(r"<script[^>]*\bsrc=", page) is None  # works offline


def test_report_escapes_everything_from_the_study(tmp_path: Path) -> None:
    attrs = {**study_attrs(), records.STUDY_MODEL: PAYLOAD, records.STUDY_DATA: {PAYLOAD: 1}}
    trials = [complete(PAYLOAD, "relu", 0.2), pruned(PAYLOAD, "tanh", "exploding")]
    study = make_study(tmp_path, trials, name=PAYLOAD, attrs=attrs)
    path = write_report(study, tmp_path / "report.html")
    page = path.read_text(encoding="utf-8")
    assert PAYLOAD not in page
    assert "<title>autoinit report: &lt;script&gt;alert(1)&lt;/script&gt;</title>" in page


def test_default_path_is_a_safe_name_under_studies(
    study: optuna.Study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert write_report(study) == Path("studies/autoinit-test.html")
    assert (tmp_path / "studies" / "autoinit-test.html").is_file()
    assert default_report_path("../a b/<c>") == Path("studies/a_b_c.html")


def test_without_confirmation_the_best_trial_is_shown(tmp_path: Path) -> None:
    md = summary_markdown(make_study(tmp_path, mixed_trials()))
    assert "No confirmation over seeds was run" in md
    assert "#5, `kaiming_normal + leaky_relu(0.02)`: validation loss 0.18" in md
    assert _snippet_line('"kaiming_normal", "leaky_relu", leaky_slope=0.02') in md


def test_markdown_summary_matches_the_report(study: optuna.Study) -> None:
    md = summary_markdown(study)
    assert md.startswith("## autoinit report: `autoinit-test`")
    assert "Use `kaiming_normal + leaky_relu(0.02)`" in md
    assert "| PyTorch default | `default + relu` |" in md
    assert "```python\nfrom autoinit import Config, apply" in md


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("empty", "The study has no trials yet, so there is nothing to recommend."),
        ("only-pruned", "None of the 2 trials completed, so there is nothing to recommend."),
        ("only-failed", "None of the 2 trials completed, so there is nothing to recommend."),
        ("single", "The best single trial is #0, kaiming_normal + relu"),
    ],
)
def test_edge_cases_give_a_report_that_says_so(tmp_path: Path, case: str, says: str) -> None:
    study = make_study(tmp_path, EDGE_CASES[case], attrs={"data": {"description": "toy"}})
    page = write_report(study, tmp_path / "report.html").read_text(encoding="utf-8")
    assert says in page
    assert ("Config(" in page) == (case == "single")
    assert page.count('class="plotly-graph-div"') == len(plots.FIGURES)


def _render(page: Path, profile: Path) -> tuple[str, str]:
    """The DOM after scripts ran, and the browser's log, from headless Chromium."""
    result = subprocess.run(
        [
            shutil.which("chromium") or "chromium",
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, result.stderr


@pytest.mark.parametrize("case", ["mixed", "empty"])
def test_browser_draws_every_figure_without_errors(tmp_path: Path, case: str) -> None:
    if shutil.which("chromium") is None:
        pytest.skip("chromium not installed: apt-get install -y chromium")
    trials = mixed_trials() if case == "mixed" else EDGE_CASES[case]
    study = make_study(tmp_path, trials, with_recommendation=case == "mixed")
    dom, log = _render(write_report(study, tmp_path / "report.html"), tmp_path / "profile")

    drawn = re.findall(r'<div[^>]*class="[^"]*\bjs-plotly-plot\b', dom)
    assert len(drawn) == len(plots.FIGURES)
    assert dom.count('class="main-svg"') >= len(plots.FIGURES)
    console = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []

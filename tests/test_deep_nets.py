"""The paths a real user takes when PyTorch's default fails: deep nets, end to end.

Each search runs through the CLI or ``recommend()`` and is then read back through every display:
``str(rec)``, ``autoinit show``, ``show --json``, ``autoinit report`` and the optuna-dashboard note
(with optuna-dashboard installed, and with it hidden). Data and budgets are tiny; what matters
is that a diverged default, a partly diverged default, a confirmation where everything
diverged, a study with no completed trial and an interrupted confirmation are results to show,
never a traceback.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import sys
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner, Result
from study_factory import make_study, mixed_trials, pruned, recommendation
from torch import nn

from autoinit import Recommendation, recommend
from autoinit.cli import ERROR_LOG, NO_RECOMMENDATION, main
from autoinit.errors import NoRecommendation
from autoinit.models import MLP
from autoinit.report import summary_markdown
from autoinit.testing import toy_classification

HAS_DASHBOARD = "optuna_dashboard" in sys.modules or __import__("importlib").util.find_spec(
    "optuna_dashboard"
) is not None


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(params=["dashboard", "no-dashboard"])
def dashboard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """With optuna-dashboard importable, and with it hidden as on a bare install."""
    if request.param == "no-dashboard":
        monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # the import now fails
        return False
    if not HAS_DASHBOARD:
        pytest.skip("optuna-dashboard is not installed: pip install 'autoinit[dashboard]'")
    return True


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _csv(path: Path) -> Path:
    x, y = toy_classification(n=150, features=6, classes=3)
    rows = ["a,b,c,d,e,f,label"] + [
        ",".join(f"{v:.4f}" for v in row.tolist()) + f",k{int(c)}" for row, c in zip(x, y)
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def check_every_view(storage: str, name: str, tmp_path: Path, *words: str) -> dict:
    """show, show --json, report and the dashboard note all work and all say ``words``."""
    shown = invoke("show", "--storage", storage, "--study-name", name)
    assert shown.exit_code == 0 and "Traceback" not in shown.output, shown.output
    as_json = invoke("show", "--storage", storage, "--study-name", name, "--json")
    assert as_json.exit_code == 0, as_json.output
    payload = json.loads(as_json.stdout)
    report = tmp_path / f"{name}.html"
    written = invoke("report", "--storage", storage, "--study-name", name, "--output", report)
    assert written.exit_code == 0, written.output
    page = report.read_text(encoding="utf-8")
    study = optuna.load_study(study_name=name, storage=storage)
    note = summary_markdown(study)
    for word in words:
        assert word in shown.stdout, (word, shown.stdout)
        assert word in page, word
        assert word in note, word
        assert word in payload["recommendation"]["headline"], word
    return payload


def _dashboard_note(storage: str, name: str) -> str | None:
    import optuna_dashboard

    return optuna_dashboard.get_note(optuna.load_study(study_name=name, storage=storage))


# --- the CLI on deep MLPs --------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 8, 24])
@pytest.mark.parametrize("space", ["relu-only", "mixed"])
def test_cli_search_then_every_view(
    depth: int, space: str, dashboard: bool, cwd: Path, tmp_path: Path
) -> None:
    storage = f"sqlite:///{cwd / 'deep.db'}"
    acts = "relu" if space == "relu-only" else "relu,tanh,selu"
    result = invoke(
        "search", "--data", _csv(cwd / "blobs.csv"), "--storage", storage, "--depth", depth,
        "--width", "16", "--trials", "6", "--epochs", "3", "--seeds", "2", "--top-k", "2",
        "--inits", "default,kaiming_normal,xavier_normal", "--activations", acts,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    name = f"blobs-{depth}x16"
    payload = check_every_view(storage, name, tmp_path, "over seeds 1000, 1001")
    rec = payload["recommendation"]
    assert rec["found"] and rec["confirmed"] and rec["seeds"] == [1000, 1001]
    default = rec["default"]
    assert default["config"] == {"init": "default", "activation": "relu", "leaky_slope": None}
    if depth == 24:  # 24 ReLU layers at PyTorch's default init: the signal dies out
        # the race drops the default after the first round (two seeds, trained together);
        # the evidence says on how many it diverged
        assert default["diverged"] == len(default["seeds"]) == 2 and default["mean"] is None
        assert rec["improvement"] is None
        assert "PyTorch's default (default + relu) diverged on both seeds" in rec["headline"]
        assert "the winner trained on all" in rec["headline"]
        assert "diverged on both seeds" in result.stdout
    if dashboard:
        assert _dashboard_note(storage, name) == summary_markdown(
            optuna.load_study(study_name=name, storage=storage)
        )


# --- recommend() on deep models --------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 8, 24])
def test_recommend_on_a_deep_relu_net(depth: int, dashboard: bool, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'api.db'}"
    model_fn = functools.partial(MLP, 8, 3, depth=depth, width=32)
    rec = recommend(
        model_fn, toy_classification(n=240), inits=["default", "kaiming_normal", "xavier_normal"],
        activations=["relu", "tanh"], n_trials=8, max_steps=12, seeds=2, top_k=2,
        storage=storage, study_name="api",
    )  # fmt: skip
    assert rec.found and math.isfinite(rec.winner.mean)
    text = str(rec)
    assert text.startswith(f"Recommended: {rec.config.label}")
    if depth == 24:
        assert rec.default.n_diverged == len(rec.default.values) and rec.improvement is None
        assert "PyTorch default (default + relu) diverged on" in text
    stored = Recommendation.from_study(optuna.load_study(study_name="api", storage=storage))
    assert stored == dataclass_with_name(rec, "api")
    check_every_view(storage, "api", tmp_path, rec.config.label)


def dataclass_with_name(rec: Recommendation, name: str) -> Recommendation:
    import dataclasses

    return dataclasses.replace(rec, study_name=name)


class _Fragile(nn.Module):
    """An MLP whose output is scaled ×1e6 on chosen seeds: training those seeds diverges.

    ``build()`` seeds torch before calling the factory, so ``torch.initial_seed()`` is the
    run's seed; the search trains on seed 0 and the confirmation on seeds 1000 and up.
    """

    def __init__(self, activation=nn.ReLU, *, fragile_seeds=(), only_relu=False) -> None:
        super().__init__()
        self.net = MLP(8, 3, depth=3, width=16, activation=activation)
        hit = torch.initial_seed() in fragile_seeds and (
            not only_relu or isinstance(activation(), nn.ReLU)
        )
        self.scale = 1e6 if hit else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.scale


def test_default_diverged_on_some_seeds_but_not_all(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'partial.db'}"
    model_fn = functools.partial(_Fragile, fragile_seeds=(1001,), only_relu=True)
    rec = recommend(
        model_fn, toy_classification(n=240), inits=["default"], activations=["relu", "tanh"],
        n_trials=2, max_steps=10, seeds=3, top_k=2, race=False, storage=storage,
        study_name="partial",
    )  # fmt: skip
    default = rec.default
    assert default.n_diverged == 1 and len(default.trained) == 2
    assert rec.config.activation == "tanh"  # a config that diverged once cannot win
    assert "exploding" in default.divergence() or "non-finite" in default.divergence()
    text = str(rec)
    assert "on 2 seed(s); diverged on 1 of 3 seeds" in text
    check_every_view(storage, "partial", tmp_path, "diverged on 1 of 3 seeds")


def test_every_confirmed_config_diverged(tmp_path: Path, cwd: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'all.db'}"
    model_fn = functools.partial(_Fragile, fragile_seeds=(1000, 1001))
    with pytest.raises(NoRecommendation, match="every confirmed configuration diverged") as caught:
        recommend(model_fn, toy_classification(n=240), inits=["default", "kaiming_normal"],
                  activations=["relu", "tanh"], n_trials=4, max_steps=10, seeds=2, top_k=2,
                  storage=storage, study_name="all")  # fmt: skip
    rec = caught.value.recommendation
    assert not rec.found and rec.winner is None and rec.improvement is None
    assert all(r.n_diverged >= 1 and r.dropped for r in rec.ranking)
    assert "try a lower learning rate" in str(caught.value)
    with pytest.raises(Exception, match="no recommendation to apply"):
        rec.build(model_fn)
    payload = check_every_view(storage, "all", tmp_path, "No recommendation", "lower learning rate")
    assert payload["recommendation"]["found"] is False
    assert payload["recommendation"]["config"] is None


def test_cli_when_every_trial_diverges_exits_3_and_says_what_to_try(cwd: Path) -> None:
    storage = f"sqlite:///{cwd / 'dead.db'}"
    result = invoke(
        "search", "--data", _csv(cwd / "blobs.csv"), "--storage", storage, "--depth", "20",
        "--width", "16", "--trials", "3", "--epochs", "1", "--inits", "normal,zeros",
        "--activations", "relu",
    )  # fmt: skip
    assert result.exit_code == NO_RECOMMENDATION, result.output
    assert "Traceback" not in result.output
    assert "None of the" in result.stdout and "lower learning rate" in result.stdout
    check_every_view(storage, "blobs-20x16", cwd, "nothing to recommend", "lower learning rate")
    as_json = invoke("search", "--data", cwd / "blobs.csv", "--storage", storage, "--depth", "20",
                     "--width", "16", "--trials", "3", "--epochs", "1", "--inits", "normal,zeros",
                     "--activations", "relu", "--json")  # fmt: skip
    assert as_json.exit_code == NO_RECOMMENDATION
    assert json.loads(as_json.stdout)["recommendation"]["found"] is False


def test_a_study_with_no_complete_trial_has_every_view(tmp_path: Path) -> None:
    trials = [pruned("orthogonal", "selu", "exploding"), pruned("default", "tanh", "symmetric")]
    study = make_study(tmp_path, trials, name="dead")
    storage = f"sqlite:///{tmp_path / 'autoinit.db'}"
    rec = Recommendation.from_study(study)
    assert not rec.found and not rec.confirmed and rec.ranking == ()
    check_every_view(storage, "dead", tmp_path, "None of the 2 trials completed")


def test_a_stored_partly_diverged_default_renders_everywhere(tmp_path: Path) -> None:
    stored = recommendation(default_values=(0.29, math.inf, 0.31))
    make_study(tmp_path, mixed_trials(), name="partly", with_recommendation=stored)
    storage = f"sqlite:///{tmp_path / 'autoinit.db'}"
    payload = check_every_view(storage, "partly", tmp_path, "diverged on 1 of 3 seeds",
                               "vanishing gradient at step 30")  # fmt: skip
    assert payload["recommendation"]["improvement"] is None


def test_interrupted_confirmation_shows_the_search_and_resumes(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl+C during the confirmation: every view shows the unconfirmed search; a rerun confirms."""
    confirming = importlib.import_module("autoinit._recommend")

    storage = f"sqlite:///{cwd / 'c.db'}"
    args = ["search", "--data", _csv(cwd / "blobs.csv"), "--storage", storage, "--depth", "4",
            "--width", "8", "--trials", "3", "--epochs", "1", "--seeds", "2", "--top-k", "1"]
    trainers = ("_train_once", "_train_together")  # one config at a time, or several
    real = {name: getattr(confirming, name) for name in trainers}

    def interrupt(*a, **kw):
        raise KeyboardInterrupt

    for name in trainers:
        monkeypatch.setattr(confirming, name, interrupt)
    stopped = invoke(*args)
    assert stopped.exit_code == 130, stopped.output
    check_every_view(storage, "blobs-4x8", cwd, "No confirmation over seeds was run")
    for name in trainers:
        monkeypatch.setattr(confirming, name, real[name])
    resumed = invoke(*args)
    assert resumed.exit_code == 0, resumed.output
    assert "Confirmed over 2 seeds" in resumed.stdout
    check_every_view(storage, "blobs-4x8", cwd, "over seeds 1000, 1001")


def test_an_internal_error_is_one_line_logged_and_the_command_resumes(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    confirming = importlib.import_module("autoinit._recommend")

    storage = f"sqlite:///{cwd / 'bug.db'}"
    args = ["search", "--data", _csv(cwd / "blobs.csv"), "--storage", storage, "--depth", "2",
            "--width", "8", "--trials", "3", "--epochs", "1", "--seeds", "1", "--top-k", "1"]

    def bug(*a, **kw):
        raise TypeError("'>=' not supported between instances of 'NoneType' and 'int'")

    for name in ("_train_once", "_train_together"):  # one config at a time, or several
        monkeypatch.setattr(confirming, name, bug)
    crashed = invoke(*args)
    assert crashed.exit_code == 1
    lines = crashed.stderr.strip().splitlines()
    assert lines[-1].startswith("error: internal error in autoinit (TypeError: '>='")
    assert str(ERROR_LOG) in lines[-1] and "run the same command again" in lines[-1]
    assert "Traceback" not in crashed.output
    log = (cwd / ERROR_LOG).read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in log and "def bug" not in log
    assert "in bug" in log  # the real frame, for the bug report
    monkeypatch.undo()
    resumed = invoke(*args)
    assert resumed.exit_code == 0, resumed.output
    assert "3 trials: " in resumed.stdout  # the three finished trials were kept, none retrained

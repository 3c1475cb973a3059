"""Recommendation.explain(), `autoinit show --explain`, and the signal-propagation figure."""

from __future__ import annotations

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from autoinit import Config, Ranked, Recommendation, plots, recommend, records
from autoinit.cli import main
from autoinit.errors import ConfigError
from autoinit.models import mlp_factory
from autoinit.study import open_storage
from autoinit.testing import toy_classification

INITS = ("default", "kaiming_normal", "xavier_uniform", "lecun_normal", "normal")
ACTS = ("relu", "tanh", "selu", "sigmoid")
DISTS = {"init": CategoricalDistribution(INITS), "activation": CategoricalDistribution(ACTS)}


def _probe(stds, grads, cause=None, verdict=None):
    return {
        "layers": [str(i) for i in range(len(stds))], "output_std": stds,
        "output_mean": [0.0] * len(stds), "dead": [0.0] * len(stds),
        "saturated": [0.0] * len(stds), "grad_rms": grads, "worst_dead": 0.0,
        "worst_saturated": 0.0, "cause": cause, "verdict": verdict,
    }  # fmt: skip


HEALTHY = _probe([1.0, 0.9, 1.1], [0.02, 0.03, 0.05])
VANISHING = _probe([1.0, 1.0, 1.0], [3e-9, 1e-4, 1e-2], "vanishing",
                   "at step 0 the first layer's gradient was 3e-07 of the last layer's (vanishing)")
EXPLODING = _probe([1.0, 4e3, 6e14], [0.1, 0.1, 0.1], "exploding",
                   "at step 0 the last layer's output std was 6e+14 times the first layer's "
                   "(exploding)")  # fmt: skip


def _add(study, init, act, state, value=None, **attrs):
    study.add_trial(create_trial(state=state, value=value, params={"init": init, "activation": act},
                                 distributions=DISTS, user_attrs=attrs))  # fmt: skip


def _pruned(kind, reason, steps, probe):
    return {records.PRUNE_KIND: kind, records.PRUNE_REASON: reason, records.STEPS: steps,
            records.PROBE: probe}  # fmt: skip


@pytest.fixture
def study(storage_url):
    study = optuna.create_study(storage=open_storage(storage_url), study_name="explained")
    study.set_user_attr(records.STUDY_SPACE, {"inits": list(INITS), "activations": list(ACTS)})
    study.set_user_attr(records.STUDY_METRIC_NAME, "accuracy")
    P = TrialState.PRUNED  # noqa: N806
    _add(study, "default", "relu", P, **_pruned(
        "vanishing", "vanishing gradient at step 30: first layer (0.weight) gradient norm 3e-09 "
        "< 1e-08 for 5 checks", 30, VANISHING))  # fmt: skip
    _add(study, "kaiming_normal", "relu", TrialState.COMPLETE, 0.31, probe=HEALTHY, steps=100)
    _add(study, "xavier_uniform", "tanh", P, **_pruned(
        "exploding", "exploding gradient across depth at step 0: the first layer's (0.weight) "
        "gradients are 5.5e+03x the output layer's", 0, HEALTHY))  # fmt: skip
    _add(study, "lecun_normal", "selu", TrialState.COMPLETE, 0.21, probe=HEALTHY, steps=100)
    _add(study, "normal", "relu", P, **_pruned(
        records.PRESCREEN, "pre-screened: " + EXPLODING["verdict"], 0, EXPLODING))
    _add(study, "xavier_uniform", "sigmoid", P, **_pruned(
        records.PRESCREEN, "pre-screened: " + VANISHING["verdict"], 0, VANISHING))
    winner = Ranked(Config("lecun_normal", "selu"), (0.2, 0.22), (0.9, 0.91), seeds=(1000, 1001))
    default = Ranked(Config("default", "relu"), (0.5, 0.54), (0.6, 0.6), seeds=(1000, 1001))
    Recommendation(winner.config, (winner, default), default, (1000, 1001), "accuracy",
                   "explained").store(study)  # fmt: skip
    return study


def test_explain_says_why_the_winner_won_citing_its_probe_and_confirmation(study):
    text = Recommendation.from_study(study).explain()
    assert text.startswith("Why lecun_normal + selu won:")
    assert "its probe (trial #3): at step 0 the last layer output std was 1.1x" in text
    assert "the first layer gradient was 0.4x the last layer's" in text
    assert "confirmed over seeds 1000, 1001: validation loss 0.21 ± 0.014 against 0.52" in text
    assert "PyTorch's default (default + relu), 59.6% lower" in text


def test_explain_names_the_cause_of_each_stopped_baseline(study):
    lines = Recommendation.from_study(study).explain().splitlines()
    default = next(line for line in lines if line.startswith("  - default + relu"))
    assert "stopped after 30 steps: vanishing gradient at step 30" in default
    assert "3e-09" in default
    xavier = next(line for line in lines if line.startswith("  - xavier_uniform + tanh"))
    assert "stopped after 0 steps: exploding gradient across depth" in xavier
    kaiming = next(line for line in lines if line.startswith("  - kaiming_normal + relu"))
    assert "trained: validation loss 0.31" in kaiming


def test_explain_says_why_each_prescreened_family_was_stopped(study):
    text = Recommendation.from_study(study).explain()
    assert "Pre-screened at step 0, never trained (2 configs in 2 families):" in text
    assert ("  - xavier_uniform + sigmoid: at step 0 the first layer's gradient was 3e-07 of the "
            "last layer's (vanishing)") in text  # fmt: skip
    assert "  - normal + relu: at step 0 the last layer's output std was 6e+14" in text
    assert "Stopped early, by cause: " in text and "vanishing 2" in text


def test_explain_needs_the_trials_and_can_be_given_the_study(study):
    bare = Recommendation.from_dict(study.user_attrs[records.STUDY_RECOMMENDATION])
    with pytest.raises(ConfigError, match="needs the study's trials"):
        bare.explain()
    assert bare.explain(study) == Recommendation.from_study(study).explain()
    assert bare == Recommendation.from_study(study)  # the carried trials are not compared


def test_recommend_returns_a_recommendation_that_explains_itself(storage_url):
    x, y = toy_classification(n=192, features=16, classes=4)
    rec = recommend(mlp_factory(16, 4, depth=20, width=32), (x, y), n_trials=8, epochs=1, seeds=1,
                    top_k=1, storage=storage_url, inits=["default", "kaiming_normal", "normal"],
                    activations=["relu"], race=False, prescreen="space")  # fmt: skip
    text = rec.explain()
    assert f"Why {rec.config.label} won:" in text
    default = next(line for line in text.splitlines() if line.startswith("  - default + relu"))
    assert "pre-screened" in default and "(vanishing)" in default
    assert "  - normal + relu: exploding loss at step 0" in text


def test_show_explain_prints_the_explanation(study, storage_url):
    result = CliRunner().invoke(main, ["show", "--storage", storage_url, "--study-name",
                                       "explained", "--explain"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Why lecun_normal + selu won:" in result.output
    assert "xavier_uniform + sigmoid: at step 0" in result.output
    as_json = CliRunner().invoke(main, ["show", "--storage", storage_url, "--study-name",
                                        "explained", "--explain", "--json"])  # fmt: skip
    assert as_json.exit_code == 0, as_json.output
    assert '"explanation": "Why lecun_normal + selu won:' in as_json.output


# --- the signal propagation figure --------------------------------------------------------------


def test_signal_figure_has_the_winner_the_baselines_and_dashed_pruned_lines(study):
    info = plots._get_signal_info(study)
    roles = {line.name: line.role for line in info.lines}
    assert roles["#3 lecun_normal + selu (winner)"] == "winner"
    assert roles["#1 kaiming_normal + relu (baseline)"] == "baseline"
    assert roles["#0 default + relu (baseline)"] == "baseline"
    pruned = [line for line in info.lines if line.role == "pruned"]
    assert {line.name for line in pruned} == {"#4 normal + relu: exploding",
                                              "#5 xavier_uniform + sigmoid: vanishing"}
    assert all(line.reason.startswith("pre-screened: at step 0") for line in pruned)
    exploding = next(line for line in pruned if "normal + relu" in line.name)
    assert exploding.output_std == [1.0, 4e3, 6e14] and exploding.layers == [0, 1, 2]
    figure = plots.plot_signal(study)
    dashed = {t.name for t in figure.data if t.line.dash == "dash"}
    assert dashed == {line.name for line in pruned}
    assert figure.layout.yaxis.type == "log" and figure.layout.yaxis2.type == "log"
    assert plots.plot_signal in plots.FIGURES


def test_signal_figure_of_a_study_without_probes_says_so(storage_url):
    empty = optuna.create_study(storage=open_storage(storage_url), study_name="no-probe")
    assert plots._get_signal_info(empty).lines == []
    figure = plots.plot_signal(empty)
    assert "No trial recorded a step-0 probe" in figure.layout.annotations[0].text


def test_heatmap_marks_prescreened_cells(study):
    cells = plots._get_heatmap_info(study).cells
    assert cells["normal", "relu"].note == "✕ step 0"
    assert records.STOP_LABELS[records.PRESCREEN] == "pre-screened"
    assert records.PRESCREEN in records.PRUNE_KINDS

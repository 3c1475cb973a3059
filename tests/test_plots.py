from __future__ import annotations

import collections

import optuna
import plotly.graph_objects as go
import pytest
from optuna.trial import TrialState
from study_factory import ACTIVATIONS, EDGE_CASES, INITS, complete, make_study, mixed_trials

from autoinit import plots, records


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    path = tmp_path_factory.mktemp("plots")
    return make_study(path, mixed_trials(), with_recommendation=True)


def test_heatmap_cells_hold_the_best_completed_loss(study: optuna.Study) -> None:
    info = plots._get_heatmap_info(study)
    assert info.inits == list(INITS)
    assert info.activations == list(ACTIVATIONS)

    best: dict[tuple[str, str], float] = {}
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        key = (t.params["init"], t.params["activation"])
        best[key] = min(best.get(key, t.value), t.value)
    assert {k: c.best_value for k, c in info.cells.items() if c.best_value is not None} == best
    # Leaky ReLU: the best over its slopes, and the label names the slope that won.
    assert info.cells["kaiming_normal", "leaky_relu"].best_label.endswith("leaky_relu(0.02)")
    assert ("orthogonal", "relu") not in info.cells  # never tried: blank


def test_heatmap_cells_without_a_completed_trial_say_why(study: optuna.Study) -> None:
    cells = plots._get_heatmap_info(study).cells
    exploding = cells["orthogonal", "selu"]
    assert exploding.best_value is None
    assert exploding.note == "✕ explodes"
    assert any("norm 3.1e+16" in reason for reason in exploding.reasons)
    assert cells["default", "selu"].note == "pruned"
    assert cells["xavier_uniform", "selu"].note == "failed"
    assert "CUDA out of memory" in cells["xavier_uniform", "selu"].reasons[0]
    assert cells["kaiming_normal", "relu"].note == ""


def test_prune_counts_by_kind(study: optuna.Study) -> None:
    counts = plots._get_prune_info(study).counts
    assert list(counts) == [*records.PRUNE_KINDS, plots.FAILED]
    expected = collections.Counter(
        "failed" if t.state == TrialState.FAIL else t.user_attrs[records.PRUNE_KIND]
        for t in study.trials
        if t.state in (TrialState.PRUNED, TrialState.FAIL)
    )
    assert counts == {kind: expected[kind] for kind in counts}
    assert counts["exploding"] == 2


def test_learning_curves_follow_the_intermediate_values(study: optuna.Study) -> None:
    curves = {c.trial_number: c for c in plots._get_learning_curves_info(study).curves}
    with_values = [t for t in study.trials if t.intermediate_values]
    assert sorted(curves) == [t.number for t in with_values]
    for t in with_values:
        curve = curves[t.number]
        assert dict(zip(curve.steps, curve.values)) == t.intermediate_values
        assert curve.activation == t.params["activation"]
        assert curve.state == t.state.name.lower()


def test_grad_norms_keep_gaps_and_mark_diverged_trials(study: optuna.Study) -> None:
    curves = {c.trial_number: c for c in plots._get_grad_norm_info(study).curves}
    first = curves[0]
    assert first.norms == [2.0, None, 1.5, 0.8]
    assert first.steps == [0, 1, 2, 3]
    assert not first.diverged
    for t in study.trials:
        kind = records.prune_kind(t)
        if kind is not None:
            assert curves[t.number].diverged == (kind != "pruner")
    assert "exploding" in curves[6].reason
    assert 13 not in curves  # the failed trial recorded no norms


def test_history_tracks_the_best_so_far(study: optuna.Study) -> None:
    info = plots._get_history_info(study)
    assert info.values == [0.30, 0.20, 0.25, 0.28, 0.22, 0.18]
    assert info.best_so_far == [0.30, 0.20, 0.20, 0.20, 0.20, 0.18]


def test_importance_covers_the_parameters_every_trial_has(study: optuna.Study) -> None:
    info = plots._get_importance_info(study)
    assert info.reason is None
    assert set(info.importances) == {"init", "activation"}
    assert sum(info.importances.values()) == pytest.approx(1.0)


def test_importance_says_why_it_cannot_be_computed(tmp_path) -> None:
    one = make_study(tmp_path, [complete("default", "relu", 0.2)], name="one")
    assert "2 completed trials" in plots._get_importance_info(one).reason
    same = [complete("default", "relu", 0.2), complete("orthogonal", "tanh", 0.2)]
    tie = make_study(tmp_path, same, name="tie")
    assert "same validation loss" in plots._get_importance_info(tie).reason


def test_confirmation_ranks_configs_and_marks_the_default(study: optuna.Study) -> None:
    info = plots._get_confirmation_info(study)
    rec = study.user_attrs[records.STUDY_RECOMMENDATION]
    assert info.labels == [r["label"] for r in rec["ranking"]]
    assert info.means == [r["mean"] for r in rec["ranking"]]
    assert info.is_default == [False, False, True]
    assert info.seeds == [0, 1, 2]


def test_confirmation_is_none_without_a_recommendation(tmp_path) -> None:
    assert plots._get_confirmation_info(make_study(tmp_path, mixed_trials())) is None


@pytest.mark.parametrize("case", ["mixed", *EDGE_CASES])
def test_every_figure_draws_every_study(tmp_path, case: str) -> None:
    trials = mixed_trials() if case == "mixed" else EDGE_CASES[case]
    study = make_study(tmp_path, trials, with_recommendation=case == "mixed")
    for plot in plots.FIGURES:
        fig = plot(study)
        assert isinstance(fig, go.Figure), plot.__name__
        fig.to_json()  # serialisable, as the report and the dashboard need
    if case == "empty":
        assert "No trial" in plots.plot_heatmap(study).layout.annotations[0].text

"""Figures of the search trials: heatmap, history, learning curves, gradient norms, stops,
importance."""



from __future__ import annotations

import collections
from typing import Any, NamedTuple

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from autoinit import records
from autoinit.plots._common import (
    _CELL_NOTES,
    _DIVERGED_COLOR,
    _GREY,
    _GUARD_KINDS,
    KIND_LABELS,
    _colors,
    _config,
    _figure,
    _kind,
    _label,
    _reason,
)

# --- init x activation heatmap ----------------------------------------------------------------


class _Cell(NamedTuple):
    best_value: float | None  # lowest validation loss of a completed trial, None if none completed
    best_trial: int | None
    best_label: str | None  # names the slope that won a leaky ReLU cell
    note: str  # why a cell without a completed trial is empty: "pruned: exploding", "failed"
    reasons: list[str]  # the stored reasons of its pruned and failed trials


class _HeatmapInfo(NamedTuple):
    inits: list[str]
    activations: list[str]
    cells: dict[tuple[str, str], _Cell]  # (init, activation) -> cell; cells never tried are absent


def _choices(trials: list[FrozenTrial], name: str) -> list[str]:
    """The searched values of a parameter, in the order of its distribution, then any others."""
    seen: dict[str, None] = {}
    for trial in trials:
        dist = trial.distributions.get(name)
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            seen.update(dict.fromkeys(str(c) for c in dist.choices))
        if name in trial.params:
            seen[str(trial.params[name])] = None
    return list(seen)


def _get_heatmap_info(study: optuna.Study) -> _HeatmapInfo:
    trials = [t for t in study.get_trials(deepcopy=False) if _config(t) is not None]
    by_cell: dict[tuple[str, str], list[FrozenTrial]] = collections.defaultdict(list)
    for trial in trials:
        by_cell[str(trial.params["init"]), str(trial.params["activation"])].append(trial)

    cells = {}
    for key, cell_trials in by_cell.items():
        done = [t for t in cell_trials if t.state == TrialState.COMPLETE]
        stopped = [t for t in cell_trials if _kind(t) is not None]
        best = min(done, key=records.loss_of) if done else None
        note = ""
        if best is None and stopped:
            kind = collections.Counter(_kind(t) for t in stopped).most_common(1)[0][0] or ""
            note = _CELL_NOTES.get(kind, f"✕ {kind}")  # a user rule's own kind, as it is
        best_config = _config(best) if best else None
        cells[key] = _Cell(
            best_value=best.value if best else None,
            best_trial=best.number if best else None,
            best_label=best_config.label if best_config else None,
            note=note,
            reasons=[_reason(t) for t in stopped],
        )
    return _HeatmapInfo(_choices(trials, "init"), _choices(trials, "activation"), cells)


def plot_heatmap(study: optuna.Study) -> go.Figure:
    """Best validation loss per initializer x activation; cells that never completed say why."""
    info = _get_heatmap_info(study)
    title = "Best validation loss per initializer × activation"
    if not info.cells:
        return _figure(title, message="No trial has run yet.")
    fig = _figure(
        title,
        xaxis={"title": "activation"},
        yaxis={"title": "initializer", "autorange": "reversed"},
    )
    empty = _Cell(None, None, None, "", [])

    def grid(value: Any) -> list[list[Any]]:
        cells = info.cells
        return [[value(cells.get((i, a), empty)) for a in info.activations] for i in info.inits]

    def hover(cell: _Cell) -> str:
        lines = list(cell.reasons)
        if cell.best_label:
            lines.insert(0, f"{cell.best_label}: {cell.best_value:.4g} (#{cell.best_trial})")
        return "<br>".join(lines) or "not tried"

    fig.add_trace(
        go.Heatmap(
            x=info.activations,
            y=info.inits,
            z=grid(lambda c: c.best_value),
            text=grid(lambda c: "" if c.best_value is None else f"{c.best_value:.3g}"),
            texttemplate="%{text}",
            hovertext=grid(hover),
            hoverinfo="text",
            hoverongaps=False,
            colorscale="Viridis_r",
            colorbar={"title": {"text": "val loss"}},
        )
    )
    notes = [(a, i, c) for (i, a), c in info.cells.items() if c.note]
    if notes:
        fig.add_trace(
            go.Scatter(
                x=[a for a, _, _ in notes],
                y=[i for _, i, _ in notes],
                mode="text",
                text=[c.note for _, _, c in notes],
                hovertext=[hover(c) for _, _, c in notes],
                hoverinfo="text",
                textfont={"color": _DIVERGED_COLOR, "size": 10},
                showlegend=False,
            )
        )
    return fig


# --- optimisation history ---------------------------------------------------------------------


class _HistoryInfo(NamedTuple):
    numbers: list[int]  # completed trials, in order
    values: list[float]
    best_so_far: list[float]
    labels: list[str]


def _get_history_info(study: optuna.Study) -> _HistoryInfo:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = [records.loss_of(t) for t in done]
    best = [min(values[: i + 1]) for i in range(len(values))]
    return _HistoryInfo([t.number for t in done], values, best, [_label(t) for t in done])


def plot_history(study: optuna.Study) -> go.Figure:
    """Validation loss of each completed trial and the best so far."""
    info = _get_history_info(study)
    title = "Optimisation history"
    if not info.numbers:
        return _figure(title, message="No trial completed, so there is no history to draw.")
    fig = _figure(title, xaxis={"title": "trial"}, yaxis={"title": "validation loss"})
    fig.add_trace(
        go.Scatter(
            x=info.numbers,
            y=info.values,
            mode="markers",
            name="trial",
            hovertext=info.labels,
            hoverinfo="text+y",
        )
    )
    fig.add_trace(go.Scatter(x=info.numbers, y=info.best_so_far, mode="lines", name="best so far"))
    return fig


# --- learning curves --------------------------------------------------------------------------


class _Curve(NamedTuple):
    trial_number: int
    label: str
    activation: str
    state: str
    steps: list[int]  # optimizer steps of the evaluations
    values: list[float | None]  # validation losses; None where non-finite


class _LearningCurvesInfo(NamedTuple):
    curves: list[_Curve]


def _get_learning_curves_info(study: optuna.Study) -> _LearningCurvesInfo:
    curves = []
    for trial in study.get_trials(deepcopy=False):
        if not trial.intermediate_values:
            continue
        steps = sorted(trial.intermediate_values)
        config = _config(trial)
        curves.append(
            _Curve(
                trial_number=trial.number,
                label=_label(trial),
                activation=config.activation if config else "?",
                state=trial.state.name.lower(),
                steps=steps,
                values=[records.finite_or_none(trial.intermediate_values[s]) for s in steps],
            )
        )
    return _LearningCurvesInfo(curves)


def plot_learning_curves(study: optuna.Study) -> go.Figure:
    """Validation loss at each evaluation of each trial, coloured by activation."""
    info = _get_learning_curves_info(study)
    title = "Learning curves (validation loss)"
    if not info.curves:
        return _figure(title, message="No trial reported a validation loss.")
    fig = _figure(title, xaxis={"title": "optimizer step"}, yaxis={"title": "validation loss"})
    colors = _colors([c.activation for c in info.curves])
    shown: set[str] = set()
    for curve in info.curves:
        dash = "solid" if curve.state == "complete" else "dot"
        fig.add_trace(
            go.Scatter(
                x=curve.steps,
                y=curve.values,
                mode="lines+markers",
                name=curve.activation,
                legendgroup=curve.activation,
                showlegend=curve.activation not in shown,
                line={"color": colors[curve.activation], "dash": dash},
                hovertext=f"{curve.label} ({curve.state})",
                hoverinfo="text+x+y",
            )
        )
        shown.add(curve.activation)
    return fig


# --- gradient norms ---------------------------------------------------------------------------


class _GradNormCurve(NamedTuple):
    trial_number: int
    label: str
    steps: list[int]
    norms: list[float | None]  # None where the norm was not finite
    diverged: bool  # pruned by the divergence guard
    reason: str | None


class _GradNormInfo(NamedTuple):
    curves: list[_GradNormCurve]


def _get_grad_norm_info(study: optuna.Study) -> _GradNormInfo:
    curves = []
    for trial in study.get_trials(deepcopy=False):
        norms = trial.user_attrs.get(records.GRAD_NORM_CURVE)
        if not norms:
            continue
        steps = trial.user_attrs.get(records.CURVE_STEPS) or list(range(len(norms)))
        diverged = records.prune_kind(trial) in _GUARD_KINDS
        curves.append(
            _GradNormCurve(
                trial_number=trial.number,
                label=_label(trial),
                steps=list(steps[: len(norms)]),
                norms=[n if n is None else records.finite_or_none(n) for n in norms[: len(steps)]],
                diverged=diverged,
                reason=trial.user_attrs.get(records.PRUNE_REASON) if diverged else None,
            )
        )
    return _GradNormInfo(curves)


def plot_grad_norms(study: optuna.Study) -> go.Figure:
    """Gradient norm over training, log scale; trials the divergence guard stopped in red."""
    info = _get_grad_norm_info(study)
    title = "Gradient norms"
    if not info.curves:
        return _figure(title, message="No trial recorded gradient norms.")
    fig = _figure(
        title, xaxis={"title": "optimizer step"}, yaxis={"title": "gradient norm", "type": "log"}
    )
    shown: set[bool] = set()
    for curve in info.curves:
        name = "diverged" if curve.diverged else "healthy"
        line = {"color": _DIVERGED_COLOR, "width": 3} if curve.diverged else {"color": _GREY}
        fig.add_trace(
            go.Scatter(
                x=curve.steps,
                y=curve.norms,
                mode="lines+markers",
                name=name,
                legendgroup=name,
                showlegend=curve.diverged not in shown,
                line=line,
                hovertext=curve.reason or curve.label,
                hoverinfo="text+x+y",
            )
        )
        shown.add(curve.diverged)
    return fig


# --- why trials stopped -----------------------------------------------------------------------


class _PruneInfo(NamedTuple):
    counts: dict[str, int]  # every prune kind, then "failed", in that order; zeros included


def _get_prune_info(study: optuna.Study) -> _PruneInfo:
    return _PruneInfo(records.stop_counts(study))


def plot_prune_reasons(study: optuna.Study) -> go.Figure:
    """How many trials were stopped early, by reason, and how many failed."""
    info = _get_prune_info(study)
    title = "Why trials stopped early"
    if not any(info.counts.values()):
        return _figure(title, message="No trial was pruned or failed.")
    fig = _figure(title, yaxis={"title": "trials"})
    colors = [_DIVERGED_COLOR if k in _GUARD_KINDS else _GREY for k in info.counts]
    fig.add_trace(
        go.Bar(
            x=[KIND_LABELS[k] for k in info.counts],
            y=list(info.counts.values()),
            marker={"color": colors},
        )
    )
    return fig


# --- parameter importance ---------------------------------------------------------------------


class _ImportanceInfo(NamedTuple):
    importances: dict[str, float]  # parameter -> importance, largest first; empty when `reason`
    reason: str | None  # why importances could not be computed


def _get_importance_info(study: optuna.Study) -> _ImportanceInfo:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        message = f"Importance needs 2 completed trials; this study has {len(done)}."
        return _ImportanceInfo({}, message)
    if len({t.value for t in done}) < 2:
        return _ImportanceInfo({}, "All completed trials have the same validation loss.")
    if all(t.params == done[0].params for t in done):
        return _ImportanceInfo({}, "All completed trials tried the same configuration.")
    # Only parameters every completed trial has: the leaky ReLU slope, tried by a few trials,
    # would otherwise look decisive on little evidence.
    params = sorted(set.intersection(*(set(t.params) for t in done)))
    importances = optuna.importance.get_param_importances(study, params=params)
    return _ImportanceInfo(dict(sorted(importances.items(), key=lambda kv: -kv[1])), None)


def plot_importance(study: optuna.Study) -> go.Figure:
    """How much each searched parameter explains the validation loss (optuna.importance)."""
    info = _get_importance_info(study)
    title = "Parameter importance"
    if info.reason:
        return _figure(title, message=info.reason)
    fig = _figure(title, xaxis={"title": "importance"}, yaxis={"autorange": "reversed"})
    fig.add_trace(
        go.Bar(x=list(info.importances.values()), y=list(info.importances), orientation="h")
    )
    return fig



"""plotly figures of an autoinit study, drawn from its stored records alone.

As in ``optuna/visualization/_intermediate_values.py``, each figure has a ``_get_*_info(study)``
that computes a small NamedTuple of plain data (what the tests check) and a ``plot_*(study)`` that
draws it. Nothing is retrained, so a study run on another machine plots the same, and every figure
copes with an empty study, or one with only pruned or failed trials, by saying so in the figure.
"""

from __future__ import annotations

import collections
from typing import Any, NamedTuple

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from autoinit import records
from autoinit.recommendation import Recommendation
from autoinit.space import Config

FAILED = records.FAILED
KIND_LABELS = records.STOP_LABELS
# Short enough to fit a heatmap cell; the hover gives each trial's full reason.
_CELL_NOTES = {
    "non-finite": "✕ NaN", "exploding": "✕ explodes", "vanishing": "✕ vanishes",
    "symmetric": "✕ symmetric", records.PRESCREEN: "✕ step 0", "pruner": "pruned",
    FAILED: "failed",
}  # fmt: skip
_GUARD_KINDS = frozenset(records.PRUNE_KINDS) - {"pruner"}
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
_DIVERGED_COLOR = "#d62728"
_GREY = "#7f7f7f"


def _config(trial: FrozenTrial) -> Config | None:
    """The trial's configuration, or None for a trial that failed before its params were drawn."""
    try:
        return Config.from_dict(trial.params)
    except KeyError:
        return None


def _label(trial: FrozenTrial) -> str:
    config = _config(trial)
    return f"#{trial.number} {config.label}" if config else f"#{trial.number}"


def _kind(trial: FrozenTrial) -> str | None:
    """Why the trial stopped early: a prune kind, ``"failed"``, or None when it did not."""
    return FAILED if trial.state == TrialState.FAIL else records.prune_kind(trial)


def _reason(trial: FrozenTrial) -> str:
    """The stored reason a trial stopped, as a sentence for hovers and the report."""
    text = trial.user_attrs.get(records.PRUNE_REASON) or trial.system_attrs.get("fail_reason")
    kind = _kind(trial)
    return f"{_label(trial)}: {text or KIND_LABELS.get(kind or '', kind or 'stopped')}"


def _figure(title: str, *, message: str | None = None, **layout: Any) -> go.Figure:
    """An empty figure; with ``message``, one that says why there is nothing to draw."""
    fig = go.Figure(layout=go.Layout(title=title, template="plotly_white", **layout))
    if message is not None:
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        fig.add_annotation(
            text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5
        )
    return fig


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


def _colors(names: list[str]) -> dict[str, str]:
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(dict.fromkeys(names))}


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


# --- confirmation over seeds ------------------------------------------------------------------


class _ConfirmationInfo(NamedTuple):
    labels: list[str]  # best first, as ranked by the confirmation
    means: list[float | None]  # None where a seed diverged (the mean is not finite)
    stds: list[float]
    values: list[list[float | None]]  # validation loss of each seed; None where it diverged
    is_default: list[bool]  # PyTorch's default configuration
    diverged: list[str | None]  # "diverged on 2 of 3 seeds (...)", or None
    seeds: list[int]


def _get_confirmation_info(study: optuna.Study) -> _ConfirmationInfo | None:
    """The confirmation's ranking, or None when the search ran without one."""
    rec = Recommendation.from_study(study)
    if not rec.confirmed or not rec.ranking:
        return None
    default = rec.default.config if rec.default else None
    return _ConfirmationInfo(
        labels=[r.config.label for r in rec.ranking],
        means=[records.finite_or_none(r.mean) for r in rec.ranking],
        stds=[r.std for r in rec.ranking],
        values=[[records.finite_or_none(v) for v in r.values] for r in rec.ranking],
        is_default=[r.config == default for r in rec.ranking],
        diverged=[r.divergence() for r in rec.ranking],
        seeds=list(rec.seeds),
    )


def plot_confirmation(study: optuna.Study) -> go.Figure:
    """Mean ± std validation loss over seeds of the best configurations and PyTorch's default.

    A config that diverged on a seed has no finite mean: it gets no bar, a red ✕ note that
    says on how many seeds it diverged and why, and red ✕ marks for those seeds.
    """
    info = _get_confirmation_info(study)
    title = "Confirmation over seeds"
    if info is None:
        return _figure(title, message="No confirmation over seeds was run.")
    fig = _figure(
        f"{title} ({len(info.seeds)} seeds)",
        xaxis={"title": "validation loss (mean ± std)"},
        yaxis={"autorange": "reversed", "type": "category"},
    )
    fig.add_trace(
        go.Bar(
            x=info.means,
            y=info.labels,
            orientation="h",
            error_x={"type": "data", "array": info.stds},
            marker={"color": [_GREY if d else _PALETTE[0] for d in info.is_default]},
            name="mean ± std",
        )
    )
    points = [(v, label) for label, vs in zip(info.labels, info.values) for v in vs if v is not None]
    if points:
        fig.add_trace(
            go.Scatter(
                x=[v for v, _ in points],
                y=[label for _, label in points],
                mode="markers",
                marker={"color": "black", "size": 6},
                name="one seed",
            )
        )
    trained = [v for vs in info.values for v in vs if v is not None]
    edge = max(trained, default=1.0) * 1.05  # where a diverged seed is marked
    lost = [(label, n) for label, vs in zip(info.labels, info.values) for n in [vs.count(None)] if n]
    if lost:
        fig.add_trace(
            go.Scatter(
                x=[edge] * len(lost),
                y=[label for label, _ in lost],
                mode="markers+text",
                marker={"color": _DIVERGED_COLOR, "symbol": "x", "size": 11},
                text=[f"✕ {n} diverged" for _, n in lost],
                textposition="middle left",
                textfont={"color": _DIVERGED_COLOR},
                hovertext=[d for d in info.diverged if d],
                hoverinfo="text",
                name="diverged seed(s)",
            )
        )
    for label, mean, is_default, diverged in zip(
        info.labels, info.means, info.is_default, info.diverged
    ):
        if is_default:
            text = "PyTorch default" + (f": {diverged}" if diverged else "")
            fig.add_annotation(x=mean if mean is not None else 0, y=label, text=text,
                               showarrow=True, ax=60, ay=0,
                               font={"color": _DIVERGED_COLOR if diverged else "black"})  # fmt: skip
    return fig


# --- signal propagation through depth ---------------------------------------------------------


class _SignalLine(NamedTuple):
    trial_number: int
    name: str  # "#3 kaiming_normal + relu (baseline)", "... : vanishing" for a pruned one
    role: str  # "winner", "baseline" or "pruned"
    layers: list[int]  # the weight layers' indices, first called first
    output_std: list[float | None]  # per layer; None where non-finite or zero (log scale)
    grad_rms: list[float | None]
    reason: str | None  # why a pruned trial stopped (dashed line)


class _SignalInfo(NamedTuple):
    lines: list[_SignalLine]


MAX_PRUNED_LINES = 4


def _positive(values: list[Any] | None) -> list[float | None]:
    return [v if isinstance(v, (int, float)) and v > 0 else None for v in values or ()]


def _signal_line(trial: FrozenTrial, role: str) -> _SignalLine | None:
    probe = trial.user_attrs.get(records.PROBE) or {}
    std = _positive(probe.get("output_std"))
    if not std:
        return None
    grads = _positive(probe.get("grad_rms"))
    grads += [None] * (len(std) - len(grads))
    reason = None
    name = f"{_label(trial)} ({role})"
    if role == "pruned":
        kind = _kind(trial)
        cause = probe.get("cause") if kind == records.PRESCREEN else kind
        reason = trial.user_attrs.get(records.PRUNE_REASON) or KIND_LABELS.get(kind or "", kind)
        name = f"{_label(trial)}: {cause or 'stopped'}"
    return _SignalLine(trial.number, name, role, list(range(len(std))), std, grads[: len(std)],
                       reason)  # fmt: skip


def _get_signal_info(study: optuna.Study) -> _SignalInfo:
    """The step-0 probe of the baselines, the winner and a few pruned configs (one line each)."""
    from autoinit.space import baselines

    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(records.PROBE)]
    space = study.user_attrs.get(records.STUDY_SPACE) or {}
    known = set(baselines(space.get("inits") or [], space.get("activations") or []))
    rec = Recommendation.from_study(study)
    picked: dict[int, str] = {}
    winner = [t for t in trials if t.state == TrialState.COMPLETE and _config(t) == rec.config]
    if winner:
        picked[min(winner, key=records.loss_of).number] = "winner"
    for config in known:
        mine = [t for t in trials if _config(t) == config]
        if mine:
            first = min(mine, key=lambda t: t.number)
            picked.setdefault(first.number, "baseline")
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.number not in picked
              and _kind(t) != "pruner"]  # fmt: skip
    by_cause: dict[str, FrozenTrial] = {}
    for trial in pruned:  # one per cause first, so that the lines show different failures
        cause = (trial.user_attrs.get(records.PROBE) or {}).get("cause") or _kind(trial) or "?"
        by_cause.setdefault(cause, trial)
    for trial in [*by_cause.values(), *pruned][: MAX_PRUNED_LINES]:
        picked.setdefault(trial.number, "pruned")
    by_number = {t.number: t for t in trials}
    lines = [_signal_line(by_number[n], role) for n, role in picked.items()]
    return _SignalInfo([line for line in lines if line is not None])


def plot_signal(study: optuna.Study) -> go.Figure:
    """Signal propagation through depth at step 0: per-layer output std and gradient RMS.

    Log scales against the layer index; one line each for the baselines, the winner and a few
    pruned configs (dashed, named with their reason).
    """
    from plotly.subplots import make_subplots

    info = _get_signal_info(study)
    title = "Signal propagation through depth at step 0"
    if not info.lines:
        return _figure(title, message="No trial recorded a step-0 probe.")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("output std", "gradient RMS of weights"))
    fig.update_layout(title=title, template="plotly_white")
    colors = _colors([line.name for line in info.lines])
    for line in info.lines:
        style: dict[str, Any] = {
            "color": colors[line.name], "dash": "dash" if line.role == "pruned" else "solid"
        }
        if line.role == "winner":
            style["width"] = 4
        for col, values in ((1, line.output_std), (2, line.grad_rms)):
            fig.add_trace(
                go.Scatter(
                    x=line.layers, y=values, mode="lines+markers", name=line.name,
                    legendgroup=line.name, showlegend=col == 1, line=style,
                    hovertext=line.reason or line.name, hoverinfo="text+x+y",
                ),
                row=1, col=col,
            )  # fmt: skip
    fig.update_xaxes(title_text="weight layer (input first)")
    fig.update_yaxes(type="log")
    return fig


FIGURES = (
    plot_heatmap,
    plot_confirmation,
    plot_signal,
    plot_history,
    plot_learning_curves,
    plot_grad_norms,
    plot_prune_reasons,
    plot_importance,
)
"""Every figure, in the order the report shows them."""

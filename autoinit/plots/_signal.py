"""Signal propagation through depth at step 0, from the stored probes."""



from __future__ import annotations

from typing import Any, NamedTuple

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from autoinit import records
from autoinit.plots._common import (
    KIND_LABELS,
    _colors,
    _config,
    _figure,
    _kind,
    _label,
)
from autoinit.recommendation import Recommendation

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



"""What every figure shares: labels, reasons, colours and an empty figure that says why."""


from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from autoinit import records
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


def _colors(names: list[str]) -> dict[str, str]:
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(dict.fromkeys(names))}

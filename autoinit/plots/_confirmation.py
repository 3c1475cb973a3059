"""The confirmation over seeds: each raced config's validation loss, diverged seeds marked."""



from __future__ import annotations

from typing import NamedTuple

import optuna
import plotly.graph_objects as go

from autoinit import records
from autoinit.plots._common import (
    _DIVERGED_COLOR,
    _GREY,
    _PALETTE,
    _figure,
)
from autoinit.recommendation import Recommendation

# --- confirmation over seeds ------------------------------------------------------------------


class _ConfirmationInfo(NamedTuple):
    labels: list[str]  # best first, as ranked by the confirmation
    means: list[float | None]  # None where a seed diverged (the mean is not finite)
    stds: list[float]
    values: list[list[float | None]]  # validation loss of each seed; None where it diverged
    is_default: list[bool]  # PyTorch's default configuration
    diverged: list[str | None]  # "diverged on 2 of 3 seeds (...)", or None
    seeds: list[int]
    full: bool  # every config trained on every seed


def _get_confirmation_info(study: optuna.Study) -> _ConfirmationInfo | None:
    """The confirmation's ranking, or None when the search ran without one."""
    rec = Recommendation.from_study(study)
    if not rec.confirmed or not rec.ranking:
        return None
    default = rec.default.config if rec.default else None
    n = len(rec.seeds)
    counts = [len(rec.seeds_of(r)) for r in rec.ranking]  # the race may cut a config short
    return _ConfirmationInfo(
        labels=[r.config.label + (f" ({k} of {n} seeds)" if k < n else "")
                for r, k in zip(rec.ranking, counts)],  # fmt: skip
        means=[records.finite_or_none(r.mean) for r in rec.ranking],
        stds=[r.std for r in rec.ranking],
        values=[[records.finite_or_none(v) for v in r.values] for r in rec.ranking],
        is_default=[r.config == default for r in rec.ranking],
        diverged=[r.divergence() for r in rec.ranking],
        seeds=list(rec.seeds),
        full=rec.full_race,
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
        f"{title} ({'' if info.full else 'up to '}{len(info.seeds)} seeds)",
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
    points = [(v, label) for label, vs in zip(info.labels, info.values) for v in vs
              if v is not None]  # fmt: skip
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
    lost = [(label, vs.count(None)) for label, vs in zip(info.labels, info.values)
            if vs.count(None)]  # fmt: skip
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
            color = _DIVERGED_COLOR if diverged else "black"
            fig.add_annotation(x=mean if mean is not None else 0, y=label, text=text,
                               showarrow=True, ax=60, ay=0, font={"color": color})
    return fig



"""Shared by the pre-screen figures of ``efficiency`` and ``guard``: train a grid, probe it.

A grid point is one config trained once as a search trial trains it (the study's seed, the
default guard, the fixed batch for the data-dependent inits) next to its step-0 probe and the
pre-screen's verdict. From a grid: which configs the guard stops and which the pre-screen
stops, the grid's top 3, and the training steps each config costs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from autoinit._apply import build
from autoinit._probe import ProbeRow, fixed_batch, probe_configs
from autoinit.monitor import DivergenceGuard, symmetry_stop
from autoinit.space import Config
from autoinit.train import Budget, TrainingData, fit, prepare_data
from benchmarks.common import SEED

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BUNDLED = ("breast_cancer", "diabetes")
TOP = 3


@dataclasses.dataclass
class Point:
    """One config of a grid: its training outcome and its probe."""

    config: Config
    value: float | None  # validation loss; None when the guard stopped it
    steps: int  # training steps it cost (a stopped config: up to its stop)
    stop: str | None  # the guard's kind, when it stopped
    row: ProbeRow

    @property
    def prescreened(self) -> bool:
        return self.row.collapsed


def train_grid(
    model_fn: Callable, data: TrainingData, configs: Sequence[Config], budget: Budget
) -> list[Point]:
    """Train and probe every config (the probe first; it leaves the model as it was)."""
    batch = fixed_batch(data, SEED)
    table = probe_configs(model_fn, batch, configs, data.loss_fn, seed=SEED)
    points = []
    for config, row in zip(configs, table):
        model = build(model_fn, config, seed=SEED, batch=batch[0])
        stop = symmetry_stop(model)
        if stop is not None:
            points.append(Point(config, None, 0, stop.kind, row))
            continue
        result = fit(model, data, budget, seed=SEED, guard=DivergenceGuard())
        finite = result.stop is None and math.isfinite(result.value)
        kind = result.stop.kind if result.stop is not None else (None if finite else "non-finite")
        points.append(Point(config, result.value if finite else None, result.steps, kind, row))
    return points


def ranked(points: Sequence[Point]) -> list[Point]:
    """The configs that trained, best validation loss first."""
    return sorted((p for p in points if p.value is not None), key=lambda p: p.value)


def accuracy(points: Sequence[Point]) -> dict[str, Any]:
    """The pre-screen against the guard and against the grid's ranking."""
    stopped = [p for p in points if p.stop is not None]
    caught = [p for p in stopped if p.prescreened]
    top = ranked(points)[:TOP]
    return {
        "configs": len(points),
        "prescreened": sum(p.prescreened for p in points),
        "guard_stopped": len(stopped),
        "guard_stopped_prescreened": len(caught),
        "recall": len(caught) / len(stopped) if stopped else 1.0,
        "trained_prescreened": sum(p.prescreened and p.stop is None for p in points),
        "top3": [p.config.label for p in top],
        "top3_prescreened": [p.config.label for p in top if p.prescreened],
        "missed": [p.config.label for p in stopped if not p.prescreened],
    }


def bundled_data(name: str) -> tuple[Callable, TrainingData]:
    """A bundled CSV through ``autoinit.data.load_csv``, and the CLI's default MLP for it."""
    from autoinit.data import load_csv
    from autoinit.models import mlp_factory

    data = load_csv(EXAMPLES / f"{name}.csv", seed=SEED)
    n_out = data.n_classes if data.task == "classification" else 1
    model_fn = mlp_factory(data.n_features, n_out)
    prepared = prepare_data(
        (data.X_train, data.y_train), (data.X_val, data.y_val), task=data.task, seed=SEED
    )
    return model_fn, prepared


def blobs_data(rows: int = 1200) -> tuple[Callable, TrainingData]:
    """Generated data: overlapping Gaussian blobs, 50 features, 3 classes; the default MLP."""
    from autoinit.models import mlp_factory
    from benchmarks.common import blobs

    x, y = blobs(rows)
    return mlp_factory(x.shape[1], 3), prepare_data((x, y), seed=SEED)


def top3_check(
    configs: Sequence[Config], budget: Budget, *, quick: bool
) -> dict[str, dict[str, Any]]:
    """On the bundled datasets and generated blobs: is any of the grid's top 3 pre-screened?"""
    torch.manual_seed(SEED)
    sets = {name: bundled_data(name) for name in BUNDLED}
    if not quick:
        sets["blobs"] = blobs_data()
    out = {}
    for name, (model_fn, data) in sets.items():
        out[name] = accuracy(train_grid(model_fn, data, configs, budget))
    return out

"""Synthetic autoinit studies, written in the stored format of ``autoinit/records.py``.

Reports, plots and the dashboard read only stored records, so these studies stand in for a real
search without training anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from autoinit import records
from autoinit.recommendation import Ranked, Recommendation
from autoinit.space import LEAKY_SLOPE_RANGE, PYTORCH_DEFAULT, Config

INITS = ("default", "kaiming_normal", "xavier_uniform", "orthogonal")
ACTIVATIONS = ("relu", "tanh", "leaky_relu", "selu")
STEPS = (10, 20, 30)

_SLOPE = FloatDistribution(*LEAKY_SLOPE_RANGE, log=True)

_GUARD_REASONS = {
    "non-finite": "non-finite loss at step 3: nan",
    "exploding": "exploding gradient at step 0: norm 3.1e+16 (worst layer: layers.0.weight)",
    "vanishing": "vanishing gradient at step 0: norm 1.2e-12 (worst layer: layers.7.weight)",
    "symmetric": "symmetric units at step 0: layers.0 has 64 identical rows",
    "pruner": "pruned by the median pruner at step 20",
}


def _trial(
    config: Config,
    *,
    state: TrialState,
    value: float | None = None,
    losses: Iterable[float] = (),
    grad_norms: list[float | None] | None = None,
    user_attrs: dict[str, Any] | None = None,
    system_attrs: dict[str, Any] | None = None,
) -> FrozenTrial:
    params = {"init": config.init, "activation": config.activation}
    # Names outside the usual choices (a registered initializer, hostile text) join the choices.
    distributions = {
        name: CategoricalDistribution(tuple(dict.fromkeys((*choices, params[name]))))
        for name, choices in (("init", INITS), ("activation", ACTIVATIONS))
    }
    if config.leaky_slope is not None:
        params["leaky_slope"] = config.leaky_slope
        distributions["leaky_slope"] = _SLOPE
    losses = list(losses)
    norms = [1.0] * len(losses) if grad_norms is None else grad_norms
    attrs = {
        records.SEED: 0,
        records.STEPS: STEPS[len(losses) - 1] if losses else 0,
        records.TRAIN_SECONDS: 0.5,
        records.CURVE_STEPS: list(range(len(norms))),
        records.LOSS_CURVE: [records.finite_or_none(x) for x in losses],
        records.GRAD_NORM_CURVE: norms,
        records.METRIC_NAME: "accuracy",
        **(user_attrs or {}),
    }
    return optuna.trial.create_trial(
        state=state,
        value=value,
        params=params,
        distributions=distributions,
        intermediate_values=dict(zip(STEPS, losses)),
        user_attrs=attrs,
        system_attrs=system_attrs,
    )


def complete(
    init: str, activation: str, value: float, *, slope: float | None = None, metric: float = 0.9
) -> FrozenTrial:
    """A completed trial whose validation loss falls to ``value``."""
    losses = [value * 3, value * 2, value]
    return _trial(
        Config(init, activation, slope),
        state=TrialState.COMPLETE,
        value=value,
        losses=losses,
        grad_norms=[2.0, None, 1.5, 0.8],
        user_attrs={records.METRIC: metric},
    )


def pruned(init: str, activation: str, kind: str, *, slope: float | None = None) -> FrozenTrial:
    """A pruned trial: by the divergence guard at step 0, or by the learning-curve pruner."""
    by_pruner = kind == "pruner"
    return _trial(
        Config(init, activation, slope),
        state=TrialState.PRUNED,
        losses=[1.5, 1.4] if by_pruner else [],
        grad_norms=[1.0, 0.9] if by_pruner else [3.1e16, None] if kind == "exploding" else [None],
        user_attrs={records.PRUNE_KIND: kind, records.PRUNE_REASON: _GUARD_REASONS[kind]},
    )


def failed(init: str, activation: str) -> FrozenTrial:
    """A failed trial, as Optuna stores one whose objective raised."""
    return _trial(
        Config(init, activation),
        state=TrialState.FAIL,
        system_attrs={"fail_reason": "RuntimeError: CUDA out of memory"},
    )


def mixed_trials() -> list[FrozenTrial]:
    """A typical search: baselines, a leaky ReLU cell over two slopes, and every way to stop."""
    return [
        complete("default", "relu", 0.30, metric=0.88),
        complete("kaiming_normal", "relu", 0.20, metric=0.93),
        complete("kaiming_normal", "relu", 0.25, metric=0.92),
        complete("xavier_uniform", "tanh", 0.28, metric=0.90),
        complete("kaiming_normal", "leaky_relu", 0.22, slope=0.1),
        complete("kaiming_normal", "leaky_relu", 0.18, slope=0.02, metric=0.95),
        pruned("orthogonal", "selu", "exploding"),
        pruned("orthogonal", "selu", "exploding"),
        pruned("orthogonal", "tanh", "non-finite"),
        pruned("xavier_uniform", "relu", "vanishing"),
        pruned("default", "tanh", "symmetric"),
        pruned("default", "selu", "pruner"),
        pruned("kaiming_normal", "tanh", "pruner"),
        failed("xavier_uniform", "selu"),
    ]


def recommendation(*, default_values: tuple[float, ...] = (0.29, 0.30, 0.31)) -> dict[str, Any]:
    """The ``recommendation`` study attribute that a confirmation over three seeds writes.

    Written through :class:`Recommendation` itself, so the factory cannot drift from the real
    record. ``default_values`` may hold ``math.inf`` for seeds on which the default diverged.
    """
    winner = Config("kaiming_normal", "leaky_relu", 0.02)
    seeds = (0, 1, 2)
    reason = "vanishing gradient at step 30: first layer (0.weight) gradient norm 1e-09"
    default = Ranked(
        PYTORCH_DEFAULT, default_values,
        tuple(None if math.isinf(v) else 0.88 for v in default_values),
        tuple(reason if math.isinf(v) else None for v in default_values), seeds,
    )  # fmt: skip
    ranking = (
        Ranked(winner, (0.18, 0.19, 0.20), (0.95, 0.94, 0.95), (None,) * 3, seeds),
        Ranked(Config("kaiming_normal", "relu"), (0.21, 0.22, 0.24), (0.93, 0.92, 0.93),
               (None,) * 3, seeds),
        default,
    )  # fmt: skip
    rec = Recommendation(winner, ranking, default, seeds, "accuracy")
    return rec.to_dict()


def study_attrs() -> dict[str, Any]:
    """The study attributes that ``autoinit search`` records for a CSV file."""
    return {
        records.STUDY_VERSION: "0.1.0",
        records.STUDY_MODEL: "MLP(30 -> 8x64 -> 2)",
        records.STUDY_DATA: {
            "file": "breast_cancer.csv",
            "sha256": "3f2a" * 16,
            "rows": 569,
            "columns": 31,
            "target": "diagnosis",
            "task": "classification",
        },
        records.STUDY_BUDGET: {
            "epochs": 10,
            "max_steps": None,
            "batch_size": 64,
            "optimizer": "adam",
            "lr": 0.001,
        },
        records.STUDY_TASK: "classification",
        records.METRIC_NAME: "accuracy",
    }


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'autoinit.db'}"


def make_study(
    tmp_path: Path,
    trials: Iterable[FrozenTrial] = (),
    *,
    name: str = "autoinit-test",
    attrs: dict[str, Any] | None = None,
    with_recommendation: bool | dict[str, Any] = False,
) -> optuna.Study:
    """A minimising SQLite study under ``tmp_path`` with ``trials`` and the study attributes."""
    study = optuna.create_study(storage=sqlite_url(tmp_path), study_name=name)
    for key, value in (study_attrs() if attrs is None else attrs).items():
        study.set_user_attr(key, value)
    if with_recommendation:
        stored = with_recommendation if isinstance(with_recommendation, dict) else recommendation()
        study.set_user_attr(records.STUDY_RECOMMENDATION, stored)
    for trial in trials:
        study.add_trial(trial)
    return study


# The edge cases every figure and the report must survive, by name.
EDGE_CASES = {
    "empty": [],
    "only-pruned": [pruned("orthogonal", "selu", "exploding"), pruned("default", "relu", "pruner")],
    "only-failed": [failed("default", "relu"), failed("orthogonal", "tanh")],
    "single": [complete("kaiming_normal", "relu", 0.2)],
}

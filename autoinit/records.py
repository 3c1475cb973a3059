"""What autoinit stores on each trial and study, and how to read it back.

Reports, ``show``, ``Recommendation.from_study`` and optuna-dashboard read only these records,
so a study made on another machine needs nothing else. Keys live here, once.

Per trial (``trial.user_attrs``):
    seed, steps, train_seconds, curve_steps, loss_curve, grad_norm_curve,
    metric_name ("accuracy" | "r2"), metric, prune_kind, prune_reason, probe.
Curves are downsampled to at most :data:`CURVE_POINTS` points; non-finite values are stored as
``None`` so that the JSON stays valid for every reader (optuna-dashboard included).

Per study (``study.user_attrs``):
    autoinit_version, model, data (dict describing the data), data_fingerprint (str), budget
    (dict), space (dict of inits and activations), task, metric_name, and recommendation (dict,
    written by recommend).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna

CURVE_POINTS = 100
FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

# Why a trial was pruned. The first four come from the divergence guard, the last from the
# study's learning-curve pruner (for example the median pruner).
PRUNE_KINDS = ("non-finite", "exploding", "vanishing", "symmetric", "pruner")

SEED = "seed"
STEPS = "steps"
TRAIN_SECONDS = "train_seconds"
CURVE_STEPS = "curve_steps"
LOSS_CURVE = "loss_curve"
GRAD_NORM_CURVE = "grad_norm_curve"
METRIC_NAME = "metric_name"
METRIC = "metric"
PRUNE_KIND = "prune_kind"
PRUNE_REASON = "prune_reason"
PROBE = "probe"

STUDY_VERSION = "autoinit_version"
STUDY_MODEL = "model"
STUDY_DATA = "data"
STUDY_BUDGET = "budget"
STUDY_TASK = "task"
STUDY_METRIC_NAME = "metric_name"
TRIAL_DUPLICATE_OF = "duplicate_of"
STUDY_SPACE = "space"
STUDY_DATA_FINGERPRINT = "data_fingerprint"
STUDY_RECOMMENDATION = "recommendation"


def finite_or_none(value: float) -> float | None:
    """A JSON-safe float: non-finite values become ``None``."""
    value = float(value)
    return value if math.isfinite(value) else None


def downsample(values: Sequence[float], points: int = CURVE_POINTS) -> list[int]:
    """Indices of at most ``points`` evenly spread entries, always keeping the first and last."""
    n = len(values)
    if n <= points:
        return list(range(n))
    step = (n - 1) / (points - 1)
    return sorted({round(i * step) for i in range(points)})


METRIC_LABELS = {"accuracy": "accuracy", "r2": "R²"}  # how each metric name is printed

FAILED = "failed"  # counted next to the prune kinds
STOP_LABELS = {
    "non-finite": "non-finite",
    "exploding": "exploding",
    "vanishing": "vanishing",
    "symmetric": "symmetric",
    "pruner": "learning-curve pruner",
    FAILED: "failed",
}


def stop_counts(study: optuna.Study) -> dict[str, int]:
    """How many trials stopped early, by prune kind, then failed ones; zeros included."""
    counts = dict.fromkeys(STOP_LABELS, 0)
    for trial in study.get_trials(deepcopy=False):
        kind = FAILED if trial.state == optuna.trial.TrialState.FAIL else prune_kind(trial)
        if kind is not None:
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def prune_kind(trial: optuna.trial.FrozenTrial) -> str | None:
    """The stored prune kind of a pruned trial (``"pruner"`` when none was recorded)."""
    if trial.state != optuna.trial.TrialState.PRUNED:
        return None
    return trial.user_attrs.get(PRUNE_KIND, "pruner")

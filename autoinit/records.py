"""What autoinit stores on each trial and study, and how to read it back.

Reports, ``show``, ``Recommendation.from_study`` and optuna-dashboard read only these records,
so a study made on another machine needs nothing else. Keys live here, once.

Per trial (``trial.user_attrs``):
    seed, steps, train_seconds, curve_steps, loss_curve, grad_norm_curve,
    metric_name ("accuracy" | "r2"), metric, prune_kind, prune_reason, probe, host, pid.
Curves are downsampled to at most :data:`CURVE_POINTS` points; non-finite values are stored as
``None`` so that the JSON stays valid for every reader (optuna-dashboard included).

Per study (``study.user_attrs``):
    autoinit_version, model, data (dict describing the data), data_kind (str, set by the
    command line), data_fingerprint (str), budget (dict), space (dict of inits and
    activations), task, metric_name, and recommendation (dict, written by recommend).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Sequence

import optuna

CURVE_POINTS = 100
FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

# Why a trial was pruned. The first four come from the divergence guard, "prescreen" from the
# step-0 probe of the whole space (autoinit._probe), the last from the study's learning-curve
# pruner (for example the median pruner).
PRESCREEN = "prescreen"
PRUNE_KINDS = ("non-finite", "exploding", "vanishing", "symmetric", PRESCREEN, "pruner")

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
PROBE = "probe"  # the step-0 probe: per-layer figures, scores and verdict (autoinit._probe)
HOST = "host"  # the machine and process that ran the trial (dead workers are found by them)
PID = "pid"

STUDY_VERSION = "autoinit_version"
STUDY_MODEL = "model"
STUDY_DATA = "data"
STUDY_DATA_KIND = "data_kind"  # "tabular", "images" or "sequences" (autoinit.data.KINDS)
STUDY_BUDGET = "budget"
STUDY_TASK = "task"
STUDY_METRIC_NAME = "metric_name"
TRIAL_DUPLICATE_OF = "duplicate_of"
STUDY_SPACE = "space"
STUDY_DATA_FINGERPRINT = "data_fingerprint"
STUDY_RECOMMENDATION = "recommendation"
# {"key": budget, seeds and top-k the stored confirmation was run for, "host", "pid": who ran it}
STUDY_CONFIRMED = "confirmed"


def loss_of(trial: optuna.trial.FrozenTrial) -> float:
    """A trial's validation loss for sorting: infinite when it has none."""
    return math.inf if trial.value is None else float(trial.value)


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


# The one table of tasks and their metrics: every other module reads it from here.
TASK_METRICS = {"classification": "accuracy", "regression": "r2"}
TASKS = tuple(TASK_METRICS)
METRIC_LABELS = {"accuracy": "accuracy", "r2": "R²"}  # how each metric name is printed


def metric_for(task: str) -> str:
    """The metric name recorded for ``task`` (accuracy for classification, R² for regression)."""
    return TASK_METRICS[task]


def metric_label(metric_name: str | None) -> str:
    """How a metric name is printed (``r2`` as ``R²``); unknown names as they are."""
    return METRIC_LABELS.get(metric_name or "", metric_name or "metric")


def format_pm(mean: float | None, std: float | None, *, missing: str = "diverged") -> str:
    """``mean ± std`` to four significant digits, or ``missing`` for an absent/non-finite mean.

    The one formatter of a mean over seeds: the terminal, the report and the dashboard note all
    print evidence through it, so they never disagree.
    """
    if mean is None or not math.isfinite(mean):
        return missing
    if std is None or not math.isfinite(std):
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {std:.2g}"


FAILED = "failed"  # counted next to the prune kinds
STOP_LABELS = {
    "non-finite": "non-finite",
    "exploding": "exploding",
    "vanishing": "vanishing",
    "symmetric": "symmetric",
    PRESCREEN: "pre-screened",
    "pruner": "learning-curve pruner",
    FAILED: "failed",
}


@dataclasses.dataclass(frozen=True)
class TrialCounts:
    """A study's trials by state; ``finished`` (complete + pruned) is what ``n_trials`` counts."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    stopped: dict[str, int] = dataclasses.field(default_factory=dict)  # prune kind -> count

    @property
    def finished(self) -> int:
        return self.complete + self.pruned

    @property
    def total(self) -> int:
        return self.finished + self.failed + self.running + self.waiting

    def describe(self) -> str:
        """``14 trials: 6 complete, 7 pruned (exploding 2, ...), 1 failed`` or ``no trials yet``."""
        if not self.total:
            return "no trials yet"
        kinds = ", ".join(f"{STOP_LABELS.get(k, k)} {n}" for k, n in self.stopped.items() if n)
        parts = [
            f"{self.complete} complete",
            f"{self.pruned} pruned" + (f" ({kinds})" if kinds else ""),
        ]
        parts += [
            f"{n} {name}"
            for name, n in (
                ("failed", self.failed),
                ("running", self.running),
                ("waiting", self.waiting),
            )
            if n
        ]
        return f"{self.total} trial{'s' if self.total != 1 else ''}: " + ", ".join(parts)

    def to_dict(self) -> dict[str, int]:
        return {
            "complete": self.complete,
            "pruned": self.pruned,
            "failed": self.failed,
            "running": self.running,
            "waiting": self.waiting,
        }


def trial_counts(study: optuna.Study) -> TrialCounts:
    """Count ``study``'s trials once, by state and by prune kind."""
    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    by_state = collections.Counter(t.state for t in trials)
    kinds = collections.Counter(prune_kind(t) for t in trials if t.state == state.PRUNED)
    order = (*PRUNE_KINDS, *sorted(map(str, set(kinds) - set(PRUNE_KINDS))))
    return TrialCounts(
        complete=by_state[state.COMPLETE], pruned=by_state[state.PRUNED],
        failed=by_state[state.FAIL], running=by_state[state.RUNNING],
        waiting=by_state[state.WAITING], stopped={k: kinds[k] for k in order if kinds[k]},
    )  # fmt: skip


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

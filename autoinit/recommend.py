"""``recommend()``: search, then confirm the best configs over fresh seeds against the default.

A search trains every config with one seed, so its ranking carries seed noise. The confirmation
re-trains the top-k configs and the PyTorch default over several seeds and picks the best mean
validation loss; the evidence (mean ± std of the winner and of the default) is stored on the
study, so ``Recommendation.from_study`` and the report need nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import statistics
from collections.abc import Sequence
from typing import Any

import optuna
from torch import nn

from autoinit import records
from autoinit.apply import ModelFn, build
from autoinit.apply import apply as apply_config
from autoinit.errors import ConfigError
from autoinit.search import Objective, run_search, search_defaults, torch_threads
from autoinit.space import PYTORCH_DEFAULT, Config
from autoinit.train import DataLike

CONFIRM_SEED_OFFSET = 1000  # confirmation seeds differ from the search's seed


@dataclasses.dataclass(frozen=True)
class Ranked:
    """One config's confirmation results: a validation loss (and metric) per seed.

    A run that diverged counts as an infinite loss, so a config that diverges on any seed
    cannot win.
    """

    config: Config
    values: tuple[float, ...]
    metrics: tuple[float | None, ...] = ()

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.inf

    @property
    def std(self) -> float:
        finite = all(math.isfinite(v) for v in self.values)
        return statistics.stdev(self.values) if finite and len(self.values) > 1 else 0.0

    @property
    def metric_mean(self) -> float | None:
        known = [m for m in self.metrics if m is not None]
        return statistics.fmean(known) if known else None

    @property
    def metric_std(self) -> float | None:
        known = [m for m in self.metrics if m is not None]
        return statistics.stdev(known) if len(known) > 1 else (0.0 if known else None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "label": self.config.label,
            "mean": records.finite_or_none(self.mean),
            "std": records.finite_or_none(self.std),
            "metric_mean": self.metric_mean,
            "metric_std": self.metric_std,
            "values": [records.finite_or_none(v) for v in self.values],
            "metrics": list(self.metrics),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Ranked":
        values = tuple(math.inf if v is None else float(v) for v in data["values"])
        return cls(Config.from_dict(data["config"]), values, tuple(data.get("metrics", ())))


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """The winning config with its evidence against PyTorch's default.

    Attributes:
        config: the winning :class:`Config`.
        ranking: every confirmed config, best mean validation loss first (default included).
        default: the PyTorch default's results (None if it could not be trained).
        seeds: the confirmation seeds.
        metric_name: ``"accuracy"`` or ``"r2"``.
        study_name: the study it came from.
    """

    config: Config
    ranking: tuple[Ranked, ...]
    default: Ranked | None
    seeds: tuple[int, ...]
    metric_name: str
    study_name: str | None = None

    @property
    def winner(self) -> Ranked:
        return self.ranking[0]

    @property
    def improvement(self) -> float | None:
        """Default's mean validation loss minus the winner's (positive: the winner is better)."""
        if self.default is None or not math.isfinite(self.default.mean):
            return None
        return self.default.mean - self.winner.mean

    @property
    def improvement_pct(self) -> float | None:
        if self.improvement is None or self.default.mean == 0:
            return None
        return 100.0 * self.improvement / self.default.mean

    def apply(self, model: nn.Module, *, seed: int = 0) -> nn.Module:
        """Swap the activations of ``model`` and initialise it with the winning config."""
        return apply_config(model, self.config, seed=seed)

    def build(self, model_fn: ModelFn, *, seed: int = 0) -> nn.Module:
        """Make a model with ``model_fn`` the way the search did, with the winning config."""
        return build(model_fn, self.config, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        winner = self.winner.to_dict()
        return {
            "config": self.config.to_dict(),
            "label": self.config.label,
            "mean": winner["mean"],
            "std": winner["std"],
            "metric_name": self.metric_name,
            "metric_mean": winner["metric_mean"],
            "metric_std": winner["metric_std"],
            "default": self.default.to_dict() if self.default else None,
            "improvement": _maybe(self.improvement),
            "improvement_pct": _maybe(self.improvement_pct),
            "seeds": list(self.seeds),
            "ranking": [r.to_dict() for r in self.ranking],
            "study_name": self.study_name,
        }

    def to_json(self, path: str | pathlib.Path | None = None) -> str:
        """The recommendation as JSON; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            pathlib.Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recommendation":
        ranking = tuple(Ranked.from_dict(r) for r in data["ranking"])
        default = Ranked.from_dict(data["default"]) if data.get("default") else None
        return cls(
            Config.from_dict(data["config"]), ranking, default, tuple(data["seeds"]),
            data["metric_name"], data.get("study_name"),
        )  # fmt: skip

    @classmethod
    def from_study(cls, study: optuna.Study) -> "Recommendation":
        """The stored recommendation, or, for a study never confirmed, one read off its trials.

        Without a confirmation each config's evidence is its single search trial (one seed).
        """
        stored = study.user_attrs.get(records.STUDY_RECOMMENDATION)
        if stored:
            return cls.from_dict({**stored, "study_name": study.study_name})
        return _from_trials(study)

    def __str__(self) -> str:
        lines = [f"Recommended: {self.config.label}"]
        metric = self.winner.metric_mean
        lines.append(
            f"  validation loss {_pm(self.winner.mean, self.winner.std)}"
            + (f", {records.METRIC_LABELS.get(self.metric_name, self.metric_name)} "
               f"{_pm(metric, self.winner.metric_std)}" if metric is not None else "")
            + f" over {len(self.seeds)} seed(s)"
        )
        if self.default is not None:
            lines.append(
                f"  PyTorch default ({self.default.config.label}): validation loss "
                f"{_pm(self.default.mean, self.default.std)}"
            )
        if self.improvement_pct is not None:
            lines.append(f"  {self.improvement_pct:+.1f}% lower validation loss than the default")
        elif self.default is not None:
            lines.append("  the PyTorch default diverged or could not be trained")
        return "\n".join(lines)


def _maybe(value: float | None) -> float | None:
    return None if value is None else records.finite_or_none(value)


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None or not math.isfinite(mean):
        return "diverged"
    return f"{mean:.4g} ± {std or 0.0:.2g}"


def _from_trials(study: optuna.Study) -> Recommendation:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ConfigError(
            f"study {study.study_name!r} has no completed trial to recommend from; "
            "every trial diverged or was pruned: widen the space or the budget."
        )
    best: dict[Config, optuna.trial.FrozenTrial] = {}
    for trial in complete:
        config = Config.from_dict(trial.params)
        if config not in best or trial.value < best[config].value:
            best[config] = trial
    ranking = tuple(
        sorted(
            (Ranked(c, (t.value,), (t.user_attrs.get(records.METRIC),)) for c, t in best.items()),
            key=lambda r: r.mean,
        )
    )
    default = next((r for r in ranking if r.config == PYTORCH_DEFAULT), None)
    seed = complete[0].user_attrs.get(records.SEED, 0)
    metric_name = study.user_attrs.get(records.STUDY_METRIC_NAME, "accuracy")
    return Recommendation(
        ranking[0].config, ranking, default, (seed,), metric_name, study.study_name
    )


def top_configs(study: optuna.Study, k: int) -> list[Config]:
    """The ``k`` distinct configs with the best single-trial validation loss."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    ordered: list[Config] = []
    for trial in sorted(complete, key=lambda t: t.value):
        config = Config.from_dict(trial.params)
        if config not in ordered:
            ordered.append(config)
    return ordered[:k]


def confirm(
    study: optuna.Study,
    objective: Objective,
    *,
    seeds: int = 3,
    top_k: int = 3,
    threads: int | None = None,
) -> Recommendation:
    """Re-train the top-k configs and the PyTorch default over ``seeds`` seeds; store the result."""
    if seeds < 1 or top_k < 1:
        raise ConfigError(f"seeds and top_k must be positive but got {seeds} and {top_k}.")
    candidates = top_configs(study, top_k)
    if not candidates:
        raise ConfigError(
            f"study {study.study_name!r} has no completed trial to confirm; every trial "
            "diverged or was pruned: widen the space (inits=, activations=) or the budget."
        )
    default = _default_for(objective)
    seed_list = tuple(objective.seed + CONFIRM_SEED_OFFSET + i for i in range(seeds))
    with torch_threads(threads, objective.data.device):
        ranked = [_retrain(objective, c, seed_list) for c in dict.fromkeys([*candidates, default])]
    ranking = tuple(sorted(ranked, key=lambda r: r.mean))
    default_result = next(r for r in ranked if r.config == default)
    metric_name = "accuracy" if objective.data.task == "classification" else "r2"
    rec = Recommendation(
        ranking[0].config, ranking, default_result, seed_list, metric_name, study.study_name
    )
    study.set_user_attr(records.STUDY_RECOMMENDATION, rec.to_dict())
    from autoinit.dashboard import save_to_dashboard

    save_to_dashboard(study)  # the dashboard's note now carries the confirmed recommendation
    return rec


def _default_for(objective: Objective) -> Config:
    """PyTorch's default init with ReLU, or with the first activation searched if not ReLU."""
    if PYTORCH_DEFAULT.activation in objective.activations:
        return PYTORCH_DEFAULT
    return Config("default", objective.activations[0], None)


def _retrain(objective: Objective, config: Config, seeds: Sequence[int]) -> Ranked:
    values, metrics = [], []
    for seed in seeds:
        try:  # the guard stays on here, whatever the search used: a diverged run counts as inf
            result = objective.train(config, seed, guard=objective.guard or {})
        except optuna.TrialPruned:
            values.append(math.inf)
            metrics.append(None)
            continue
        values.append(result.value)
        metrics.append(records.finite_or_none(result.metric))
    return Ranked(config, tuple(values), tuple(metrics))


def recommend(
    model_fn: ModelFn,
    train_loader: DataLike,
    val_loader: DataLike | None = None,
    *,
    seeds: int = 3,
    top_k: int = 3,
    **search_options: Any,
) -> Recommendation:
    """Search, then confirm the ``top_k`` configs and PyTorch's default over ``seeds`` seeds.

    ``search_options`` are :func:`autoinit.search`'s keyword arguments (``n_trials``,
    ``epochs``, ``inits``, ``storage``...). The result is also stored on the study.

    Example:
        >>> rec = recommend(model_fn, train_loader, n_trials=40, epochs=5)   # doctest: +SKIP
        >>> print(rec)
        >>> model = rec.build(model_fn)
    """
    options = search_defaults(**search_options)
    finished = run_search(model_fn, train_loader, val_loader, **options)
    return confirm(
        finished.study, finished.objective, seeds=seeds, top_k=top_k, threads=options["threads"]
    )

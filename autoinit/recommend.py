"""``recommend()``: search, then confirm the best configs over fresh seeds against the default.

A search trains every config with one seed, so its ranking carries seed noise. The confirmation
re-trains the top-k configs and the PyTorch default over several seeds and picks the best mean
validation loss; the evidence (mean ± std of the winner and of the default) is stored on the
study, so ``Recommendation.from_study`` and the report need nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna

from autoinit import records
from autoinit.apply import ModelFn
from autoinit.errors import ConfigError, NoRecommendation
from autoinit.recommendation import Ranked, Recommendation, all_diverged_reason, no_trial_reason
from autoinit.search import Objective, run_search, search_defaults, torch_threads
from autoinit.space import PYTORCH_DEFAULT, Config
from autoinit.train import DataLike

CONFIRM_SEED_OFFSET = 1000  # confirmation seeds differ from the search's seed


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
    """Re-train the top-k configs and the PyTorch default over ``seeds`` seeds; store the result.

    Raises:
        NoRecommendation: no search trial completed, or every confirmed config diverged on
            some seed. The evidence is on the exception (and, for the latter, on the study).
    """
    if seeds < 1 or top_k < 1:
        raise ConfigError(f"seeds and top_k must be positive but got {seeds} and {top_k}.")
    candidates = top_configs(study, top_k)
    metric_name = records.metric_for(objective.data.task)
    if not candidates:
        reason = no_trial_reason(study)
        rec = Recommendation(None, (), None, (), metric_name, study.study_name, reason=reason)
        raise NoRecommendation(rec, f"study {study.study_name!r} has no completed trial: {reason}")
    default = _default_for(objective)
    seed_list = tuple(objective.seed + CONFIRM_SEED_OFFSET + i for i in range(seeds))
    with torch_threads(threads, objective.data.device):
        ranked = [_retrain(objective, c, seed_list) for c in dict.fromkeys([*candidates, default])]
    ranking = tuple(sorted(ranked, key=lambda r: r.mean))
    default_result = next(r for r in ranked if r.config == default)
    found = math.isfinite(ranking[0].mean)
    rec = Recommendation(
        ranking[0].config if found else None, ranking, default_result, seed_list, metric_name,
        study.study_name, reason=None if found else all_diverged_reason(ranking),
    )  # fmt: skip
    rec.store(study)
    from autoinit.dashboard import save_to_dashboard

    save_to_dashboard(study)  # the dashboard's note now carries the confirmed recommendation
    if not found:
        raise NoRecommendation(rec, rec.reason or "every confirmed configuration diverged")
    return rec


def _default_for(objective: Objective) -> Config:
    """PyTorch's default init with ReLU, or with the first activation searched if not ReLU."""
    if PYTORCH_DEFAULT.activation in objective.activations:
        return PYTORCH_DEFAULT
    return Config("default", objective.activations[0], None)


def _retrain(objective: Objective, config: Config, seeds: Sequence[int]) -> Ranked:
    """Train ``config`` once per seed; a diverged run counts as an infinite loss, with its reason."""
    values: list[float] = []
    metrics: list[float | None] = []
    stops: list[str | None] = []
    for seed in seeds:
        try:  # the guard stays on here, whatever the search used: a diverged run counts as inf
            result = objective.train(config, seed, guard=objective.guard or {})
        except optuna.TrialPruned as stopped:
            values.append(math.inf)
            metrics.append(None)
            stops.append(str(stopped) or "stopped by the divergence guard")
            continue
        values.append(result.value if math.isfinite(result.value) else math.inf)
        metrics.append(records.finite_or_none(result.metric))
        stops.append(None if math.isfinite(result.value) else "non-finite validation loss")
    return Ranked(config, tuple(values), tuple(metrics), tuple(stops), tuple(seeds))


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

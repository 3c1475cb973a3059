"""``recommend()``: search, then confirm the best configs over fresh seeds against the default.

A search trains every config with one seed, so its ranking carries seed noise. The confirmation
re-trains the top-k configs and the PyTorch default over several seeds and picks the best mean
validation loss; the evidence (mean ± std of the winner and of the default) is stored on the
study, so ``Recommendation.from_study`` and the report need nothing else.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
import torch

from autoinit import claims, records
from autoinit._apply import ModelFn
from autoinit._search import Objective, SearchRun, prepare_search
from autoinit.errors import AutoinitError, ConfigError, NoRecommendation
from autoinit.options import GuardOption, SearchOptions
from autoinit.recommendation import Ranked, Recommendation, all_diverged_reason, no_trial_reason
from autoinit.space import PYTORCH_DEFAULT, Config
from autoinit.study import this_process
from autoinit.train import DataLike
from autoinit.workers import torch_threads

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


def confirm_once(
    run: SearchRun,
    *,
    seeds: int = 3,
    top_k: int = 3,
    wait: bool = True,
    on_wait: Callable[[dict[str, Any]], None] | None = None,
    poll_seconds: float = 2.0,
) -> Recommendation:
    """:func:`confirm`, run by exactly one of the processes that searched the study.

    The first process to get here claims the confirmation in the storage (:mod:`autoinit.claims`)
    and runs it; the others wait for its stored result (``on_wait`` is told who holds the claim,
    at every poll) and return it. With ``wait=False`` they raise :class:`ConfirmationElsewhere`.
    A claimant that dies mid-confirmation is taken over once its heartbeat goes stale. A study
    already confirmed for this budget returns its stored recommendation at once.
    """
    study, key = run.study, f"confirm:{run.options.n_trials}:{seeds}:{top_k}"
    while True:
        if (study.user_attrs.get(records.STUDY_CONFIRMED) or {}).get("key") == key:
            return _stored_outcome(study)
        if claims.try_claim(study, key):
            outcome: Recommendation | NoRecommendation
            with claims.holding(study, key):
                try:
                    outcome = confirm(study, run.objective, seeds=seeds, top_k=top_k,
                                      threads=run.options.threads)  # fmt: skip
                except NoRecommendation as nothing:
                    outcome = nothing
                study.set_user_attr(records.STUDY_CONFIRMED, {"key": key, **this_process()})
            if isinstance(outcome, NoRecommendation):
                raise outcome
            return outcome
        holder = claims.holder(study, key) or {}
        if not wait:
            raise ConfirmationElsewhere(holder)
        if on_wait is not None:
            on_wait(holder)
        time.sleep(poll_seconds)


def _stored_outcome(study: optuna.Study) -> Recommendation:
    rec = Recommendation.from_study(study)
    if not rec.found:
        raise NoRecommendation(rec, rec.reason or "nothing to recommend")
    return rec


class ConfirmationElsewhere(AutoinitError):
    """Another process holds the study's confirmation (and this one was told not to wait)."""

    def __init__(self, holder: dict[str, Any]) -> None:
        who = f"{holder.get('host', '?')} (PID {holder.get('pid', '?')})"
        super().__init__(
            f"the confirmation of this study is being run by {who}; its result will be stored "
            "with the study: read it with `autoinit show`."
        )
        self.holder = holder


def recommend(
    model_fn: ModelFn,
    train_loader: DataLike,
    val_loader: DataLike | None = None,
    *,
    seeds: int = 3,
    top_k: int = 3,
    n_trials: int = 50,
    timeout: float | None = None,
    epochs: int | None = 10,
    max_steps: int | None = None,
    trial_time_limit: float | None = None,
    batch_size: int | None = None,
    optimizer: str = "adam",
    lr: float = 1e-3,
    inits: Sequence[str] | None = None,
    activations: Sequence[str] | None = None,
    loss_fn: Callable | None = None,
    task: str | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    guard: GuardOption = True,
    seed: int = 0,
    device: str | torch.device = "auto",
    n_jobs: int = 1,
    threads: int | None = None,
    val_fraction: float = 0.2,
    callbacks: Sequence[Callable] = (),
) -> Recommendation:
    """Search, then confirm the ``top_k`` configs and PyTorch's default over ``seeds`` seeds.

    Every other argument is :func:`autoinit.search`'s, with the same meaning. The result is
    stored on the study; when several processes search one study, only one confirms and the
    others return its result.

    Raises:
        NoRecommendation: no trial completed, or every confirmed config diverged on some seed;
            its ``recommendation`` attribute holds the evidence and its message what to try.

    Example:
        >>> rec = recommend(model_fn, train_loader, n_trials=40, epochs=5)   # doctest: +SKIP
        >>> print(rec)
        >>> model = rec.build(model_fn)
    """
    options = SearchOptions(
        n_trials=n_trials, timeout=timeout, epochs=epochs, max_steps=max_steps,
        trial_time_limit=trial_time_limit, batch_size=batch_size, optimizer=optimizer, lr=lr,
        inits=tuple(inits) if inits is not None else None,
        activations=tuple(activations) if activations is not None else None,
        loss_fn=loss_fn, task=task, storage=storage, study_name=study_name, sampler=sampler,
        pruner=pruner, guard=guard, seed=seed, device=device, n_jobs=n_jobs, threads=threads,
        val_fraction=val_fraction, callbacks=tuple(callbacks),
    )  # fmt: skip
    if seeds < 1 or top_k < 1:
        raise ConfigError(f"seeds and top_k must be positive but got {seeds} and {top_k}.")
    run = prepare_search(model_fn, train_loader, val_loader, options).optimize()
    return confirm_once(run, seeds=seeds, top_k=top_k)

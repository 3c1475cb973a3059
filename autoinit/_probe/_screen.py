"""The whole-space pre-screen of a study (``prescreen="space"``): probe every config once,
before any training. (By default each trial only screens itself: :func:`trial_probe`.)

A config whose probe collapses is added to the study as a pruned trial (``prune_kind``
``prescreen``, 0 steps, the verdict citing its figure), so that it counts toward ``n_trials``,
shows in every report, and the sampler never spends training on it (a sampled twin reuses
it). The best-probed configs are queued right after the baselines. Exactly one process of a
study does this, once (:mod:`autoinit.claims`): a resumed study is not pre-screened again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import optuna

from autoinit import claims, records
from autoinit._probe._table import ProbeRow, ProbeTable, probe_configs, probe_space
from autoinit.space import LEAKY_SLOPE_RANGE, Config, baselines

if TYPE_CHECKING:
    from autoinit._search import Objective

MAX_PROBE_SHARE = 0.25  # the up-front probe may cost at most this share of the planned steps
PROBE_QUEUE = 2  # best-probed configs queued right after the baselines (tuned: benchmarks)
CLAIM = "prescreen"
PREFIX = "pre-screened: "


def distributions(
    inits: Sequence[str], activations: Sequence[str], config: Config
) -> dict[str, optuna.distributions.BaseDistribution]:
    """The distributions ``space.suggest`` gives a trial of ``config`` (the slope only for
    Leaky ReLU), so that an added trial is one the sampler could have drawn."""
    dists: dict[str, optuna.distributions.BaseDistribution] = {
        "init": optuna.distributions.CategoricalDistribution(tuple(inits)),
        "activation": optuna.distributions.CategoricalDistribution(tuple(activations)),
    }
    if config.leaky_slope is not None:
        dists["leaky_slope"] = optuna.distributions.FloatDistribution(*LEAKY_SLOPE_RANGE, log=True)
    return dists


def params_of(config: Config) -> dict[str, object]:
    return {k: v for k, v in config.to_dict().items() if v is not None}


def prescreen_study(
    study: optuna.Study,
    objective: Objective,
    *,
    n_trials: int | None = None,
    queue: int = PROBE_QUEUE,
) -> ProbeTable | None:
    """Probe the space, add the collapsed configs as pruned trials, queue the best probed.

    Added trials count toward the study's ``n_trials``, so at most half of the budget left
    after the queued trials (the baselines) is given to them (one per init + activation family
    first, then the other slopes): the baselines always run, and a deep model whose space
    mostly collapses still trains at least half its budget. A collapsed config left out
    is stopped at 0 steps if the sampler draws it (the trial's own probe), so it never
    trains either way. Skipped when probing the space would cost more than a quarter of the
    planned training (:func:`worth_it`). Runs once per study, however many processes start
    together; returns None in the processes that did not run it (and on a resumed study).
    """
    configs = probe_space(objective.inits, objective.activations)
    if objective.batch is None or not worth_it(len(configs), objective, n_trials):
        return None
    if not claims.try_claim(study, CLAIM):
        return None
    with claims.holding(study, CLAIM):
        table = probe_configs(
            objective.model_fn, objective.batch, configs, objective.data.loss_fn,
            seed=objective.seed,
        )  # fmt: skip
        trials = study.get_trials(deepcopy=False)
        seen = {_key(t.params) for t in trials}
        left = len(table) if n_trials is None else n_trials - len(trials)
        room = max(0, left // 2)
        for row in _families_first(table.collapsed)[:room]:
            if _key(params_of(row.config)) in seen:
                continue  # a process that died mid-way added it already
            assert row.verdict is not None
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED,
                params=params_of(row.config),
                distributions=distributions(objective.inits, objective.activations, row.config),
                user_attrs={
                    records.PRUNE_KIND: records.PRESCREEN,
                    records.PRUNE_REASON: PREFIX + row.verdict.reason,
                    records.STEPS: 0,
                    records.SEED: objective.seed,
                    records.PROBE: row.record(),
                },
            ))  # fmt: skip
            left -= 1
        known = set(baselines(objective.inits, objective.activations))
        queue = max(0, min(queue, left))  # queued trials beyond the budget would never run
        for config in [c for c in table.best(queue + len(known)) if c not in known][:queue]:
            study.enqueue_trial(params_of(config), skip_if_exists=True)
    return table


def worth_it(n_configs: int, objective: Objective, n_trials: int | None) -> bool:
    """Whether probing ``n_configs`` (about one training step each) costs at most
    :data:`MAX_PROBE_SHARE` of the training the study plans (``n_trials`` full trials).

    A smoke-test budget (a few trials of one short epoch) would spend more on the up-front
    probe than on training; each trial still probes itself and skips a collapse then.
    """
    if n_trials is None:
        return True
    budget, data = objective.budget, objective.data
    per_trial = [s for s in (budget.max_steps,) if s]
    if budget.epochs:
        per_trial.append(budget.epochs * data.steps_per_epoch)
    if not per_trial:  # a time limit only: the steps are unknown, probe
        return True
    return n_configs <= MAX_PROBE_SHARE * n_trials * min(per_trial)


def _families_first(rows: Sequence[ProbeRow]) -> list[ProbeRow]:
    """One row per init + activation first (in probe order), then the other slopes."""
    firsts: dict[tuple[str, str], ProbeRow] = {}
    for row in rows:
        firsts.setdefault((row.config.init, row.config.activation), row)
    chosen = list(firsts.values())
    return chosen + [row for row in rows if all(row is not c for c in chosen)]


def _key(params: dict[str, object]) -> tuple[object, ...]:
    return (params.get("init"), params.get("activation"), params.get("leaky_slope"))

"""``recommend()``: search, then confirm the best configs over fresh seeds against the default.

A search trains every config with one seed, so its ranking carries seed noise. The confirmation
re-trains the top-k configs and the PyTorch default over several seeds and picks the best mean
validation loss; the evidence (mean ± std of the winner and of the default) is stored on the
study, so ``Recommendation.from_study`` and the report need nothing else.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import optuna
import torch

from autoinit import claims, records
from autoinit._apply import ModelFn
from autoinit._rounds import (
    Ahead,
    Outcome,
    outcome_of,
    parts_of,
    train_together,
)
from autoinit._search import Objective, SearchRun, prepare_search
from autoinit.errors import AutoinitError, ConfigError, NoRecommendation
from autoinit.options import DEFAULT_SEARCH_ROWS, GuardOption, SearchOptions
from autoinit.recommendation import Ranked, Recommendation, all_diverged_reason, no_trial_reason
from autoinit.space import PYTORCH_DEFAULT, Config
from autoinit.study import this_process
from autoinit.train import DataLike
from autoinit.workers import resolve_jobs, torch_threads

CONFIRM_SEED_OFFSET = 1000  # confirmation seeds differ from the search's seed


def top_configs(study: optuna.Study, k: int) -> list[Config]:
    """The ``k`` distinct configs with the best single-trial validation loss, best first.

    Complete trials only. Successive halving lets few finish (a trial completes when it is in
    the best quarter at each rung), so the race may get fewer than ``k``; filling it with the
    trials the pruner stopped at the deepest rung was measured (``benchmarks/README.md``,
    issue 13) to cost four times the confirmation for no better recommendation.
    """
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    ordered: list[Config] = []
    for trial in sorted(complete, key=records.loss_of):
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
    race: bool = True,
    together: bool = True,
    jobs: int | str = "auto",
    ahead: Ahead | None = None,
) -> Recommendation:
    """Race the top-k configs and PyTorch's default over up to ``seeds`` fresh seeds; store it.

    Every config still in the race trains once per seed, seed after seed. After each seed a
    config leaves the race when it diverged (a diverged seed is a loss: it can never win), or,
    from the second seed on, when its gap to the leader is clearly beyond the seed-to-seed spread
    (a t-test with seeds as blocks, the spread pooled over the race: :func:`_clearly_worse`).
    The race ends when only the leader is left or the seeds run out; each config's stored
    evidence lists exactly the seeds it got. ``race=False`` trains every config on every seed
    (the confirmation of autoinit 0.1). With ``together`` each round trains
    as one batched model where it can (``train_population``: the same computation up to float
    rounding, in less time): the first round every config on the first two seeds (no finite
    config can leave before the second; without the race, on every seed), then each seed's
    configs; ``together=False`` trains them one after another. ``jobs`` processes share each
    round (``"auto"``: one per CPU core), and ``ahead`` holds runs trained while the search ran
    (:func:`confirming_ahead`); see :mod:`autoinit._rounds`.

    Raises:
        NoRecommendation: no search trial completed, or every confirmed config diverged on
            some seed. The evidence is on the exception (and, for the latter, on the study).
    """
    if seeds < 1 or top_k < 1:
        raise ConfigError(f"seeds and top_k must be positive but got {seeds} and {top_k}.")
    processes = resolve_jobs(jobs, objective.data.device, threads)
    candidates = top_configs(study, top_k)
    metric_name = records.metric_for(objective.data.task)
    if not candidates:
        reason = no_trial_reason(study)
        rec = Recommendation(None, (), None, (), metric_name, study.study_name, reason=reason)
        raise NoRecommendation(rec, f"study {study.study_name!r} has no completed trial: {reason}")
    default = _default_for(objective)
    seed_list = _confirm_seeds(objective, seeds)
    configs = list(dict.fromkeys([*candidates, default]))
    if ahead is None:  # nothing trained during the search: the children of this race alone
        ahead = Ahead(objective, seed_list, top_k, 0, threads or 1)
    ahead.keep_only(configs)
    try:
        with torch_threads(threads, objective.data.device):
            ranked = _race(objective, configs, seed_list, race=race, together=together,
                           jobs=processes, ahead=ahead)  # fmt: skip
    finally:  # what still trains (a spare part of the race's end, Ctrl+C) is stopped
        ahead.close()
    ranking = _rank(ranked)
    default_result = next(r for r in ranked if r.config == default)
    found = math.isfinite(ranking[0].mean) and ranking[0].dropped is None
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


CONFIDENCE = 0.95  # one-sided level of the t-test that drops a config from the race


def _race(
    objective: Objective,
    configs: list[Config],
    seeds: Sequence[int],
    *,
    race: bool,
    together: bool = False,
    jobs: int = 1,
    ahead: Ahead | None = None,
) -> list[Ranked]:
    runs: dict[Config, list[Outcome]] = {c: [] for c in configs}
    dropped: dict[Config, str] = {}
    done = 0  # the seeds every config still in the race has run
    while done < len(seeds):
        alive = [c for c in configs if c not in dropped]
        if not alive or (race and len(alive) == 1 and done > 0):
            break  # the winner is separated (or nobody is left)
        # Together, the first round also trains the seeds before any finite config can leave
        # (the second; every seed without the race): one larger batch instead of two rounds.
        # A lone config in a race stops after its first seed: it needs no second.
        first_round = together and done == 0 and (not race or len(alive) > 1)
        now = seeds[done : (2 if race else len(seeds)) if first_round else done + 1]
        todo = [(c, s) for s in now for c in alive]
        upcoming = done + len(now)  # the next round's seed, which a process left idle can run
        spare = ([(c, seeds[upcoming]) for c in _best_first(alive, runs)]
                 if race and upcoming < len(seeds) else [])  # fmt: skip
        # A lone run trains as is in one process; with processes it may have trained ahead.
        outcomes = (_train_together(objective, todo, jobs, ahead, spare)
                    if together and (len(todo) > 1 or jobs > 1)
                    else [_train_once(objective, c, s) for c, s in todo])  # fmt: skip
        for (config, _), got in zip(todo, outcomes):  # seeds in order, for each config
            runs[config].append(got)
        done += len(now)
        if race:
            dropped.update(_losers(alive, {c: [v for v, _, _ in runs[c]] for c in alive}))
        if ahead is not None:  # a config that left trains no more
            ahead.keep_only([c for c in alive if c not in dropped])
    return [
        Ranked(c, tuple(v for v, _, _ in runs[c]), tuple(m for _, m, _ in runs[c]),
               tuple(s for _, _, s in runs[c]), tuple(seeds[: len(runs[c])]), dropped.get(c))
        for c in configs
    ]  # fmt: skip


def _best_first(alive: list[Config], runs: dict[Config, list[Outcome]]) -> list[Config]:
    """The configs by their mean loss so far (in their order before the first round)."""
    return sorted(alive, key=lambda c: statistics.fmean(v for v, _, _ in runs[c]) if runs[c]
                  else 0.0)  # fmt: skip


def _losers(alive: list[Config], values: dict[Config, list[float]]) -> dict[Config, str]:
    """The configs that leave the race after this seed, with why."""
    out = {c: f"out after seed {len(values[c])}: it diverged" for c in alive
           if not all(math.isfinite(v) for v in values[c])}  # fmt: skip
    finite = [c for c in alive if c not in out]
    if not finite:
        return out
    leader = min(finite, key=lambda c: statistics.fmean(values[c]))
    spread, df = _residual_spread([values[c] for c in finite])
    for config in finite:
        worse = (None if config == leader
                 else _clearly_worse(values[config], values[leader], spread, df))  # fmt: skip
        if worse is not None:
            out[config] = f"out after seed {len(values[config])}: {worse}"
    return out


def _residual_spread(rows: list[list[float]]) -> tuple[float, int]:
    """The seed-to-seed spread of the race's losses, with its degrees of freedom.

    Seeds are blocks (every config still in the race trains on the same seeds): what is left of
    each loss once its config's mean and its seed's mean are taken out is the noise, pooled over
    every config, with (configs - 1)(seeds - 1) degrees of freedom. Two configs give exactly the
    paired t-test; four configs after two seeds have 3 degrees of freedom (t = 2.35) where a
    pair alone has 1 (t = 6.31), so a clear loser leaves after the second seed, not the third.
    """
    m, n = len(rows), len(rows[0])
    df = (m - 1) * (n - 1)
    if df == 0:
        return 0.0, 0
    grand = statistics.fmean(v for row in rows for v in row)
    row_means = [statistics.fmean(row) for row in rows]
    seed_means = [statistics.fmean(row[j] for row in rows) for j in range(n)]
    residual = sum((row[j] - row_mean - seed_means[j] + grand) ** 2
                   for row, row_mean in zip(rows, row_means) for j in range(n))  # fmt: skip
    return math.sqrt(residual / df), df


def _clearly_worse(
    values: list[float], leader: list[float], spread: float | None = None, df: int | None = None
) -> str | None:
    """Whether a config's losses are clearly above the leader's on the same seeds, and by what.

    A one-sided t-test at :data:`CONFIDENCE` (it needs two seeds): the mean gap must exceed
    t(df) standard errors, the standard error being ``spread * sqrt(2 / n)`` with the race's
    pooled :func:`_residual_spread` (default: this pair's alone, which is the paired t-test).
    No spread at all (the same gap on every seed) counts when the gap is positive.
    """
    n = len(values)
    if spread is None or df is None:
        spread, df = _residual_spread([values, leader])
    if n < 2 or df < 1:
        return None
    gap = statistics.fmean(values) - statistics.fmean(leader)
    if gap <= 0 or (spread > 0 and gap <= _t_quantile(CONFIDENCE, df) * spread * (2 / n) ** 0.5):
        return None
    return f"+{gap:.3g} vs the leader over {n} seeds (t-test, {CONFIDENCE:.0%}, {df} df)"


def _t_quantile(p: float, df: int) -> float:
    """Student's t quantile (scipy comes with scikit-learn)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def _rank(ranked: list[Ranked]) -> tuple[Ranked, ...]:
    """Configs that finished the race first (best mean first), then those dropped, best first."""
    return tuple(sorted(ranked, key=lambda r: (r.dropped is not None, r.mean)))


def _confirm_seeds(objective: Objective, seeds: int) -> tuple[int, ...]:
    return tuple(objective.seed + CONFIRM_SEED_OFFSET + i for i in range(seeds))


def _default_for(objective: Objective) -> Config:
    """PyTorch's default init with ReLU, or with the first activation searched if not ReLU."""
    if PYTORCH_DEFAULT.activation in objective.activations:
        return PYTORCH_DEFAULT
    return Config("default", objective.activations[0], None)


def _train_once(objective: Objective, config: Config, seed: int) -> Outcome:
    """One confirmation run: its loss (inf if it diverged), metric and why it stopped."""
    try:  # the guard stays on here, whatever the search used: a diverged run counts as inf
        return outcome_of(objective.train(config, seed, guard=objective.guard or {}))
    except optuna.TrialPruned as stopped:
        return math.inf, None, str(stopped)


def _train_together(
    objective: Objective,
    runs: list[tuple[Config, int]],
    jobs: int = 1,
    ahead: Ahead | None = None,
    spare: Sequence[tuple[Config, int]] = (),
) -> list[Outcome]:
    """:func:`_train_once` for each (config, seed): as one batched model in one process, or in
    parts on ``jobs`` processes (:meth:`Ahead.train_round`: the parts ``ahead`` holds are taken
    from it, and a process the round leaves free trains the part of a ``spare`` run).
    """
    if jobs == 1 or ahead is None:
        return train_together(objective, runs, objective.guard or {})
    parts = [ahead.part_of(c, seeds) for c, seeds in parts_of(runs)]
    later = [ahead.part_of(c, seeds) for c, seeds in parts_of(spare)]
    got = ahead.train_round(parts, later, jobs)
    by_run = {(c, s): o for (c, seeds), done in got.items() for s, o in zip(seeds, done)}
    return [by_run[run] for run in runs]


def confirm_once(
    run: SearchRun,
    *,
    seeds: int = 3,
    top_k: int = 3,
    race: bool = True,
    together: bool = True,
    jobs: int | str = "auto",
    ahead: Ahead | None = None,
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
    study, key = run.study, _confirm_key(run, seeds, top_k, race)
    while True:
        if _confirmed(study, key):
            return _stored_outcome(study)
        if claims.try_claim(study, key):
            outcome: Recommendation | NoRecommendation
            with claims.holding(study, key):
                try:
                    outcome = confirm(study, run.objective, seeds=seeds, top_k=top_k,
                                      threads=run.options.threads, race=race,
                                      together=together, jobs=jobs, ahead=ahead)  # fmt: skip
                except NoRecommendation as nothing:
                    outcome = nothing
                study.set_user_attr(records.STUDY_CONFIRMED, {"key": key, **this_process()})
            if isinstance(outcome, NoRecommendation):
                raise outcome
            return outcome
        if ahead is not None:  # another process confirms: what this one trains ahead is waste
            ahead.close()
        holder = claims.holder(study, key) or {}
        if not wait:
            raise ConfirmationElsewhere(holder)
        if on_wait is not None:
            on_wait(holder)
        time.sleep(poll_seconds)


def _confirm_key(run: SearchRun, seeds: int, top_k: int, race: bool) -> str:
    return f"confirm:{run.options.n_trials}:{seeds}:{top_k}:{race}"


def _confirmed(study: optuna.Study, key: str) -> bool:
    return (study.user_attrs.get(records.STUDY_CONFIRMED) or {}).get("key") == key


@contextlib.contextmanager
def confirming_ahead(
    run: SearchRun, *, seeds: int = 3, top_k: int = 3, race: bool = True,
    together: bool = True, jobs: int | str = "auto",
) -> Iterator[Ahead]:  # fmt: skip
    """The confirmation's runs that can train while the search runs, on the cores it leaves
    idle: pass its ``after_trial`` to the search as a callback and it to :func:`confirm_once`.

    It starts with the PyTorch default's runs (in every race) and, after each trial, adds those
    of the configs that would enter the race now (:class:`autoinit._rounds.Ahead`). It trains
    nothing where the confirmation has one process, where the search has worker processes of
    its own, or where the study holds this confirmation already. On leaving, what is still
    training is killed.
    """
    objective, threads = run.objective, run.options.threads or 1
    processes = resolve_jobs(jobs, objective.data.device, threads)
    idle = processes > 1 and run.options.n_jobs == 1 and together
    seed_list = _confirm_seeds(objective, seeds)
    ahead = Ahead(objective, seed_list, top_k, processes - 1 if idle else 0, threads)
    if idle and not _confirmed(run.study, _confirm_key(run, seeds, top_k, race)):
        ahead.want([_default_for(objective)])
    try:
        yield ahead
    finally:
        ahead.close()


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
    race: bool = True,
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
    prescreen: bool | str = True,
    population: int | str = 1,
    search_rows: int | None = DEFAULT_SEARCH_ROWS,
    confirm_jobs: int | str = "auto",
) -> Recommendation:
    """Search, then race the ``top_k`` configs and PyTorch's default over up to ``seeds`` seeds.

    ``race=False`` trains every confirmed config on every seed instead of dropping the clearly
    worse ones early (see :func:`confirm`). ``confirm_jobs`` processes share each of the race's
    rounds: ``"auto"`` is one per CPU core on the CPU (Linux, which can fork), 1 on a GPU.
    Every other argument is :func:`autoinit.search`'s,
    with the same meaning. The result is
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
        val_fraction=val_fraction, callbacks=tuple(callbacks), prescreen=prescreen,
        population=population, search_rows=search_rows,
    )  # fmt: skip
    if seeds < 1 or top_k < 1:
        raise ConfigError(f"seeds and top_k must be positive but got {seeds} and {top_k}.")
    resolve_jobs(confirm_jobs, torch.device("cpu"))  # a bad value fails before the search
    run = prepare_search(model_fn, train_loader, val_loader, options)
    with confirming_ahead(run, seeds=seeds, top_k=top_k, race=race, jobs=confirm_jobs) as ahead:
        run.optimize(callbacks=[ahead.after_trial])
        rec = confirm_once(run, seeds=seeds, top_k=top_k, race=race, jobs=confirm_jobs,
                           ahead=ahead)  # fmt: skip
    return rec.with_trials(run.study)  # so that rec.explain() needs no study

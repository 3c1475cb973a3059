"""The measurements behind the search's cost levers (issue 13): not part of ``benchmarks.run``.

Its experiments, each printing a table and writing JSON next to the other results:

``python -m benchmarks.cost_study rows``
    Where searching on a subsample of the training rows starts to change the ranking. A fixed
    set of configs that train (the baselines and a spread of scaled inits x activations) is
    trained at the full budget on all training rows with seeds 0 and 1 (seed 1 is the noise
    floor: how much a seed alone reorders them), then on stratified subsamples of 2k-20k rows
    with seed 0. Each ranking is compared with the full-data, seed-0 ranking: Spearman's rho,
    whether the top config is in the full top 3, and the regret (full-data validation loss of the
    subsample's best over the full-data best).

``python -m benchmarks.cost_study pruners``
    The learning-curve pruners compared on the default search (40 trials, 10 epochs, the 8 x 64
    MLP, every init and activation). Search trials are deterministic (they share the study's
    seed), so each config is trained once at the full budget and every pruner is replayed
    against that table with the real sampler and the real pruner (ask, report, should_prune,
    tell), over several sampler seeds. The cost is the steps the search trains, in full-training
    equivalents (FTE); the quality is the confirmed metric of the recommendation that the
    search's top 3 and PyTorch's default give over 3 fresh seeds (each cached too).

``python -m benchmarks.cost_study races``
    The racing confirmation's drop rule, replayed: each default search (the default pruner,
    over several sampler seeds) gives its top 3; those and PyTorch's default are trained on the
    3 confirmation seeds (cached), and the race is replayed on that table with the real
    ``_race``: with the spread pooled over the race (today's rule), with each pair's own
    spread (the paired t-test of the session before), with only the search's top 2 or top
    1 against the default (``top_k``), and with the search's own full-budget run of each config
    as the race's first seed, followed by 2 or 3 fresh seeds (``search_block_2``/``_3``: free
    runs, but the candidates' are the ones the search selected them on). Cost: the
    confirmation's runs, in FTE; quality: the pick's metric over the 3 confirmation seeds, and
    whether it is the full confirmation's pick.

``python -m benchmarks.cost_study bounds``
    The pre-screen's vanishing-signal bound (``SignalRatio``'s ``shrink``: 1e4, 1e5, 1e6, none)
    against the configs the ``pruners`` experiment trained in full (its cached tables, in the
    same ``--workdir``): how many configs each bound pre-screens, the best full-training rank
    among them, and the guard-stopped configs it still catches.

``python -m benchmarks.cost_study prescreen``
    The default search replayed on the ``pruners`` tables with the pre-screen off, the whole
    space counted toward ``n_trials`` (``prescreen="space"``: at most half of it) or added on
    top of it, per trial (the default), and per trial with the two best-probed configs queued:
    search FTE and confirmed metric.

``python -m benchmarks.cost_study rounds --rows 5000``
    The race's first round: four configs on two seeds as one batched model of 8 members,
    against two rounds of 4 (``_train_together``), interleaved, best of ``--seeds``; wall and
    CPU time. Also the race's third-seed round (of 4 or of 2 configs) and one round of every
    seed (12 members, ``race=False``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import pickle
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from autoinit import study as studies
from autoinit._search import Objective, subsample_rows
from autoinit.models import mlp_factory
from autoinit.space import PYTORCH_DEFAULT, Config, baselines, resolve_space, suggest
from autoinit.train import Budget, prepare_data

RESULTS = Path(__file__).parent / "results"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIRM_SEEDS = (1000, 1001, 1002)


# --- data -----------------------------------------------------------------------------------------


def generated_frame(rows: int, task: str, *, seed: int = 0) -> Any:
    """A tabular set of ``rows`` rows that an MLP learns but does not saturate.

    ``regression``: 20 features (two of them integer-coded categories), a price-like target made
    of interactions, a threshold and a heavy tail, with noise. ``classification``: scikit-learn's
    ``make_classification`` with 4 classes of 3 clusters each, 12 informative features of 30.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    if task == "classification":
        from sklearn.datasets import make_classification

        x, y = make_classification(
            n_samples=rows, n_features=30, n_informative=12, n_redundant=6, n_classes=4,
            n_clusters_per_class=3, class_sep=0.9, flip_y=0.03, random_state=seed,
        )  # fmt: skip
        frame = pd.DataFrame(x.astype(np.float32), columns=[f"x{i}" for i in range(30)])
        frame["label"] = np.array(list("abcd"))[y]
        return frame
    x = rng.normal(size=(rows, 20)).astype(np.float32)
    x[:, 18] = rng.integers(0, 5, rows)  # a "cut"-like category
    x[:, 19] = rng.integers(0, 8, rows)  # a "color"-like category
    y = (
        np.sin(2 * x[:, 0] * x[:, 1]) + 0.5 * x[:, 2] ** 2 + np.abs(x[:, 3]) * x[:, 4]
        + np.log1p(np.exp(2 * (x[:, 5] + x[:, 6]))) + 0.3 * x[:, 18] * (x[:, 7] > 0)
        - 0.2 * x[:, 19] + np.exp(0.5 * x[:, 8]) + 0.3 * rng.normal(size=rows)
    )  # fmt: skip
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(20)])
    frame["price"] = np.exp(0.4 * y).astype(np.float32)
    return frame


def generated_csv(workdir: Path, rows: int, task: str = "regression") -> Path:
    """:func:`generated_frame` written once to ``workdir`` (kept for the next run)."""
    path = workdir / f"generated_{task}_{rows}.csv"
    if not path.exists():
        generated_frame(rows, task).to_csv(path, index=False)
    return path


def load(path: Path, seed: int = 0) -> tuple[Callable, Any]:
    """What ``autoinit search --data PATH`` trains: ``load_csv`` and the default 8 x 64 MLP."""
    from autoinit.data import load_csv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_csv(path, seed=seed)
    n_out = data.n_classes if data.task == "classification" else 1
    return mlp_factory(data.n_features, n_out), data


# --- one config trained at the full budget, recorded for replay --------------------------------


class _Recorder:
    """The two methods of ``optuna.Trial`` that ``train.fit`` calls: it records, never prunes."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, float]] = []

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return False


@dataclasses.dataclass
class Run:
    reports: list[tuple[int, float]]  # (step, validation loss) as fit reports them
    steps: int
    value: float
    metric: float
    stop: str | None  # the guard's verdict, if it stopped the run


class Table:
    """Each config trained once per seed, on demand."""

    def __init__(self, objective: Objective, cache: Path | None = None) -> None:
        self.objective, self.cache = objective, cache
        self.runs: dict[tuple[Config, int], Run] = {}
        if cache is not None and cache.exists():
            self.runs = pickle.loads(cache.read_bytes())
        self.trained_seconds = 0.0

    def save(self) -> None:
        if self.cache is not None:
            self.cache.write_bytes(pickle.dumps(self.runs))

    def get(self, config: Config, seed: int) -> Run:
        key = (config, seed)
        if key not in self.runs:
            recorder = _Recorder()
            start = time.perf_counter()
            result = self.objective.attempt(
                config, seed, guard=self.objective.guard, trial=recorder  # type: ignore[arg-type]
            )
            self.trained_seconds += time.perf_counter() - start
            stop = None if result.stop is None else result.stop.kind
            self.runs[key] = Run(recorder.reports, result.steps, result.value, result.metric, stop)
        return self.runs[key]


def _objective(model_fn: Callable, data: Any, epochs: int, seed: int = 0,
               rows: int | None = None) -> Objective:  # fmt: skip
    inits, activations = resolve_space(None, None)
    prepared = prepare_data((data.X_train, data.y_train), (data.X_val, data.y_val),
                            task=data.task, seed=seed)  # fmt: skip
    if rows is not None and rows < len(prepared.train[0]):
        prepared = subsample_rows(prepared, rows, seed=seed)
    extra = {}
    try:  # the search's fixed batch (data-dependent inits, the step-0 probe), where it exists
        from autoinit._probe import fixed_batch

        extra["batch"] = fixed_batch(prepared, seed)
    except ImportError:
        pass
    return Objective(model_fn, prepared, Budget(epochs=epochs), inits, activations, seed, {},
                     **extra)  # fmt: skip


def _cached(model_fn: Callable, data: Any, rows: int | None, epochs: int,
            cache: Path | None) -> tuple[Objective, Table]:  # fmt: skip
    """The objective of a replay experiment and its table of full trainings (``cache``: the
    pickle it is kept in between runs)."""
    objective = _objective(model_fn, data, epochs, rows=rows)
    return objective, Table(objective, cache)


# --- experiment 1: where subsampling changes the ranking -----------------------------------------

RANKED_CONFIGS = [
    Config("default", "relu"), Config("kaiming_normal", "relu"), Config("xavier_uniform", "tanh"),
    Config("lecun_normal", "selu"), Config("orthogonal", "gelu"), Config("kaiming_uniform", "elu"),
    Config("xavier_normal", "silu"), Config("lsuv", "relu"), Config("trunc_normal", "tanh"),
    Config("variance_preserving", "mish"), Config("lecun_uniform", "softplus"),
    Config("orthogonal", "leaky_relu", 0.1), Config("default", "tanh"),
    Config("kaiming_normal", "gelu"), Config("xavier_uniform", "sigmoid"),
    Config("lecun_normal", "elu"),
]  # fmt: skip


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def _compare(label: str, runs: list[Run], reference: list[Run], other_seed: list[Run] | None,
             seconds: float) -> dict[str, Any]:  # fmt: skip
    """``runs``' ranking against the full data's (seed 0, and seed 1 where given)."""
    values = [r.value for r in runs]
    ref_values = [r.value for r in reference]
    top, best = int(np.argmin(values)), int(np.argmin(ref_values))
    row = {
        "sample": label, "spearman": _spearman(ref_values, values),
        "top_in_full_top3": top in set(np.argsort(ref_values)[:3].tolist()),
        "top": RANKED_CONFIGS[top].label, "regret_val_loss": ref_values[top] - ref_values[best],
        "regret_metric": reference[best].metric - reference[top].metric, "seconds": seconds,
    }  # fmt: skip
    if other_seed is not None:
        row["spearman_seed1"] = _spearman([r.value for r in other_seed], values)
    return row


def rows_experiment(sizes: Sequence[int], rows: int, tasks: Sequence[str], workdir: Path,
                    epochs: int = 10) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {"sizes": list(sizes), "rows": rows, "epochs": epochs, "tasks": {}}
    for task in tasks:
        model_fn, data = load(generated_csv(workdir, rows, task))
        full = Table(_objective(model_fn, data, epochs), workdir / f"rows_{task}_{rows}.pickle")
        reference = [full.get(c, 0) for c in RANKED_CONFIGS]
        seed1 = [full.get(c, 1) for c in RANKED_CONFIGS]
        full.save()
        found = [_compare("full s0", reference, reference, seed1, full.trained_seconds),
                 _compare("full s1", seed1, reference, None, 0.0)]  # fmt: skip
        for size in sizes:
            table = Table(_objective(model_fn, data, epochs, rows=size),
                          workdir / f"rows_{task}_{rows}_{size}.pickle")  # fmt: skip
            runs = [table.get(c, 0) for c in RANKED_CONFIGS]
            table.save()
            found.append(_compare(str(size), runs, reference, seed1, table.trained_seconds))
        for row in found:
            print(f"  {task} {row['sample']:>8}: rho {row['spearman']:.3f} "
                  f"(vs seed 1: {row.get('spearman_seed1', float('nan')):.3f}) top {row['top']} "
                  f"regret metric {row['regret_metric']:.4f}", flush=True)
        out["tasks"][task] = {
            "train_rows": len(data.X_train), "metric": full.objective.data.metric_name,
            "full_metrics": {c.label: r.metric for c, r in zip(RANKED_CONFIGS, reference)},
            "rows": found,
        }
    return out


# --- experiment 2: pruners replayed -------------------------------------------------------------


def replay(
    objective: Objective, table: Table, pruner: optuna.pruners.BasePruner, n_trials: int,
    sampler_seed: int, prescreen: str | None = None, population: int = 1,
    search_epochs: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A search replayed against ``table``: what ``SearchRun.optimize`` would do, untrained.

    ``prescreen``: None (off), ``"counted"`` (the search's: the collapsed configs are added as
    pruned trials that count toward ``n_trials``, at most half of it), ``"free"`` (all of
    them added, and ``n_trials`` sampled trials on top), ``"per_trial"`` (none added, none
    queued; the trials' own probes are not counted, as in every mode) or ``"queued"`` (none
    added; the space probed up front and its two best queued). A sampled config whose probe
    collapses stops at 0 steps in all of them. ``population``: trials asked per round and
    trained as one group (the built-in MLP's), as ``population_search`` does.
    ``search_epochs``: a trial past the pruner's rungs ends at this epoch, its value the
    validation loss there (a search at lower fidelity than the confirmation's full budget).
    """
    from autoinit._probe import prescreen_study, probe_configs, probe_space
    from autoinit._probe._screen import params_of

    study = optuna.create_study(direction="minimize", pruner=pruner,
                                sampler=studies.default_sampler(sampler_seed))  # fmt: skip
    for config in baselines(objective.inits, objective.activations):
        study.enqueue_trial(params_of(config))
    spent, outcome = 0, {"complete": 0, "pruner": 0, "guard": 0, "twin": 0, "prescreen": 0,
                         "screened": 0}  # fmt: skip
    collapsed: set[Config] = set()
    if prescreen in ("per_trial", "queued"):  # no trials added: each trial probes itself
        space = probe_space(objective.inits, objective.activations)
        probes = probe_configs(objective.model_fn, objective.batch, space,
                               objective.data.loss_fn, seed=objective.seed)  # fmt: skip
        collapsed = {row.config for row in probes.collapsed}
        if prescreen == "queued":  # the up-front probe's two best queued after the baselines
            spent += len(space)
            known = set(baselines(objective.inits, objective.activations))
            for config in [c for c in probes.best(2 + len(known)) if c not in known][:2]:
                study.enqueue_trial(params_of(config))
    elif prescreen is not None:
        probes = prescreen_study(study, objective,
                                 n_trials=n_trials if prescreen == "counted" else None)
        assert probes is not None
        collapsed = {row.config for row in probes.collapsed}
        spent += len(probe_space(objective.inits, objective.activations))  # a step each
        outcome["prescreen"] = len(study.trials) - len(study.get_trials(
            states=(optuna.trial.TrialState.WAITING,)))  # fmt: skip
    sampled = n_trials - (outcome["prescreen"] if prescreen == "counted" else 0)
    asked = 0
    while asked < sampled:  # rounds of ``population`` trials, as ``optimize_population`` asks
        trials = [study.ask() for _ in range(min(population, sampled - asked))]
        asked += len(trials)
        members: list[tuple[optuna.Trial, Config]] = []
        later: list[tuple[optuna.Trial, Config]] = []  # the same config as a member of the round
        for trial in trials:
            config = suggest(trial, objective.inits, objective.activations)
            if config in collapsed:  # the trial's own probe stops it at 0 steps
                outcome["screened"] += 1
                trial.set_user_attr("kind", "prescreen")
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            elif not _told_twin(study, trial, outcome):
                (later if any(c == config for _, c in members) else members).append(
                    (trial, config))  # fmt: skip
        cap = search_epochs and search_epochs * objective.data.steps_per_epoch
        spent += _train_round(study, members, table, objective.seed, outcome, cap)
        for trial, config in later:  # its twin has finished: reuse it, or train it alone
            if not _told_twin(study, trial, outcome):
                spent += _train_round(study, [(trial, config)], table, objective.seed, outcome,
                                      cap)  # fmt: skip
    full_steps = objective.budget.epochs * objective.data.steps_per_epoch
    complete = sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)),
                      key=lambda t: t.value)  # fmt: skip
    top: list[Config] = []
    for t in complete:
        config = Config.from_dict(t.params)
        if config not in top:
            top.append(config)
    return {"fte": spent / full_steps, "top": top[:3], "completed": top, **outcome}


def _told_twin(study: optuna.Study, trial: optuna.Trial, outcome: dict[str, int]) -> bool:
    """Tell ``trial`` its finished twin's result, if it has one (it costs nothing)."""
    twin = _twin(study, trial)
    if twin is None:
        return False
    outcome["twin"] += 1
    trial.set_user_attr("kind", twin.user_attrs.get("kind"))
    study.tell(trial, twin.value if twin.state.name == "COMPLETE" else None, state=twin.state)
    return True


def _train_round(study: optuna.Study, members: list[tuple[optuna.Trial, Config]], table: Table,
                 seed: int, outcome: dict[str, int], cap: int | None = None) -> int:  # fmt: skip
    """The members' runs replayed as one batched group: after each epoch every member still
    training reports, in order, and the pruner judges it; the trials are told at the end.
    ``cap``: the runs end at this step (see :func:`replay`'s ``search_epochs``). Returns the
    steps spent."""
    runs = {trial.number: _capped(table.get(config, seed), cap) for trial, config in members}
    stopped: dict[int, int] = {}  # trial number -> the step the pruner stopped it at
    for index in range(max((len(r.reports) for r in runs.values()), default=0)):
        for trial, _ in members:
            reports = runs[trial.number].reports
            if trial.number in stopped or index >= len(reports):
                continue
            step, value = reports[index]
            trial.report(value, step)
            if trial.should_prune():
                stopped[trial.number] = step
    spent = 0
    for trial, _ in members:
        run = runs[trial.number]
        if trial.number in stopped:
            spent += stopped[trial.number]
            outcome["pruner"] += 1
            trial.set_user_attr("kind", "pruner")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        spent += run.steps
        if run.stop is not None:
            outcome["guard"] += 1
            trial.set_user_attr("kind", run.stop)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            outcome["complete"] += 1
            study.tell(trial, run.value)
    return spent


def _capped(run: Run, cap: int | None) -> Run:
    """``run`` as if it had ended at step ``cap``: a guard stop after that never happened."""
    if cap is None or run.steps <= cap:
        return run
    reports = [(step, value) for step, value in run.reports if step <= cap]
    return Run(reports, cap, reports[-1][1], math.nan, None)


def _twin(study: optuna.Study, trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    for other in study.get_trials(deepcopy=False, states=studies.COUNTED_STATES):
        if other.params == trial.params and other.number != trial.number:
            if other.user_attrs.get("kind") == "pruner":
                continue
            return other
    return None


def confirmed(table: Table, candidates: Sequence[Config]) -> tuple[Config, float]:
    """The confirmation's pick among ``candidates`` and the default, and its mean metric."""
    scored = []
    for config in dict.fromkeys([*candidates, PYTORCH_DEFAULT]):
        runs = [table.get(config, s) for s in CONFIRM_SEEDS]
        values = [r.value if r.stop is None and math.isfinite(r.value) else math.inf
                  for r in runs]  # fmt: skip
        metric = statistics.fmean(r.metric for r in runs) if all(map(math.isfinite, values)) \
            else math.nan
        scored.append((statistics.fmean(values), config, metric))
    _, config, metric = min(scored, key=lambda s: s[0])
    return config, metric


def pruner_candidates(steps_per_epoch: int, epochs: int) -> dict[str, Callable[[], Any]]:
    total = steps_per_epoch * epochs
    spe = steps_per_epoch
    return {
        "median": lambda: studies.median_pruner(total),
        "sha_eta3": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spe, reduction_factor=3),
        # autoinit's, rungs at 10 epochs: 1 and 3 (the default until session 7)
        "sha_eta3_capped": lambda: studies.SuccessiveHalving(spe, 3, total),
        # a max of 8 epochs leaves out the rung at 3: the best third after 1 epoch only
        "sha_eta3_one_rung": lambda: studies.SuccessiveHalving(spe, 3, 8 * spe),
        "sha_eta2_capped": lambda: studies.SuccessiveHalving(spe, 2, total),  # 1, 2 and 4
        "sha_eta2_two_rungs": lambda: studies.SuccessiveHalving(spe, 2, 7 * spe),  # 1 and 2
        "sha_eta4_capped": lambda: studies.SuccessiveHalving(spe, 4, total),  # the default: 1
        "sha_eta5_capped": lambda: studies.SuccessiveHalving(spe, 5, total),  # 1
        "sha_eta3_r2": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=2 * spe, reduction_factor=3),
        "sha_eta2": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spe, reduction_factor=2),
        "hyperband_eta3": lambda: optuna.pruners.HyperbandPruner(
            min_resource=spe, max_resource=total, reduction_factor=3),
        "hyperband_r2": lambda: optuna.pruners.HyperbandPruner(
            min_resource=2 * spe, max_resource=total, reduction_factor=3),
        "none": lambda: optuna.pruners.NopPruner(),
    }  # fmt: skip


def pruners_experiment(datasets: dict[str, tuple[Callable, Any, int | None]], n_trials: int,
                       epochs: int, sampler_seeds: Sequence[int], cache_dir: Path | None = None,
                       only: Sequence[str] | None = None, population: int = 1,
                       search_epochs: int | None = None) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {"n_trials": n_trials, "epochs": epochs, "population": population,
                           "search_epochs": search_epochs, "datasets": {}}  # fmt: skip
    for name, (model_fn, data, rows) in datasets.items():
        objective, table = _cached(model_fn, data, rows, epochs, cache_dir and (
            cache_dir / f"{name}_{rows}_{epochs}.pickle"))  # fmt: skip
        candidates = pruner_candidates(objective.data.steps_per_epoch, epochs)
        rows_out: dict[str, Any] = {}
        for label, make in candidates.items():
            if only and label not in only:
                continue
            runs = []
            for seed in sampler_seeds:
                result = replay(objective, table, make(), n_trials, seed, population=population,
                                search_epochs=search_epochs)  # fmt: skip
                pick, metric = confirmed(table, result["top"])
                runs.append({**{k: v for k, v in result.items() if k not in ("top", "completed")},
                             "top": [c.label for c in result["top"]], "pick": pick.label,
                             "metric": metric})  # fmt: skip
            rows_out[label] = {
                "fte_mean": statistics.fmean(r["fte"] for r in runs),
                "metric_mean": statistics.fmean(r["metric"] for r in runs),
                "metric_min": min(r["metric"] for r in runs),
                "runs": runs,
            }
            print(f"  {name:>14} {label:>15}: FTE {rows_out[label]['fte_mean']:.2f}  metric "
                  f"{rows_out[label]['metric_mean']:.4f} (min {rows_out[label]['metric_min']:.4f})"
                  f"  picks {[r['pick'] for r in runs]}", flush=True)
        out["datasets"][name] = {"rows": rows, "metric": objective.data.metric_name,
                                 "steps_per_epoch": objective.data.steps_per_epoch,
                                 "configs_trained": len(table.runs),
                                 "trained_seconds": table.trained_seconds,
                                 "pruners": rows_out}  # fmt: skip
        table.save()
    return out


# --- experiment 6: the pre-screen's vanishing-signal bound against full trainings ----------------


SHRINK_BOUNDS = (1e4, 1e5, 1e6, math.inf)


def bounds_experiment(datasets: dict[str, tuple[Callable, Any, int | None]], epochs: int,
                      cache_dir: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """For each vanishing-signal bound of the pre-screen (``SignalRatio``'s ``shrink``), on the
    configs the ``pruners`` experiment trained in full (its cached table; every config the
    replayed searches drew, at the study's seed): how many configs it pre-screens, the best
    full-training rank among them, and how many of the guard-stopped it still catches."""
    from autoinit._probe import _rules, probe_model

    out: dict[str, Any] = {"epochs": epochs, "datasets": {}}
    for name, (model_fn, data, rows) in datasets.items():
        objective, table = _cached(model_fn, data, rows, epochs, cache_dir and (
            cache_dir / f"{name}_{rows}_{epochs}.pickle"))  # fmt: skip
        ranked = sorted(((_finite_value(run), config, run.stop) for (config, seed), run
                         in table.runs.items() if seed == objective.seed),
                        key=lambda row: row[0])  # fmt: skip
        probes = {config: probe_model(objective.start(config, objective.seed, guard={})[0],
                                      objective.batch, objective.data.loss_fn)
                  for _, config, _ in ranked}  # fmt: skip
        rows_out = {}
        for shrink in SHRINK_BOUNDS:
            rules = _rules.default_probe_rules(max_signal_shrink=shrink)
            screened = [(rank, config.label, stop) for rank, (_, config, stop)
                        in enumerate(ranked, 1) if _rules.screen(probes[config], rules)]
            guard_stopped = [row for row in ranked if row[2] is not None]
            rows_out[f"{shrink:g}"] = {
                "prescreened": len(screened),
                "best_rank_prescreened": min((r for r, _, _ in screened), default=None),
                "top10_prescreened": [label for r, label, _ in screened if r <= 10],
                "guard_stopped_caught": sum(stop is not None for _, _, stop in screened),
                "guard_stopped": len(guard_stopped),
            }  # fmt: skip
            row = rows_out[f"{shrink:g}"]
            print(f"  {name:>14} shrink bound {shrink:g}: pre-screens {row['prescreened']} of "
                  f"{len(ranked)}, best rank {row['best_rank_prescreened']}, guard-stopped "
                  f"caught {row['guard_stopped_caught']}/{row['guard_stopped']}", flush=True)
        out["datasets"][name] = {"configs": len(ranked), "bounds": rows_out}
    return out


PRESCREEN_MODES = {"off": None, "counted": "counted", "free": "free", "per_trial": "per_trial",
                   "queued": "queued"}  # fmt: skip


def prescreen_experiment(datasets: dict[str, tuple[Callable, Any, int | None]], n_trials: int,
                         epochs: int, sampler_seeds: Sequence[int],
                         cache_dir: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """The default search replayed (the default pruner) in each of :data:`PRESCREEN_MODES`
    (see :func:`replay`): the search's FTE (up-front probes included) and the confirmed metric
    of its pick (top 3 and the default, 3 seeds)."""
    out: dict[str, Any] = {"n_trials": n_trials, "epochs": epochs, "datasets": {}}
    for name, (model_fn, data, rows) in datasets.items():
        objective, table = _cached(model_fn, data, rows, epochs, cache_dir and (
            cache_dir / f"{name}_{rows}_{epochs}.pickle"))  # fmt: skip
        spe = objective.data.steps_per_epoch
        modes = {}
        for label, mode in PRESCREEN_MODES.items():
            runs = []
            for seed in sampler_seeds:
                pruner = studies.default_pruner(spe * epochs, spe)
                result = replay(objective, table, pruner, n_trials, seed, prescreen=mode)
                pick, metric = confirmed(table, result["top"])
                runs.append({"fte": result["fte"], "pick": pick.label, "metric": metric,
                             "complete": result["complete"], "prescreen": result["prescreen"],
                             "twin": result["twin"]})  # fmt: skip
            table.save()
            modes[label] = {"fte_mean": statistics.fmean(r["fte"] for r in runs),
                            "metric_mean": statistics.fmean(r["metric"] for r in runs),
                            "metric_min": min(r["metric"] for r in runs), "runs": runs}
            row = modes[label]
            print(f"  {name:>14} pre-screen {label:>7}: FTE {row['fte_mean']:.2f}  metric "
                  f"{row['metric_mean']:.4f} (min {row['metric_min']:.4f})  twins "
                  f"{statistics.fmean(r['twin'] for r in runs):.1f}", flush=True)
        out["datasets"][name] = {"metric": objective.data.metric_name, "modes": modes}
    return out


def _finite_value(run: Run) -> float:
    return run.value if run.stop is None and math.isfinite(run.value) else math.inf


# --- experiment 3: the race's drop rule, replayed ------------------------------------------------


class _Replayed:
    """What ``_race`` asks of an objective, answered from a :class:`Table` (nothing trains)."""

    guard: dict[str, Any] = {}

    def __init__(self, table: Table) -> None:
        self.table = table

    def train(self, config: Config, seed: int, *, guard: Any) -> Run:
        run = self.table.get(config, seed)
        if run.stop is not None or not math.isfinite(run.value):
            raise optuna.TrialPruned(f"{run.stop or 'non-finite'} (replayed)")
        return dataclasses.replace(run, stop=None)


def race_replay(table: Table, candidates: Sequence[Config], pooled: bool,
                searched: Sequence[Config] | None = None,
                fresh: int = 3) -> dict[str, Any]:  # fmt: skip
    """The racing confirmation of ``candidates`` and the default, replayed on ``table``:
    its pick, the pick's metric over all 3 seeds, and the runs it cost.

    ``searched``, the configs the search trained in full: the race's first seed is then the
    search's own run (the study's seed, on the same rows), free for those configs, followed by
    ``fresh`` confirmation seeds. The pick's metric is still over the 3 confirmation seeds.
    """
    from unittest import mock

    import autoinit._recommend as recommend_module

    configs = list(dict.fromkeys([*candidates, PYTORCH_DEFAULT]))
    pooled_spread = recommend_module._residual_spread  # of a pair: the paired t-test's

    def pair_only(rows: list[list[float]]) -> tuple[Any, Any]:  # None: each pair's own spread
        return pooled_spread(rows) if len(rows) == 2 else (None, None)

    own_spread = mock.patch.object(recommend_module, "_residual_spread", pair_only)
    own = table.objective.seed
    seeds = CONFIRM_SEEDS if searched is None else (own, *CONFIRM_SEEDS[:fresh])
    with own_spread if not pooled else contextlib.nullcontext():
        ranked = recommend_module._race(_Replayed(table), configs, seeds, race=True)  # type: ignore[arg-type]
    best = recommend_module._rank(ranked)[0]
    runs = [table.get(best.config, s) for s in CONFIRM_SEEDS]
    finite = all(r.stop is None and math.isfinite(r.value) for r in runs)
    metric = statistics.fmean(r.metric for r in runs) if finite else math.nan
    free = set(searched or ())
    paid = sum(s != own or r.config not in free for r in ranked for s in r.seeds)
    return {"pick": best.config.label, "metric": metric, "runs": paid}


def races_experiment(datasets: dict[str, tuple[Callable, Any, int | None]], n_trials: int,
                     epochs: int, sampler_seeds: Sequence[int],
                     cache_dir: Path | None = None) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {"n_trials": n_trials, "epochs": epochs, "datasets": {}}
    for name, (model_fn, data, rows) in datasets.items():
        objective, table = _cached(model_fn, data, rows, epochs, cache_dir and (
            cache_dir / f"races_{name}_{rows}_{epochs}.pickle"))  # fmt: skip
        spe = objective.data.steps_per_epoch
        runs = []
        for seed in sampler_seeds:
            pruner = studies.default_pruner(spe * epochs, spe)
            searched = replay(objective, table, pruner, n_trials, seed)
            top = searched["top"]
            full_pick, full_metric = confirmed(table, top)
            runs.append({"top": [c.label for c in top], "full": {
                "pick": full_pick.label, "metric": full_metric,
                "runs": 3 * len(dict.fromkeys([*top, PYTORCH_DEFAULT]))},
                "pooled": race_replay(table, top, pooled=True),
                "paired": race_replay(table, top, pooled=False),
                **{f"pooled_top{k}": race_replay(table, top[:k], pooled=True) for k in (1, 2)},
                **{f"search_block_{n}": race_replay(table, top, pooled=True, fresh=n,
                                                    searched=searched["completed"])
                   for n in (2, 3)},
            })  # fmt: skip
            table.save()
        summary = {}
        for rule in ("full", "paired", "pooled", "pooled_top2", "pooled_top1", "search_block_2",
                     "search_block_3"):  # fmt: skip
            metrics = [r[rule]["metric"] for r in runs]
            summary[rule] = {
                "confirm_fte_mean": statistics.fmean(r[rule]["runs"] for r in runs),
                "metric_mean": statistics.fmean(metrics),
                "same_pick_as_full": sum(r[rule]["pick"] == r["full"]["pick"] for r in runs),
            }  # fmt: skip
            row = summary[rule]
            print(f"  {name:>14} {rule:>11}: confirmation FTE {row['confirm_fte_mean']:.2f}  "
                  f"metric {row['metric_mean']:.4f}  same pick as full "
                  f"{row['same_pick_as_full']}/{len(runs)}", flush=True)
        out["datasets"][name] = {"rows": rows, "metric": objective.data.metric_name,
                                 "steps_per_epoch": spe, "summary": summary, "runs": runs}
    return out


# --- experiment 5: the race's first round, one batch of 8 or two of 4 -----------------------------


ROUND_CONFIGS = [Config("xavier_uniform", "mish"), Config("lecun_normal", "selu"),
                 Config("kaiming_normal", "gelu"), PYTORCH_DEFAULT]  # fmt: skip


def rounds_experiment(path: Path, repeats: int, workdir: Path) -> dict[str, Any]:
    from autoinit._recommend import _train_together
    from autoinit._search import prepare_search
    from autoinit.options import SearchOptions

    model_fn, data = load(path)
    options = SearchOptions(n_trials=1, epochs=10, storage=f"sqlite:///{workdir / 'rounds.db'}",
                            study_name=f"rounds-{path.stem}-{time.time()}", prescreen=False,
                            device="cpu")  # fmt: skip
    objective = prepare_search(model_fn, (data.X_train, data.y_train), (data.X_val, data.y_val),
                               options).objective  # fmt: skip
    seeds = CONFIRM_SEEDS[:2]

    def round_of(configs: Sequence[Config], round_seeds: Sequence[int]) -> Callable[[], Any]:
        return lambda: _train_together(objective, [(c, s) for s in round_seeds for c in configs])

    sides = {
        "two_rounds_of_4": lambda: [round_of(ROUND_CONFIGS, [s])() for s in seeds],
        "one_round_of_8": round_of(ROUND_CONFIGS, seeds),
        # the race's third seed after the first round: every config left, or two of them;
        # against one round of every seed (race=False)
        "third_seed_of_4": round_of(ROUND_CONFIGS, CONFIRM_SEEDS[2:]),
        "third_seed_of_2": round_of(ROUND_CONFIGS[:2], CONFIRM_SEEDS[2:]),
        "one_round_of_12": round_of(ROUND_CONFIGS, CONFIRM_SEEDS),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, train in sides.items():
            wall, cpu = time.perf_counter(), time.process_time()
            train()
            runs[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    best = {name: (min(w for w, _ in r), min(c for _, c in r)) for name, r in runs.items()}
    out = {"rows": len(data.X_train), "runs": runs,
           "speedup_wall": best["two_rounds_of_4"][0] / best["one_round_of_8"][0],
           "speedup_cpu": best["two_rounds_of_4"][1] / best["one_round_of_8"][1],
           "cpu_s": {name: cpu for name, (_, cpu) in best.items()}}  # fmt: skip
    eight, all_seeds = out["cpu_s"]["one_round_of_8"], out["cpu_s"]["one_round_of_12"]
    then_4, then_2 = (eight + out["cpu_s"][f"third_seed_of_{k}"] for k in (4, 2))
    print(f"  {path.stem}: one round of 8 over two of 4: {out['speedup_cpu']:.2f}x CPU, "
          f"{out['speedup_wall']:.2f}x wall; CPU s: 8 then 4 {then_4:.1f}, 8 then 2 "
          f"{then_2:.1f}, 8 alone {eight:.1f}, one round of 12 {all_seeds:.1f}", flush=True)
    return out


# --- experiment 4: population speed in the search -------------------------------------------


POPULATION_CONFIGS = [
    Config(init, act) for act in ("relu", "tanh", "gelu", "selu")
    for init in ("kaiming_normal", "xavier_uniform", "orthogonal", "lecun_normal")
]  # fmt: skip


def population_experiment(path: Path, rows: int | None, trials: int, epochs: int,
                          sizes: Sequence[int], repeats: int, workdir: Path) -> dict[str, Any]:
    """The search's time with ``population`` = each of ``sizes``, interleaved, on fixed configs
    (enqueued, so every side trains the same) and on free TPE searches; the default pruner."""
    from autoinit._search import search

    model_fn, data = load(path)
    xy, val = (data.X_train, data.y_train), (data.X_val, data.y_val)
    out: dict[str, Any] = {"rows": rows, "trials": trials, "epochs": epochs, "runs": []}
    for repeat in range(repeats):
        for fixed in (True, False):
            for size in sizes:
                url = f"sqlite:///{workdir / f'pop_{repeat}_{fixed}_{size}.db'}"
                if fixed:
                    queue = optuna.create_study(storage=url, study_name="p", direction="minimize")
                    for config in POPULATION_CONFIGS[:trials]:
                        queue.enqueue_trial({"init": config.init, "activation": config.activation})
                start, cpu = time.perf_counter(), time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    study = search(model_fn, xy, val, n_trials=trials, epochs=epochs, storage=url,
                                   study_name="p", population=size, search_rows=rows,
                                   prescreen=False, device="cpu")  # fmt: skip
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                steps = sum(t.user_attrs.get("steps", 0) for t in study.trials)
                out["runs"].append({"repeat": repeat, "fixed": fixed, "population": size,
                                    "seconds": seconds, "cpu": cpu, "steps": steps})  # fmt: skip
                print(f"  fixed={fixed} population={size}: {seconds:.1f} s ({cpu:.1f} s CPU), "
                      f"{steps} steps", flush=True)
    for fixed in (True, False):
        for clock in ("seconds", "cpu"):
            best = {size: min(r[clock] for r in out["runs"]
                              if r["fixed"] == fixed and r["population"] == size)
                    for size in sizes}  # fmt: skip
            out[f"{'fixed' if fixed else 'tpe'}_{clock}"] = {
                f"speedup_{size}": best[sizes[0]] / best[size] for size in sizes}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cost_study")
    parser.add_argument("experiment",
                        choices=["rows", "pruners", "races", "rounds", "population", "bounds",
                                 "prescreen"])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--sizes", default="2000,5000,10000,20000")
    parser.add_argument("--tasks", default="regression,classification")
    parser.add_argument("--datasets", default="breast_cancer,diabetes,digits,generated")
    parser.add_argument("--search-rows", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--pruners", default=None)
    parser.add_argument("--population", type=int, default=1, help="pruners: trials a round")
    parser.add_argument("--search-epochs", type=int, default=None,
                        help="pruners: the search trials end at this epoch")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    torch.set_num_threads(1)
    start = time.perf_counter()
    if args.experiment == "rounds":
        result = rounds_experiment(generated_csv(args.workdir, args.rows), max(args.seeds, 1),
                                   args.workdir)
    elif args.experiment == "population":
        result = population_experiment(generated_csv(args.workdir, args.rows), args.search_rows,
                                       args.trials, args.epochs, (1, 4, 8), args.seeds,
                                       args.workdir)  # fmt: skip
    elif args.experiment == "rows":
        sizes = [int(s) for s in args.sizes.split(",")]
        result = rows_experiment(sizes, args.rows, args.tasks.split(","), args.workdir,
                                 args.epochs)  # fmt: skip
    else:
        datasets = {}
        for name in args.datasets.split(","):
            if name == "digits":
                from benchmarks.common import digits

                x, y = digits()
                order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
                n_val = round(0.2 * len(x))
                data = argparse.Namespace(
                    X_train=x[order[n_val:]], y_train=y[order[n_val:]], X_val=x[order[:n_val]],
                    y_val=y[order[:n_val]], task="classification",
                )  # fmt: skip
                datasets[name] = (mlp_factory(64, 10, depth=20, width=64), data, None)
            elif name.startswith("generated"):  # generated[_ROWS][_classification]
                parts = name.split("_")[1:]
                task = "classification" if "classification" in parts else "regression"
                rows = next((int(p) for p in parts if p.isdigit()), args.rows)
                model_fn, data = load(generated_csv(args.workdir, rows, task))
                datasets[name] = (model_fn, data, args.search_rows if rows > args.search_rows
                                  else None)  # fmt: skip
            else:
                model_fn, data = load(EXAMPLES / f"{name}.csv")
                datasets[name] = (model_fn, data, None)
        if args.experiment == "races":
            result = races_experiment(datasets, args.trials, args.epochs, range(args.seeds),
                                      args.workdir)  # fmt: skip
        elif args.experiment == "bounds":
            result = bounds_experiment(datasets, args.epochs, args.workdir)
        elif args.experiment == "prescreen":
            result = prescreen_experiment(datasets, args.trials, args.epochs, range(args.seeds),
                                          args.workdir)  # fmt: skip
        else:
            result = pruners_experiment(datasets, args.trials, args.epochs, range(args.seeds),
                                        args.workdir,
                                        args.pruners.split(",") if args.pruners else None,
                                        args.population, args.search_epochs)  # fmt: skip
    result["seconds"] = time.perf_counter() - start
    output = args.output or RESULTS / f"cost_study_{args.experiment}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written to {output} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""3. Search efficiency: the trials TPE and random search need to come within 1% of the grid's best.

The space is init x activation, with Leaky ReLU's slope held at 0.01, 0.1 and 0.3 (three
categorical choices). The grid trains every config once, exactly as a search trial would (the
study's seed, the default divergence guard; a stopped config has no value). Because every search
trial of a study trains with the same seed, a config's result does not depend on when a sampler
asks for it: the samplers are replayed against the grid's table instead of retraining.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from typing import Any

import optuna

from autoinit import study as studies
from autoinit.activations import DEFAULT_ACTIVATIONS
from autoinit._apply import build
from autoinit.initializers import DEFAULT_INITS
from autoinit.models import mlp_factory
from autoinit.monitor import Diverged, DivergenceGuard, check_symmetry
from autoinit.space import Config, baselines
from autoinit.train import Budget, prepare_data
from autoinit.train import run as train
from benchmarks.common import SEED, digits, target

SLOPES = (0.01, 0.1, 0.3)
SAMPLER_SEEDS = range(5)
WITHIN = 0.01


def space(quick: bool) -> dict[tuple[str, str], Config]:
    """(init, activation choice) -> Config, for every grid point."""
    inits = DEFAULT_INITS[:6] if quick else DEFAULT_INITS
    plain = [a for a in DEFAULT_ACTIVATIONS if a != "leaky_relu"][: 4 if quick else None]
    choices = {a: (a, None) for a in plain}
    choices.update({f"leaky_relu({s})": ("leaky_relu", s) for s in SLOPES})
    return {
        (init, choice): Config(init, *activation)
        for init, (choice, activation) in itertools.product(inits, choices.items())
    }


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    configs = space(quick)
    x, y = digits()
    data = prepare_data((x, y), seed=SEED)
    model_fn = mlp_factory(x.shape[1], 10)
    budget = Budget(epochs=1 if quick else 3)
    table = {key: _train_once(model_fn, config, data, budget) for key, config in configs.items()}
    best = min(v for v in table.values() if v is not None)
    good = {key for key, v in table.items() if v is not None and v <= best * (1 + WITHIN)}
    cap = 2 * len(table)
    known = baselines(DEFAULT_INITS, DEFAULT_ACTIVATIONS)
    samplers = {
        "tpe": studies.default_sampler,
        "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    }
    replays = {
        name: [_replay(make(seed), table, good, cap) for seed in SAMPLER_SEEDS]
        for name, make in samplers.items()
    }
    figures: dict[str, Any] = {
        "grid_trials": len(table),
        "stopped_by_guard": sum(v is None for v in table.values()),
        "best": configs[min(good, key=table.__getitem__)].label,
        "best_value": best,
        "within_1pct": sorted(configs[key].label for key in good),
        "baseline_within_1pct": any(configs[key] in known for key in good),
        "cap": cap,
    }
    for name, results in replays.items():
        trials = [t for t, _ in results]
        figures[f"{name}_trials_median"] = statistics.median(trials)
        figures[f"{name}_distinct_median"] = statistics.median(d for _, d in results)
        figures[f"{name}_fraction_of_grid"] = figures[f"{name}_trials_median"] / len(table)
        figures[f"{name}_trials"] = trials
    return {
        "figures": figures,
        "targets": [
            target("TPE trials to 1% / grid size", figures["tpe_fraction_of_grid"], "<=", 1 / 3),
        ],
    }


def _train_once(model_fn, config: Config, data, budget: Budget) -> float | None:
    """The config's validation loss as a search trial gets it; None when the guard stops it."""
    model = build(model_fn, config, seed=SEED)
    try:
        check_symmetry(model)
        return train(model, data, budget, seed=SEED, guard=DivergenceGuard()).value
    except Diverged:
        return None


def _replay(
    sampler: optuna.samplers.BaseSampler,
    table: dict[tuple[str, str], float | None],
    good: set[tuple[str, str]],
    cap: int,
) -> tuple[int, int]:
    """(trials, distinct configs) until the sampler first picks a config in ``good``, or ``cap``."""
    study = optuna.create_study(sampler=sampler, direction="minimize")
    inits = list(dict.fromkeys(init for init, _ in table))
    activations = list(dict.fromkeys(act for _, act in table))
    seen: set[tuple[str, str]] = set()
    for number in range(1, cap + 1):
        trial = study.ask()
        key = (
            trial.suggest_categorical("init", inits),
            trial.suggest_categorical("activation", activations),
        )
        seen.add(key)
        if key in good:
            return number, len(seen)
        if table[key] is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, table[key])
    return cap, len(seen)

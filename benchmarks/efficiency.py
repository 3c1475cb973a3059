"""3. Search efficiency: what it costs to come within 1% of the grid's best, with and without
the step-0 probe.

The space is init x activation (the data-dependent ``lsuv`` and ``variance_preserving``
included), with Leaky ReLU's slope held at 0.01, 0.1 and 0.3 (three categorical choices). The
grid trains every config once, exactly as a search trial would (the study's seed, the default
divergence guard, the fixed batch; a stopped config has no value) and probes it at step 0.
Because every search trial of a study trains with the same seed, a config's result does not
depend on when a sampler asks for it: the samplers are replayed against the grid's table.

Each replay counts training steps until the first trial within 1% of the grid's best (that
trial's own steps included): a repeated config is free (autoinit reuses its twin), a stopped
config costs the steps it ran. Three ways, each over 5 sampler seeds, for TPE and random search:

- ``plain``: autoinit's four baselines first, then the sampler (a search with ``prescreen=False``);
- ``prescreen``: the probe of the whole grid first (one step per config), the collapsed configs
  told to the study as pruned, the baselines, then the 4 best-probed configs, then the sampler
  (a default search);
- ``prescreen_random``: the same, with 4 random configs that passed the pre-screen queued instead
  of the best-probed ones: what the probe's ordering adds beyond skipping the collapsed.

The pre-screen's accuracy is measured on this grid and, on the bundled datasets (and generated
blobs in the full run), whether any config of a grid's top 3 is pre-screened.
"""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna

from autoinit import study as studies
from autoinit._probe import PROBE_QUEUE
from autoinit.activations import DEFAULT_ACTIVATIONS
from autoinit.initializers import DEFAULT_INITS
from autoinit.models import mlp_factory
from autoinit.space import Config, baselines
from autoinit.train import Budget, prepare_data
from benchmarks.common import SEED, digits, target
from benchmarks.prescreen import Point, accuracy, top3_check, train_grid

SLOPES = (0.01, 0.1, 0.3)
SAMPLER_SEEDS = range(5)
WITHIN = 0.01
QUICK_INITS = ("default", "zeros", "normal", "kaiming_normal", "orthogonal", "lsuv")
MODES = ("plain", "prescreen", "prescreen_random")
Key = tuple[str, str]


def space(quick: bool) -> dict[Key, Config]:
    """(init, activation choice) -> Config, for every grid point."""
    inits = QUICK_INITS if quick else DEFAULT_INITS
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
    points = dict(zip(configs, train_grid(model_fn, data, list(configs.values()), budget)))
    table = {key: p.value for key, p in points.items()}
    best = min(v for v in table.values() if v is not None)
    good = {key for key, v in table.items() if v is not None and v <= best * (1 + WITHIN)}
    cap = 2 * len(table)
    firsts = baselines(DEFAULT_INITS, DEFAULT_ACTIVATIONS)
    known = [key for key, c in configs.items() if c in firsts]
    samplers: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
        "tpe": studies.default_sampler,
        "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    }
    replays = {
        name: [_replay(make(seed), table, good, cap) for seed in SAMPLER_SEEDS]
        for name, make in samplers.items()
    }
    grid_steps = sum(p.steps for p in points.values())
    probed = len(points)  # the probe: one forward and backward pass per config
    figures: dict[str, Any] = {
        "grid_trials": len(table),
        "grid_steps": grid_steps,
        "probe_steps": probed,
        "stopped_by_guard": sum(v is None for v in table.values()),
        "best": configs[min(good, key=table.__getitem__)].label,
        "best_value": best,
        "within_1pct": sorted(configs[key].label for key in good),
        "baseline_within_1pct": any(key in good for key in known),
        "cap": cap,
    }
    for name, results in replays.items():
        trials = [t for t, _ in results]
        figures[f"{name}_trials_median"] = statistics.median(trials)
        figures[f"{name}_distinct_median"] = statistics.median(d for _, d in results)
        figures[f"{name}_fraction_of_grid"] = figures[f"{name}_trials_median"] / len(table)
        figures[f"{name}_trials"] = trials
    for name, make in samplers.items():
        for mode in MODES:
            steps = [
                _steps_to_hit(make(seed), points, good, known, mode, seed, cap)
                for seed in SAMPLER_SEEDS
            ]
            figures[f"{name}_{mode}_steps"] = steps
            figures[f"{name}_{mode}_steps_median"] = statistics.median(steps)
            figures[f"{name}_{mode}_fraction_of_grid_steps"] = statistics.median(steps) / grid_steps
    figures["prescreen_saving"] = (
        figures["tpe_plain_steps_median"] / figures["tpe_prescreen_steps_median"]
    )
    figures["prescreen"] = accuracy(list(points.values()))
    figures["probe_rank_correlation"] = _rank_correlation(list(points.values()))
    figures["datasets"] = top3_check(list(configs.values()), Budget(epochs=2 if quick else 10),
                                     quick=quick)  # fmt: skip
    figures["top3_prescreened"] = len(figures["prescreen"]["top3_prescreened"]) + sum(
        len(d["top3_prescreened"]) for d in figures["datasets"].values()
    )
    return {
        "figures": figures,
        "targets": [
            target("TPE trials to 1% / grid size", figures["tpe_fraction_of_grid"], "<=", 1 / 3),
            target("steps to 1% with pre-screen / grid steps (TPE)",
                   figures["tpe_prescreen_fraction_of_grid_steps"], "<=", 0.1),
            target("top-3 configs pre-screened (all grids)", figures["top3_prescreened"], "==", 0),
        ],  # fmt: skip
    }


def _rank_correlation(points: Sequence[Point]) -> float | None:
    """Spearman's rho between the health score and the validation loss, over the configs that
    passed the pre-screen and trained (positive: a better probe, a better config)."""
    pairs = [(p.row.score, p.value) for p in points if p.value is not None and not p.prescreened]
    if len(pairs) < 3:
        return None
    ranks = [_ranks([a for a, _ in pairs]), _ranks([b for _, b in pairs])]
    mean = (len(pairs) - 1) / 2
    cov = sum((a - mean) * (b - mean) for a, b in zip(*ranks))
    spread = [sum((r - mean) ** 2 for r in side) ** 0.5 for side in ranks]
    var = spread[0] * spread[1]
    return cov / var if var else None


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def _ask(study: optuna.Study, inits: list[str], activations: list[str]) -> tuple[Any, Key]:
    trial = study.ask()
    key = (
        trial.suggest_categorical("init", inits),
        trial.suggest_categorical("activation", activations),
    )
    return trial, key


def _steps_to_hit(
    sampler: optuna.samplers.BaseSampler,
    points: dict[Key, Point],
    good: set[Key],
    known: list[Key],
    mode: str,
    seed: int,
    cap: int,
) -> int:
    """Training steps (and probe steps) until a trial hits ``good``; all of them if never."""
    study = optuna.create_study(sampler=sampler, direction="minimize")
    inits = list(dict.fromkeys(init for init, _ in points))
    activations = list(dict.fromkeys(act for _, act in points))
    steps, seen = 0, set()
    queue = list(known)
    if mode != "plain":
        steps += len(points)
        dists = {
            "init": optuna.distributions.CategoricalDistribution(inits),
            "activation": optuna.distributions.CategoricalDistribution(activations),
        }
        for key, point in points.items():
            if point.prescreened:
                study.add_trial(optuna.trial.create_trial(
                    state=optuna.trial.TrialState.PRUNED,
                    params={"init": key[0], "activation": key[1]}, distributions=dists,
                ))  # fmt: skip
                seen.add(key)
        healthy = [k for k, p in points.items() if not p.prescreened and k not in known]
        if mode == "prescreen":
            healthy.sort(key=lambda k: points[k].row.score)
        else:
            random.Random(seed).shuffle(healthy)
        queue += healthy[:PROBE_QUEUE]
    for key in queue:
        study.enqueue_trial({"init": key[0], "activation": key[1]})
    for _ in range(cap):
        trial, key = _ask(study, inits, activations)
        if key not in seen:
            seen.add(key)
            steps += points[key].steps
        if key in good:
            return steps
        value = points[key].value
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    return steps


def _replay(
    sampler: optuna.samplers.BaseSampler,
    table: dict[Key, float | None],
    good: set[Key],
    cap: int,
) -> tuple[int, int]:
    """(trials, distinct configs) until the sampler first picks a config in ``good``, or ``cap``."""
    study = optuna.create_study(sampler=sampler, direction="minimize")
    inits = list(dict.fromkeys(init for init, _ in table))
    activations = list(dict.fromkeys(act for _, act in table))
    seen: set[Key] = set()
    for number in range(1, cap + 1):
        trial, key = _ask(study, inits, activations)
        seen.add(key)
        if key in good:
            return number, len(seen)
        if table[key] is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, table[key])
    return cap, len(seen)


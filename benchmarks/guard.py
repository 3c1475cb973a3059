"""2. The divergence guard: the same trials with and without it, on a space with divergent arms.

A 20 x 64 MLP on scikit-learn's digits. The space is what a default search of this model would
try: the inits ``normal``, ``uniform`` and ``zeros`` (the issue's divergent arms at this depth),
PyTorch's ``default``, ``kaiming_normal``, ``xavier_uniform``, ``lecun_normal`` and
``orthogonal``, each with ReLU, tanh, SELU and sigmoid: 32 configs, enqueued in the same order
for both searches, same seed, ``NopPruner`` in both, so that only ``guard=`` differs.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from typing import Any

import optuna

from autoinit import records
from autoinit.models import mlp_factory
from autoinit.space import Config
from benchmarks.common import SearchRun, digits, search_configs, sqlite_url, target

INITS = ("normal", "uniform", "zeros", "default", "kaiming_normal", "xavier_uniform",
         "lecun_normal", "orthogonal")  # fmt: skip
ACTIVATIONS = ("relu", "tanh", "selu", "sigmoid")
DEPTH, WIDTH = 20, 64


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    epochs, repeats = (2, 1) if quick else (10, 2)
    configs = [Config(i, a) for i, a in itertools.product(INITS, ACTIVATIONS)]
    x, y = digits()
    model_fn = mlp_factory(x.shape[1], 10, depth=DEPTH, width=WIDTH)
    runs: dict[bool, list[SearchRun]] = {True: [], False: []}
    # interleaved, the guarded run first (any warm-up cost falls on it); the fastest is kept
    for repeat, guard in itertools.product(range(repeats), (True, False)):
        runs[guard].append(
            search_configs(
                configs, model_fn, (x, y), storage=sqlite_url(workdir / f"{guard}-{repeat}.db"),
                epochs=epochs, guard=guard, pruner=optuna.pruners.NopPruner(),
            )  # fmt: skip
        )
    guarded, unguarded = (min(runs[guard], key=lambda r: r.seconds) for guard in (True, False))
    cpu = {guard: min(r.seconds.cpu for r in runs[guard]) for guard in (True, False)}
    full_steps = max(t.user_attrs[records.STEPS] for t in unguarded.trials())
    stopped = [t for t in guarded.trials() if records.prune_kind(t) not in (None, "pruner")]
    fractions = [t.user_attrs.get(records.STEPS, 0) / full_steps for t in stopped]
    figures = {
        "configs": len(configs),
        "full_steps": full_steps,
        "seconds_with_guard": guarded.seconds,
        "seconds_without_guard": unguarded.seconds,
        "speedup": unguarded.seconds / guarded.seconds,
        "cpu_speedup": cpu[False] / cpu[True],
        "stopped_by_guard": len(stopped),
        "stopped_without_guard": sum(
            records.prune_kind(t) not in (None, "pruner") for t in unguarded.trials()
        ),
        # if stopped trials cost nothing and the others the same as unguarded
        "ideal_speedup": len(configs) / (len(configs) - len(stopped)),
        "steps_fraction_mean": statistics.fmean(fractions) if fractions else 0.0,
        "steps_fraction_max": max(fractions, default=0.0),
        "best_with_guard": _best(guarded),
        "best_without_guard": _best(unguarded),
        "same_best": _best(guarded) == _best(unguarded),
        "trials": {
            Config.from_dict(g.params).label: {
                "with_guard": _outcome(g),
                "without_guard": _outcome(u),
            }
            for g, u in zip(guarded.trials(), unguarded.trials())
        },
    }
    return {
        "figures": figures,
        "targets": [
            target("speedup (without / with guard)", figures["speedup"], ">=", 2.0),
            target("steps of a stopped trial (max)", figures["steps_fraction_max"], "<=", 0.05),
            target("same best config", figures["same_best"], "==", True),
        ],
    }


def _best(run: SearchRun) -> str:
    return Config.from_dict(run.study.best_trial.params).label


def _outcome(trial: optuna.trial.FrozenTrial) -> str:
    """``'0.2345 (acc 0.94)'`` or ``'stopped at step 0: exploding ...'``."""
    attrs = trial.user_attrs
    if trial.value is not None:
        return f"{trial.value:.4g} (acc {attrs.get(records.METRIC) or float('nan'):.2f})"
    return f"stopped at step {attrs.get(records.STEPS, 0)}: {attrs.get(records.PRUNE_REASON, '?')}"

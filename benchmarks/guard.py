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
from autoinit._probe import fixed_batch, probe_configs
from autoinit.models import mlp_factory
from autoinit.space import Config
from autoinit.train import prepare_data
from benchmarks.common import SEED, SearchRun, digits, search_configs, sqlite_url, target

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
                epochs=epochs, guard=guard, pruner=optuna.pruners.NopPruner(), prescreen=False,
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
    figures.update(_prescreen_figures(configs, model_fn, (x, y), guarded))
    return {
        "figures": figures,
        "targets": [
            target("speedup (without / with guard)", figures["speedup"], ">=", 2.0),
            target("guard-stopped configs pre-screened", figures["prescreen_recall"], ">=", 0.9),
            target("top-3 configs pre-screened", figures["prescreen_top3"], "==", 0),
            target("steps of a stopped trial (max)", figures["steps_fraction_max"], "<=", 0.05),
            target("same best config", figures["same_best"], "==", True),
        ],
    }


def _prescreen_figures(configs, model_fn, data, guarded: SearchRun) -> dict[str, Any]:
    """The step-0 probe of the same 32 configs against what the guard did to them in training.

    The probe sees the search's fixed batch of the same split, so its verdicts are the ones a
    default search (``prescreen=True``) would act on.
    """
    prepared = prepare_data(data, seed=SEED)
    table = probe_configs(model_fn, fixed_batch(prepared, SEED), configs, prepared.loss_fn,
                          seed=SEED)  # fmt: skip
    outcome = {Config.from_dict(t.params): t for t in guarded.trials()}
    stopped = [c for c in configs if records.prune_kind(outcome[c]) not in (None, "pruner")]
    screened = {row.config for row in table.collapsed}
    done = sorted((t for t in guarded.trials() if t.value is not None), key=lambda t: t.value)
    top3 = [Config.from_dict(t.params) for t in done[:3]]
    return {
        "prescreened": len(screened),
        "prescreen_recall": sum(c in screened for c in stopped) / len(stopped) if stopped else 1.0,
        "prescreen_missed": [c.label for c in stopped if c not in screened],
        "prescreen_extra": [c.label for c in configs if c in screened and c not in stopped],
        "prescreen_top3": sum(c in screened for c in top3),
        "prescreen_verdicts": {row.config.label: row.verdict.reason for row in table.collapsed},
    }


def _best(run: SearchRun) -> str:
    return Config.from_dict(run.study.best_trial.params).label


def _outcome(trial: optuna.trial.FrozenTrial) -> str:
    """``'0.2345 (acc 0.94)'`` or ``'stopped at step 0: exploding ...'``."""
    attrs = trial.user_attrs
    if trial.value is not None:
        return f"{trial.value:.4g} (acc {attrs.get(records.METRIC) or float('nan'):.2f})"
    return f"stopped at step {attrs.get(records.STEPS, 0)}: {attrs.get(records.PRUNE_REASON, '?')}"

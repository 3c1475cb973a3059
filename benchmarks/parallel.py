"""5. Parallel workers: trials per minute with ``search(..., n_jobs=1)`` and ``n_jobs=2``.

Both run the same configs through the real search: Optuna's ``GridSampler`` over 5 inits x 4
activations, where trial ``k`` takes grid point ``k`` whichever worker runs it. The space leaves
out the inits of autoinit's baselines and the pre-screen is off, so that both runs train exactly
the same 20 configs. Each run has its own SQLite file, ``NopPruner``, one torch thread per
worker. The times are whole ``search()`` calls, so they
include starting the worker processes; the two are run alternately ``repeats`` times and the
best of each is kept.
"""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path
from typing import Any

import optuna

from autoinit._search import search
from autoinit.models import mlp_factory
from autoinit.space import baselines
from benchmarks.common import SEED, blobs, in_fresh_process, sqlite_url, target, timed

FEATURES, CLASSES = 50, 3
INITS = ("kaiming_uniform", "xavier_normal", "lecun_uniform", "orthogonal", "trunc_normal")
ACTIVATIONS = ("relu", "tanh", "elu", "gelu")


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    inits, epochs, repeats = (INITS[:3], 2, 1) if quick else (INITS, 12, 2)
    assert not baselines(inits, ACTIVATIONS), "a queued baseline would run serially"
    trials = len(inits) * len(ACTIVATIONS)
    x, y = blobs(5000, FEATURES, CLASSES)
    model_fn = mlp_factory(FEATURES, CLASSES)  # picklable, as worker processes need
    per_minute: dict[int, float] = {1: 0.0, 2: 0.0}
    cpu_per_trial: dict[int, float] = {1: math.inf, 2: math.inf}
    crashes = 0
    for repeat, jobs in itertools.product(range(repeats), (1, 2)):  # interleaved; the best is kept
        grid = optuna.samplers.GridSampler(
            {"init": list(inits), "activation": list(ACTIVATIONS)}, seed=SEED
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, seconds = timed(
                search, model_fn, (x, y), storage=sqlite_url(workdir / f"jobs-{jobs}-{repeat}.db"),
                study_name="parallel", n_trials=trials, epochs=epochs, inits=inits,
                activations=ACTIVATIONS, sampler=grid, pruner=optuna.pruners.NopPruner(),
                seed=SEED, n_jobs=jobs, prescreen=False, search_rows=None,
            )  # fmt: skip
        crashes += sum("exited abnormally" in str(w.message) for w in caught)
        per_minute[jobs] = max(per_minute[jobs], 60 * trials / seconds)
        cpu_per_trial[jobs] = min(cpu_per_trial[jobs], seconds.cpu / trials)
    _, start = timed(in_fresh_process, _start_worker)
    figures = {
        "trials": trials,
        "worker_start_s": start,  # spawn a process and import autoinit's search into it
        "trials_per_minute_1": per_minute[1],
        "trials_per_minute_2": per_minute[2],
        "speedup": per_minute[2] / per_minute[1],
        # CPU seconds per trial, all processes, n_jobs=2 over n_jobs=1: the extra work of a
        # second worker (its start included); 2 / this is the speedup two idle cores would give
        "cpu_per_trial_ratio": cpu_per_trial[2] / cpu_per_trial[1],
        "cpu_bound_speedup": 2 * cpu_per_trial[1] / cpu_per_trial[2],
        # worker processes that died (search warns); a dead worker leaves its share to the others
        "worker_crashes": crashes,
    }
    return {
        "figures": figures,
        "targets": [target("speedup (n_jobs=2 / n_jobs=1)", figures["speedup"], ">=", 1.8)],
    }


def _start_worker() -> None:
    import autoinit._search  # noqa: F401 - what a worker process imports before its first trial

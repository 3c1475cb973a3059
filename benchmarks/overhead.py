"""1. Overhead: the same configs through autoinit's search and through a plain PyTorch loop.

Both sides train the same model (built by ``autoinit.apply.build``) on the same data split, for the
same epochs, with the same seeds, on one torch thread. The search uses SQLite in the work folder
with the Median pruner replaced by ``NopPruner`` so that every trial trains in full. Each side is
timed ``repeats`` times, interleaved, and the fastest time is kept (the machine is shared).

The guard's share: ``train.run``'s CPU time with the divergence guard against a guard that checks
nothing (same model, data and epochs).

Last, the per-trial storage cost: tiny trials (one training step) through the search, once with
autoinit's storage (WAL, ``synchronous=NORMAL``, heartbeat) and once with Optuna's plain
``RDBStorage`` on the same file system; a trial's cost is its wall time minus its training time.
"""

from __future__ import annotations

import copy
import itertools
import statistics
from pathlib import Path
from typing import Any

import optuna
from torch import nn

from autoinit._apply import build
from autoinit.initializers import DEFAULT_INITS
from autoinit.models import mlp_factory
from autoinit.monitor import DivergenceGuard, Stop
from autoinit.space import Config
from autoinit.train import Budget, TrainingData, prepare_data
from autoinit.train import run as train
from benchmarks.common import SEED, blobs, plain_train, search_configs, sqlite_url, target, timed

FEATURES, CLASSES = 50, 3
CONFIGS = [
    Config("kaiming_normal", "relu"), Config("xavier_uniform", "tanh"),
    Config("lecun_normal", "selu"), Config("kaiming_uniform", "relu"),
    Config("xavier_normal", "tanh"), Config("orthogonal", "relu"),
]  # fmt: skip


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    n, epochs, repeats, tiny_trials = (3, 2, 1, 12) if quick else (6, 25, 3, 40)
    x, y = blobs(5000, FEATURES, CLASSES)
    model_fn = mlp_factory(FEATURES, CLASSES)
    configs = CONFIGS[:n]
    split = prepare_data((x, y), seed=SEED)  # the split search() makes

    def plain() -> None:
        for config in configs:
            plain_train(build(model_fn, config, seed=SEED), split.train, split.val, epochs=epochs)

    plain_train(build(model_fn, configs[0]), split.train, split.val, epochs=1)  # warm-up
    plain_s, searched = [], []
    for repeat in range(repeats):
        plain_s.append(timed(plain)[1])
        searched.append(
            search_configs(
                configs, model_fn, (x, y), storage=sqlite_url(workdir / f"search-{repeat}.db"),
                epochs=epochs, pruner=optuna.pruners.NopPruner(),
            )  # fmt: skip
        )
    fastest = min(searched, key=lambda s: s.seconds)
    plain_total, search_total = min(plain_s), fastest.seconds
    cpu_ratio = min(s.seconds.cpu for s in searched) / min(s.cpu for s in plain_s)
    trained = sum(fastest.train_seconds())
    storage = storage_cost(workdir, tiny_trials)
    guard_share = guard_cost(build(model_fn, configs[0]), split, epochs, repeats)
    figures = {
        "trials": n,
        "epochs": epochs,
        "plain_s_per_trial": plain_total / n,
        "search_s_per_trial": search_total / n,
        "ratio": search_total / plain_total,
        "cpu_ratio": cpu_ratio,
        "overhead_ms_per_trial": 1000 * (search_total - plain_total) / n,
        "in_loop_ms_per_trial": 1000 * (trained - plain_total) / n,
        "outside_loop_ms_per_trial": 1000 * (search_total - trained) / n,
        "guard_cpu_share": guard_share,
        "storage": storage,
    }
    return {
        "figures": figures,
        "targets": [
            target("ratio (search / plain, trials >= 1 s)", figures["ratio"], "<=", 1.05),
            target("cpu_ratio (the same in CPU time)", figures["cpu_ratio"], "<=", 1.05),
            target("storage speedup (plain RDB / autoinit)", storage["speedup"], ">=", 3.0),
        ],
    }


class _Unchecked(DivergenceGuard):
    """A guard that records nothing and checks nothing."""

    def observe(self, loss: object, named_parameters: object) -> Stop | None:
        self.losses.append(0.0)
        self.grad_norms.append(0.0)
        return None


def guard_cost(model: nn.Module, data: TrainingData, epochs: int, repeats: int) -> float:
    """The share of ``train.run``'s CPU time spent in the guard's per-step check."""
    state = copy.deepcopy(model.state_dict())

    def cpu(guard: DivergenceGuard) -> float:
        model.load_state_dict(state)
        return timed(train, model, data, Budget(epochs=epochs), seed=SEED, guard=guard)[1].cpu

    checked, unchecked = (
        min(cpu(make()) for _ in range(repeats)) for make in (DivergenceGuard, _Unchecked)
    )
    return 1 - unchecked / checked


def storage_cost(workdir: Path, trials: int) -> dict[str, float]:
    """Median ms per trial outside training, with autoinit's storage and with Optuna's plain one."""
    configs = [
        Config(init, act)
        for init, act in itertools.product(DEFAULT_INITS, ("relu", "tanh", "selu", "elu", "gelu"))
    ][:trials]
    x, y = blobs(256, 8, 3)
    model_fn = mlp_factory(8, 3, depth=1, width=8)
    kinds = {
        "autoinit": lambda path: sqlite_url(path),
        "plain_rdb": lambda path: optuna.storages.RDBStorage(sqlite_url(path)),
    }
    cost = {}
    for name, make in kinds.items():
        searched = search_configs(
            configs, model_fn, (x, y), storage=make(workdir / f"storage-{name}.db"),
            epochs=None, max_steps=1, pruner=optuna.pruners.NopPruner(),
        )  # fmt: skip
        cost[f"{name}_ms_per_trial"] = statistics.median(searched.storage_ms())
    cost["speedup"] = cost["plain_rdb_ms_per_trial"] / cost["autoinit_ms_per_trial"]
    return cost

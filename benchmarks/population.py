"""8. Population: members of one structure trained as one batched model, against one by one.

K = 4, 12 and 32 members (the ``kaiming_normal``/ReLU config built with seeds 0..K-1) of three
models on scikit-learn's digits, batch 64, Adam, one torch thread, all members sharing the batch
order (as search trials do): autoinit's 8 x 64 MLP (batched matrix products), a small CNN on the
8 x 8 images and a GRU that reads the image's 8 rows (both through ``vmap``). Each timing is the
whole ``train_population`` call (the batching check, the step-0 probes, the guard, an evaluation
per epoch); the sequential one is the same call with ``engine="sequential"``, i.e. ``train.fit``
member by member. Both run in the same process, interleaved, after a warm-up; the fastest of
``repeats`` is kept.

Stopped members are removed from the stacked tensors rather than masked. ``drop_*`` measures
that: 32 MLPs of which 16 are stopped at step 0 (weights x 1000) against 16 healthy ones alone,
and against 32 healthy ones (what masking, which keeps computing the stopped members, would cost).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoinit._apply import build
from autoinit.models import mlp_factory
from autoinit.population import train_population
from autoinit.space import Config
from autoinit.train import Budget, TrainingData, prepare_data
from benchmarks.common import Seconds, digits, target, timed

MEMBERS = (4, 12, 32)
CONFIG = Config("kaiming_normal", "relu")


class SmallCNN(nn.Module):
    """Two 3 x 3 convolutions of 8 channels on the 8 x 8 digit, then a linear classifier."""

    def __init__(self, activation: Callable[[], nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), activation(), nn.Conv2d(8, 8, 3, padding=1),
            activation(),
        )  # fmt: skip
        self.head = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


class SmallGRU(nn.Module):
    """A GRU of 32 units over the digit's 8 rows of 8 pixels; the last state is classified."""

    def __init__(self, activation: Callable[[], nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.gru = nn.GRU(8, 32, batch_first=True)
        self.act = activation()
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(x)
        return self.head(self.act(states[:, -1]))


def _cases() -> dict[str, tuple[Callable[..., nn.Module], TrainingData]]:
    x, y = digits()
    return {
        "mlp": (mlp_factory(64, 10), prepare_data((x, y), batch_size=64)),
        "cnn": (SmallCNN, prepare_data((x.view(-1, 1, 8, 8), y), batch_size=64)),
        "gru": (SmallGRU, prepare_data((x.view(-1, 8, 8), y), batch_size=64)),
    }


def _members(model_fn: Callable[..., nn.Module], k: int, *, explode: int = 0) -> list[nn.Module]:
    models = [build(model_fn, CONFIG, seed=seed) for seed in range(k)]
    with torch.no_grad():
        for model in models[:explode]:
            for p in model.parameters():
                p.mul_(1e3)
    return models


def _fastest(runs: list[Seconds]) -> Seconds:
    return min(runs)


def _time(model_fn, data, budget, k, engine, *, explode: int = 0) -> tuple[Seconds, str]:
    models = _members(model_fn, k, explode=explode)
    results, seconds = timed(train_population, models, data, budget, engine=engine)
    return seconds, results[0].engine


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    budget = Budget(epochs=1) if quick else Budget(epochs=3)
    repeats = 2 if quick else 3
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows, figures = [], {}
        for name, (model_fn, data) in _cases().items():
            for engine in ("sequential", "auto"):  # warm-up: first calls pay one-off costs
                _time(model_fn, data, Budget(epochs=None, max_steps=2), 2, engine)
            for k in MEMBERS:
                timings: dict[str, list[Seconds]] = {"sequential": [], "auto": []}
                for _, engine in itertools.product(range(repeats), ("sequential", "auto")):
                    seconds, used = _time(model_fn, data, budget, k, engine)
                    timings[engine].append(seconds)
                    if engine == "auto":
                        batched_engine = used
                one, many = _fastest(timings["sequential"]), _fastest(timings["auto"])
                rows.append({
                    "model": name, "members": k, "engine": batched_engine,
                    "sequential_s": float(one), "batched_s": float(many),
                    "speedup": one / many, "cpu_speedup": one.cpu / many.cpu,
                })  # fmt: skip
                figures[f"speedup_{name}_{k}"] = one / many
        figures["timings"] = rows
        figures["steps"] = budget.max_steps or budget.epochs * _cases()["mlp"][1].steps_per_epoch
        figures.update(_dropping(budget, repeats))
    finally:
        torch.set_num_threads(before)
    targets = [
        target("MLP, 12 members: batched / sequential speed", figures["speedup_mlp_12"], ">=", 2.0),
        target("GRU, 12 members: batched / sequential speed", figures["speedup_gru_12"], ">=", 1.5),
        target("CNN, 12 members: batched / sequential speed", figures["speedup_cnn_12"], ">=", 1.0),
        target(
            "32 members with 16 stopped at step 0 / 16 members", figures["drop_overhead"], "<=", 1.3
        ),  # fmt: skip
    ]
    return {"figures": figures, "targets": targets}


def _dropping(budget: Budget, repeats: int) -> dict[str, float]:
    """32 MLPs of which 16 stop at step 0, against 16 and 32 healthy ones."""
    model_fn, data = _cases()["mlp"]
    runs: dict[str, list[Seconds]] = {"half_stopped": [], "16": [], "32": []}
    for _ in range(repeats):
        runs["half_stopped"].append(_time(model_fn, data, budget, 32, "auto", explode=16)[0])
        runs["16"].append(_time(model_fn, data, budget, 16, "auto")[0])
        runs["32"].append(_time(model_fn, data, budget, 32, "auto")[0])
    stopped, sixteen, thirty_two = (_fastest(runs[key]) for key in ("half_stopped", "16", "32"))
    return {
        "drop_seconds_32_half_stopped": float(stopped),
        "drop_seconds_16": float(sixteen),
        "drop_seconds_32": float(thirty_two),
        "drop_overhead": stopped / sixteen,
        "drop_masking_would_cost": thirty_two / sixteen,
    }

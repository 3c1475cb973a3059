"""6. Known results at a small scale: He et al. 2015 (Fig. 3), deep sigmoid/tanh/ReLU, SELU + LeCun.

scikit-learn's digits (X/16), a 20 x 64 MLP, Adam lr 1e-3, batch 64, 3 seeds. Each run is
``autoinit.apply.build(model_fn, Config(...), seed=s)`` + ``autoinit.train.run`` with the guard
off, so that failing configs report their accuracy too. The split is fixed; the seed draws the
weights and the batch order.

When do the orderings appear? The configs they compare are trained again by the plain loop of
:mod:`benchmarks.common` (which reproduces ``train.run``'s numbers) with the validation accuracy
every 10 steps: the separation step is the first one from which every ordering holds, on the
seeds' mean accuracy, at every later evaluation.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from autoinit._apply import build
from autoinit._probe import fixed_batch
from autoinit.models import mlp_factory
from autoinit.monitor import DivergenceGuard
from autoinit.space import Config
from autoinit.train import Budget, fit, prepare_data
from benchmarks.common import SEED, digits, plain_train, target

SEEDS = (0, 1, 2)
EVAL_EVERY = 10
CHANCE = 0.1  # ten balanced classes
AT_CHANCE = CHANCE + 0.1  # a mean accuracy at or below this counts as "at chance"
DEPTH, WIDTH = 20, 64

RELU = {i: Config(i, "relu") for i in ("default", "xavier_uniform", "kaiming_normal")}
TANH = {i: Config(i, "tanh") for i in ("xavier_uniform", "kaiming_normal")}
SELU = {i: Config(i, "selu") for i in ("lecun_normal", "kaiming_normal")}
SIGMOID = {i: Config(i, "sigmoid") for i in ("default", "xavier_uniform", "kaiming_normal")}
# The data-dependent inits (issue 10): does LSUV or the variance-preserving init rescue sigmoid?
NEW_INITS = ("lsuv", "variance_preserving")
NEW = {(i, a): Config(i, a) for i in NEW_INITS for a in ("relu", "tanh", "selu", "sigmoid")}
CONFIGS = [*RELU.values(), *TANH.values(), *SELU.values(), *SIGMOID.values(), *NEW.values()]

# Accuracy at epoch 10 measured by the prototype in the issue (sigmoid: chance for every init;
# it gave no figure for kaiming_normal + selu).
PROTOTYPE = {
    RELU["default"].label: 0.10, RELU["xavier_uniform"].label: 0.45,
    RELU["kaiming_normal"].label: 0.81, TANH["xavier_uniform"].label: 0.92,
    TANH["kaiming_normal"].label: 0.75, SELU["lecun_normal"].label: 0.94,
    **{c.label: CHANCE for c in SIGMOID.values()},
}  # fmt: skip

# Best first. The first two are the papers' claims; the separation step is measured on them.
ORDERINGS = {
    "relu: kaiming > xavier > default (He et al. 2015)": [
        RELU["kaiming_normal"], RELU["xavier_uniform"], RELU["default"],
    ],
    "selu: lecun_normal > kaiming_normal (Klambauer et al. 2017)": [
        SELU["lecun_normal"], SELU["kaiming_normal"],
    ],
    "tanh: xavier > kaiming (the prototype)": [TANH["xavier_uniform"], TANH["kaiming_normal"]],
}  # fmt: skip
PAPERS = list(ORDERINGS)[:2]


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    epochs = 3 if quick else 10
    x, y = digits()
    data = prepare_data((x, y), seed=SEED)
    model_fn = mlp_factory(x.shape[1], 10, depth=DEPTH, width=WIDTH)
    budget = Budget(epochs=epochs)
    inputs = fixed_batch(data, SEED)[0]  # the batch a search gives the data-dependent inits
    accuracy = {
        c.label: [_accuracy(build(model_fn, c, seed=s, batch=inputs), data, budget, s)
                  for s in SEEDS]
        for c in CONFIGS
    }
    means = {label: statistics.fmean(values) for label, values in accuracy.items()}
    curves = {
        c.label: [
            plain_train(build(model_fn, c, seed=s), data.train, data.val, epochs=epochs, seed=s,
                        eval_every=EVAL_EVERY)  # fmt: skip
            for s in SEEDS
        ]
        for c in dict.fromkeys(c for name in PAPERS for c in ORDERINGS[name])
    }
    orderings = {name: _ordered(means, configs) for name, configs in ORDERINGS.items()}
    chance = [RELU["default"], *SIGMOID.values()]
    figures = {
        "epochs": epochs,
        "seeds": len(SEEDS),
        "accuracy": {
            label: {
                "mean": means[label],
                "std": statistics.stdev(values),
                "prototype": PROTOTYPE.get(label),
            }
            for label, values in accuracy.items()
        },
        "orderings": orderings,
        "papers_hold": all(orderings[name] for name in PAPERS),
        "at_chance": all(means[c.label] <= AT_CHANCE for c in chance),
        # the new inits' rows of the table: does either rescue the 20-layer sigmoid net?
        "new_inits": {c.label: means[c.label] for c in NEW.values()},
        "lsuv_rescues_sigmoid": means[NEW["lsuv", "sigmoid"].label] > AT_CHANCE,
        "variance_preserving_rescues_sigmoid": (
            means[NEW["variance_preserving", "sigmoid"].label] > AT_CHANCE
        ),
        "separation_step": _separation_step(curves),
        "eval_every": EVAL_EVERY,
        # the plain loop against train.run, same config and seed: 0 when they agree
        "plain_vs_autoinit_max_diff": max(
            abs(plain.accuracy - autoinit)
            for label, runs in curves.items()
            for plain, autoinit in zip(runs, accuracy[label])
        ),
    }
    return {
        "figures": figures,
        "targets": [
            target("paper orderings hold (relu, selu)", figures["papers_hold"], "==", True),
            target("relu + default and sigmoid at chance", figures["at_chance"], "==", True),
        ],
    }


def _accuracy(model, data, budget: Budget, seed: int) -> float:
    """Validation accuracy after ``budget``.

    Even with the guard off, ``train.run`` stops at a non-finite loss: such a run keeps its last
    accuracy, or counts as chance if it had none.
    """
    result = fit(model, data, budget, seed=seed, guard=DivergenceGuard.from_option(False))
    if result.stop is None or math.isfinite(result.metric):
        return result.metric
    return CHANCE


def _ordered(means: dict[str, float], configs: list[Config]) -> bool:
    values = [means[c.label] for c in configs]
    return all(a > b for a, b in zip(values, values[1:]))


def _separation_step(curves: dict[str, list]) -> int | None:
    """The first evaluated step from which the papers' orderings hold at every later evaluation."""
    steps = [step for step, _ in next(iter(curves.values()))[0].curve]
    held = [
        all(_ordered(_means_at(curves, k), ORDERINGS[name]) for name in PAPERS)
        for k in range(len(steps))
    ]
    first = len(held)
    while first > 0 and held[first - 1]:
        first -= 1
    return steps[first] if first < len(held) else None


def _means_at(curves: dict[str, list], index: int) -> dict[str, float]:
    return {label: statistics.fmean(r.curve[index][1] for r in rs) for label, rs in curves.items()}

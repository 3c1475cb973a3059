"""Bugs that once survived the suite, each pinned by a test that fails when it is planted.

Duplicate configs, the ranking of the top configs, a seed that diverged in confirmation, and
the torch thread count around a search. Real searches on real (SQLite) studies; nothing mocked.
"""

import importlib
import math

import optuna
import pytest
import torch
from study_factory import complete, make_study, pruned
from torch import nn

from autoinit import Config, recommend, records, search
from autoinit.models import MLP, mlp_factory

FAST = {"epochs": 2, "seed": 0}
TANH = {"inits": ["xavier_uniform"], "activations": ["tanh"]}  # a space of one config


def core(name: str):
    """``autoinit._name`` (the private module) or, before the rename, ``autoinit.name``."""
    for module in (f"autoinit._{name}", f"autoinit.{name}"):
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
    raise ModuleNotFoundError(f"neither autoinit._{name} nor autoinit.{name}")


# Duplicates: every search trial trains with the study's seed, so a finished twin's result is
# reused, except a verdict of the learning-curve pruner, which depends on the other trials.


def test_a_completed_twin_is_reused_not_retrained(blobs, small_mlp, storage_url):
    study = search(small_mlp, blobs, n_trials=2, storage=storage_url, **TANH, **FAST)
    first, twin = study.trials
    assert first.params == twin.params
    assert first.state == twin.state == optuna.trial.TrialState.COMPLETE
    assert records.TRAIN_SECONDS in first.user_attrs
    assert twin.user_attrs[records.TRIAL_DUPLICATE_OF] == first.number
    assert records.TRAIN_SECONDS not in twin.user_attrs  # nothing was trained
    assert twin.value == first.value
    assert twin.user_attrs[records.METRIC] == first.user_attrs[records.METRIC]


def test_a_twin_stopped_by_the_pruner_is_retrained(blobs, small_mlp, storage_url):
    # ThresholdPruner(upper=0) stops every run at its first report, as the median pruner
    # stops a run that is behind the others: a verdict about the study, not about the config.
    pruner = optuna.pruners.ThresholdPruner(upper=0.0)
    study = search(small_mlp, blobs, n_trials=2, storage=storage_url, pruner=pruner, **TANH,
                   **FAST)  # fmt: skip
    first, twin = study.trials
    assert first.params == twin.params
    for trial in (first, twin):
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert records.prune_kind(trial) == "pruner"
    assert records.TRIAL_DUPLICATE_OF not in twin.user_attrs
    assert records.TRAIN_SECONDS in twin.user_attrs  # trained again, on its own


def test_a_diverged_twin_is_reused_with_its_reason(storage_url):
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    study = search(mlp_factory(16, 2, depth=20), (x, y), n_trials=2, storage=storage_url,
                   inits=["normal"], activations=["relu"], **FAST)  # fmt: skip
    first, twin = study.trials
    assert first.state == twin.state == optuna.trial.TrialState.PRUNED
    assert records.prune_kind(first) != "pruner"  # the guard's verdict: the config's own
    assert twin.user_attrs[records.TRIAL_DUPLICATE_OF] == first.number
    assert twin.user_attrs[records.PRUNE_KIND] == first.user_attrs[records.PRUNE_KIND]
    assert str(first.number) in twin.user_attrs[records.PRUNE_REASON]
    assert records.TRAIN_SECONDS not in twin.user_attrs


# Ranking


def test_top_configs_are_best_first_and_distinct(tmp_path):
    study = make_study(tmp_path, [
        complete("default", "relu", 0.30),
        complete("kaiming_normal", "relu", 0.22),
        pruned("orthogonal", "selu", "exploding"),
        complete("xavier_uniform", "tanh", 0.25),
        complete("kaiming_normal", "relu", 0.20),  # the same config again, now better
        pruned("default", "selu", "pruner"),
    ])  # fmt: skip
    top_configs = core("recommend").top_configs
    best, second, third = (Config("kaiming_normal", "relu"), Config("xavier_uniform", "tanh"),
                           Config("default", "relu"))  # fmt: skip
    assert top_configs(study, 2) == [best, second]
    assert top_configs(study, 10) == [best, second, third]
    assert top_configs(study, 1) == [best]


DIVERGING_SEED = 1001  # the second confirmation seed of a study with seed 0


class DivergesOnOneSeed(nn.Module):
    """A small MLP that is best with tanh, except that it diverges (NaN output) when built with
    tanh for :data:`DIVERGING_SEED`; with ReLU its output is shifted, so its loss stays high.

    ``build`` seeds torch with the run's seed before calling the model_fn, so the seed is
    ``torch.initial_seed()`` here. The NaN and the shift sit in buffers, which no initializer
    touches.
    """

    def __init__(self, activation=nn.ReLU):
        super().__init__()
        self.net = MLP(8, 3, depth=2, width=16, activation=activation)
        tanh = isinstance(activation(), nn.Tanh)
        poisoned = tanh and torch.initial_seed() == DIVERGING_SEED
        self.register_buffer("scale", torch.tensor(math.nan if poisoned else 1.0))
        self.register_buffer("shift", torch.tensor([0.0 if tanh else 6.0, 0.0, 0.0]))

    def forward(self, x):
        return self.net(x) * self.scale + self.shift


def test_a_seed_that_diverged_in_confirmation_counts_as_an_infinite_loss(blobs, storage_url):
    rec = recommend(DivergesOnOneSeed, blobs, seeds=3, top_k=2, n_trials=2, storage=storage_url,
                    inits=["xavier_uniform"], activations=["tanh", "relu"], **FAST)  # fmt: skip
    assert rec.seeds == (1000, DIVERGING_SEED, 1002)
    tanh = next(r for r in rec.ranking if r.config.activation == "tanh")
    assert len(tanh.values) == 3  # the diverged seed is kept, not dropped
    assert math.isinf(tanh.values[1]) and tanh.stops[1]
    relu = [r for r in rec.ranking if r.config.activation == "relu"]
    assert all(math.isfinite(r.mean) for r in relu)
    # Its seeds that trained beat every ReLU config: only the diverged seed ranks it last.
    assert max(tanh.values[0], tanh.values[2]) < min(r.mean for r in relu)
    assert math.isinf(tanh.mean)
    assert rec.ranking[-1] == tanh  # below every config that trained on all seeds
    assert rec.config.activation == "relu"
    stored = optuna.load_study(study_name=rec.study_name, storage=storage_url)
    ranked = stored.user_attrs[records.STUDY_RECOMMENDATION]["ranking"]
    assert [r["config"]["activation"] for r in ranked][-1] == "tanh"


# Threads


@pytest.mark.parametrize("start, threads", [(3, 1), (1, 2), (2, None)])
def test_the_thread_count_is_restored_after_a_search(blobs, small_mlp, storage_url, start,
                                                     threads):  # fmt: skip
    during = []
    before = torch.get_num_threads()
    torch.set_num_threads(start)
    try:
        search(small_mlp, blobs, n_trials=1, storage=storage_url, threads=threads, epochs=1,
               callbacks=[lambda study, trial: during.append(torch.get_num_threads())])
        assert torch.get_num_threads() == start
        assert during == [threads or 1]  # None: one thread on the CPU
        recommend(small_mlp, blobs, seeds=1, top_k=1, n_trials=1, storage=storage_url,
                  threads=threads, epochs=1)  # fmt: skip
        assert torch.get_num_threads() == start
    finally:
        torch.set_num_threads(before)

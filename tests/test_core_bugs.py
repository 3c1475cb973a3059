"""Bugs that once survived the suite, each pinned by a test that fails when it is planted.

Duplicate configs, the ranking of the top configs, a seed that diverged in confirmation, and
the torch thread count around a search. Real searches on real (SQLite) studies; nothing mocked.
"""

import importlib
import math
import uuid
import warnings

import optuna
import pytest
import torch
from study_factory import complete, make_study, pruned
from torch import nn

from autoinit import (
    Config,
    ConfigError,
    apply,
    build,
    get_initializer,
    list_initializers,
    recommend,
    records,
    register_initializer,
    search,
)
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
    # race=False: every config trains on every seed (racing would drop tanh at its inf seed,
    # which tests/test_racing.py checks), so the inf must be kept, not dropped, to rank it last.
    rec = recommend(DivergesOnOneSeed, blobs, seeds=3, top_k=2, n_trials=2, storage=storage_url,
                    inits=["xavier_uniform"], activations=["tanh", "relu"], race=False,
                    **FAST)  # fmt: skip
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


# Survivors of mutation testing (python -m benchmarks.mutation): apply and build


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y.to(x.dtype)) for x, y in zip(_weights(a), _weights(b)))


def test_apply_and_build_default_to_seed_0():
    config = Config("xavier_uniform", "tanh")
    net = lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))  # noqa: E731
    assert _same(apply(net(), config), apply(net(), config, seed=0))
    assert not _same(apply(net(), config), apply(net(), config, seed=1))
    assert _same(build(net, config), build(net, config, seed=0))


def test_build_seeds_the_weights_of_a_model_fn_without_activation():
    config = Config("xavier_uniform", "tanh")
    net = lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))  # noqa: E731
    assert _same(build(net, config, seed=5), build(net, config, seed=5))
    assert not _same(build(net, config, seed=5), build(net, config, seed=6))


def test_build_leaves_fixed_activations_of_a_model_fn_that_takes_one():
    # The model was built with the searched activation; its fixed output Tanh is no hidden unit.
    def model_fn(activation):
        return nn.Sequential(nn.Linear(4, 8), activation(), nn.Linear(8, 2), nn.Tanh())

    model = build(model_fn, Config("xavier_uniform", "relu"))
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear, nn.Tanh]


def test_weights_are_drawn_in_float32_whatever_the_default_dtype():
    config = Config("kaiming_normal", "relu")
    net = lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))  # noqa: E731
    expected = apply(net(), config, seed=3)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        wide = apply(net(), config, seed=3)
    finally:
        torch.set_default_dtype(before)
    assert next(wide.parameters()).dtype == torch.float64
    assert _same(expected, wide)  # the same draws, only widened


def test_a_model_without_activation_modules_is_warned_about_once_per_class():
    class First(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 2)

        def forward(self, x):
            return torch.relu(self.layer(x))

    class Second(First):
        pass

    config = Config("xavier_uniform", "tanh")
    for cls in (First, Second):
        with pytest.warns(UserWarning, match=rf"^{cls.__name__} has no activation module"):
            apply(cls(), config)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            apply(cls(), config)  # the same class again: no second warning


# Survivors of mutation testing: the initializers


def test_an_unknown_initializer_is_named_as_one():
    with pytest.raises(ConfigError, match=r"^unknown initializer 'xavier_unifrom'\. Did you mean "
                                          r"'xavier_uniform'\?"):  # fmt: skip
        get_initializer("xavier_unifrom")


def test_a_registered_initializer_keeps_its_aliases():
    name = f"halfnormal_{uuid.uuid4().hex[:8]}"

    @register_initializer(name, aliases=(f"{name}_alias",))
    def fn(tensor, *, gain, generator):
        """W ~ N(0, 0.25)"""
        return tensor.normal_(0.0, 0.5, generator=generator)

    init = get_initializer(f"{name}_alias")
    assert init.name == name and init.aliases == (f"{name}_alias",)
    assert init.formula == "W ~ N(0, 0.25)"


def test_a_registered_initializer_without_a_docstring_has_an_empty_formula():
    name = f"nodoc_{uuid.uuid4().hex[:8]}"

    @register_initializer(name)
    def fn(tensor, *, gain, generator):
        return tensor.normal_(0.0, 0.5, generator=generator)

    assert get_initializer(name).formula == ""  # `autoinit list` prints it


@pytest.mark.parametrize("name", list_initializers())
def test_every_initializer_draws_from_the_generator_only(name):
    init = get_initializer(name)
    state = torch.random.get_rng_state()
    draws = []
    for _ in range(2):
        tensor = torch.full((16, 8), 7.0)
        init(tensor, gain=1.0, generator=torch.Generator().manual_seed(11))
        draws.append(tensor)
    assert torch.equal(draws[0], draws[1])  # the same seed, the same weights
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone

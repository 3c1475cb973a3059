"""The search space: the Config value and its Optuna definition."""

import dataclasses

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from autoinit import PYTORCH_DEFAULT, Config
from autoinit.activations import DEFAULT_ACTIVATIONS
from autoinit.errors import ConfigError
from autoinit.initializers import DEFAULT_INITS
from autoinit.space import DEFAULT_LEAKY_SLOPE, LEAKY_SLOPE_RANGE, baselines, resolve_space, suggest


def _trial(params=None, **suggest_kwargs):
    """A fresh in-memory study's trial, with ``params`` fixed when given; and its Config."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    if params is not None:
        study.enqueue_trial(params)
    trial = study.ask()
    return trial, suggest(trial, **suggest_kwargs)


# --- Config ------------------------------------------------------------------------------------


def test_config_is_frozen_and_hashable():
    config = Config("kaiming_normal", "relu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.init = "zeros"
    assert {config, Config("kaiming_normal", "relu")} == {config}


@pytest.mark.parametrize(
    "config, label",
    [
        (Config("xavier_uniform", "tanh"), "xavier_uniform + tanh"),
        (Config("kaiming_normal", "leaky_relu", 0.1), "kaiming_normal + leaky_relu(0.1)"),
        (Config("orthogonal", "leaky_relu", 0.012345), "orthogonal + leaky_relu(0.0123)"),
        (Config("default", "leaky_relu"), "default + leaky_relu(0.01)"),
    ],
)
def test_label(config, label):
    assert config.label == label
    assert str(config) == label


@pytest.mark.parametrize(
    "config",
    [Config("kaiming_normal", "relu"), Config("lecun_normal", "leaky_relu", 0.2), PYTORCH_DEFAULT],
)
def test_to_dict_and_from_dict_round_trip(config):
    data = config.to_dict()
    assert set(data) == {"init", "activation", "leaky_slope"}
    assert Config.from_dict(data) == config


def test_from_dict_accepts_trial_params_without_a_slope():
    assert Config.from_dict({"init": "zeros", "activation": "tanh"}) == Config("zeros", "tanh")


def test_leaky_slope_defaults_to_0_01():
    config = Config("kaiming_normal", "leaky_relu")
    assert config.leaky_slope == DEFAULT_LEAKY_SLOPE == 0.01
    assert Config("kaiming_normal", "leaky_relu", 0.01) == config


def test_leaky_slope_is_stored_as_a_float():
    assert isinstance(Config("kaiming_normal", "leaky_relu", 1).leaky_slope, float)


@pytest.mark.parametrize("activation", ["relu", "tanh", "selu"])
def test_leaky_slope_only_goes_with_leaky_relu(activation):
    expected = f"only used with activation 'leaky_relu', not '{activation}'"
    with pytest.raises(ConfigError, match=expected):
        Config("kaiming_normal", activation, leaky_slope=0.1)


@pytest.mark.parametrize("slope", [0.0, -0.1, float("nan")])
def test_leaky_slope_must_be_positive(slope):
    with pytest.raises(ConfigError, match="must be positive"):
        Config("kaiming_normal", "leaky_relu", slope)


# --- suggest -----------------------------------------------------------------------------------


def test_suggest_defines_categorical_init_and_activation():
    trial, config = _trial()
    assert trial.distributions["init"] == CategoricalDistribution(DEFAULT_INITS)
    assert trial.distributions["activation"] == CategoricalDistribution(DEFAULT_ACTIVATIONS)
    assert config.init == trial.params["init"] and config.activation == trial.params["activation"]


def test_leaky_slope_is_a_conditional_log_uniform_parameter():
    trial, config = _trial({"init": "orthogonal", "activation": "leaky_relu"})
    assert config.activation == "leaky_relu"
    assert trial.distributions["leaky_slope"] == FloatDistribution(0.001, 0.5, log=True)
    assert LEAKY_SLOPE_RANGE == (0.001, 0.5)
    assert config.leaky_slope == trial.params["leaky_slope"]
    assert 0.001 <= config.leaky_slope <= 0.5


def test_no_leaky_slope_for_other_activations():
    trial, config = _trial({"init": "orthogonal", "activation": "relu"})
    assert "leaky_slope" not in trial.params
    assert "leaky_slope" not in trial.distributions
    assert config == Config("orthogonal", "relu")


def test_sampled_slopes_stay_in_range():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    slopes = []
    for _ in range(50):
        config = suggest(study.ask(), activations=["leaky_relu"])
        slopes.append(config.leaky_slope)
    assert all(0.001 <= s <= 0.5 for s in slopes)
    assert min(slopes) < 0.01 and max(slopes) > 0.1  # log-uniform: spread over the decades


def test_narrowed_space_resolves_aliases_and_drops_duplicates():
    trial, config = _trial(
        inits=["he_normal", "kaiming_normal", "glorot_uniform"], activations=["swish", "tanh"]
    )
    assert trial.distributions["init"].choices == ("kaiming_normal", "xavier_uniform")
    assert trial.distributions["activation"].choices == ("silu", "tanh")
    assert config.init in ("kaiming_normal", "xavier_uniform")
    assert config.activation in ("silu", "tanh")


def test_a_single_point_space():
    trial, config = _trial(inits=["zeros"], activations=["selu"])
    assert config == Config("zeros", "selu")


@pytest.mark.parametrize(
    "inits, activations", [([], ["relu"]), (["zeros"], []), ([], [])]
)
def test_an_empty_space_is_refused(inits, activations):
    with pytest.raises(ConfigError, match="empty"):
        resolve_space(inits, activations)
    with pytest.raises(ConfigError, match="empty"):
        _trial(inits=inits, activations=activations)


def test_unknown_names_in_the_space_are_refused_with_a_hint():
    with pytest.raises(ConfigError, match="Did you mean 'xavier_uniform'"):
        resolve_space(["xavier_unifrom"], None)
    with pytest.raises(ConfigError, match="Did you mean 'relu'"):
        resolve_space(None, ["rleu"])


def test_default_space_is_every_issue_listed_init_and_every_activation():
    assert resolve_space() == (DEFAULT_INITS, DEFAULT_ACTIVATIONS)


# --- baselines ---------------------------------------------------------------------------------


def test_baselines_in_the_full_space():
    assert baselines(DEFAULT_INITS, DEFAULT_ACTIVATIONS) == [
        PYTORCH_DEFAULT,
        Config("kaiming_normal", "relu"),
        Config("xavier_uniform", "tanh"),
        Config("lecun_normal", "selu"),
    ]
    assert PYTORCH_DEFAULT == Config("default", "relu")


def test_baselines_only_include_what_fits_the_space():
    assert baselines(("kaiming_normal", "lecun_normal"), ("relu", "tanh")) == [
        Config("kaiming_normal", "relu")
    ]
    assert baselines(("xavier_uniform",), ("tanh", "selu")) == [Config("xavier_uniform", "tanh")]
    assert baselines(("orthogonal",), ("relu",)) == []

"""The activation registry: values, aliases, gains, errors, user registration."""

import math
import uuid

import numpy as np
import pytest
import torch
from torch import nn

from autoinit import Config, apply
from autoinit import activations as acts_mod
from autoinit.activations import (
    activation_types,
    canonical_activation,
    create_activation,
    get_activation,
    list_activations,
    register_activation,
    second_moment_gain,
)
from autoinit.errors import ConfigError


class ReLUCopy(nn.Module):
    """A user's own ReLU, registered without a gain: its computed gain must be exactly √2."""

    def forward(self, x):
        return torch.clamp(x, min=0)


class Cube(nn.Module):
    def forward(self, x):
        return x**3


@pytest.fixture
def unique_name():
    """A registry name no other test uses; removed from the registry (and aliases) afterwards."""
    name = f"test_act_{uuid.uuid4().hex[:8]}"
    yield name
    acts_mod._REGISTRY.pop(name, None)
    for alias in [a for a, target in acts_mod._ALIASES.items() if target == name]:
        del acts_mod._ALIASES[alias]


def _at(name, x, slope=None):
    module = create_activation(name, slope)
    return module(torch.tensor([x], dtype=torch.float64)).item()


@pytest.mark.parametrize(
    "name, x, expected",
    [
        ("relu", 2.0, 2.0),
        ("relu", -1.0, 0.0),
        ("tanh", 0.0, 0.0),
        ("tanh", 1.0, math.tanh(1.0)),
        ("sigmoid", 0.0, 0.5),
        ("selu", 1.0, 1.0507009873554805),
        ("selu", -1.0, 1.7580993408473766 * (math.exp(-1) - 1)),
        ("elu", -math.inf, -1.0),
        ("elu", -50.0, -1.0),
        ("elu", 3.0, 3.0),
        ("gelu", 0.0, 0.0),
        ("gelu", 1.0, 0.8413447460685429),  # x * Phi(x)
        ("silu", 1.0, 0.7310585786300049),
        ("swish", 1.0, 0.7310585786300049),
        ("mish", 0.0, 0.0),
        ("softplus", 0.0, math.log(2.0)),
    ],
)
def test_values_at_known_points(name, x, expected):
    assert _at(name, x) == pytest.approx(expected, abs=1e-9)


def test_leaky_relu_uses_its_slope():
    assert _at("leaky_relu", -1.0, 0.1) == pytest.approx(-0.1)
    assert _at("leaky_relu", 2.0, 0.1) == pytest.approx(2.0)
    assert create_activation("leaky_relu", 0.1).negative_slope == 0.1
    assert create_activation("leaky_relu").negative_slope == 0.01  # torch's default


def test_swish_is_an_alias_of_silu():
    assert get_activation("swish") is get_activation("silu")
    assert canonical_activation("swish") == "silu"
    assert type(create_activation("swish")) is nn.SiLU
    assert "swish" not in list_activations()


def test_every_activation_creates_a_fresh_module_of_its_class():
    for name in list_activations():
        spec = get_activation(name)
        first, second = create_activation(name), create_activation(name)
        assert type(first) is spec.cls and first is not second
        assert spec.cls in activation_types()


@pytest.mark.parametrize(
    "name, slope, gain",
    [
        ("relu", None, math.sqrt(2.0)),
        ("leaky_relu", 0.01, math.sqrt(2.0 / (1 + 0.01**2))),
        ("leaky_relu", 0.3, math.sqrt(2.0 / (1 + 0.3**2))),
        ("tanh", None, 5.0 / 3.0),
        ("sigmoid", None, 1.0),
        ("selu", None, 0.75),
    ],
)
def test_gains_follow_torch_calculate_gain(name, slope, gain):
    assert get_activation(name).gain_for(slope) == pytest.approx(gain)
    assert gain == pytest.approx(nn.init.calculate_gain(name, slope))


def _second_moment_by_integration(module):
    """E[f(z)^2], z ~ N(0, 1), by the trapezoid rule on a fine grid (independent of quadrature)."""
    z = np.linspace(-12, 12, 200_001)
    with torch.no_grad():
        f = module(torch.as_tensor(z)).numpy()
    density = np.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    return float(np.trapezoid(f**2 * density, z))


@pytest.mark.parametrize("name", ["elu", "gelu", "silu", "mish", "softplus"])
def test_computed_gains_keep_the_second_moment(name):
    spec = get_activation(name)
    gain = spec.gain_for()
    assert gain >= 1.0
    second_moment = _second_moment_by_integration(spec.cls())
    assert gain == pytest.approx(1.0 / math.sqrt(second_moment), rel=1e-4)


def test_second_moment_gain_is_exact_for_relu():
    assert second_moment_gain(nn.ReLU()) == pytest.approx(math.sqrt(2.0), rel=1e-12)


def test_leaky_relu_gain_without_a_slope_uses_the_default_slope():
    """``create_activation('leaky_relu')`` uses slope 0.01; ``gain_for()`` should match it."""
    assert get_activation("leaky_relu").gain_for() == pytest.approx(
        nn.init.calculate_gain("leaky_relu")  # 0.01, torch's default slope
    )


def test_softmax_is_not_a_hidden_activation():
    assert "softmax" not in list_activations()
    assert nn.Softmax not in activation_types()
    with pytest.raises(ConfigError, match="softmax is not a hidden activation.*cross-entropy"):
        get_activation("softmax")


def test_unknown_name_lists_the_valid_names_and_the_nearest():
    with pytest.raises(ConfigError) as caught:
        get_activation("tahn")
    message = str(caught.value)
    assert "Did you mean 'tanh'?" in message
    for name in [*list_activations(), "swish"]:
        assert name in message


def test_register_activation_computes_the_gain_and_apply_swaps_to_it(unique_name):
    spec = register_activation(unique_name, ReLUCopy, aliases=(f"{unique_name}_alias",))
    assert unique_name in list_activations()
    assert get_activation(f"{unique_name}_alias") is spec
    assert spec.gain_for() == pytest.approx(math.sqrt(2.0), rel=1e-9)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 1))
    apply(model, Config("kaiming_normal", unique_name), seed=0)
    assert [type(m) for m in model] == [nn.Linear, ReLUCopy, nn.Linear, ReLUCopy, nn.Linear]
    x = torch.linspace(-2, 2, 5)
    torch.testing.assert_close(model[1](x), torch.relu(x))


def test_registered_activation_keeps_an_explicit_gain(unique_name):
    spec = register_activation(unique_name, Cube, gain=0.5)
    assert spec.gain_for() == 0.5
    assert get_activation(unique_name).cls is Cube


def test_register_a_parametric_activation_without_a_gain(unique_name):
    """nn.PReLU has a float32 weight; the default gain must still be computable."""
    spec = register_activation(unique_name, nn.PReLU)
    # PReLU starts with slope 0.25, a leaky ReLU: gain √(2 / (1 + 0.25²)).
    assert spec.gain_for() == pytest.approx(math.sqrt(2.0 / (1 + 0.25**2)), rel=1e-6)


def test_duplicate_registration_is_refused(unique_name):
    register_activation(unique_name, Cube, gain=1.0)
    before = dict(acts_mod._REGISTRY)
    with pytest.raises(ConfigError, match="already registered"):
        register_activation(unique_name, ReLUCopy, gain=1.0)
    with pytest.raises(ConfigError, match="'relu' is already registered"):
        register_activation("relu", ReLUCopy, gain=1.0)
    with pytest.raises(ConfigError, match="'swish' is already registered"):
        register_activation(f"{unique_name}_2", ReLUCopy, gain=1.0, aliases=("swish",))
    assert acts_mod._REGISTRY == before
    assert get_activation("swish").name == "silu"

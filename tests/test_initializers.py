"""The initializer registry: each initializer's variance formula, aliases, seeding, errors."""

import math
import uuid

import pytest
import torch
from torch import nn

from autoinit import Config, apply
from autoinit import initializers as inits_mod
from autoinit.activations import get_activation
from autoinit.errors import ConfigError
from autoinit.initializers import (
    canonical_initializer,
    fans,
    get_initializer,
    list_initializers,
    register_initializer,
)

LINEAR_SHAPE = (300, 400)  # nn.Linear(400, 300).weight: fan_in 400, fan_out 300
CONV_SHAPE = (64, 32, 5, 5)  # nn.Conv2d(32, 64, 5).weight: fan_in 800, fan_out 1600
SHAPES = {"linear": LINEAR_SHAPE, "conv2d": CONV_SHAPE}
RELU_GAIN = math.sqrt(2.0)


def _trunc_factor(bound_in_stds: float) -> float:
    """Var of N(0, 1) truncated to [-b, b]: 1 - 2 b phi(b) / (2 Phi(b) - 1)."""
    b = bound_in_stds
    phi = math.exp(-b * b / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(b / math.sqrt(2))
    return 1.0 - 2 * b * phi / mass


def _orthogonal_var(shape, gain):
    """Q flattened to (out, in * prod(kernel)) is semi-orthogonal: Var = gain² / max(shape)."""
    rows, cols = shape[0], math.prod(shape[1:])
    return gain**2 / max(rows, cols)


# name -> Var(W) as a function of (shape, fan_in, fan_out, gain). xavier and lecun ignore the
# gain (gain 1 by their papers), so they are called with a gain that must have no effect.
EXPECTED_VARIANCE = {
    "uniform": lambda s, fi, fo, g: 1.0 / 3.0,
    "normal": lambda s, fi, fo, g: 1.0,
    "xavier_uniform": lambda s, fi, fo, g: 2.0 / (fi + fo),
    "xavier_normal": lambda s, fi, fo, g: 2.0 / (fi + fo),
    "kaiming_uniform": lambda s, fi, fo, g: g**2 / fi,
    "kaiming_normal": lambda s, fi, fo, g: g**2 / fi,
    "lecun_uniform": lambda s, fi, fo, g: 1.0 / fi,
    "lecun_normal": lambda s, fi, fo, g: 1.0 / fi,
    "orthogonal": lambda s, fi, fo, g: _orthogonal_var(s, g),
    "trunc_normal": lambda s, fi, fo, g: 0.02**2 * _trunc_factor(2.0),
    "random_normal": lambda s, fi, fo, g: 0.05**2,
    "random_uniform": lambda s, fi, fo, g: 0.05**2 / 3.0,
    "truncated_normal": lambda s, fi, fo, g: 0.05**2 * _trunc_factor(2.0),
}
NOT_RANDOM = {"default", "zeros"}
RANDOM_INITS = [n for n in list_initializers() if n not in NOT_RANDOM]


def _draw(name, shape, *, gain=1.0, seed=0):
    tensor = torch.empty(shape)
    generator = torch.Generator().manual_seed(seed)
    out = get_initializer(name)(tensor, gain=gain, generator=generator)
    assert out is tensor, "initializers work in place and return the tensor"
    return tensor


def _assert_variance(tensor, expected, what):
    """Sample variance within 6 standard errors (the normal's SE, the largest of ours)."""
    n = tensor.numel()
    var = tensor.double().var().item()
    tolerance = 6 * expected * math.sqrt(2.0 / n)
    assert abs(var - expected) < tolerance, f"{what}: Var {var:.6g}, expected {expected:.6g}"
    mean = tensor.double().mean().item()
    assert abs(mean) < 6 * math.sqrt(expected / n), f"{what}: mean {mean:.3g} is not ~0"


@pytest.fixture
def unique_name():
    """A registry name no other test uses; removed from the registry (and aliases) afterwards."""
    name = f"test_init_{uuid.uuid4().hex[:8]}"
    yield name
    inits_mod._REGISTRY.pop(name, None)
    for alias in [a for a, target in inits_mod._ALIASES.items() if target == name]:
        del inits_mod._ALIASES[alias]


def test_every_registered_initializer_has_a_checked_formula():
    assert set(list_initializers()) == set(EXPECTED_VARIANCE) | NOT_RANDOM


@pytest.mark.parametrize("shape_kind", list(SHAPES))
@pytest.mark.parametrize("name", list_initializers())
def test_measured_variance_matches_the_formula(name, shape_kind):
    shape = SHAPES[shape_kind]
    if name == "default":
        original = torch.randn(shape)
        tensor = original.clone()
        get_initializer(name)(tensor, gain=RELU_GAIN, generator=torch.Generator())
        assert torch.equal(tensor, original)
        return
    if name == "zeros":
        tensor = _draw(name, shape, gain=RELU_GAIN)
        assert not tensor.any()
        return
    fan_in, fan_out = fans(torch.empty(shape))
    # Gain √2 (ReLU's): it must scale kaiming/orthogonal and leave everything else alone.
    effective_gain = RELU_GAIN if get_initializer(name).uses_gain else 1.0
    expected = EXPECTED_VARIANCE[name](shape, fan_in, fan_out, effective_gain)
    _assert_variance(_draw(name, shape, gain=RELU_GAIN), expected, f"{name} {shape}")


def test_xavier_on_a_100_to_50_linear_layer():
    tensor = torch.empty(50, 100)
    get_initializer("xavier_normal")(tensor, generator=torch.Generator().manual_seed(0))
    assert tensor.var().item() == pytest.approx(2 / 150, rel=0.05)  # 0.0133


def test_fans_follow_torch_including_the_kernel():
    for shape in [(50, 100), (64, 32, 5, 5), (8, 4, 3), (6, 3, 2, 2, 2), (8, 16, 3, 3)]:
        tensor = torch.empty(shape)
        assert fans(tensor) == nn.init._calculate_fan_in_and_fan_out(tensor)
    assert fans(torch.empty(64, 32, 5, 5)) == (800, 1600)


def test_fans_of_a_vector_is_a_clear_error():
    with pytest.raises(ConfigError, match="1-d"):
        fans(torch.empty(10))


@pytest.mark.parametrize(
    "activation, slope, gain",
    [
        ("relu", None, math.sqrt(2.0)),
        ("leaky_relu", 0.2, math.sqrt(2.0 / (1 + 0.2**2))),
        ("leaky_relu", 0.5, math.sqrt(2.0 / (1 + 0.5**2))),
        ("tanh", None, 5.0 / 3.0),
    ],
)
@pytest.mark.parametrize("name", ["kaiming_normal", "kaiming_uniform"])
def test_kaiming_scales_by_the_activation_gain(name, activation, slope, gain):
    passed = get_activation(activation).gain_for(slope)
    assert passed == pytest.approx(gain)
    tensor = _draw(name, LINEAR_SHAPE, gain=passed)
    _assert_variance(tensor, gain**2 / LINEAR_SHAPE[1], f"{name} gain {gain:.3f}")


@pytest.mark.parametrize(
    "name", ["xavier_uniform", "xavier_normal", "lecun_uniform", "lecun_normal"]
)
def test_xavier_and_lecun_ignore_the_gain(name):
    assert not get_initializer(name).uses_gain
    assert torch.equal(_draw(name, LINEAR_SHAPE, gain=5.0), _draw(name, LINEAR_SHAPE, gain=1.0))


@pytest.mark.parametrize("gain", [1.0, math.sqrt(2.0), 5.0 / 3.0])
@pytest.mark.parametrize("shape", [(50, 200), (200, 50)], ids=["wide", "tall"])
def test_orthogonal_gives_a_scaled_semi_orthogonal_matrix(shape, gain):
    q = _draw("orthogonal", shape, gain=gain).double()
    if shape[0] <= shape[1]:
        product = q @ q.T  # rows orthonormal
    else:
        product = q.T @ q  # columns orthonormal
    identity = torch.eye(product.shape[0], dtype=torch.float64)
    torch.testing.assert_close(product, gain**2 * identity, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, bound", [("trunc_normal", 0.04), ("truncated_normal", 0.1)])
def test_truncated_normals_stay_within_their_bounds(name, bound):
    tensor = _draw(name, LINEAR_SHAPE)
    assert tensor.abs().max().item() <= bound
    assert tensor.abs().max().item() > 0.9 * bound  # the bound is reached, not a narrower one


@pytest.mark.parametrize(
    "alias, name",
    [
        ("glorot_uniform", "xavier_uniform"),
        ("glorot_normal", "xavier_normal"),
        ("he_uniform", "kaiming_uniform"),
        ("he_normal", "kaiming_normal"),
    ],
)
def test_keras_aliases_resolve_to_the_same_initializer(alias, name):
    assert get_initializer(alias) is get_initializer(name)
    assert canonical_initializer(alias) == name
    assert alias not in list_initializers()
    assert torch.equal(_draw(alias, (30, 40), seed=3), _draw(name, (30, 40), seed=3))


def test_random_normal_has_the_keras_std():
    tensor = _draw("random_normal", LINEAR_SHAPE)
    assert tensor.std().item() == pytest.approx(0.05, rel=0.02)


@pytest.mark.parametrize("name", RANDOM_INITS)
def test_a_seeded_generator_determines_the_draw(name):
    first = _draw(name, (40, 30), gain=RELU_GAIN, seed=7)
    again = _draw(name, (40, 30), gain=RELU_GAIN, seed=7)
    other = _draw(name, (40, 30), gain=RELU_GAIN, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_initializers_do_not_record_gradients():
    weight = nn.Parameter(torch.empty(20, 10))
    get_initializer("kaiming_normal")(weight, gain=RELU_GAIN, generator=torch.Generator())
    assert weight.grad_fn is None and weight.requires_grad


def test_unknown_name_lists_the_valid_names_and_the_nearest():
    with pytest.raises(ConfigError) as caught:
        get_initializer("kaiming_norml")
    message = str(caught.value)
    assert "'kaiming_norml'" in message
    assert "Did you mean 'kaiming_normal'?" in message
    for name in [*list_initializers(), "glorot_uniform", "he_normal"]:
        assert name in message


def test_unknown_name_without_a_near_match_has_no_suggestion():
    with pytest.raises(ConfigError, match="Valid names") as caught:
        get_initializer("qqqqqqqqqqqq")
    assert "Did you mean" not in str(caught.value)


def test_every_initializer_documents_its_formula():
    for name in list_initializers():
        assert get_initializer(name).formula, f"{name} has no formula docstring"


def test_register_initializer_is_listed_and_used_by_apply(unique_name):
    @register_initializer(unique_name, aliases=(f"{unique_name}_alias",))
    def constant(tensor, *, gain, generator):
        """W = 0.123"""
        return tensor.fill_(0.123)

    assert unique_name in list_initializers()
    assert get_initializer(f"{unique_name}_alias").fn is constant
    assert get_initializer(unique_name).formula == "W = 0.123"
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    apply(model, Config(unique_name, "relu"), seed=0)
    for layer in (model[0], model[2]):
        assert torch.all(layer.weight == 0.123)
        assert not layer.bias.any()


def test_a_registered_initializer_gets_gain_one_unless_it_uses_gains(unique_name):
    seen = []

    @register_initializer(unique_name)
    def record(tensor, *, gain, generator):
        """W = 0, recording the gain"""
        seen.append(gain)
        return tensor.zero_()

    get_initializer(unique_name)(torch.empty(3, 3), gain=RELU_GAIN)
    assert seen == [1.0]


def test_a_gain_using_registered_initializer_receives_the_gain(unique_name):
    seen = []

    @register_initializer(unique_name, uses_gain=True)
    def record(tensor, *, gain, generator):
        """W = 0, recording the gain"""
        seen.append(gain)
        return tensor.zero_()

    apply(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)), Config(unique_name, "tanh"))
    assert seen == [pytest.approx(5.0 / 3.0), 1.0]  # hidden layer: tanh's gain; output: 1


def test_duplicate_registration_is_refused(unique_name):
    register_initializer(unique_name)(lambda tensor, *, gain, generator: tensor)
    before = dict(inits_mod._REGISTRY)
    with pytest.raises(ConfigError, match="already registered"):
        register_initializer(unique_name)(lambda tensor, *, gain, generator: tensor)
    with pytest.raises(ConfigError, match="'kaiming_normal' is already registered"):
        register_initializer("kaiming_normal")(lambda tensor, *, gain, generator: tensor)
    with pytest.raises(ConfigError, match="'he_normal' is already registered"):
        register_initializer(f"{unique_name}_2", aliases=("he_normal",))(
            lambda tensor, *, gain, generator: tensor
        )
    assert inits_mod._REGISTRY == before
    assert get_initializer("he_normal").name == "kaiming_normal"

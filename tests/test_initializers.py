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
    # data-dependent: the per-tensor start, before the batch rescales each layer
    "lsuv": lambda s, fi, fo, g: _orthogonal_var(s, 1.0),
    "variance_preserving": lambda s, fi, fo, g: 1.0 / fi,
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


# --- data-dependent initializers: LSUV and variance-preserving ----------------------------------


def _layer_variances(model, x):
    from autoinit.data_init import layer_output

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.RNNBase))]
    return [float(layer_output(model, layer, x).double().var()) for layer in layers]


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "selu", "gelu"])
def test_lsuv_gives_every_layer_unit_output_variance_on_the_batch(activation):
    from autoinit.data_init import LSUV_TOLERANCE
    from autoinit.models import MLP

    x = torch.randn(128, 20) * 4 + 2
    model = apply(MLP(20, 5, depth=10, width=48), Config("lsuv", activation), batch=x)
    variances = _layer_variances(model, x)
    assert len(variances) == 11
    assert all(abs(v - 1) <= LSUV_TOLERANCE for v in variances), variances


@pytest.mark.filterwarnings("ignore:.*has no activation module")  # no activation to swap
def test_lsuv_covers_conv_and_the_input_weights_of_recurrent_layers():
    from autoinit.data_init import LSUV_TOLERANCE

    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 4 * 4, 3))  # fmt: skip
    x = torch.rand(32, 3, 8, 8) * 5
    apply(cnn, Config("lsuv", "relu"), batch=(x, torch.zeros(32)))
    assert all(abs(v - 1) <= LSUV_TOLERANCE for v in _layer_variances(cnn, x))

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.LSTM(6, 16, batch_first=True), nn.Linear(16, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    seq = Seq()
    xs = torch.randn(16, 9, 6) * 7
    apply(seq, Config("lsuv", "tanh"), batch=xs)
    assert abs(_layer_variances(seq, xs)[0] - 1) <= LSUV_TOLERANCE  # x W_ih^T


@pytest.mark.filterwarnings("ignore:.*has no activation module")  # no activation to swap
def test_lsuv_processes_layers_in_call_order_not_registration_order():
    from autoinit.data_init import LSUV_TOLERANCE

    class Backwards(nn.Module):
        def __init__(self):
            super().__init__()
            self.second, self.first = nn.Linear(16, 4), nn.Linear(8, 16)

        def forward(self, x):
            return self.second(torch.relu(self.first(x)))

    model = Backwards()
    x = torch.randn(64, 8) * 3
    apply(model, Config("lsuv", "relu"), batch=x)
    assert all(abs(v - 1) <= LSUV_TOLERANCE for v in _layer_variances(model, x))


@pytest.mark.parametrize("activation", [a for a in ("relu", "tanh", "sigmoid", "selu", "elu",
                                                    "gelu", "silu", "mish", "softplus")])
def test_variance_preserving_keeps_the_signal_through_depth_for_every_activation(activation):
    from autoinit.models import MLP

    x = torch.randn(256, 24) * 3 + 1
    model = apply(MLP(24, 64, depth=16, width=64), Config("variance_preserving", activation),
                  batch=x)  # fmt: skip
    variances = _layer_variances(model, x)
    assert all(0.5 < v < 2.0 for v in variances), variances  # kaiming/xavier drift far more


def test_variance_preserving_works_for_a_user_registered_activation():
    from autoinit.activations import _ALIASES, _REGISTRY, register_activation
    from autoinit.models import MLP

    class Cube(nn.Module):  # mean and variance far from any built-in's
        def forward(self, x):
            return torch.relu(x) ** 1.5 + 0.3

    name = f"cube_{uuid.uuid4().hex[:6]}"
    register_activation(name, Cube)
    try:
        x = torch.randn(256, 24)
        model = apply(MLP(24, 64, depth=12, width=64), Config("variance_preserving", name), batch=x)
        assert all(0.5 < v < 2.0 for v in _layer_variances(model, x))
    finally:
        _REGISTRY.pop(name)
        for alias in [a for a, t in _ALIASES.items() if t == name]:
            del _ALIASES[alias]


@pytest.mark.parametrize("name", ["lsuv", "variance_preserving"])
def test_data_dependent_inits_name_the_missing_batch(name):
    assert get_initializer(name).needs_batch
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match=f"initializer '{name}' is data-dependent.*batch="):
        apply(model, Config(name, "relu"))
    assert not get_initializer("kaiming_normal").needs_batch


def test_data_dependent_inits_are_reproducible_and_in_the_default_space():
    from autoinit.models import MLP

    x = torch.randn(32, 6)
    a = apply(MLP(6, 2, depth=3, width=8), Config("lsuv", "relu"), seed=3, batch=x)
    b = apply(MLP(6, 2, depth=3, width=8), Config("lsuv", "relu"), seed=3, batch=x)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert {"lsuv", "variance_preserving"} <= set(inits_mod.DEFAULT_INITS)


def test_a_registered_data_dependent_initializer_gets_the_batch(unique_name):
    seen = []

    def data(model, layers, inputs):
        seen.append((len(layers), inputs.shape))

    @register_initializer(unique_name, data=data)
    def start(tensor, *, gain, generator):
        """W ~ N(0, 1), then rescaled on the batch"""
        return tensor.normal_(generator=generator)

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    apply(model, Config(unique_name, "relu"), batch=torch.randn(5, 4))
    assert seen == [(2, torch.Size([5, 4]))]

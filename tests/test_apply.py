"""apply() and build(): activation swapping, weight initialisation, seeding, warnings."""

import copy
import functools
import math
import uuid
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoinit import PYTORCH_DEFAULT, Config, apply, build
from autoinit._apply import takes_activation
from autoinit.errors import ConfigError
from autoinit.initializers import fans
from autoinit.models import MLP

RELU_GAIN = math.sqrt(2.0)
HE_RELU = Config("kaiming_normal", "relu")


# --- models ------------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.act(self.fc(x))


class NestedMLP(nn.Module):
    """Activations at several depths: a Sequential, a ModuleList of blocks, a ModuleDict."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(4, 16), nn.ReLU())
        self.blocks = nn.ModuleList([Block(16), Block(16)])
        self.gates = nn.ModuleDict({"gate": nn.SiLU()})
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.gates["gate"](x))


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )  # fmt: skip


class Recurrent(nn.Module):
    """An RNN/GRU/LSTM followed by a small MLP head (with the swappable activation)."""

    def __init__(self, kind, *, hidden=32, num_layers=1, bidirectional=False):
        super().__init__()
        self.rnn = kind(
            16, hidden, num_layers=num_layers, batch_first=True, bidirectional=bidirectional
        )
        out = hidden * (2 if bidirectional else 1)
        self.head = nn.Sequential(nn.Linear(out, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x):
        output, _ = self.rnn(x)
        return self.head(output[:, -1])


class ActNet(nn.Module):
    """A model whose constructor takes the activation, and remembers what it got."""

    def __init__(self, activation=nn.ReLU):
        super().__init__()
        self.received = activation
        self.layers = nn.Sequential(
            nn.Linear(4, 8), activation(), nn.Linear(8, 8), activation(), nn.Linear(8, 2)
        )

    def forward(self, x):
        return self.layers(x)


class PlainNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def make_act_net(activation=nn.ReLU):
    return ActNet(activation)


def _functional_class(qualname=None, module=__name__):
    """A fresh model class that only calls F.relu; unique unless a qualname is given."""
    name = qualname or f"FunctionalNet_{uuid.uuid4().hex[:8]}"

    def __init__(self):
        nn.Module.__init__(self)
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))

    cls = type(name, (nn.Module,), {"__init__": __init__, "forward": forward})
    cls.__qualname__, cls.__module__ = name, module
    return cls


def _types(model):
    return [type(m) for m in model.modules()]


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _assert_variance(tensor, expected, what):
    n = tensor.numel()
    var = tensor.detach().double().var().item()
    assert abs(var - expected) < 6 * expected * math.sqrt(2.0 / n), (
        f"{what}: Var {var:.5g}, expected {expected:.5g}"
    )


# --- activation swapping -----------------------------------------------------------------------


def test_swaps_every_activation_in_a_nested_mlp():
    model = NestedMLP()
    apply(model, Config("xavier_uniform", "leaky_relu", 0.2), seed=0)
    swapped = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(swapped) == 4
    assert all(m.negative_slope == 0.2 for m in swapped)
    assert not {nn.ReLU, nn.Tanh, nn.SiLU} & set(_types(model))
    assert len({id(m) for m in swapped}) == 4  # separate instances
    assert model(torch.randn(3, 4)).shape == (3, 2)


def test_swaps_activations_in_the_default_mlp():
    model = MLP(4, 2, depth=3, width=8)
    apply(model, Config("lecun_normal", "selu"), seed=0)
    assert _types(model).count(nn.SELU) == 3 and nn.ReLU not in _types(model)


def test_swaps_activations_in_a_cnn_and_keeps_pooling():
    model = small_cnn()
    apply(model, Config("kaiming_uniform", "gelu"), seed=0)
    assert [type(m) for m in model] == [
        nn.Conv2d, nn.GELU, nn.MaxPool2d, nn.Conv2d, nn.GELU, nn.Flatten, nn.Linear,
    ]  # fmt: skip
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("kind", [nn.RNN, nn.GRU, nn.LSTM])
def test_swaps_activations_in_a_recurrent_model(kind):
    model = Recurrent(kind)
    apply(model, Config("orthogonal", "tanh"), seed=0)
    assert [type(m) for m in model.head] == [nn.Linear, nn.Tanh, nn.Linear]
    assert model(torch.randn(2, 5, 16)).shape == (2, 3)


def test_swap_activations_false_keeps_the_modules():
    model = small_cnn()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply(model, Config("kaiming_uniform", "tanh"), seed=0, swap_activations=False)
    assert _types(model).count(nn.ReLU) == 2 and nn.Tanh not in _types(model)


# --- initialisation ----------------------------------------------------------------------------


WEIGHT_LAYERS = [
    nn.Linear(128, 96),
    nn.Conv1d(32, 64, 5),
    nn.Conv2d(16, 32, 3),
    nn.Conv3d(8, 16, 3),
    nn.ConvTranspose1d(32, 64, 5),
    nn.ConvTranspose2d(32, 16, 3),
    nn.ConvTranspose3d(16, 8, 3),
]


@pytest.mark.parametrize("layer", WEIGHT_LAYERS, ids=lambda layer: type(layer).__name__)
def test_initialises_linear_and_conv_layers_by_the_method(layer):
    model = nn.Sequential(copy.deepcopy(layer), nn.ReLU(), nn.Linear(4, 4))
    apply(model, HE_RELU, seed=0)
    weight = model[0].weight
    fan_in, _ = fans(weight)
    _assert_variance(weight, 2.0 / fan_in, type(layer).__name__)
    assert not model[0].bias.any()
    assert not model[2].bias.any()


@pytest.mark.parametrize(
    "kind, num_layers, bidirectional, gates",
    [(nn.RNN, 1, False, 1), (nn.GRU, 2, False, 3), (nn.LSTM, 2, True, 4)],
)
def test_initialises_recurrent_layers(kind, num_layers, bidirectional, gates):
    hidden = 64
    model = Recurrent(kind, hidden=hidden, num_layers=num_layers, bidirectional=bidirectional)
    apply(model, HE_RELU, seed=0)
    checked = 0
    for name, param in model.rnn.named_parameters():
        if name.startswith("bias"):
            assert not param.any(), name
        elif name.startswith("weight_hh"):
            assert param.shape == (gates * hidden, hidden)
            # Columns orthonormal (a tall semi-orthogonal matrix): WᵀW = I.
            product = param.detach().double().T @ param.detach().double()
            identity = torch.eye(hidden, dtype=torch.float64)
            torch.testing.assert_close(product, identity, atol=1e-5, rtol=0)
        elif name.startswith("weight_ih"):
            # Gain 1: the searched activation is not the cell's own tanh/sigmoid.
            _assert_variance(param, 1.0 / param.shape[1], name)
        checked += 1
    assert checked == 4 * num_layers * (2 if bidirectional else 1)


def test_the_last_layer_gets_gain_one():
    width = 256
    model = MLP(width, width, depth=3, width=width)
    apply(model, HE_RELU, seed=0)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for layer in linears[:-1]:
        _assert_variance(layer.weight, 2.0 / width, "hidden layer")
    _assert_variance(linears[-1].weight, 1.0 / width, "output layer")


def test_the_last_layer_of_a_recurrent_model_is_its_head():
    model = Recurrent(nn.GRU, hidden=128)
    model.head = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128))
    apply(model, HE_RELU, seed=0)
    _assert_variance(model.head[0].weight, 2.0 / 128, "head hidden layer")
    _assert_variance(model.head[2].weight, 1.0 / 128, "output layer")


def test_other_modules_keep_their_own_initialisation():
    model = nn.Sequential(
        nn.Embedding(10, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)
    )
    with torch.no_grad():
        model[1].weight.uniform_()
    embedding, norm = model[0].weight.clone(), model[1].weight.clone()
    apply(model, HE_RELU, seed=0)
    assert torch.equal(model[0].weight, embedding)
    assert torch.equal(model[1].weight, norm)


def test_default_leaves_pytorch_weights_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(small_cnn(), nn.Tanh(), Recurrent(nn.LSTM).rnn)
    before = _state(model)
    apply(model, Config("default", "tanh"), seed=5)
    _assert_same_state(before, _state(model))
    assert nn.ReLU not in _types(model)  # the activation is still swapped


def test_zeros_zeroes_every_weight_and_bias():
    model = small_cnn()
    apply(model, Config("zeros", "relu"), seed=0)
    assert all(not p.any() for p in model.parameters())


def test_same_seed_same_weights_on_a_model_built_twice():
    torch.manual_seed(1)
    first = NestedMLP()
    torch.manual_seed(2)
    second = NestedMLP()
    assert not torch.equal(first.stem[0].weight, second.stem[0].weight)
    config = Config("xavier_normal", "tanh")
    apply(first, config, seed=3)
    apply(second, config, seed=3)
    _assert_same_state(_state(first), _state(second))
    third = apply(NestedMLP(), config, seed=4)
    assert not torch.equal(first.stem[0].weight, third.stem[0].weight)


def test_a_generator_gives_the_same_weights_as_its_seed():
    by_seed = apply(small_cnn(), HE_RELU, seed=11)
    by_generator = apply(small_cnn(), HE_RELU, generator=torch.Generator().manual_seed(11))
    _assert_same_state(_state(by_seed), _state(by_generator))


def test_the_same_seed_gives_the_same_values_in_float64():
    single = apply(small_cnn(), HE_RELU, seed=2)
    double = apply(small_cnn().double(), HE_RELU, seed=2)
    assert double[0].weight.dtype == torch.float64
    for a, b in zip(single.parameters(), double.parameters()):
        assert torch.equal(a.double(), b)


def test_apply_returns_the_model_and_records_no_gradient_history():
    model = small_cnn()
    assert apply(model, HE_RELU, seed=0) is model
    assert all(p.requires_grad and p.grad_fn is None for p in model.parameters())


# --- warnings for functional activations ----------------------------------------------------


def test_functional_activations_warn_once_per_class():
    cls = _functional_class()
    with pytest.warns(UserWarning, match="no activation module") as record:
        apply(cls(), HE_RELU, seed=0)
    assert len(record) == 1
    assert cls.__name__ in str(record[0].message)
    assert record[0].filename == __file__  # points at the caller of apply
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        apply(cls(), HE_RELU, seed=0)
    assert not [w for w in again if "no activation module" in str(w.message)]


def test_classes_of_the_same_name_in_different_modules_each_warn():
    """Two users' ``Net`` classes are different models: each deserves its warning."""
    qualname = f"Net_{uuid.uuid4().hex[:8]}"
    first = _functional_class(qualname, module="project_a.models")
    second = _functional_class(qualname, module="project_b.models")
    with pytest.warns(UserWarning, match="no activation module"):
        apply(first(), HE_RELU, seed=0)
    with pytest.warns(UserWarning, match="no activation module"):
        apply(second(), HE_RELU, seed=0)


def test_a_model_with_activation_modules_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply(small_cnn(), HE_RELU, seed=0)


# --- build and takes_activation ----------------------------------------------------------------


MODEL_FNS = {
    "class": ActNet,
    "function": make_act_net,
    "lambda": lambda activation: ActNet(activation),
    "partial": functools.partial(ActNet),
    "partial-mlp": functools.partial(MLP, 4, 2, depth=2, width=8),
}


@pytest.mark.parametrize("model_fn", list(MODEL_FNS.values()), ids=list(MODEL_FNS))
def test_build_passes_the_activation_and_does_not_warn(model_fn):
    assert takes_activation(model_fn)
    config = Config("xavier_uniform", "leaky_relu", 0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build(model_fn, config, seed=0)
    acts = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 2 and all(a.negative_slope == 0.2 for a in acts)
    assert nn.ReLU not in _types(model)
    if isinstance(model, ActNet):
        assert model.received is not nn.ReLU  # built with the factory, not swapped afterwards


def test_build_swaps_when_model_fn_takes_no_activation():
    model = build(PlainNet, Config("lecun_normal", "selu"), seed=0)
    assert [type(m) for m in model.layers] == [nn.Linear, nn.SELU, nn.Linear]


def test_build_warns_for_functional_activations():
    cls = _functional_class()
    with pytest.warns(UserWarning, match="no activation module"):
        build(cls, HE_RELU, seed=0)


@pytest.mark.parametrize("config", [PYTORCH_DEFAULT, HE_RELU], ids=str)
def test_build_is_reproducible_by_seed(config):
    first, again = build(ActNet, config, seed=1), build(ActNet, config, seed=1)
    other = build(ActNet, config, seed=2)
    _assert_same_state(_state(first), _state(again))
    assert not torch.equal(first.layers[0].weight, other.layers[0].weight)


def test_build_with_default_keeps_pytorch_init():
    torch.manual_seed(4)
    expected = ActNet()
    model = build(ActNet, PYTORCH_DEFAULT, seed=4)
    _assert_same_state(_state(expected), _state(model))


@pytest.mark.parametrize(
    "model_fn",
    [PlainNet, lambda: PlainNet(), functools.partial(PlainNet), max, nn.Sequential],
    ids=["class", "lambda", "partial", "builtin", "varargs"],
)
def test_takes_activation_is_false_without_the_argument(model_fn):
    assert not takes_activation(model_fn)


# --- batch= for the data-dependent initializers ---------------------------------------------------


@pytest.mark.parametrize("init", ["lsuv", "variance_preserving"])
def test_build_passes_the_batch_to_a_data_dependent_init(init):
    from autoinit.models import mlp_factory

    x = torch.randn(64, 8) * 5
    model_fn = mlp_factory(8, 3, depth=4, width=16)
    model = build(model_fn, Config(init, "tanh"), seed=0, batch=(x, torch.zeros(64)))
    assert 0.5 < float(model[0](x).detach().var()) < 1.5  # scaled on the batch: inputs have Var 25
    same = build(model_fn, Config(init, "tanh"), seed=0, batch=x)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), same.parameters()))
    with pytest.raises(ConfigError, match="needs a batch of inputs"):
        build(model_fn, Config(init, "tanh"), seed=0)


def test_the_batch_is_ignored_by_other_inits():
    x = torch.randn(16, 4)
    plain = build(ActNet, HE_RELU, seed=3)
    given = build(ActNet, HE_RELU, seed=3, batch=x)
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), given.parameters()))


def test_recommendation_apply_and_build_take_the_batch():
    from autoinit import Ranked, Recommendation
    from autoinit.models import mlp_factory

    config = Config("lsuv", "relu")
    rec = Recommendation(config, (Ranked(config, (0.1,)),), None, (0,), "accuracy")
    x = torch.randn(32, 8) * 3
    model = rec.build(mlp_factory(8, 2, depth=3, width=16), batch=x)
    assert abs(float(model[0](x).detach().var()) - 1) <= 0.1
    with pytest.raises(ConfigError, match="data-dependent"):
        rec.apply(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)))

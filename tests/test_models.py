"""The built-in models (MLP, CNN, GRU/LSTM/RNN), choosing one for the data, and a user's own
factory given as ``FILE.py:FACTORY`` or ``package.module:FACTORY``."""

from __future__ import annotations

import functools
import multiprocessing
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from autoinit import user_model
from autoinit._apply import build
from autoinit.errors import ConfigError
from autoinit.models import (
    CNN,
    DEFAULT_SIZES,
    MLP,
    RNN_ACTIVATIONS,
    RecurrentNet,
    check_activations,
    choose_model,
    model_factory,
)
from autoinit.space import Config
from autoinit.study import describe_model


def fake_data(kind: str, shape: tuple[int, ...], *, n: int = 12, classes: int | None = 3):
    """What choose_model reads of a loaded data set: kind, task, classes, the tensors."""
    x = torch.randn(n, *shape)
    if classes is None:
        y, task, names = torch.randn(n, 1), "regression", None
    else:
        names = [str(c) for c in range(classes)]
        y, task = torch.arange(n) % classes, "classification"
    return SimpleNamespace(kind=kind, task=task, n_classes=classes, classes=names,
                           X_train=x, y_train=y, X_val=x, y_val=y)  # fmt: skip


# --- built-in models -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (8, 8), (16, 16), (64, 32)])
@pytest.mark.parametrize("depth", [1, 2, 5])
def test_cnn_takes_any_image_size_and_pools_while_it_can(size, depth) -> None:
    model = CNN(3, 7, depth=depth, width=6, image_size=size)
    assert model(torch.randn(2, 3, *size)).shape == (2, 7)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(convs) == depth and all(c.out_channels == 6 for c in convs)
    assert convs[0].kernel_size == (3, 3) and convs[0].in_channels == 3
    side, expected = min(size), 0
    for _ in range(depth // 2):  # one pool per two blocks, while the image is at least 2x2
        if side >= 2:
            expected, side = expected + 1, side // 2
    assert len(pools) == expected
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d) and model.head.in_features == 6


def test_cnn_uses_the_activation_it_is_given() -> None:
    model = CNN(1, 2, depth=4, width=4, activation=nn.Tanh)
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 4
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert "1 -> 4x4 conv -> 2" in repr(model)


@pytest.mark.parametrize("cell, cls", [("gru", nn.GRU), ("lstm", nn.LSTM), ("rnn", nn.RNN)])
def test_recurrent_nets_read_the_last_step(cell, cls) -> None:
    # A tanh head, seeded: with ReLU a 5-unit head can start all dead for every input (its
    # output then a constant, whatever the steps), as an unseeded run in CI once drew.
    torch.manual_seed(0)
    model = RecurrentNet(3, 4, cell=cell, depth=2, width=5, activation=nn.Tanh)
    assert isinstance(model.rnn, cls) and model.rnn.num_layers == 2
    assert model.rnn.hidden_size == 5 and model.rnn.batch_first
    x = torch.randn(6, 9, 3)
    out = model(x)
    assert out.shape == (6, 4)
    changed = x.clone()
    changed[:, -1] += 1.0  # only the last step differs: the output must change
    assert not torch.allclose(model(changed), out)


def test_gru_and_lstm_apply_the_activation_to_the_head() -> None:
    model = RecurrentNet(2, 3, cell="lstm", activation=nn.SELU)
    assert [type(m) for m in model.head] == [nn.Linear, nn.SELU, nn.Linear]


@pytest.mark.parametrize("activation, name", [(nn.Tanh, "tanh"), (nn.ReLU, "relu")])
def test_rnn_takes_the_activation_as_its_nonlinearity(activation, name) -> None:
    model = RecurrentNet(2, 3, cell="rnn", activation=activation)
    assert model.rnn.nonlinearity == name
    assert isinstance(model.head, nn.Linear)


def test_rnn_refuses_other_activations_and_the_space_says_so() -> None:
    with pytest.raises(ConfigError, match="tanh and relu"):
        RecurrentNet(2, 3, cell="rnn", activation=nn.GELU)
    assert check_activations("rnn", None) == RNN_ACTIVATIONS
    assert check_activations("rnn", ["tanh"]) == ("tanh",)
    with pytest.raises(ConfigError, match="'gelu'"):
        check_activations("rnn", ["relu", "gelu"])
    assert check_activations("gru", ["gelu"]) == ("gelu",)
    assert check_activations("mlp", None) is None


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_apply_keeps_recurrent_weights_orthogonal(cell) -> None:
    fn = model_factory(cell, (9, 3), 4, depth=2, width=8)
    model = build(fn, Config("kaiming_normal", "relu" if cell == "rnn" else "gelu"), seed=1)
    gates = {"gru": 3, "lstm": 4, "rnn": 1}[cell]
    for name, weight in model.rnn.named_parameters():
        if name.startswith("weight_hh"):
            w = weight.detach()
            assert w.shape == (gates * 8, 8)
            assert torch.allclose(w.T @ w, torch.eye(8), atol=1e-4), name  # orthonormal columns


def test_mlp_flattens_images_and_sequences_only_when_asked() -> None:
    fn = model_factory("mlp", (1, 4, 4), 3, depth=2, width=8)
    model = fn(activation=nn.ReLU)
    assert isinstance(model[0], nn.Flatten) and model(torch.randn(5, 1, 4, 4)).shape == (5, 3)
    tabular = model_factory("mlp", (6,), 3, depth=2, width=8)(activation=nn.ReLU)
    assert not any(isinstance(m, nn.Flatten) for m in tabular.modules())
    assert describe_model(model_factory("mlp", (6,), 3, depth=2, width=8)) == describe_model(
        functools.partial(MLP, 6, 3, depth=2, width=8)
    )  # an existing CSV study's model description is unchanged


# --- choosing a model for the data -----------------------------------------------------------


@pytest.mark.parametrize("kind, shape, name, cls, label", [
    ("tabular", (5,), "mlp", MLP, "8x64"),
    ("images", (1, 8, 8), "cnn", CNN, "cnn4x16"),
    ("sequences", (7, 2), "gru", RecurrentNet, "gru2x32"),
])  # fmt: skip
def test_the_default_model_follows_the_kind_of_data(kind, shape, name, cls, label) -> None:
    data = fake_data(kind, shape)
    choice = choose_model(None, data)
    assert (choice.name, choice.label) == (name, label)
    assert (choice.depth, choice.width) == DEFAULT_SIZES[name]
    model = choice.model_fn(activation=nn.ReLU)
    assert isinstance(model, cls) and model(data.X_train).shape == (12, 3)
    pickle.loads(pickle.dumps(choice.model_fn))  # --jobs sends it to workers


def test_depth_width_and_regression_outputs() -> None:
    choice = choose_model("lstm", fake_data("sequences", (4, 1), classes=None), depth=3, width=5)
    assert choice.label == "lstm3x5"
    model = choice.model_fn(activation=nn.ReLU)
    assert model.rnn.num_layers == 3 and model(torch.randn(2, 4, 1)).shape == (2, 1)


@pytest.mark.parametrize("model, kind, shape", [
    ("cnn", "tabular", (5,)), ("gru", "images", (1, 4, 4)), ("rnn", "tabular", (3,)),
    ("lstm", "images", (3, 4, 4)),
])  # fmt: skip
def test_a_model_that_does_not_fit_the_data_is_refused(model, kind, shape) -> None:
    with pytest.raises(ConfigError, match=f"--model {model} needs .* but the data is {kind}"):
        choose_model(model, fake_data(kind, shape))


def test_an_unknown_model_name_suggests_the_nearest() -> None:
    with pytest.raises(ConfigError, match="unknown model 'cnnn'. Did you mean 'cnn'"):
        choose_model("cnnn", fake_data("images", (1, 4, 4)))


# --- a user's factory --------------------------------------------------------------------------

FACTORIES = '''
import torch
from torch import nn

CALLS = []

class Net(nn.Module):
    def __init__(self, in_channels, num_classes, activation=nn.ReLU):
        super().__init__()
        CALLS.append(dict(in_channels=in_channels, num_classes=num_classes))
        self.body = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), activation(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
    def forward(self, x):
        return self.body(x)

def plain(input_shape, out_features):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.Size(input_shape).numel()), 8),
                         nn.Tanh(), nn.Linear(8, out_features))

def everything(**kwargs):
    CALLS.append(sorted(kwargs))
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(kwargs["num_classes"]))

def needs_depth(in_features, depth):
    return nn.Linear(in_features, 2)

def broken(in_channels, num_classes):
    return nn.Linear(3, num_classes)  # ignores the image: fails on the first batch

def wrong_size(in_channels, num_classes):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes + 1))

def raises(num_classes):
    raise RuntimeError("no GPU here")

def not_a_model(num_classes):
    return [1, 2]

class Holder:
    @staticmethod
    def make(in_channels, num_classes):
        return Net(in_channels, num_classes)

SETTINGS = {"lr": 0.1}
'''


@pytest.fixture
def factories(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(FACTORIES, encoding="utf-8")
    yield path
    user_model._MODULES.clear()


def user_choice(path: Path | str, factory: str, data=None):
    return choose_model(f"{path}:{factory}", data or fake_data("images", (1, 6, 6)))


def test_a_factory_gets_the_arguments_it_names(factories: Path) -> None:
    choice = user_choice(factories, "Net")
    assert isinstance(choice.model_fn, user_model.UserModelWithActivation)
    assert dict(choice.model_fn.kwargs) == {"in_channels": 1, "num_classes": 3}
    assert choice.label == "Net" and choice.depth is None
    model = build(choice.model_fn, Config("xavier_uniform", "tanh"))
    assert isinstance(model.body[1], nn.Tanh)  # the activation was passed to the factory
    assert "Net" in describe_model(choice.model_fn)


def test_a_factory_without_activation_has_its_modules_swapped(factories: Path) -> None:
    choice = user_choice(factories, "plain", fake_data("tabular", (5,), classes=None))
    assert type(choice.model_fn) is user_model.UserModel
    assert dict(choice.model_fn.kwargs) == {"input_shape": (5,), "out_features": 1}
    model = build(choice.model_fn, Config("kaiming_normal", "gelu"))
    assert isinstance(model[2], nn.GELU)


@pytest.mark.parametrize("kind, shape, names", [
    ("images", (2, 3, 3), ["activation", "in_channels", "in_features", "input_shape",
                           "num_classes", "out_features"]),
    ("sequences", (4, 2), ["activation", "in_features", "input_shape", "num_classes",
                           "out_features"]),
])  # fmt: skip
def test_a_factory_with_kwargs_gets_everything(factories: Path, kind, shape, names) -> None:
    choice = user_choice(factories, "everything", fake_data(kind, shape))
    calls = user_model._MODULES[str(factories.resolve())].CALLS
    assert calls[-1] == names
    given = dict(choice.model_fn.kwargs)
    assert given["input_shape"] == shape
    assert given["in_features"] == (18 if kind == "images" else 2)  # C*H*W; per step
    assert given.get("in_channels") == (2 if kind == "images" else None)


def test_the_file_runs_once_per_process(factories: Path) -> None:
    choice = user_choice(factories, "Net")
    module = user_model._MODULES[str(factories.resolve())]
    for _ in range(3):
        choice.model_fn(activation=nn.ReLU)
    assert module is user_model._MODULES[str(factories.resolve())]
    assert len(module.CALLS) >= 4


@pytest.mark.parametrize("factory, words", [
    ("Nett", ["my_models.py has no attribute 'Nett'", "Did you mean 'Net'", "It defines:"]),
    ("SETTINGS", ["my_models.py:SETTINGS is a dict", "not a class or function"]),
    ("needs_depth", ["needs_depth requires 'depth'", "in_features, in_channels"]),
    ("broken", ["failed on the first batch, of shape (8, 1, 6, 6)", "RuntimeError",
                "run the factory by hand", "python -c", "runpy.run_path"]),
    ("wrong_size", ["outputs shape (8, 4)", "the data has 3 classes", "must output (8, 3)"]),
    ("raises", ["raises(num_classes=3) raised RuntimeError: no GPU here",
                "run the factory by hand"]),
    ("not_a_model", ["returned a list, not a torch.nn.Module"]),
    ("Holder.missing", ["my_models.py:Holder has no attribute 'missing'"]),
])  # fmt: skip
def test_factory_errors_name_the_file_and_the_factory(factories: Path, factory, words) -> None:
    with pytest.raises(ConfigError) as raised:
        user_choice(factories, factory)
    message = str(raised.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_in_channels_is_for_images_only(factories: Path) -> None:
    with pytest.raises(ConfigError, match="requires 'in_channels'.*given for images only"):
        user_choice(factories, "Net", fake_data("tabular", (4,)))


def test_a_nested_factory_and_depth_width_refused(factories: Path) -> None:
    assert user_choice(factories, "Holder.make").label == "make"
    with pytest.raises(ConfigError, match="--depth and --width size the built-in models"):
        choose_model(f"{factories}:Net", fake_data("images", (1, 6, 6)), depth=3)


@pytest.mark.parametrize("spec, words", [
    ("missing.py:Net", ["model file missing.py not found", "--model missing.py:Net"]),
    ("my_models.py:", ["must be FILE.py:FACTORY"]),
    ("my_models.py:1x", ["must be FILE.py:FACTORY"]),
    ("not a module:Net", ["neither a .py file nor a module name"]),
    ("lstmm", ["unknown model 'lstmm'", "Did you mean 'lstm'"]),
])  # fmt: skip
def test_bad_model_specs(spec, words, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        user_model.parse_spec(spec)
    for word in words:
        assert word in str(raised.value), (word, str(raised.value))


def test_a_file_that_fails_to_run_is_reported_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("import torch\nx = 1 / 0\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    for name, words in (("bad", "ZeroDivisionError: division by zero"), ("exits", "SystemExit")):
        with pytest.raises(ConfigError) as raised:
            user_model.load_factory(user_model.parse_spec(f"{tmp_path / name}.py:Net"))
        assert f"running {tmp_path / name}.py failed" in str(raised.value)
        assert words in str(raised.value) and "\n" not in str(raised.value)
    # a file that failed to run leaves no half-made module behind (names end with the stem)
    left = [m for m in sys.modules
            if m.startswith("_autoinit_user_") and m.endswith(("_bad", "_exits"))]  # fmt: skip
    assert not left


def test_a_module_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        choice = choose_model("mypkg.nets:Net", fake_data("images", (1, 6, 6)))
        assert choice.model_fn(activation=nn.ReLU)(torch.zeros(2, 1, 6, 6)).shape == (2, 3)
        with pytest.raises(ConfigError, match="cannot import module nope.nets.*PYTHONPATH"):
            choose_model("nope.nets:Net", fake_data("images", (1, 6, 6)))
    finally:
        user_model._MODULES.clear()
        for name in ("mypkg", "mypkg.nets"):
            sys.modules.pop(name, None)


def test_the_hint_to_run_it_by_hand_runs(factories: Path) -> None:
    choice = user_choice(factories, "Net")
    command = user_model.by_hand(choice.model_fn, (8, 1, 6, 6))
    assert command.startswith("python -c ")
    done = subprocess.run(
        [sys.executable, "-c", command.split(" ", 2)[2].strip("'")],
        capture_output=True, text=True, timeout=120, cwd=factories.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "torch.Size([8, 3])" in done.stdout


def _build_in_worker(payload: bytes) -> tuple[str, tuple[int, ...]]:
    model_fn = pickle.loads(payload)
    model = model_fn(activation=nn.SiLU)
    return type(model).__name__, tuple(model(torch.zeros(2, 1, 6, 6)).shape)


def test_a_spawned_worker_loads_the_file_by_its_path(factories: Path) -> None:
    """What --jobs does: the model_fn travels pickled and the worker runs the file itself."""
    choice = user_choice(factories, "Net")
    payload = pickle.dumps(choice.model_fn)
    assert FACTORIES.encode() not in payload  # the path travels, not the code
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        assert pool.apply(_build_in_worker, (payload,)) == ("Net", (2, 3))


def test_a_builtin_name_never_runs_a_file_of_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cnn.py").write_text("open('ran', 'w').close()\n")
    choose_model("cnn", fake_data("images", (1, 4, 4)))
    assert not (tmp_path / "ran").exists()

"""Default model factories: the MLP, a small CNN and recurrent nets, one per kind of data.

The command line searches ``--model`` (default: by the kind of data) at ``--depth`` x
``--width`` (default: by the model, :data:`DEFAULT_SIZES`):

- ``mlp`` (tabular data): ``depth`` hidden layers of ``width`` units; images and sequences
  are flattened first.
- ``cnn`` (images): ``depth`` blocks of 3x3 convolution + activation with ``width`` channels,
  2x2 max pooling after every second block (while the image is at least 2x2), global average
  pooling, a linear head. VGG-style, small.
- ``gru`` / ``lstm`` / ``rnn`` (sequences): ``depth`` layers of ``width`` units; the last
  step's output goes into the head. ``nn.RNN`` takes tanh or ReLU as its own nonlinearity, so
  for ``rnn`` the searched activation *is* the cell's (only tanh and relu can be searched) and
  the head is linear. GRU and LSTM cells keep their sigmoid and tanh gates, which no activation
  replaces: there the searched activation is the one of the head's hidden layer
  (Linear -> activation -> Linear), and the search mostly tunes the initialisation.

:func:`choose_model` turns a ``--model`` value and the data into a picklable ``model_fn``
(``FILE.py:FACTORY`` and ``package.module:FACTORY`` through :mod:`autoinit.user_model`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from autoinit.activations import ActivationFactory
from autoinit.errors import ConfigError, unknown_name

DEFAULT_DEPTH = 8
DEFAULT_WIDTH = 64
MODELS = ("mlp", "cnn", "gru", "lstm", "rnn")
DEFAULT_MODEL = {"tabular": "mlp", "images": "cnn", "sequences": "gru"}
DEFAULT_SIZES = {  # (depth, width) per model
    "mlp": (DEFAULT_DEPTH, DEFAULT_WIDTH),
    "cnn": (4, 16),
    "gru": (2, 32),
    "lstm": (2, 32),
    "rnn": (2, 32),
}
RNN_ACTIVATIONS = ("tanh", "relu")  # the nonlinearities nn.RNN has
_FITS = {  # the kinds of data each model takes
    "mlp": ("tabular", "images", "sequences"),
    "cnn": ("images",),
    "gru": ("sequences",),
    "lstm": ("sequences",),
    "rnn": ("sequences",),
}


class MLP(nn.Sequential):
    """``depth`` hidden layers of ``width`` units, each followed by the activation, then a
    linear output. Deep enough by default (8 x 64) that the init decides whether it trains.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        depth: int = DEFAULT_DEPTH,
        width: int = DEFAULT_WIDTH,
        activation: ActivationFactory = nn.ReLU,
        flatten: bool = False,
    ) -> None:
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be positive but got {depth} and {width}.")
        layers: list[nn.Module] = [nn.Flatten()] if flatten else []  # images, sequences
        for index in range(depth):
            layers += [nn.Linear(in_features if index == 0 else width, width), activation()]
        super().__init__(*layers, nn.Linear(width, out_features))
        self.shape = (in_features, depth, width, out_features)

    def extra_repr(self) -> str:
        n_in, depth, width, n_out = self.shape
        return f"{n_in} -> {depth}x{width} -> {n_out}"


def mlp_factory(
    in_features: int, out_features: int, *, depth: int = DEFAULT_DEPTH, width: int = DEFAULT_WIDTH
) -> functools.partial:
    """A picklable ``model_fn`` that takes ``activation`` (so worker processes can use it)."""
    return functools.partial(MLP, in_features, out_features, depth=depth, width=width)


class CNN(nn.Module):
    """``depth`` blocks of 3x3 convolution (``width`` channels, padding 1) + activation, 2x2
    max pooling after every second block, global average pooling, then a linear head.

    ``image_size`` (height, width) leaves out the pooling that would shrink the image below
    1x1; without it, every second block pools.
    """

    def __init__(
        self,
        in_channels: int,
        out_features: int,
        *,
        depth: int = DEFAULT_SIZES["cnn"][0],
        width: int = DEFAULT_SIZES["cnn"][1],
        image_size: tuple[int, int] | None = None,
        activation: ActivationFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be positive but got {depth} and {width}.")
        height, wide = image_size if image_size is not None else (math.inf, math.inf)
        layers: list[nn.Module] = []
        for index in range(depth):
            layers += [nn.Conv2d(in_channels if index == 0 else width, width, 3, padding=1),
                       activation()]  # fmt: skip
            if index % 2 == 1 and min(height, wide) >= 2:
                layers.append(nn.MaxPool2d(2))
                height, wide = height // 2, wide // 2
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, out_features)
        self.shape = (in_channels, depth, width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))

    def extra_repr(self) -> str:
        n_in, depth, width, n_out = self.shape
        return f"{n_in} -> {depth}x{width} conv -> {n_out}"


class RecurrentNet(nn.Module):
    """A GRU, LSTM or plain RNN of ``depth`` layers of ``width`` units over ``(N, T, F)``
    sequences; the last step's output goes into the head.

    ``rnn``: the activation is the cell's own nonlinearity (``nn.RNN`` has tanh and ReLU only;
    others raise :class:`~autoinit.errors.ConfigError`) and the head is linear. ``gru`` and
    ``lstm``: the cell keeps its gates, and the activation is that of the head's hidden layer
    (Linear -> activation -> Linear).
    """

    CELLS = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        cell: str = "gru",
        depth: int = DEFAULT_SIZES["gru"][0],
        width: int = DEFAULT_SIZES["gru"][1],
        activation: ActivationFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        if cell not in self.CELLS:
            raise unknown_name("recurrent cell", cell, self.CELLS)
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be positive but got {depth} and {width}.")
        options: dict[str, Any] = dict(num_layers=depth, batch_first=True)
        if cell == "rnn":
            options["nonlinearity"] = rnn_nonlinearity(activation)
        self.rnn = self.CELLS[cell](in_features, width, **options)
        if cell == "rnn":
            self.head: nn.Module = nn.Linear(width, out_features)
        else:
            self.head = nn.Sequential(
                nn.Linear(width, width), activation(), nn.Linear(width, out_features)
            )
        self.shape = (cell, in_features, depth, width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(x)
        return self.head(output[:, -1])

    def extra_repr(self) -> str:
        cell, n_in, depth, width, n_out = self.shape
        return f"{cell} {n_in} -> {depth}x{width} -> {n_out}"


def rnn_nonlinearity(activation: ActivationFactory) -> str:
    """``"tanh"`` or ``"relu"``: the ``nn.RNN`` nonlinearity that ``activation`` makes."""
    module = activation()
    for name, cls in (("tanh", nn.Tanh), ("relu", nn.ReLU)):
        if type(module) is cls:
            return name
    raise ConfigError(
        f"nn.RNN has only the nonlinearities tanh and relu, not {type(module).__name__}; "
        f"search --activations {','.join(RNN_ACTIVATIONS)} with --model rnn, or use gru/lstm."
    )


def check_activations(
    model: str | None, activations: Sequence[str] | None
) -> tuple[str, ...] | None:
    """The activations to search for ``model``: for ``rnn`` only tanh and relu (the default
    there); for other models, ``activations`` as given (None: all).

    Raises:
        ConfigError: ``rnn`` with another activation.
    """
    if model != "rnn":
        return None if activations is None else tuple(activations)
    if activations is None:
        return RNN_ACTIVATIONS
    from autoinit.activations import canonical_activation

    other = [a for a in activations if canonical_activation(a) not in RNN_ACTIVATIONS]
    if other:
        raise ConfigError(
            f"--model rnn searches only the nonlinearities nn.RNN has, tanh and relu, not "
            f"{', '.join(map(repr, other))}; use gru or lstm to search other activations "
            "(on their head)."
        )
    return tuple(activations)


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """The model to search: its picklable ``model_fn`` and how a study name calls it."""

    name: str  # "mlp", "cnn", ... or the FILE.py:FACTORY given
    model_fn: Any
    label: str  # for the default study name: "8x64" (mlp), "cnn4x16", "Net"
    depth: int | None
    width: int | None
    warnings: tuple[str, ...] = ()  # from building the user's model once


def is_builtin(model: str) -> bool:
    return model in MODELS


def choose_model(
    model: str | None, data: Any, *, depth: int | None = None, width: int | None = None
) -> ModelChoice:
    """The model_fn for ``model`` (default: by ``data.kind``) on ``data``.

    A built-in model is sized by ``depth`` x ``width`` (default :data:`DEFAULT_SIZES`); a
    user's ``FILE.py:FACTORY`` or ``package.module:FACTORY`` is loaded, called with the
    arguments it accepts and run on a first batch (see :mod:`autoinit.user_model`).

    Raises:
        ConfigError: an unknown model, one that does not fit the data, or a user's factory
            that cannot be loaded or whose model fails on the data.
    """
    kind = data.kind
    model = model or DEFAULT_MODEL[kind]
    n_out = data.n_classes if data.task == "classification" else 1
    shape = tuple(data.X_train.shape[1:])
    if not is_builtin(model):
        from autoinit import user_model

        if depth is not None or width is not None:
            raise ConfigError(
                f"--depth and --width size the built-in models ({', '.join(MODELS)}); "
                f"{model} builds its own, so leave them out."
            )
        spec = user_model.parse_spec(model)
        user_fn = user_model.user_model_fn(spec, kind, shape, n_out)
        caught = user_model.check_model(user_fn, data, spec)
        return ModelChoice(model, user_fn, spec.attribute.split(".")[-1], None, None, caught)
    if kind not in _FITS[model]:
        need = {"cnn": "images (N, C, H, W)", "gru": "sequences (N, T, F)",
                "lstm": "sequences (N, T, F)", "rnn": "sequences (N, T, F)"}[model]  # fmt: skip
        raise ConfigError(
            f"--model {model} needs {need}, but the data is {kind}; use "
            f"{DEFAULT_MODEL[kind]} (the default for {kind}) or your own model (FILE.py:FACTORY)."
        )
    default_depth, default_width = DEFAULT_SIZES[model]
    depth, width = depth or default_depth, width or default_width
    model_fn = model_factory(model, shape, n_out, depth=depth, width=width)
    label = f"{depth}x{width}" if model == "mlp" else f"{model}{depth}x{width}"
    return ModelChoice(model, model_fn, label, depth, width)


def model_factory(
    model: str, input_shape: tuple[int, ...], out_features: int, *, depth: int, width: int
) -> functools.partial:
    """A picklable ``model_fn`` (taking ``activation``) for a built-in model on samples of
    ``input_shape``."""
    if model == "mlp":
        if len(input_shape) == 1:
            return mlp_factory(input_shape[0], out_features, depth=depth, width=width)
        return functools.partial(MLP, math.prod(input_shape), out_features, depth=depth,
                                 width=width, flatten=True)  # fmt: skip
    if model == "cnn":
        channels, height, wide = input_shape
        return functools.partial(CNN, channels, out_features, depth=depth, width=width,
                                 image_size=(height, wide))  # fmt: skip
    if model in RecurrentNet.CELLS:
        return functools.partial(RecurrentNet, input_shape[-1], out_features, cell=model,
                                 depth=depth, width=width)  # fmt: skip
    raise unknown_name("model", model, MODELS)

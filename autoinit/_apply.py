"""Put a :class:`~autoinit.space.Config` into any ``nn.Module``: swap activations, initialise.

No training happens here. Layers initialised: Linear, Conv1d/2d/3d and their transposed forms,
and RNN/LSTM/GRU (input-to-hidden weights by the method with gain 1, since the searched activation
is not the one inside the cell; hidden-to-hidden orthogonal). Biases of
those layers are set to zero. The last such layer is the output: it gets the method with gain 1,
the gain of a linear output. Other modules (embeddings, norms) keep their own initialisation.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable

import torch
from torch import nn

from autoinit.activations import activation_types, get_activation
from autoinit.errors import ConfigError
from autoinit.initializers import Initializer, get_initializer
from autoinit.space import Config

ModelFn = Callable[..., nn.Module]

_WEIGHT_LAYERS = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)  # fmt: skip
_RNN_LAYERS = (nn.RNNBase,)


def apply(
    model: nn.Module,
    config: Config,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    swap_activations: bool = True,
    batch: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
) -> nn.Module:
    """Swap ``model``'s activation modules for ``config.activation`` and initialise its weights.

    Args:
        model: any module; changed in place and returned.
        config: the init, activation and slope to apply.
        seed: seeds the weight draws (ignored when ``generator`` is given).
        generator: a CPU ``torch.Generator``; the same seed gives the same weights on any device.
        swap_activations: set False when the model was built with the activation already.
        batch: a batch of model inputs (or an ``(inputs, targets)`` pair), needed by the
            data-dependent initializers (``lsuv``, ``variance_preserving``) and ignored by the
            others. A search passes the same fixed training batch to every trial.

    Raises:
        ConfigError: ``config.init`` is data-dependent and no ``batch`` was given.

    Example:
        >>> model = apply(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
        ...               Config("xavier_uniform", "tanh"), seed=0)
        >>> type(model[1]).__name__
        'Tanh'
    """
    inputs = _batch_for(config, batch)
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(0 if seed is None else seed)
    if swap_activations and swap_activation_modules(model, config) == 0:
        _warn_once_nothing_swapped(model)
    init_weights(model, config, generator, batch=inputs)
    return model


def _batch_for(config: Config, batch: object) -> torch.Tensor | None:
    """The inputs of ``batch`` when the config's initializer needs them; an error if missing."""
    if not get_initializer(config.init).needs_batch:
        return None
    if batch is None:
        raise ConfigError(
            f"initializer {config.init!r} is data-dependent: it needs a batch of inputs. Pass "
            f"batch= to apply() or build() (or to Recommendation.apply/build), e.g. "
            f"apply(model, config, batch=x_train[:64])."
        )
    from autoinit.data_init import input_tensor

    return input_tensor(batch)


_WARNED_CLASSES: set[str] = set()


def _warn_once_nothing_swapped(model: nn.Module) -> None:
    """Say once per model class that only the init can be searched."""
    name = f"{type(model).__module__}.{type(model).__qualname__}"
    if name not in _WARNED_CLASSES:
        _WARNED_CLASSES.add(name)
        warnings.warn(
            f"{type(model).__name__} has no activation module that autoinit can swap (it may "
            "call functional activations such as F.relu), so the searched activation has no "
            "effect on it; give model_fn an `activation` argument (a zero-argument factory "
            "such as nn.ReLU) to search activations too.",
            stacklevel=3,
        )


def swap_activation_modules(model: nn.Module, config: Config) -> int:
    """Replace every registered activation module inside ``model``; return how many."""
    factory = get_activation(config.activation).factory(config.leaky_slope)
    kinds = activation_types()
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kinds):
                setattr(parent, name, factory())
                swapped += 1
    return swapped


def init_weights(
    model: nn.Module,
    config: Config,
    generator: torch.Generator,
    *,
    batch: torch.Tensor | None = None,
) -> None:
    """Initialise the weight layers of ``model`` in place (see the module docstring).

    A data-dependent initializer then rescales the layers on ``batch`` (model inputs).
    """
    if config.init == "default":
        return
    method = get_initializer(config.init)
    gain = get_activation(config.activation).gain_for(config.leaky_slope)
    layers = [m for m in model.modules() if isinstance(m, _WEIGHT_LAYERS + _RNN_LAYERS)]
    for index, layer in enumerate(layers):
        # The output is linear, and an RNN's own tanh/sigmoid gates are not the searched activation.
        linear = index == len(layers) - 1 or isinstance(layer, _RNN_LAYERS)
        layer_gain = 1.0 if linear else gain
        for name, param in layer.named_parameters(recurse=False):
            if name.startswith("bias"):
                with torch.no_grad():
                    param.zero_()
            elif name.startswith("weight_hh"):
                _fill(param, get_initializer("orthogonal"), 1.0, generator)
            elif name.startswith("weight"):
                _fill(param, method, layer_gain, generator)
    if method.data_fn is not None:
        if batch is None:
            raise ConfigError(f"initializer {config.init!r} needs a batch of inputs (batch=).")
        method.data_fn(model, layers, batch)


def _fill(
    param: nn.Parameter, method: Initializer, gain: float, generator: torch.Generator
) -> None:
    """Draw into a CPU float32 buffer, then copy: same values on every device and dtype."""
    buffer = torch.empty(param.shape, dtype=torch.float32)
    method(buffer, gain=gain, generator=generator)
    with torch.no_grad():
        param.copy_(buffer)


def takes_activation(model_fn: ModelFn) -> bool:
    """Whether ``model_fn`` (class, function, partial or lambda) has an ``activation`` argument."""
    try:
        return "activation" in inspect.signature(model_fn).parameters
    except (TypeError, ValueError):  # builtins and some C extensions have no signature
        return False


def build(
    model_fn: ModelFn,
    config: Config,
    *,
    seed: int = 0,
    batch: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
) -> nn.Module:
    """Make a model for ``config``: pass the activation to ``model_fn`` if it takes one.

    ``torch.manual_seed(seed)`` runs first so that the ``default`` init, drawn by the model's
    own constructor, is reproducible too. ``batch``: model inputs for the data-dependent
    initializers (see :func:`apply`).
    """
    _batch_for(config, batch)  # fail before the model is made
    torch.manual_seed(seed)
    if takes_activation(model_fn):
        factory = get_activation(config.activation).factory(config.leaky_slope)
        model = model_fn(activation=factory)
        return apply(model, config, seed=seed, swap_activations=False, batch=batch)
    return apply(model_fn(), config, seed=seed, batch=batch)

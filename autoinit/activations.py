"""The registry of hidden-layer activations, by name, with the gain each one implies.

Softmax is not a hidden activation: for multi-class classification it is the output, applied
inside the cross-entropy loss (``nn.CrossEntropyLoss`` takes logits), so it is not searched.

The gain is what He/Kaiming and orthogonal initialisation scale by. autoinit uses
``torch.nn.init.calculate_gain``'s values where PyTorch defines one (ReLU √2, Leaky ReLU
√(2 / (1 + slope²)), tanh 5/3, sigmoid 1, SELU 3/4) and, for the others, the gain that keeps the
second moment of a unit-Gaussian pre-activation: ``1 / sqrt(E[f(z)²])``, z ~ N(0, 1) — which is
exactly √2 for ReLU.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from autoinit.errors import ConfigError, unknown_name

ActivationFactory = Callable[[], nn.Module]


def second_moment_gain(module: nn.Module) -> float:
    """``1 / sqrt(E[f(z)^2])`` for z ~ N(0, 1), by 64-point Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    module = copy.deepcopy(module).to(torch.float64)  # parametric ones (PReLU) hold weights
    with torch.no_grad():
        values = module(torch.as_tensor(nodes, dtype=torch.float64)).numpy()
    second_moment = float(np.sum(weights * values**2) / math.sqrt(2 * math.pi))
    return 1.0 / math.sqrt(second_moment)


@dataclasses.dataclass(frozen=True)
class Activation:
    """A registered activation: its module class and its gain (a number, or a slope -> gain)."""

    name: str
    cls: type[nn.Module]
    gain: float | Callable[[float], float]
    aliases: tuple[str, ...] = ()

    def factory(self, slope: float | None = None) -> ActivationFactory:
        """A zero-argument callable that returns a new module, the way ``nn.ReLU`` does."""
        if slope is None:
            return self.cls
        return functools.partial(self.cls, slope)

    def gain_for(self, slope: float | None = None) -> float:
        """The gain; a slope-dependent one uses 0.01 (``nn.LeakyReLU``'s default) if none given."""
        if callable(self.gain):
            return self.gain(0.01 if slope is None else slope)
        return self.gain


_REGISTRY: dict[str, Activation] = {}
_ALIASES: dict[str, str] = {}


def register_activation(
    name: str,
    cls: type[nn.Module],
    *,
    gain: float | Callable[[float], float] | None = None,
    aliases: tuple[str, ...] = (),
) -> Activation:
    """Add an activation module class under ``name``.

    ``gain`` defaults to the second-moment gain of ``cls()``. Modules of ``cls`` found inside a
    model are swapped by :func:`autoinit.apply`, so register only hidden-layer activations.
    """
    for key in (name, *aliases):
        if key in _REGISTRY or key in _ALIASES:
            raise ConfigError(f"activation name {key!r} is already registered.")
    if gain is None:
        gain = second_moment_gain(cls())
    spec = Activation(name, cls, gain, tuple(aliases))
    _REGISTRY[name] = spec
    _ALIASES.update({alias: name for alias in aliases})
    return spec


def get_activation(name: str) -> Activation:
    """The activation registered under ``name`` or one of its aliases."""
    key = _ALIASES.get(name, name)
    if key == "softmax" and key not in _REGISTRY:
        raise ConfigError(
            "softmax is not a hidden activation: it is the output of multi-class classification, "
            f"applied inside the cross-entropy loss. Hidden activations: {', '.join(_REGISTRY)}."
        )
    if key not in _REGISTRY:
        raise unknown_name("activation", name, [*_REGISTRY, *_ALIASES])
    return _REGISTRY[key]


def canonical_activation(name: str) -> str:
    """The registry name behind an alias (``'swish'`` -> ``'silu'``)."""
    return get_activation(name).name


def create_activation(name: str, slope: float | None = None) -> nn.Module:
    """A new module instance, e.g. ``create_activation('leaky_relu', 0.1)``."""
    return get_activation(name).factory(slope)()


def list_activations() -> list[str]:
    """Registered activation names (aliases excluded), in registration order."""
    return list(_REGISTRY)


def activation_types() -> tuple[type[nn.Module], ...]:
    """The module classes that :func:`autoinit.apply` swaps."""
    return tuple(spec.cls for spec in _REGISTRY.values())


register_activation("sigmoid", nn.Sigmoid, gain=1.0)
register_activation("tanh", nn.Tanh, gain=5.0 / 3.0)
register_activation("relu", nn.ReLU, gain=math.sqrt(2.0))
register_activation(
    "leaky_relu", nn.LeakyReLU, gain=lambda slope: math.sqrt(2.0 / (1.0 + slope**2))
)
register_activation("elu", nn.ELU)
register_activation("selu", nn.SELU, gain=0.75)
register_activation("gelu", nn.GELU)
register_activation("silu", nn.SiLU, aliases=("swish",))
register_activation("mish", nn.Mish)
register_activation("softplus", nn.Softplus)

DEFAULT_ACTIVATIONS = tuple(list_activations())

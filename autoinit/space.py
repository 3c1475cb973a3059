"""The search space: the :class:`Config` value and its Optuna definition, :func:`suggest`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from autoinit.errors import ConfigError

LEAKY_SLOPE_RANGE = (1e-3, 0.5)
DEFAULT_LEAKY_SLOPE = 0.01


@dataclasses.dataclass(frozen=True)
class Config:
    """One point of the search space: an initializer, an activation and, for Leaky ReLU, its slope.

    Example:
        >>> Config("kaiming_normal", "leaky_relu", leaky_slope=0.1).label
        'kaiming_normal + leaky_relu(0.1)'
    """

    init: str
    activation: str
    leaky_slope: float | None = None

    def __post_init__(self) -> None:
        if self.activation == "leaky_relu":
            slope = DEFAULT_LEAKY_SLOPE if self.leaky_slope is None else float(self.leaky_slope)
            if not slope > 0:
                raise ConfigError(f"leaky_slope must be positive but got {self.leaky_slope!r}.")
            object.__setattr__(self, "leaky_slope", slope)
        elif self.leaky_slope is not None:
            raise ConfigError(
                f"leaky_slope is only used with activation 'leaky_relu', not {self.activation!r}."
            )

    @property
    def label(self) -> str:
        """A short human-readable name, e.g. ``'xavier_uniform + tanh'``."""
        act = self.activation
        if self.leaky_slope is not None:
            act = f"{act}({self.leaky_slope:.3g})"
        return f"{self.init} + {act}"

    @property
    def activation_key(self) -> tuple[str, float]:
        """The activation and its slope: what the model's modules depend on (an init only
        changes the starting weights), so configs of one key batch without regrouping."""
        return self.activation, self.leaky_slope or 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> "Config":
        """Build from a dict such as ``trial.params`` or :meth:`to_dict`'s output."""
        return cls(params["init"], params["activation"], params.get("leaky_slope"))

    def __str__(self) -> str:
        return self.label


PYTORCH_DEFAULT = Config("default", "relu")


def resolve_space(
    inits: Sequence[str] | None = None, activations: Sequence[str] | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Check and canonicalise the names to search (aliases resolved, duplicates dropped).

    ``None`` means the default space: every issue-listed initializer and every activation.
    """
    from autoinit import activations as acts
    from autoinit import initializers as inits_mod

    if inits is None:
        inits = inits_mod.DEFAULT_INITS
    if activations is None:
        activations = acts.DEFAULT_ACTIVATIONS
    init_names = tuple(dict.fromkeys(inits_mod.canonical_initializer(n) for n in inits))
    act_names = tuple(dict.fromkeys(acts.canonical_activation(n) for n in activations))
    if not init_names or not act_names:
        raise ConfigError("the search space is empty: give at least one init and one activation.")
    return init_names, act_names


def suggest(
    trial: optuna.Trial,
    inits: Sequence[str] | None = None,
    activations: Sequence[str] | None = None,
) -> Config:
    """Define the space on ``trial`` and return the sampled :class:`Config`.

    ``init`` and ``activation`` are categorical; ``leaky_slope`` is log-uniform in
    [0.001, 0.5] and exists only when the activation is ``leaky_relu`` (a conditional parameter).
    """
    init_names, act_names = resolve_space(inits, activations)
    init = trial.suggest_categorical("init", init_names)
    activation = trial.suggest_categorical("activation", act_names)
    slope = None
    if activation == "leaky_relu":
        slope = trial.suggest_float("leaky_slope", *LEAKY_SLOPE_RANGE, log=True)
    return Config(init, activation, slope)


def baselines(inits: Sequence[str], activations: Sequence[str]) -> list[Config]:
    """The well-known configs that are tried first, each only where it fits the space."""
    known = [
        PYTORCH_DEFAULT,
        Config("kaiming_normal", "relu"),
        Config("xavier_uniform", "tanh"),
        Config("lecun_normal", "selu"),
    ]
    return [c for c in known if c.init in inits and c.activation in activations]

"""Default model factories: the tabular MLP that the CLI searches."""

from __future__ import annotations

import functools

from torch import nn

from autoinit.activations import ActivationFactory

DEFAULT_DEPTH = 8
DEFAULT_WIDTH = 64


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
    ) -> None:
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be positive but got {depth} and {width}.")
        layers: list[nn.Module] = []
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

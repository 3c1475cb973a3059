"""Small test doubles shipped with the package (as Optuna ships ``optuna.testing``).

Generated data only: nothing is downloaded.
"""

from __future__ import annotations

import functools

import torch

from autoinit.models import MLP


def toy_classification(
    n: int = 256, features: int = 8, classes: int = 3, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs, one per class: learnable in a few epochs by a small MLP."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=generator) * 2.0
    y = torch.randint(0, classes, (n,), generator=generator)
    x = centers[y] + torch.randn(n, features, generator=generator)
    return x, y


def toy_regression(
    n: int = 256, features: int = 8, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth nonlinear target with a little noise, shape ``(n, 1)``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator)
    y = torch.sin(x[:, :1]) + 0.5 * x[:, 1:2] ** 2 + 0.1 * torch.randn(n, 1, generator=generator)
    return x, y


def tiny_mlp(in_features: int = 8, out_features: int = 3, *, depth: int = 2, width: int = 16):
    """A picklable ``model_fn`` for a small MLP that takes ``activation``."""
    return functools.partial(MLP, in_features, out_features, depth=depth, width=width)

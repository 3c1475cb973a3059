"""Your own model on the command line: a CNN factory for ``--model examples/user_cnn.py:Net``.

``autoinit search`` runs this file (as pytest runs a ``conftest.py``), then calls ``Net`` with
the keyword arguments it accepts out of ``input_shape``, ``in_features``, ``in_channels``,
``num_classes``, ``out_features`` and ``activation``. ``Net`` asks for three of them; its
``activation`` argument receives the searched activation (a zero-argument factory such as
``nn.ReLU``). A factory without one has its activation modules swapped instead.

Run it with::

    autoinit search --data examples/digits --model examples/user_cnn.py:Net
    python examples/user_cnn.py --quick      # build it and run one batch: a smoke test
"""

from __future__ import annotations

import argparse

import torch
from torch import nn


class Net(nn.Module):
    """Two 3x3 conv layers of 32 channels, max pooling, then Linear -> activation -> Linear."""

    def __init__(
        self, in_channels: int, num_classes: int, activation: type[nn.Module] = nn.ReLU
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), activation(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), activation(), nn.AdaptiveAvgPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Linear(32 * 4, 64), activation(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one batch (the only mode)")
    parser.parse_args(argv)
    model = Net(in_channels=1, num_classes=10)
    print(f"Net on a batch of 8 images 1x16x16 -> {tuple(model(torch.zeros(8, 1, 16, 16)).shape)}")


if __name__ == "__main__":
    main()

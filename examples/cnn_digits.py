"""Recommend an initializer and activation for your own CNN, then apply it to a new model.

The data is scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes): nothing is
downloaded. The images are reshaped to ``(n, 1, 8, 8)`` and scaled to [0, 1] by dividing by 16.

The model is an ordinary ``nn.Module`` that builds its own ``nn.ReLU`` modules and takes no
``activation`` argument. autoinit then swaps those activation modules for the searched one, and
initialises the Conv2d and Linear weights with the matching gain (the output layer with gain 1).
After the search, ``rec.apply(model)`` does the same to any fresh instance of the model.

Run it with::

    python examples/cnn_digits.py            # a couple of minutes on a laptop CPU
    python examples/cnn_digits.py --quick    # a few seconds: a smoke test
    python examples/cnn_digits.py --storage sqlite:///studies/digits.db   # keep the study

Without ``--storage`` the study lives in a temporary folder that is deleted at exit.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autoinit import recommend

FULL = dict(n_trials=30, epochs=8, seeds=3, top_k=3)
QUICK = dict(n_trials=6, epochs=1, seeds=2, top_k=1)


class DigitsCNN(nn.Module):
    """Conv(1->16) / ReLU / MaxPool / Conv(16->32) / ReLU / Linear(512->10)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def load_data(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, val_idx = train_test_split(
        range(len(labels)), test_size=0.2, stratify=digits.target, random_state=seed
    )
    return (
        TensorDataset(images[train_idx], labels[train_idx]),
        TensorDataset(images[val_idx], labels[val_idx]),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny budget (smoke test)")
    parser.add_argument(
        "--storage", help="Optuna storage URL (default: SQLite in a temporary folder)"
    )
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else FULL

    train, val = load_data()
    train_loader = DataLoader(train, batch_size=64, shuffle=True)
    val_loader = DataLoader(val, batch_size=256)

    with tempfile.TemporaryDirectory(prefix="autoinit-") as folder:
        storage = args.storage or f"sqlite:///{folder}/digits.db"
        rec = recommend(
            DigitsCNN, train_loader, val_loader, storage=storage, study_name="digits-cnn",
            seed=0, **budget,
        )  # fmt: skip
    print(rec)

    model = rec.apply(DigitsCNN(), seed=0)  # swap the ReLUs, initialise Conv2d and Linear
    print(f"Applied {rec.config.label} to a new DigitsCNN:")
    print(model)


if __name__ == "__main__":
    main()

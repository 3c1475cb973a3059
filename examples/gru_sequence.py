"""Recommend an initializer and activation for a GRU sequence classifier.

The task is generated here: each sequence is 32 noisy samples of a sine, a square or a
triangle wave with a random frequency, phase and amplitude, and the model says which of the
three it is. Nothing is downloaded.

The model is a GRU followed by a small MLP head. Its constructor takes an ``activation``
argument (a zero-argument factory such as ``nn.ReLU``), so autoinit passes the searched
activation in rather than swapping modules afterwards. The GRU's own gates keep their sigmoid and
tanh; autoinit initialises its input-to-hidden weights with the searched method,
its hidden-to-hidden weights orthogonally, its biases to zero, and the head like any MLP.

Run it with::

    python examples/gru_sequence.py            # about a minute on a laptop CPU
    python examples/gru_sequence.py --quick    # a few seconds: a smoke test
    python examples/gru_sequence.py --storage sqlite:///studies/waves.db   # keep the study

Without ``--storage`` the study lives in a temporary folder that is deleted at exit.
"""

from __future__ import annotations

import argparse
import math
import tempfile

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autoinit import recommend
from autoinit.activations import ActivationFactory

FULL = dict(n_trials=30, epochs=10, seeds=3, top_k=3, samples=3000)
QUICK = dict(n_trials=6, epochs=1, seeds=2, top_k=1, samples=400)
LENGTH = 32
WAVES = ("sine", "square", "triangle")


class GRUClassifier(nn.Module):
    """GRU(1 -> hidden) on the sequence, then Linear / activation / Linear on its last state."""

    def __init__(
        self, activation: ActivationFactory = nn.ReLU, *, hidden: int = 32, classes: int = 3
    ) -> None:
        super().__init__()
        self.gru = nn.GRU(1, hidden, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden), activation(), nn.Linear(hidden, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(x)  # last: (num_layers, batch, hidden)
        return self.head(last[-1])


def make_waves(n: int, *, seed: int = 0) -> TensorDataset:
    """``n`` sequences of shape ``(LENGTH, 1)`` with labels 0 (sine), 1 (square), 2 (triangle)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(WAVES), (n,), generator=g)
    t = torch.arange(LENGTH, dtype=torch.float32)
    cycles = 1.0 + 3.0 * torch.rand(n, 1, generator=g)  # 1 to 4 periods per sequence
    phase = 2 * math.pi * torch.rand(n, 1, generator=g)
    angle = 2 * math.pi * cycles * t / LENGTH + phase
    sine = torch.sin(angle)
    square = torch.sign(sine)
    triangle = 2 / math.pi * torch.asin(sine)
    waves = torch.stack([sine, square, triangle], dim=1)[torch.arange(n), labels]
    amplitude = 0.5 + torch.rand(n, 1, generator=g)
    x = amplitude * waves + 0.3 * torch.randn(n, LENGTH, generator=g)
    return TensorDataset(x.unsqueeze(-1), labels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny budget (smoke test)")
    parser.add_argument(
        "--storage", help="Optuna storage URL (default: SQLite in a temporary folder)"
    )
    args = parser.parse_args(argv)
    budget = dict(QUICK if args.quick else FULL)
    samples = budget.pop("samples")

    train_loader = DataLoader(make_waves(samples, seed=0), batch_size=64, shuffle=True)
    val_loader = DataLoader(make_waves(samples // 4, seed=1), batch_size=256)

    with tempfile.TemporaryDirectory(prefix="autoinit-") as folder:
        storage = args.storage or f"sqlite:///{folder}/waves.db"
        rec = recommend(
            GRUClassifier, train_loader, val_loader, storage=storage, study_name="waves-gru",
            seed=0, **budget,
        )  # fmt: skip
    print(rec)

    model = rec.build(GRUClassifier)  # the activation is passed to the constructor
    print(f"Built a GRUClassifier with {rec.config.label}: head {list(model.head)}")


if __name__ == "__main__":
    main()

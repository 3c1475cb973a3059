"""Recommend an initializer and activation for a tabular MLP, from Python.

The data is scikit-learn's bundled breast-cancer table (569 tumours, 30 numeric features,
benign or malignant): nothing is downloaded. The features are standardized with a
``StandardScaler`` fitted on the training rows only, turned into tensors and wrapped in
DataLoaders, which is all ``autoinit.recommend`` needs. The model is autoinit's default deep
MLP (8 hidden layers of 64 units), a depth at which the initialisation decides whether it trains.

``recommend`` runs an Optuna study over initializers x activations (PyTorch's default and the
well-known pairs first), confirms the best configs over fresh seeds against PyTorch's default,
and returns a ``Recommendation``; ``rec.build(model_fn)`` then makes a model with the winner.

Run it with::

    python examples/recommend_tabular.py            # about a minute on a laptop CPU
    python examples/recommend_tabular.py --quick    # a few seconds: a smoke test
    python examples/recommend_tabular.py --storage sqlite:///studies/tabular.db   # keep the study

Without ``--storage`` the study lives in a temporary folder that is deleted at exit.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, TensorDataset

from autoinit import recommend
from autoinit.models import mlp_factory

FULL = dict(n_trials=40, epochs=10, seeds=3, top_k=3)
QUICK = dict(n_trials=6, epochs=1, seeds=2, top_k=1)


def load_data(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Stratified 80/20 split, standardized with the training rows' mean and std."""
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(
        X, y, test_size=0.2, stratify=y, random_state=seed
    )
    scaler = StandardScaler().fit(X_train)

    def tensors(X, y):
        x = torch.tensor(scaler.transform(X), dtype=torch.float32)
        return TensorDataset(x, torch.tensor(y, dtype=torch.long))  # integer labels: classification

    return tensors(X_train, y_train), tensors(X_val, y_val)


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
    model_fn = mlp_factory(in_features=train.tensors[0].shape[1], out_features=2)

    with tempfile.TemporaryDirectory(prefix="autoinit-") as folder:
        storage = args.storage or f"sqlite:///{folder}/tabular.db"
        rec = recommend(
            model_fn, train_loader, val_loader, storage=storage, study_name="breast-cancer-mlp",
            seed=0, **budget,
        )  # fmt: skip
    print(rec)

    model = rec.build(model_fn)  # the winner's activation passed in, its init applied
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Built {model.extra_repr()} MLP with {rec.config.label} ({n_params} parameters).")


if __name__ == "__main__":
    main()

import optuna
import pytest
import torch

from autoinit.testing import tiny_mlp, toy_classification, toy_regression

optuna.logging.set_verbosity(optuna.logging.WARNING)
torch.set_num_threads(1)


@pytest.fixture
def storage_url(tmp_path):
    """A fresh SQLite study database in the test's temp dir."""
    return f"sqlite:///{tmp_path / 'studies' / 'test.db'}"


@pytest.fixture
def blobs():
    return toy_classification(n=240, features=8, classes=3)


@pytest.fixture
def regression_data():
    return toy_regression(n=240, features=8)


@pytest.fixture
def small_mlp():
    return tiny_mlp(8, 3, depth=2, width=16)

"""recommend() and Recommendation: confirmation over seeds, evidence, apply/build, storage."""

import json
import math

import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autoinit import Config, Recommendation, recommend, search
from autoinit._recommend import Ranked
from autoinit.errors import ConfigError


@pytest.fixture
def rec(blobs, small_mlp, storage_url):
    return recommend(small_mlp, blobs, n_trials=6, epochs=3, seeds=2, top_k=2, storage=storage_url)


def test_recommend_confirms_top_k_and_the_default_over_seeds(rec):
    labels = [r.config.label for r in rec.ranking]
    assert "default + relu" in labels
    assert 2 <= len(labels) <= 3
    assert rec.config == rec.ranking[0].config
    assert all(len(r.values) == 2 for r in rec.ranking)
    assert [r.mean for r in rec.ranking] == sorted(r.mean for r in rec.ranking)
    assert rec.default.config == Config("default", "relu")
    assert rec.improvement == pytest.approx(rec.default.mean - rec.winner.mean)
    assert rec.seeds == (1000, 1001)


def test_recommendation_is_stored_and_read_back(rec, storage_url):
    study = optuna.load_study(study_name=rec.study_name, storage=storage_url)
    assert Recommendation.from_study(study) == rec
    assert study.user_attrs["recommendation"]["label"] == rec.config.label


def test_json_round_trip_and_readable_text(rec, tmp_path):
    path = tmp_path / "rec.json"
    text = rec.to_json(path)
    assert json.loads(path.read_text()) == json.loads(text)
    assert Recommendation.from_dict(json.loads(text)) == rec
    printed = str(rec)
    assert printed.startswith(f"Recommended: {rec.config.label}")
    assert "PyTorch default" in printed and "seed" in printed


def test_diverged_runs_count_as_infinite_and_stay_json_safe():
    ranked = Ranked(Config("normal", "relu"), (math.inf, 0.5), (None, 0.9))
    assert ranked.mean == math.inf and ranked.std == 0.0
    data = ranked.to_dict()
    json.dumps(data, allow_nan=False)
    assert Ranked.from_dict(data).values[0] == math.inf


def test_one_seed_shows_no_spread_rather_than_plus_or_minus_zero():
    """One seed has no seed-to-seed spread: "0.1409", not "0.1409 ± 0" (which reads as none)."""
    one = Ranked(Config("lecun_normal", "selu"), (0.1409,), (0.9386,), seeds=(1000,))
    two = Ranked(Config("default", "relu"), (0.2, 0.3), (0.9, 0.8), seeds=(1000, 1001))
    assert one.loss_text() == "0.1409" and one.metric_text("-") == "0.9386"
    assert two.loss_text() == "0.25 ± 0.071" and two.metric_text("-") == "0.85 ± 0.071"
    rec = Recommendation(one.config, (one,), None, (1000,), "accuracy")
    assert "± 0" not in str(rec) and "validation loss 0.1409, accuracy 0.9386" in str(rec)
    assert Ranked(Config("normal", "relu"), (0.2,), (None,)).metric_text("n/a") == "n/a"


def test_from_study_without_confirmation_reads_the_trials(blobs, small_mlp, storage_url):
    study = search(small_mlp, blobs, n_trials=4, epochs=2, storage=storage_url)
    rec = Recommendation.from_study(study)
    assert rec.winner.mean == pytest.approx(study.best_value)
    assert rec.config == Config.from_dict(study.best_params)
    assert len(rec.seeds) == 1


def test_a_study_where_everything_diverged_says_so(storage_url):
    from autoinit.models import mlp_factory
    from autoinit.testing import toy_classification

    with pytest.raises(ConfigError, match="no completed trial"):
        recommend(mlp_factory(8, 3, depth=20), toy_classification(), n_trials=1, epochs=1,
                  inits=["normal"], activations=["relu"], storage=storage_url)


class UserCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class UserGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(2, 8, batch_first=True)
        self.head = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])


def _images():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (96,), generator=g)
    x = torch.randn(96, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float()
    return DataLoader(TensorDataset(x, y), batch_size=16)


def _sequences():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, 2, generator=g)
    y = (x.sum(dim=(1, 2)) > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=16)


@pytest.mark.parametrize("model_cls, loader", [(UserCNN, _images), (UserGRU, _sequences)],
                         ids=["cnn", "gru"])
def test_user_models_go_through_recommend_and_apply_changes_them(model_cls, loader, storage_url):
    rec = recommend(model_cls, loader(), n_trials=5, epochs=1, seeds=2, top_k=1,
                    inits=["xavier_uniform", "orthogonal", "kaiming_normal"],
                    activations=["elu", "tanh", "gelu"], storage=storage_url)
    model = model_cls()
    before = [p.detach().clone() for p in model.parameters()]
    rec.apply(model)
    expected = type(rec.build(model_cls).get_submodule(_first_activation(model)))
    assert isinstance(model.get_submodule(_first_activation(model)), expected)
    assert expected.__name__.lower() in ("elu", "tanh", "gelu")
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert changed == (rec.config.init != "default"), rec.config  # the default may win


def _first_activation(model):
    kinds = (nn.ELU, nn.Tanh, nn.GELU, nn.ReLU)
    return next(name for name, m in model.named_modules() if isinstance(m, kinds))


def test_recommend_leaves_a_note_and_figures_for_optuna_dashboard(rec, storage_url):
    pytest.importorskip("optuna_dashboard", reason="optional extra: autoinit[dashboard]")
    study = optuna.load_study(study_name=rec.study_name, storage=storage_url)
    attrs = study._storage.get_study_system_attrs(study._study_id)
    note = "".join(v for k, v in sorted(attrs.items()) if k.startswith("dashboard:note_str"))
    assert rec.config.label in note
    assert any(k.startswith("dashboard:plot_data:autoinit-heatmap") for k in attrs)


@pytest.mark.parametrize("values, text", [
    ((1.0, 2.0), None),
    ((math.inf,), "diverged on its seed 1000 (exploding)"),
    ((math.inf, math.inf), "diverged on both seeds (exploding)"),
    ((math.inf,) * 3, "diverged on all 3 seeds (exploding)"),
    ((math.inf, 1.0, math.inf), "diverged on 2 of 3 seeds (exploding)"),
])  # fmt: skip
def test_the_divergence_text_counts_the_seeds(values, text):
    stops = tuple("exploding" if math.isinf(v) else None for v in values)
    ranked = Ranked(Config("default", "relu"), values, (None,) * len(values), stops,
                    tuple(range(1000, 1000 + len(values))))  # fmt: skip
    assert ranked.divergence() == text

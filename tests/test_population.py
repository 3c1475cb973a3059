"""Members trained as one batched model give what sequential ``train.run`` gives, member by member.

Tolerance: per-step losses and final validation losses within ``rtol=1e-4, atol=1e-5`` (batched
matrix products round differently from one matrix product; the drift seen is ~1e-7); the guard's
verdicts (kind, reason, step) must be identical.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from autoinit import Config, build
from autoinit.errors import ConfigError
from autoinit.population import (
    GuardLimits,
    MemberResult,
    _UnrolledRNN,
    can_batch,
    train_population,
    trial_reporter,
)
from autoinit.testing import tiny_mlp, toy_classification
from autoinit.train import Budget, fit, prepare_data, run

RTOL, ATOL = 1e-4, 1e-5


# --- models and data ------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    def __init__(self, activation=nn.ReLU):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), activation(), nn.Conv2d(4, 4, 3), activation()
        )
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


class SmallGRU(nn.Module):
    def __init__(self, activation=nn.ReLU):
        super().__init__()
        self.gru = nn.GRU(4, 8, batch_first=True)
        self.act = activation()
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        states, _ = self.gru(x)
        return self.head(self.act(states[:, -1]))


class WithBatchNorm(nn.Module):
    def __init__(self, activation=nn.ReLU):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), activation(),
                                 nn.Linear(16, 3))  # fmt: skip

    def forward(self, x):
        return self.net(x)


class Branching(nn.Module):
    """Data-dependent control flow: vmap refuses it."""

    def __init__(self, activation=nn.ReLU):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), activation(), nn.Linear(16, 3))

    def forward(self, x):
        out = self.net(x)
        return out if out.sum() > 0 else -out


class Refusing(nn.Module):
    autoinit_batchable = False

    def __init__(self, activation=nn.ReLU):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), activation(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


def _blobs(features: int = 8, n: int = 160):
    return toy_classification(n=n, features=features, classes=3)


@pytest.fixture
def mlp_data():
    return prepare_data(_blobs(), batch_size=32)


@pytest.fixture
def cnn_data():
    x, y = _blobs(64, 120)
    return prepare_data((x.view(-1, 1, 8, 8), y), batch_size=32)


@pytest.fixture
def gru_data():
    x, y = _blobs(20, 120)
    return prepare_data((x.view(-1, 5, 4), y), batch_size=32)


KAIMING_RELU = Config("kaiming_normal", "relu")
DEFAULT_LIMITS = GuardLimits()


def _members(model_fn, seeds=(0, 1, 2), config=KAIMING_RELU):
    return [build(model_fn, config, seed=s) for s in seeds]


def _sequential(models, data, budget, seeds, limits=DEFAULT_LIMITS):
    """Each member on its own through ``train.fit``, with the same limits."""
    return [
        fit(copy.deepcopy(model), data, budget, seed=seed, guard=limits.guard())
        for model, seed in zip(models, seeds)
    ]


def _assert_matches(batched: MemberResult, result, rtol: float = RTOL) -> None:
    assert batched.stop == result.stop
    assert batched.steps == result.steps
    assert len(batched.losses) == len(result.losses)
    torch.testing.assert_close(
        torch.tensor(batched.losses), torch.tensor(result.losses), rtol=rtol, atol=ATOL,
        equal_nan=True,
    )  # fmt: skip
    assert batched.grad_steps == result.grad_steps
    torch.testing.assert_close(
        torch.tensor(batched.grad_norms), torch.tensor(result.grad_norms), rtol=rtol, atol=ATOL,
        equal_nan=True,
    )  # fmt: skip
    if math.isnan(result.value):
        assert math.isnan(batched.value)
    else:
        assert batched.value == pytest.approx(result.value, rel=RTOL, abs=ATOL)
        assert batched.metric == pytest.approx(result.metric, abs=1e-6)
    assert batched.probe["layers"] == result.probe["layers"]


def _copies(models):
    return [copy.deepcopy(m) for m in models]


# --- equivalence ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_fn, data_name, engine",
    [
        (tiny_mlp(8, 3, depth=2, width=16), "mlp_data", "bmm"),
        (SmallCNN, "cnn_data", "vmap"),
        (SmallGRU, "gru_data", "vmap"),
        (WithBatchNorm, "mlp_data", "vmap"),  # vmap batches it: running statistics are stacked
    ],
    ids=["mlp", "cnn", "gru", "batchnorm"],
)
@pytest.mark.parametrize("own_orders", [False, True], ids=["shared-order", "own-order"])
def test_batched_training_matches_sequential_runs(model_fn, data_name, engine, own_orders, request):
    data = request.getfixturevalue(data_name)
    models = _members(model_fn)
    seeds = [0, 1, 2] if own_orders else [5, 5, 5]
    budget = Budget(epochs=2)
    expected = _sequential(models, data, budget, seeds)
    trained = _copies(models)
    results = train_population(trained, data, budget, seeds=seeds if own_orders else 5)
    assert [r.engine for r in results] == [engine] * 3
    for batched, sequential in zip(results, expected):
        _assert_matches(batched, sequential)
    # The members' modules hold their trained weights, as after train.run. (Outputs, not
    # weights, are compared: Adam turns the rounding noise in the zero gradient of a bias
    # before batch norm into steps of size lr, which the batch norm cancels.)
    reference = copy.deepcopy(models[0])
    run(reference, data, budget, seed=seeds[0])
    x = next(data.val_batches())[0]
    with torch.no_grad():
        torch.testing.assert_close(trained[0].eval()(x), reference.eval()(x), rtol=1e-3, atol=1e-3)


def test_forced_vmap_on_an_mlp_matches_too(mlp_data):
    models = _members(tiny_mlp(8, 3, depth=2, width=16))
    budget = Budget(epochs=1)
    results = train_population(_copies(models), mlp_data, budget, engine="vmap")
    assert {r.engine for r in results} == {"vmap"}
    for batched, sequential in zip(results, _sequential(models, mlp_data, budget, [0, 0, 0])):
        _assert_matches(batched, sequential)


@pytest.mark.parametrize("flat_targets", [False, True], ids=["targets-n1", "targets-n"])
@pytest.mark.parametrize("own_orders", [False, True], ids=["shared-order", "own-order"])
def test_regression_members_report_their_own_r2(regression_data, flat_targets, own_orders):
    x, y = regression_data
    data = prepare_data((x, y.flatten() if flat_targets else y), batch_size=32)
    model_fn = lambda activation: nn.Sequential(nn.Linear(8, 16), activation(), nn.Linear(16, 1))
    models = _members(model_fn)
    budget = Budget(epochs=3, lr=1e-2)
    seeds = [0, 1, 2] if own_orders else [0, 0, 0]
    results = train_population(_copies(models), data, budget, seeds=seeds)
    assert results[0].metric_name == "r2" and len({r.metric for r in results}) == 3
    for batched, sequential in zip(results, _sequential(models, data, budget, seeds)):
        _assert_matches(batched, sequential)


@pytest.mark.parametrize("own_orders", [False, True], ids=["shared-order", "own-order"])
def test_other_losses_run_under_vmap_and_match(blobs, own_orders):
    data = prepare_data(blobs, batch_size=32, loss_fn=nn.CrossEntropyLoss(label_smoothing=0.1))
    models = _members(tiny_mlp(8, 3, depth=2, width=16))
    seeds = [0, 1, 2] if own_orders else [0, 0, 0]
    budget = Budget(epochs=2)
    results = train_population(_copies(models), data, budget, seeds=seeds)
    for batched, sequential in zip(results, _sequential(models, data, budget, seeds)):
        _assert_matches(batched, sequential)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_each_optimizer_matches_per_member_optimizers(mlp_data, optimizer):
    models = _members(tiny_mlp(8, 3, depth=2, width=16))
    budget = Budget(epochs=2, optimizer=optimizer, lr=1e-2)
    results = train_population(_copies(models), mlp_data, budget, seeds=[0, 1, 2])
    for batched, sequential in zip(results, _sequential(models, mlp_data, budget, [0, 1, 2])):
        _assert_matches(batched, sequential)


def test_adam_state_is_per_member(mlp_data):
    """A member trains the same alone or beside a member with 1000x larger gradients."""
    models = _members(tiny_mlp(8, 3, depth=2, width=16), seeds=(0, 1))
    with torch.no_grad():
        models[1][-1].weight.mul_(1e3)  # huge gradients on every layer, below the guard's bound
    budget = Budget(epochs=2)
    off = None
    alone = train_population(_copies(models[:1]), mlp_data, budget, guard=off)[0]
    beside = train_population(_copies(models), mlp_data, budget, guard=off)
    assert beside[1].grad_norms[0] > 100 * beside[0].grad_norms[0]
    assert beside[0].losses == pytest.approx(alone.losses, rel=1e-6, abs=1e-7)
    assert beside[0].value == pytest.approx(alone.value, rel=1e-6)


def test_per_member_dataloader_data_trains_batched():
    class Pairs(Dataset):
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i], self.y[i]

    data = prepare_data(DataLoader(Pairs(*_blobs()), batch_size=32))
    assert not data.in_memory
    results = train_population(_members(tiny_mlp(8, 3, depth=2, width=16)), data,
                               Budget(epochs=1), seeds=[0, 1, 2])  # fmt: skip
    assert all(r.steps == data.steps_per_epoch and r.stop is None for r in results)
    assert all(0.0 <= r.metric <= 1.0 for r in results)


# --- stopping members -----------------------------------------------------------------------------


def test_exploding_member_is_dropped_and_the_others_still_match(mlp_data):
    models = _members(tiny_mlp(8, 3, depth=2, width=16), seeds=(0, 1, 2, 3))
    with torch.no_grad():
        for p in models[1].parameters():
            p.mul_(1e3)
    budget = Budget(epochs=2)
    seeds = [0, 1, 2, 3]
    results = train_population(_copies(models), mlp_data, budget, seeds=seeds)
    expected = _sequential(models, mlp_data, budget, seeds)
    assert results[1].kind == "exploding" and results[1].steps == 0
    assert results[1].reason.startswith("exploding")
    assert [r.kind for i, r in enumerate(results) if i != 1] == [None] * 3
    for batched, sequential in zip(results, expected):
        _assert_matches(batched, sequential)


def test_nan_member_is_stopped_as_non_finite(mlp_data):
    models = _members(tiny_mlp(8, 3, depth=2, width=16))
    with torch.no_grad():
        models[2][0].weight[0, 0] = math.nan
    budget = Budget(epochs=1)
    results = train_population(_copies(models), mlp_data, budget)
    assert results[2].kind == "non-finite"
    assert results[2].reason == "non-finite loss at step 0: nan"
    assert results[0].kind is None and results[1].kind is None
    for batched, sequential in zip(results, _sequential(models, mlp_data, budget, [0, 0, 0])):
        _assert_matches(batched, sequential)


def _scale_output_of_even_members(models, factor=20.0):
    with torch.no_grad():
        for model in models[::2]:
            model[-1].weight.mul_(factor)


def _scale_even_members(models, factor=3.0):
    with torch.no_grad():
        for model in models[::2]:
            for p in model.parameters():
                p.mul_(factor)


NO_BOUNDS = {"max_grad_norm": 1e9, "max_loss": math.inf, "growth_factor": math.inf}


@pytest.mark.parametrize(
    "limits, optimizer, lr, tweak, words",
    [
        (GuardLimits(vanish_floor=1e3), "adam", 1e-3, None, "vanishing gradient at step 4"),
        (GuardLimits(max_grad_norm=12.0), "adam", 0.1, None, "exploding gradient at step 1: norm"),
        (GuardLimits(**{**NO_BOUNDS, "max_loss": 100.0}, dense_steps=2, check_every=3), "sgd",
         1.0, None, "exploding loss at step 2"),  # between two gradient reads
        (GuardLimits(max_depth_ratio=8.0), "adam", 1e-3, _scale_output_of_even_members,
         "across depth"),
        (GuardLimits(**{**NO_BOUNDS, "growth_factor": 5.0}), "sgd", 1.0, None, "grew"),
        (GuardLimits(**{**NO_BOUNDS, "growth_factor": 10.0}, dense_steps=2, check_every=2),
         "sgd", 0.1, _scale_even_members, "exploding gradient at step 6: norm"),  # checks 4, 6
        (GuardLimits(**{**NO_BOUNDS, "max_grad_norm": 1e3}, dense_steps=2, check_every=3), "sgd",
         1.0, None, "exploding gradient at step 6"),  # read at 0, 1, 3, 6: not at 4
        (GuardLimits.off(), "sgd", 3.0, None, "non-finite gradient at step 5 (layer"),
    ],
    ids=["vanishing", "grad-norm", "loss-bound", "depth-ratio", "growth", "growth-spaced-out",
         "sparse-reads", "non-finite-gradient"],
)  # fmt: skip
def test_each_guard_rule_stops_the_same_members_with_the_same_words(
    mlp_data, limits, optimizer, lr, tweak, words
):
    models = _members(tiny_mlp(8, 3, depth=3, width=16), seeds=range(6))
    if tweak:
        tweak(models)
    budget = Budget(epochs=2, lr=lr, optimizer=optimizer)
    seeds = list(range(6))
    expected = _sequential(models, mlp_data, budget, seeds, limits)
    results = train_population(_copies(models), mlp_data, budget, seeds=seeds, guard=limits)
    assert any(r.stop and words in r.stop.reason for r in expected)  # the rule is exercised
    # The SGD cases blow up on purpose (losses of 1e3-1e6 at lr 1): the batched matmul adds in
    # another order, and such runs amplify that rounding to the 4th digit. The verdicts (kind,
    # step, words) must still be identical.
    rtol = 3e-3 if optimizer == "sgd" else RTOL
    for batched, sequential in zip(results, expected):
        _assert_matches(batched, sequential, rtol)


@pytest.mark.parametrize("engine", ["bmm", "vmap"])
def test_each_member_model_holds_its_own_trained_weights_afterwards(mlp_data, engine):
    """The stack writes each member's weights back into its model, in the model's own layout
    (the bmm engine holds Linear weights transposed: a square hidden layer would take the
    transposed matrix silently), equal to the same member trained alone."""
    models = _members(tiny_mlp(8, 3, depth=2, width=16), seeds=range(3))
    trained = _copies(models)
    train_population(trained, mlp_data, Budget(epochs=2), seeds=[0, 1, 2], engine=engine)
    for model, batched, seed in zip(models, trained, range(3)):
        alone = copy.deepcopy(model)
        fit(alone, mlp_data, Budget(epochs=2), seed=seed, guard=DEFAULT_LIMITS.guard())
        for (name, mine), theirs in zip(batched.named_parameters(), alone.parameters()):
            assert not torch.equal(mine, model.get_parameter(name)), name  # it trained
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_pruner_stops_only_its_member(mlp_data):
    models = _members(tiny_mlp(8, 3, depth=2, width=16))
    calls = []

    def on_eval(member, step, value, metric):
        calls.append((member, step))
        return member == 1

    budget = Budget(epochs=3)
    results = train_population(_copies(models), mlp_data, budget, seeds=[0, 1, 2],
                               on_eval=on_eval)  # fmt: skip
    per_epoch = mlp_data.steps_per_epoch
    assert results[1].kind == "pruner" and results[1].steps == per_epoch
    assert results[1].reason.startswith(f"pruned by the study's pruner at step {per_epoch}:")
    assert calls == [(m, per_epoch * e) for e in (1, 2, 3) for m in (0, 1, 2) if e == 1 or m != 1]
    expected = _sequential(models, mlp_data, budget, [0, 1, 2])
    for i in (0, 2):
        _assert_matches(results[i], expected[i])
    with pytest.raises(optuna.TrialPruned, match="pruned by the study's pruner"):
        results[1].raise_if_stopped()
    assert results[1].telemetry()["prune_kind"] == "pruner"


def test_trial_reporter_drives_optuna_pruners(mlp_data):
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    trials = [study.ask() for _ in range(2)]
    results = train_population(
        _members(tiny_mlp(8, 3, depth=2, width=16), seeds=(0, 1)),
        mlp_data,
        Budget(epochs=2),
        on_eval=trial_reporter(trials),
    )
    assert [r.kind for r in results] == ["pruner", "pruner"]
    assert all(t.storage.get_trial(t._trial_id).intermediate_values for t in trials)


def test_everyone_stopping_ends_the_run(mlp_data):
    results = train_population(
        _members(tiny_mlp(8, 3, depth=2, width=16)),
        mlp_data,
        Budget(epochs=3),
        guard=GuardLimits(max_grad_norm=1e-9),
    )
    assert [(r.kind, r.steps) for r in results] == [("exploding", 0)] * 3
    assert all(len(r.losses) == 1 for r in results)


def test_guard_stop_raises_what_run_raises(mlp_data):
    models = _members(tiny_mlp(8, 3, depth=2, width=16), seeds=(0,))
    result = train_population(models, mlp_data, Budget(epochs=1),
                              guard=GuardLimits(max_grad_norm=1e-9))[0]  # fmt: skip
    from autoinit import Diverged

    with pytest.raises(Diverged) as caught:
        result.raise_if_stopped()
    assert caught.value.kind == "exploding"
    assert result.telemetry()["prune_reason"] == result.reason


# --- fallback -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_fn, why",
    [(Branching, "data-dependent control flow"), (Refusing, "autoinit_batchable = False")],
)
def test_unbatchable_models_fall_back_with_one_warning_and_train(mlp_data, model_fn, why):
    models = _members(model_fn)
    ok, reason = can_batch(models, next(mlp_data.val_batches()), loss_fn=mlp_data.loss_fn)
    assert not ok and why in reason
    budget = Budget(epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = train_population(_copies(models), mlp_data, budget, seeds=[0, 1, 2])
    notes = [w for w in caught if "one after another" in str(w.message)]
    assert len(notes) == 1 and why in str(notes[0].message)
    assert [r.engine for r in results] == ["sequential"] * 3
    for batched, sequential in zip(results, _sequential(models, mlp_data, budget, [0, 1, 2])):
        _assert_matches(batched, sequential)


def test_sequential_fallback_reports_to_on_eval(mlp_data):
    results = train_population(
        _members(Branching), mlp_data, Budget(epochs=2), engine="sequential",
        on_eval=lambda member, step, value, metric: member == 0,
    )  # fmt: skip
    assert [r.kind for r in results] == ["pruner", None, None]


def test_members_of_different_shapes_cannot_batch(mlp_data):
    models = [build(tiny_mlp(8, 3, depth=2, width=w), Config("kaiming_normal", "relu"))
              for w in (16, 8)]  # fmt: skip
    ok, reason = can_batch(models, next(mlp_data.val_batches()))
    assert not ok and "member 1 differs" in reason
    with pytest.raises(ConfigError, match="cannot train these members"):
        train_population(models, mlp_data, Budget(epochs=1), engine="vmap")


MIXED = [Config("kaiming_normal", "relu"), Config("xavier_uniform", "tanh"),
         Config("orthogonal", "leaky_relu", 0.1), Config("default", "relu"),
         Config("lecun_normal", "selu")]  # fmt: skip


@pytest.mark.parametrize("side_by_side", [False, True], ids=["interleaved", "side-by-side"])
@pytest.mark.parametrize("own_orders", [False, True], ids=["shared-order", "own-order"])
def test_mlp_members_of_different_activations_batch_on_bmm_and_match(mlp_data, own_orders,
                                                                    side_by_side):  # fmt: skip
    """The confirmation's race trains configs of several activations as one bmm model, its
    members interleaved (rows gathered per activation) or side by side (slices of rows)."""
    configs = sorted(MIXED, key=lambda c: c.activation_key) if side_by_side else MIXED
    models = [build(tiny_mlp(8, 3, depth=3, width=16), c, seed=i) for i, c in enumerate(configs)]
    tanh = configs.index(MIXED[1])
    with torch.no_grad():  # the tanh member explodes at step 0 and leaves the group
        for p in models[tanh].parameters():
            p.mul_(1e3)
    seeds = [0, 1, 2, 3, 4] if own_orders else 7
    budget = Budget(epochs=2)
    assert can_batch(models, next(mlp_data.val_batches())[0]) == (True, "bmm")
    results = train_population(_copies(models), mlp_data, budget, seeds=seeds)
    assert [r.engine for r in results] == ["bmm"] * 5
    assert [r.kind for r in results] == [None if i != tanh else "exploding" for i in range(5)]
    per_member = seeds if own_orders else [7] * 5
    for batched, sequential in zip(results, _sequential(models, mlp_data, budget, per_member)):
        _assert_matches(batched, sequential)


def test_an_activation_position_slices_side_by_side_members_and_gathers_interleaved_ones():
    """The two ways of running several activations on the stacked rows give the same values
    and gradients; side by side (each activation one run of rows) takes slices."""
    from autoinit.population._stack import _Elementwise

    def outputs(kinds):
        layer = _Elementwise([kind() for kind in kinds])
        h = torch.randn(len(kinds), 5, 4, generator=torch.Generator().manual_seed(0))
        h.requires_grad_(True)
        out = layer(h, len(kinds))
        (out * torch.arange(out.numel()).reshape(out.shape)).sum().backward()
        return layer, out.detach(), h.grad

    side, out, grad = outputs([nn.ReLU, nn.ReLU, nn.Tanh, nn.SELU])
    assert [rows for _, rows in side.runs] == [[0, 1], [2], [3]]
    mixed, out_mixed, grad_mixed = outputs([nn.ReLU, nn.Tanh, nn.ReLU, nn.SELU])
    assert mixed.runs == []  # ReLU's rows 0 and 2 are not one run: gathered
    assert side.keep([0, 2, 3]).runs and not mixed.keep([0, 1, 2]).runs
    for row, (kind, row_mixed) in enumerate([(nn.ReLU, 0), (nn.ReLU, 2), (nn.Tanh, 1),
                                              (nn.SELU, 3)]):  # fmt: skip
        h = torch.randn(4, 5, 4, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out[row], kind()(h[row]))
        assert torch.equal(out_mixed[row_mixed], kind()(h[row_mixed]))
        assert torch.isfinite(grad[row]).all() and torch.isfinite(grad_mixed[row_mixed]).all()
    weights = torch.arange(out.numel()).reshape(out.shape).float()
    h = torch.randn(4, 5, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    (nn.Tanh()(h[2]) * weights[2]).sum().backward()
    assert torch.allclose(grad[2], h.grad[2])


def test_members_with_different_activations_cannot_batch_outside_bmm(mlp_data, cnn_data):
    cnns = [build(SmallCNN, Config("kaiming_normal", act)) for act in ("relu", "tanh")]
    ok, reason = can_batch(cnns, next(cnn_data.val_batches())[0])
    assert not ok and "Tanh()" in reason and "ReLU()" in reason
    def plain(activation):
        return nn.Sequential(*tiny_mlp(8, 3, depth=2, width=16)(activation=activation))

    def trailing(activation):  # one activation more at the end: not the same layers
        return nn.Sequential(*plain(activation), activation())

    longer = [build(plain, KAIMING_RELU), build(trailing, KAIMING_RELU)]
    ok, reason = can_batch(longer, next(mlp_data.val_batches())[0])
    assert not ok and "member 1 differs" in reason


class SeedScaled(nn.Module):
    """A Python number set from the seed at construction: vmap would run member 0's alone."""

    def __init__(self, activation=nn.ReLU):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), activation(), nn.Linear(16, 3))
        self.scale = 1.0 + torch.initial_seed() % 7  # build() seeds torch with the run's seed
        self.same_everywhere = {"a": 1}

    def forward(self, x):
        return self.net(x) * self.scale


def test_members_that_differ_in_a_plain_attribute_train_one_by_one(mlp_data):
    models = [build(SeedScaled, KAIMING_RELU, seed=seed) for seed in (1, 2)]
    assert [m.scale for m in models] == [2.0, 3.0]
    ok, reason = can_batch(models, next(mlp_data.val_batches())[0])
    assert not ok and reason == ("member 1 differs from member 0 in 'scale', which is not a "
                                 "parameter or buffer")  # fmt: skip
    budget = Budget(max_steps=5)
    with pytest.warns(UserWarning, match="train one after another"):
        results = train_population(models, mlp_data, budget, seeds=[1, 2])
    alone = [fit(build(SeedScaled, KAIMING_RELU, seed=seed), mlp_data, budget, seed=seed)
             for seed in (1, 2)]  # fmt: skip
    assert [r.value for r in results] == pytest.approx([r.value for r in alone], rel=1e-5)
    same = [build(SeedScaled, KAIMING_RELU, seed=seed) for seed in (1, 8)]  # 8 % 7 == 1 % 7
    assert can_batch(same, next(mlp_data.val_batches())[0]) == (True, "vmap")


def test_can_batch_names_the_engine(mlp_data, cnn_data):
    x = next(mlp_data.val_batches())[0]
    assert can_batch(_members(tiny_mlp(8, 3, depth=2, width=16)), x) == (True, "bmm")
    assert can_batch(_members(WithBatchNorm), x) == (True, "vmap")
    assert can_batch(_members(SmallCNN), next(cnn_data.val_batches())[0]) == (True, "vmap")


def test_bad_options_are_refused_with_the_value(mlp_data):
    models = _members(tiny_mlp(8, 3, depth=2, width=16))
    with pytest.raises(ConfigError, match="'fast'"):
        train_population(models, mlp_data, Budget(epochs=1), engine="fast")
    with pytest.raises(ConfigError, match="got 2 seeds"):
        train_population(models, mlp_data, Budget(epochs=1), seeds=[0, 1])
    with pytest.raises(ConfigError, match="max_grad_norm must be greater than 0 but got -1"):
        GuardLimits(max_grad_norm=-1)
    assert train_population([], mlp_data, Budget(epochs=1)) == []


# --- recurrent layers unrolled for vmap -----------------------------------------------------------


@pytest.mark.parametrize("cls, options", [
    (nn.GRU, {}), (nn.LSTM, {}), (nn.RNN, {"nonlinearity": "relu"}),
    (nn.GRU, {"num_layers": 2, "bidirectional": True}),
    (nn.LSTM, {"num_layers": 2, "bidirectional": True, "batch_first": True}),
    (nn.RNN, {"bias": False}),
])  # fmt: skip
def test_unrolled_rnn_matches_pytorchs(cls, options):
    torch.manual_seed(0)
    rnn = cls(4, 6, **options)
    x = torch.randn(3, 5, 4)
    unrolled = _UnrolledRNN(rnn)
    expected, expected_state = rnn(x)
    output, state = unrolled(x)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    states = (s if isinstance(s, tuple) else (s,) for s in (state, expected_state))
    for mine, theirs in zip(*states):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


# --- the guard option ---------------------------------------------------------------------------


def test_guard_options_map_onto_limits():
    from autoinit.monitor import GradNormBound, LossBound, NonFinite, Rule, Vanishing, default_rules

    assert GuardLimits.from_option(True) == GuardLimits()
    assert GuardLimits.from_option(False) == GuardLimits.from_option(None) == GuardLimits.off()
    assert GuardLimits.from_option({"max_grad_norm": 10.0}) == GuardLimits(max_grad_norm=10.0)
    assert GuardLimits.from_option(default_rules(vanish_patience=2)) == GuardLimits(
        vanish_patience=2
    )
    only = GuardLimits.from_option([NonFinite(), LossBound(classes=3), Vanishing(2, floor=0.1)])
    assert only.max_loss == pytest.approx(100 * math.log(3)) and only.vanish_patience == 2
    assert only.max_grad_norm == math.inf and only.max_depth_ratio == math.inf

    class Custom(Rule):
        def check(self, stats):
            return None

    assert GuardLimits.from_option([NonFinite(), Custom()]) is None
    assert GuardLimits.from_option([GradNormBound(), NonFinite()]) is None  # another order
    assert GuardLimits.from_option([GradNormBound()]) is None  # NaN would not stop sequentially
    assert GuardLimits.from_option({"rules": []}) is None
    assert GuardLimits.from_option(
        {"rules": [NonFinite(), GradNormBound(7.0)], "check_every": 5}
    ) == dataclasses.replace(GuardLimits.off(), max_grad_norm=7.0, check_every=5)
    with pytest.raises(ConfigError, match="but got 'yes'"):
        GuardLimits.from_option("yes")


def test_rules_that_cannot_batch_train_one_by_one(mlp_data):
    from autoinit.monitor import NonFinite, Rule, Stop

    class StopAtStep2(Rule):
        reads_gradients = False

        def check(self, stats):
            return Stop("exploding", "custom at step 2") if stats.step == 2 else None

    with pytest.warns(UserWarning, match="rules cannot be judged in batch"):
        results = train_population(
            _members(tiny_mlp(8, 3, depth=2, width=16)),
            mlp_data,
            Budget(epochs=1),
            guard=[NonFinite(), StopAtStep2()],
        )
    assert [(r.engine, r.steps, r.reason) for r in results] == [
        ("sequential", 2, "custom at step 2")
    ] * 3

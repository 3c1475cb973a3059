"""The short training run: data preparation, task inference, budgets, evaluation, telemetry."""

import json
import math
import warnings

import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from autoinit import Config, build, search
from autoinit.errors import ConfigError, DataError
from autoinit.train import Budget, fit, infer_task, prepare_data, run


def test_in_memory_data_is_split_deterministically(blobs):
    first = prepare_data(blobs, seed=3)
    second = prepare_data(blobs, seed=3)
    assert first.in_memory
    assert len(first.val[0]) == 48 and len(first.train[0]) == 192
    assert torch.equal(first.val[0], second.val[0])
    assert not torch.equal(first.val[0], prepare_data(blobs, seed=4).val[0])


@pytest.mark.parametrize(
    "wrap",
    [lambda d: d, lambda d: TensorDataset(*d), lambda d: DataLoader(TensorDataset(*d), 32)],
    ids=["tuple", "tensordataset", "dataloader"],
)
def test_tensor_backed_inputs_take_the_fast_path(blobs, wrap):
    data = prepare_data(wrap(blobs))
    assert data.in_memory
    assert data.task == "classification"


def test_dataloader_batch_size_is_kept(blobs):
    assert prepare_data(DataLoader(TensorDataset(*blobs), batch_size=17)).batch_size == 17


class PairDataset(Dataset):
    """A map-style dataset that is not a TensorDataset: goes through the DataLoader path."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_generic_datasets_are_iterated_and_split(blobs, small_mlp):
    data = prepare_data(DataLoader(PairDataset(*blobs), batch_size=32))
    assert not data.in_memory
    assert len(data.val_loader.dataset) == 48
    result = run(build(small_mlp, Config("kaiming_normal", "relu")), data, Budget(epochs=2))
    assert result.steps == 2 * data.steps_per_epoch
    assert 0.0 <= result.metric <= 1.0


@pytest.mark.parametrize(
    "targets, task",
    [(torch.tensor([0, 1, 2]), "classification"), (torch.tensor([True, False]), "classification"),
     (torch.tensor([0.5, 1.5]), "regression")],
)
def test_task_is_inferred_from_target_dtype(targets, task):
    assert infer_task(targets) == task


def test_regression_uses_mse_and_reports_r2(regression_data):
    data = prepare_data(regression_data)
    model_fn = lambda activation: nn.Sequential(nn.Linear(8, 32), activation(), nn.Linear(32, 1))
    model = build(model_fn, Config("kaiming_normal", "relu"))
    result = run(model, data, Budget(epochs=30, lr=1e-2))
    assert isinstance(data.loss_fn, nn.MSELoss)
    assert result.metric_name == "r2"
    assert 0.5 < result.metric <= 1.0


def test_regression_targets_of_shape_n_accept_outputs_of_shape_n_by_1(regression_data):
    x, y = regression_data
    data = prepare_data((x, y.squeeze(1)))
    model = build(lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)),
                  Config("kaiming_normal", "relu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # MSELoss warns when shapes broadcast
        result = run(model, data, Budget(epochs=2))
    assert math.isfinite(result.value)


def test_max_steps_budget_stops_mid_epoch(blobs, small_mlp):
    data = prepare_data(blobs, batch_size=16)
    result = run(build(small_mlp, Config("xavier_uniform", "tanh")), data,
                 Budget(epochs=None, max_steps=5))
    assert result.steps == 5
    assert math.isfinite(result.value)


def test_time_limit_budget_stops_without_pruning(blobs, small_mlp):
    data = prepare_data(blobs)
    result = run(build(small_mlp, Config("xavier_uniform", "tanh")), data,
                 Budget(epochs=None, time_limit=0.05))
    assert result.steps >= 1
    assert math.isfinite(result.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"epochs": None}, "unbounded"), ({"epochs": 0}, "epochs"),
     ({"optimizer": "adagrad"}, "adagrad"), ({"lr": -1.0}, "lr"),
     ({"batch_size": 0}, "batch_size")],
)
def test_bad_budgets_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Budget(**kwargs)


def test_run_reports_each_epoch_to_the_trial(blobs, small_mlp):
    data = prepare_data(blobs)
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    run(build(small_mlp, Config("kaiming_normal", "relu")), data, Budget(epochs=3), trial=trial)
    steps = sorted(study.trials[0].intermediate_values)
    assert steps == [data.steps_per_epoch * (i + 1) for i in range(3)]


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_pruned_run_keeps_its_partial_telemetry(blobs, small_mlp):
    data = prepare_data(blobs)
    trial = optuna.create_study(pruner=AlwaysPrune()).ask()
    result = fit(build(small_mlp, Config("kaiming_normal", "relu")), data, Budget(epochs=3),
                 trial=trial)
    assert result.stop.kind == "pruner"
    assert result.stop.reason.startswith(f"pruned by the study's pruner at step {result.steps}")
    assert result.steps == data.steps_per_epoch
    attrs = result.telemetry()
    assert len(attrs["loss_curve"]) == data.steps_per_epoch
    assert attrs["prune_kind"] == "pruner" and attrs["prune_reason"] == result.stop.reason


def test_run_raises_the_stop_and_nothing_rides_on_it(blobs, small_mlp):
    data = prepare_data(blobs)
    trial = optuna.create_study(pruner=AlwaysPrune()).ask()
    with pytest.raises(optuna.TrialPruned) as caught:
        run(build(small_mlp, Config("kaiming_normal", "relu")), data, Budget(epochs=3), trial=trial)
    assert type(caught.value) is optuna.TrialPruned  # the pruner's stop is not a Diverged
    assert str(caught.value).startswith("pruned by the study's pruner at step 3")
    assert not hasattr(caught.value, "partial")


def test_a_stopped_trial_stores_its_partial_telemetry(blobs, small_mlp, storage_url):
    study = search(small_mlp, blobs, n_trials=1, epochs=3, storage=storage_url,
                   pruner=AlwaysPrune())
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    attrs = trial.user_attrs
    assert attrs["steps"] == 3 and len(attrs["loss_curve"]) == 3 and attrs["probe"]["layers"]
    assert attrs["prune_kind"] == "pruner"
    assert attrs["prune_reason"].startswith("pruned by the study's pruner at step 3")


def test_a_run_stopped_before_its_first_step_stores_only_its_step_count():
    from autoinit.monitor import Stop
    from autoinit.train import RunResult

    stop = Stop("symmetric", "symmetric weights at step 0")
    attrs = RunResult.unstarted("accuracy", stop).telemetry()
    assert attrs == {"steps": 0, "prune_kind": "symmetric", "prune_reason": stop.reason}


def test_a_zero_init_trial_is_stopped_as_symmetric_only(blobs, storage_url):
    from autoinit.testing import tiny_mlp

    study = search(tiny_mlp(8, 3, depth=4, width=16), blobs, n_trials=1, epochs=2,
                   storage=storage_url, inits=["zeros"], activations=["tanh"])
    attrs = study.trials[0].user_attrs
    assert attrs["prune_kind"] == "symmetric" and attrs["steps"] == 0
    assert "loss_curve" not in attrs


def test_telemetry_is_downsampled_and_json_safe(blobs, small_mlp):
    data = prepare_data(blobs, batch_size=2)
    result = run(build(small_mlp, Config("kaiming_normal", "relu")), data, Budget(epochs=2))
    result.losses[0] = float("inf")  # the first and last points are always kept
    attrs = result.telemetry()
    assert len(attrs["loss_curve"]) == 100 and attrs["curve_steps"][-1] == result.grad_steps[-1]
    assert result.grad_steps[-1] >= result.steps - 25  # checked every 25 steps after the first 100
    assert attrs["loss_curve"][0] is None
    json.dumps(attrs, allow_nan=False)
    assert attrs["metric_name"] == "accuracy"
    assert attrs["probe"]["layers"]


def test_mismatched_lengths_and_bad_batches_are_data_errors(blobs):
    x, y = blobs
    with pytest.raises(DataError, match="differ in length"):
        prepare_data((x, y[:-1]))

    class Triples(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.zeros(2), 0, 0

    with pytest.raises(DataError, match=r"\(inputs, targets\) pair"):
        prepare_data(DataLoader(Triples(), batch_size=4))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_the_optimizer_is_fused_where_pytorch_has_a_kernel_and_plain_where_not(name):
    """Fused on real parameters (the default's per-tensor Python loop made a CPU step 1.7x
    slower); complex parameters, which the fused kernel refuses at the first step, get the plain
    one, and both take the step."""
    from autoinit.train import make_optimizer

    budget = Budget(epochs=1, optimizer=name, lr=0.1)
    for dtype in (torch.float32, torch.complex64):
        weight = nn.Parameter(torch.ones(3, dtype=dtype))
        optimizer = make_optimizer(budget, iter([weight]))  # any iterable, as model.parameters()
        assert bool(optimizer.defaults.get("fused")) == (dtype == torch.float32)
        weight.grad = torch.ones(3, dtype=dtype)
        optimizer.step()
        assert torch.all(weight.detach().real < 1)


def test_fit_trains_with_the_fused_optimizer_the_same_run_up_to_rounding(blobs, small_mlp):
    """The fused update is Adam's: a short run matches the plain optimizer's up to rounding."""
    from unittest import mock

    from autoinit import train

    data = prepare_data(blobs, batch_size=16)
    budget = Budget(epochs=2)
    fused = fit(build(small_mlp, Config("xavier_uniform", "tanh")), data, budget, seed=0)
    plain_adam = lambda params, lr, **_: torch.optim.Adam(params, lr=lr)  # noqa: E731
    with mock.patch.dict(train.OPTIMIZERS, {"adam": plain_adam}):
        plain = fit(build(small_mlp, Config("xavier_uniform", "tanh")), data, budget, seed=0)
    assert fused.steps == plain.steps and fused.value == pytest.approx(plain.value, rel=1e-4)

"""The divergence guard: each rule fires on its failure mode and stays quiet on healthy runs."""

import math

import optuna
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from autoinit import Config, Diverged, DivergenceGuard, build
from autoinit.models import mlp_factory
from autoinit.monitor import SignalProbe, check_symmetry
from autoinit.train import Budget, prepare_data, run


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return prepare_data((torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)))


def train(config, data, *, depth=20, optimizer="adam", lr=1e-3, epochs=1, guard=None):
    model = build(mlp_factory(64, 10, depth=depth), config, seed=0)
    guard = guard or DivergenceGuard()
    check_symmetry(model)
    return run(model, data, Budget(epochs=epochs, optimizer=optimizer, lr=lr), guard=guard), guard


def test_normal_init_on_deep_relu_is_pruned_at_step_0_by_the_absolute_bound(digits):
    with pytest.raises(Diverged) as caught:
        train(Config("normal", "relu"), digits)
    assert caught.value.kind == "exploding"
    assert "step 0" in caught.value.reason and "worst layer" in caught.value.reason


def test_the_absolute_bound_is_needed_because_adam_never_goes_nan(digits):
    # Without the absolute bounds, N(0,1) weights on 20 ReLU layers train "fine" under Adam:
    # the norm is astronomically large from step 0 but never grows 1000x nor turns NaN.
    lenient = DivergenceGuard(max_grad_norm=math.inf, max_loss=math.inf)
    result, guard = train(Config("normal", "relu"), digits, guard=lenient)
    assert guard.grad_norms[0] > 1e10
    assert result.steps == digits.steps_per_epoch


def test_relative_rule_catches_a_too_large_sgd_learning_rate(regression_data):
    data = prepare_data(regression_data)
    model = build(mlp_factory(8, 1, depth=4, width=32), Config("kaiming_normal", "relu"))
    guard = DivergenceGuard(max_grad_norm=math.inf)
    with pytest.raises(Diverged) as caught:
        run(model, data, Budget(epochs=5, optimizer="sgd", lr=2.0), guard=guard)
    assert caught.value.kind in ("exploding", "non-finite")
    assert guard.step <= 10


def test_loss_bound_catches_a_too_large_sgd_learning_rate_on_classification(digits):
    with pytest.raises(Diverged) as caught:
        train(Config("kaiming_normal", "relu"), digits, depth=8, optimizer="sgd", lr=3.0)
    assert caught.value.kind == "exploding"
    assert "step 3" in caught.value.reason or "step 2" in caught.value.reason


@pytest.mark.parametrize("depth", [8, 20])
def test_kaiming_with_adam_is_never_flagged(digits, depth):
    result, guard = train(Config("kaiming_normal", "relu"), digits, depth=depth, epochs=3)
    assert result.steps == 3 * digits.steps_per_epoch
    assert math.isfinite(result.value)


def test_deep_sigmoid_is_pruned_as_vanishing(digits):
    with pytest.raises(Diverged) as caught:
        train(Config("xavier_uniform", "sigmoid"), digits)
    assert caught.value.kind == "vanishing"
    assert "first layer" in caught.value.reason


def test_zero_init_is_pruned_as_symmetric_before_training():
    model = build(mlp_factory(64, 10, depth=4), Config("zeros", "relu"))
    with pytest.raises(Diverged) as caught:
        check_symmetry(model)
    assert caught.value.kind == "symmetric"
    assert "0.weight" in caught.value.reason


def test_symmetry_check_passes_healthy_models():
    check_symmetry(build(mlp_factory(64, 10, depth=4), Config("kaiming_normal", "relu")))
    check_symmetry(nn.Sequential(nn.Linear(4, 1)))  # a single output unit is not symmetry


def test_non_finite_loss_is_pruned_immediately():
    guard = DivergenceGuard()
    layer = nn.Linear(2, 2)
    layer(torch.ones(1, 2)).sum().backward()
    with pytest.raises(Diverged) as caught:
        guard.check(torch.tensor(float("nan")), layer.named_parameters())
    assert caught.value.kind == "non-finite" and "step 0" in caught.value.reason


def test_non_finite_gradient_names_the_layer():
    guard = DivergenceGuard()
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model(torch.ones(1, 2)).sum().backward()
    model[1].weight.grad[0, 0] = float("inf")
    with pytest.raises(Diverged) as caught:
        guard.check(torch.tensor(1.0), model.named_parameters())
    assert "1.weight" in caught.value.reason


def test_guard_stores_the_reason_on_the_trial_when_it_fires():
    study = optuna.create_study()
    trial = study.ask()
    guard = DivergenceGuard(max_grad_norm=1e-9, trial=trial)
    layer = nn.Linear(2, 2)
    layer(torch.ones(1, 2)).sum().backward()
    with pytest.raises(optuna.TrialPruned):
        guard.check(torch.tensor(1.0), layer.named_parameters())
    stored = study.trials[0].user_attrs
    assert stored["prune_kind"] == "exploding"
    assert stored["prune_reason"].startswith("exploding gradient at step 0")


@pytest.mark.parametrize(
    "options", [{"max_grad_norm": 0}, {"growth_factor": 1.0}, {"vanish_patience": 0}]
)
def test_bad_options_are_refused_with_the_value(options):
    with pytest.raises(ValueError, match="but got"):
        DivergenceGuard(**options)


def test_signal_probe_records_each_layer_once():
    model = build(mlp_factory(8, 2, depth=3, width=16), Config("kaiming_normal", "relu"))
    probe = SignalProbe(model)
    model(torch.randn(32, 8))
    record = probe.remove()
    model(torch.randn(32, 8))  # hooks are gone: nothing more is recorded
    assert record["layers"] == ["0", "2", "4", "6"]
    assert all(s is not None and s > 0 for s in record["output_std"])


def test_saturated_tanh_with_unscaled_weights_is_pruned_across_depth(digits):
    # Trains at chance without tripping any bound: its gradients grow 1000x+ from output to input.
    with pytest.raises(Diverged) as caught:
        train(Config("uniform", "tanh"), digits, guard=DivergenceGuard(max_loss=math.inf))
    assert caught.value.kind == "exploding"
    assert "across depth at step 0" in caught.value.reason


def test_gradients_are_checked_densely_then_every_few_steps():
    guard = DivergenceGuard(dense_steps=2, check_every=5)
    layer = nn.Linear(2, 2)
    for _ in range(12):
        layer.zero_grad()
        layer(torch.ones(1, 2)).sum().backward()
        guard.check(torch.tensor(1.0), layer.named_parameters())
    assert guard.grad_steps == [0, 1, 5, 10]
    assert len(guard.losses) == 12 and len(guard.grad_norms) == 4


def test_guard_off_options_never_fire(digits):
    from autoinit.search import GUARD_OFF

    result, _ = train(Config("normal", "relu"), digits, guard=DivergenceGuard(**GUARD_OFF))
    assert result.steps == digits.steps_per_epoch

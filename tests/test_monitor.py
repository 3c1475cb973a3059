"""The divergence guard: each rule fires on its failure mode and stays quiet on healthy runs."""

import math

import optuna
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from autoinit import Config, Diverged, DivergenceGuard, build, search
from autoinit.models import mlp_factory
from autoinit.monitor import (
    DepthRatio,
    FirstLayerFloor,
    GradNormBound,
    GradStats,
    Growth,
    LossBound,
    NonFinite,
    Patient,
    Rule,
    SignalProbe,
    StepStats,
    Stop,
    Vanishing,
    check_symmetry,
    default_rules,
)
from autoinit.testing import toy_classification
from autoinit.train import Budget, fit, prepare_data, run


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
    # lr 0.3: the norm grows 8 -> 1e11 in 3 steps, before anything turns non-finite (at lr 2
    # the norm is inf by step 2, inside the reference window, and NonFinite fires instead).
    data = prepare_data(regression_data)
    model = build(mlp_factory(8, 1, depth=4, width=32), Config("kaiming_normal", "relu"))
    guard = DivergenceGuard(max_grad_norm=math.inf)
    with pytest.raises(Diverged) as caught:
        run(model, data, Budget(epochs=5, optimizer="sgd", lr=0.3), guard=guard)
    assert caught.value.kind == "exploding"
    assert "grew" in caught.value.reason and "over the first 3 steps" in caught.value.reason
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


def test_guard_off_means_only_non_finite(digits):
    guard = DivergenceGuard.from_option(False)
    assert [type(rule) for rule in guard.rules] == [NonFinite]
    result, _ = train(Config("normal", "relu"), digits, guard=guard)  # 1e16 norms: not stopped
    assert result.steps == digits.steps_per_epoch


def test_search_guard_options_make_fresh_guards():
    assert [type(r) for r in DivergenceGuard.from_option(True).rules] == [
        NonFinite, LossBound, GradNormBound, DepthRatio, Growth, Vanishing
    ]
    options = DivergenceGuard.from_option({"max_grad_norm": 5.0, "check_every": 3})
    assert options.rules[2].max_norm == 5.0 and options.check_every == 3
    rules = [Growth(10.0)]
    fresh = DivergenceGuard.from_option(rules)
    assert type(fresh.rules[0]) is Growth and fresh.rules[0] is not rules[0]  # state per trial
    with pytest.raises(ValueError, match="guard must be"):
        DivergenceGuard.from_option("off")
    with pytest.raises(ValueError, match="but got 0"):
        DivergenceGuard.from_option({"vanish_patience": 0})


# --- each rule alone, on synthetic statistics (no net, so no other rule can fire first) ---------


def grads(total=1.0, first=1.0, last=1.0, first_rms=None, last_rms=None):
    return GradStats(total, first, last, first if first_rms is None else first_rms,
                     last if last_rms is None else last_rms, "0.weight", "4.weight")


def stats(step, loss=1.0, first_loss=1.0, **grad_options):
    return StepStats(step, loss, first_loss, grads(**grad_options),
                     layers=[("0.weight", 1.0), ("4.weight", 2.0)])


def run_rule(rule, records):
    """Feed the records in order; return the first Stop (and its index), else (None, None)."""
    rule.start()
    for index, record in enumerate(records):
        stop = rule.check(record)
        if stop is not None:
            return stop, index
    return None, None


def test_growth_fires_on_a_1e4_spike_while_the_loss_rises():
    records = [stats(0, total=1.0), stats(1, total=1.0), stats(2, total=1.0),
               stats(3, loss=5.0, total=1e4)]  # fmt: skip
    stop, index = run_rule(Growth(), records)
    assert index == 3 and stop.kind == "exploding"
    assert "grew 1e+04x over the first 3 steps" in stop.reason
    assert "worst layer 4.weight" in stop.reason


def test_growth_spares_the_same_spike_while_the_loss_falls():
    records = [stats(0, total=1.0), stats(1, total=1.0), stats(2, total=1.0),
               stats(3, loss=0.5, total=1e4)]  # fmt: skip
    assert run_rule(Growth(), records) == (None, None)


def test_growth_takes_the_largest_early_norm_as_reference():
    records = [stats(0, total=1.0), stats(1, total=50.0), stats(2, total=1.0),
               stats(3, loss=5.0, total=1e4)]  # 1e4 is only 200x the 50 of step 1
    assert run_rule(Growth(), records) == (None, None)
    assert run_rule(Growth(100.0), records)[1] == 3


def test_growth_through_the_guard_names_the_growth_rule():
    guard = DivergenceGuard()

    class Feed:  # the guard reads gradients from parameters: give it a layer with set grads
        def __init__(self):
            self.layer = nn.Linear(2, 2)

        def with_grad(self, value):
            for p in self.layer.parameters():
                p.grad = torch.full_like(p, value)
            return self.layer.named_parameters()

    feed = Feed()
    for loss, grad in [(1.0, 1e-2), (1.0, 1e-2), (1.0, 1e-2), (2.0, 1e2)]:
        stop = guard.observe(loss, feed.with_grad(grad))
    assert stop is not None and stop.kind == "exploding" and "grew" in stop.reason
    assert guard.stopped == stop


def test_vanishing_needs_patience_consecutive_checks():
    stop, index = run_rule(Vanishing(3), [stats(s, first=1e-10) for s in range(5)])
    assert index == 2 and stop.kind == "vanishing"
    assert stop.reason.startswith("vanishing gradient at step 2: first layer (0.weight)")
    assert stop.reason.endswith("for 3 checks")


def test_vanishing_counter_resets_after_a_healthy_check():
    patience = 4
    records = [
        *(stats(s, first=1e-10) for s in range(patience - 1)),
        stats(patience - 1, first=1.0),
        *(stats(patience + s, first=1e-10) for s in range(patience - 1)),
    ]
    assert run_rule(Vanishing(patience), records) == (None, None)
    # the same records without the healthy one fire: the reset is what spares them
    assert run_rule(Vanishing(patience), records[:3] + records[4:])[1] == patience - 1


def test_patient_wraps_any_rule_and_start_forgets_the_count():
    rule = Patient(GradNormBound(10.0), patience=2)
    high = stats(0, total=100.0)
    assert rule.check(high) is None
    rule.start()
    assert rule.check(high) is None  # the count restarted
    stop = rule.check(high)
    assert stop.kind == "exploding" and stop.reason.endswith("for 2 checks")
    assert rule.reads_gradients


def test_non_finite_rule_reads_loss_every_step_and_gradients_when_read():
    rule = NonFinite()
    assert not rule.reads_gradients
    assert rule.check(StepStats(7, math.inf)).reason == "non-finite loss at step 7: inf"
    assert rule.check(StepStats(7, 1.0)) is None  # no gradients read: nothing else to judge
    record = StepStats(7, 1.0, 1.0, grads(total=math.nan),
                       layers=[("0.weight", 1.0), ("2.weight", math.nan), ("4.weight", 9.0)])
    stop = rule.check(record)
    assert stop == Stop("non-finite", "non-finite gradient at step 7 (layer 2.weight)")


def test_grad_norm_bound_alone():
    assert GradNormBound(1e5).check(stats(0, total=1e4)) is None
    stop = GradNormBound(1e5).check(stats(4, total=1e6))
    assert stop.kind == "exploding"
    assert stop.reason == "exploding gradient at step 4: norm 1e+06 > 1e+05 (worst layer 4.weight)"
    assert GradNormBound(1e5).check(StepStats(4, 1.0)) is None  # gradients not read


def test_loss_bound_is_told_the_number_of_classes():
    rule = LossBound()
    assert rule.check(StepStats(0, 1e9)) is None  # no classes and no max_loss: no bound
    rule.start(classes=10)
    assert rule.bound == pytest.approx(100 * math.log(10))
    assert rule.check(StepStats(3, 200.0)) is None
    stop = rule.check(StepStats(3, 300.0, layers=[("0.weight", 1.0)]))
    assert stop.kind == "exploding"
    assert stop.reason.startswith("exploding loss at step 3: 300 > 230")
    assert "worst layer 0.weight" in stop.reason
    assert LossBound(classes=2).bound == LossBound(classes=1).bound == pytest.approx(
        100 * math.log(2))
    fixed = LossBound(5.0)
    fixed.start(classes=10)  # an explicit bound wins
    assert fixed.bound == 5.0
    assert fixed.reads_gradients is False


def test_loss_bound_for_classification_comes_from_the_run(digits):
    guard = DivergenceGuard([LossBound()])
    train(Config("kaiming_normal", "relu"), digits, depth=2, guard=guard)
    assert guard.rules[0].bound == pytest.approx(100 * math.log(10))


def test_depth_ratio_judges_step_0_only():
    record = dict(first=1.0, last=1.0, first_rms=1.0, last_rms=1e-4)
    stop = DepthRatio().check(stats(0, **record))
    assert stop.kind == "exploding"
    assert stop.reason.startswith("exploding gradient across depth at step 0: the first layer's "
                                  "(0.weight) gradients are 1e+04x")
    assert DepthRatio().check(stats(1, **record)) is None
    assert DepthRatio().check(stats(0, first_rms=1.0, last_rms=1e-2)) is None
    assert DepthRatio().check(stats(0, last=0.0)) is None  # a dead output layer: no ratio


def test_first_layer_floor_alone_fires_at_once():
    stop = FirstLayerFloor(1e-8).check(stats(0, first=1e-9))
    assert stop.kind == "vanishing" and "< 1e-08" in stop.reason
    assert FirstLayerFloor(1e-8).check(stats(0, first=1e-7)) is None


def test_rules_judge_a_probe_record_built_from_numbers():
    # A step-0 probe of a 20-layer ReLU net with N(0, 1) weights, as plain numbers.
    probe = StepStats(0, 2.4, 2.4, GradStats(1e16, 1e15, 1e2, 1e13, 1.0, "0.weight", "38.weight"))
    verdicts = [rule.check(probe) for rule in default_rules()]
    assert [v.kind if v else None for v in verdicts] == [
        None, None, "exploding", "exploding", None, None
    ]
    assert "worst layer ?" in verdicts[2].reason  # per-layer norms not given


class StopAt(Rule):
    """A user's rule, asked every step: stops at a given step."""

    reads_gradients = False

    def __init__(self, step):
        self.step = step
        self.seen = []

    def start(self, *, classes=None):
        self.seen = []

    def check(self, stats):
        self.seen.append(stats.step)
        if stats.step == self.step:
            return Stop("exploding", f"custom stop at step {stats.step}")
        return None


class LossBlowup(Rule):
    """The README's custom rule: the loss above ``factor`` times its step-0 value."""

    reads_gradients = False

    def __init__(self, factor=10.0):
        self.factor = factor

    def check(self, stats):
        if stats.loss > self.factor * stats.first_loss:
            return Stop("exploding", f"loss blew up at step {stats.step}: {stats.loss:.3g}")
        return None


def test_a_custom_rule_stops_the_run(digits):
    rule = StopAt(13)
    guard = DivergenceGuard(rules=[NonFinite(), rule], dense_steps=10, check_every=5)
    model = build(mlp_factory(64, 10, depth=2), Config("kaiming_normal", "relu"), seed=0)
    result = fit(model, digits, Budget(epochs=3), guard=guard)
    assert result.stop == Stop("exploding", "custom stop at step 13") == guard.stopped
    assert result.steps == 13  # the stopping step is not taken
    assert rule.seen == list(range(14))  # asked every step, gradients read or not
    assert result.grad_steps == [*range(10), 10]
    with pytest.raises(TypeError, match="must be an autoinit.monitor.Rule"):
        DivergenceGuard(rules=[lambda stats: None])
    with pytest.raises(TypeError, match="not both"):
        DivergenceGuard(rules=[NonFinite()], max_grad_norm=1.0)


def test_search_takes_a_list_of_rules_and_stores_the_stopped_run(storage_url):
    x, y = toy_classification(n=200, features=16, classes=4)
    study = search(mlp_factory(16, 4, depth=8), (x, y), n_trials=1, storage=storage_url,
                   inits=["kaiming_normal"], activations=["relu"], optimizer="sgd", lr=3.0,
                   guard=[LossBlowup(), *default_rules()], epochs=2, seed=0)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    attrs = trial.user_attrs
    assert attrs["prune_kind"] == "exploding"
    assert attrs["prune_reason"].startswith("loss blew up at step")
    assert 1 <= len(attrs["loss_curve"]) == attrs["steps"] + 1  # the stopping step's loss too
    assert attrs["probe"]["layers"] and attrs["metric_name"] == "accuracy"


def test_gradient_rules_are_asked_only_when_gradients_are_read():
    class Count(Rule):
        def __init__(self):
            self.steps = []

        def check(self, stats):
            assert stats.grads is not None
            self.steps.append(stats.step)
            return None

    rule = Count()
    guard = DivergenceGuard([rule], dense_steps=2, check_every=5)
    layer = nn.Linear(2, 2)
    for _ in range(12):
        layer.zero_grad()
        layer(torch.ones(1, 2)).sum().backward()
        guard.check(torch.tensor(1.0), layer.named_parameters())
    assert rule.steps == guard.grad_steps == [0, 1, 5, 10]


def test_guard_start_clears_curves_and_rule_state():
    guard = DivergenceGuard([Vanishing(2)])
    layer = nn.Linear(2, 2)
    for p in layer.parameters():
        p.grad = torch.zeros_like(p)
    assert guard.observe(1.0, layer.named_parameters()) is None
    old_losses = guard.losses
    guard.start(classes=3)
    assert guard.losses == [] and old_losses == [1.0]  # a finished run's record is kept
    assert guard.observe(1.0, layer.named_parameters()) is None  # count restarted
    assert guard.observe(1.0, layer.named_parameters()).kind == "vanishing"

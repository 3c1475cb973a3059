"""The step-0 probe, its rules, and the pre-screen of a search."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from torch import nn

import autoinit
from autoinit import Config, build, records, search
from autoinit._probe import (
    DeadUnits,
    GradientRatio,
    GuardAtStepZero,
    LayerProbe,
    ProbeNonFinite,
    ProbeStats,
    ProbeSymmetric,
    SaturatedUnits,
    SignalRatio,
    activation_bounds,
    default_probe_rules,
    fixed_batch,
    measure,
    prescreen_study,
    probe,
    probe_space,
    screen,
)
from autoinit._search import prepare_search
from autoinit.errors import ConfigError
from autoinit.models import mlp_factory
from autoinit.monitor import GradStats, StepStats
from autoinit.options import SearchOptions
from autoinit.space import baselines
from autoinit.testing import toy_classification, toy_regression

FAST = {"epochs": 1, "seed": 0}


@pytest.fixture(scope="module")
def deep_data():
    return toy_classification(n=256, features=16, classes=4)


def _row(table, init, activation, slope=None):
    return table.row(Config(init, activation, slope))


# --- the acceptance cases: the probe alone separates the failure modes --------------------------


def test_probe_separates_exploding_and_symmetric_from_healthy_on_a_deep_relu_mlp(deep_data):
    configs = [Config("normal", "relu"), Config("zeros", "relu"), Config("kaiming_normal", "relu")]
    table = probe(mlp_factory(16, 4, depth=20, width=64), deep_data, configs)
    assert [r.config for r in table] == configs
    normal, zeros, kaiming = (_row(table, c.init, "relu") for c in configs)
    assert normal.verdict.kind == "exploding" and normal.signal_log10 > 4
    assert zeros.verdict.kind == "symmetric"
    assert kaiming.verdict is None
    assert abs(kaiming.signal_log10) < 1 and abs(kaiming.gradient_log10) < 1.5
    assert table.best(3) == [Config("kaiming_normal", "relu")]
    assert table.collapsed == [normal, zeros]


def test_probe_finds_xavier_sigmoid_vanishing_on_a_deep_sigmoid_mlp(deep_data):
    table = probe(mlp_factory(16, 4, depth=20, width=64), deep_data,
                  [Config("xavier_uniform", "sigmoid"), Config("lsuv", "tanh")])  # fmt: skip
    sigmoid = _row(table, "xavier_uniform", "sigmoid")
    assert sigmoid.verdict.kind == "vanishing"
    assert sigmoid.gradient_log10 < -4
    assert "first layer's gradient was" in sigmoid.verdict.reason
    assert "(vanishing)" in sigmoid.verdict.reason
    assert _row(table, "lsuv", "tanh").verdict is None


def test_a_shrinking_signal_that_adam_trains_is_not_a_collapse_but_a_tiny_init_is():
    """PyTorch's default init + GELU shrinks the signal of the CLI's 8 x 64 regression MLP
    below 1e-4 (the best config of a 20,000-row table, which the old 1e-4 bound pre-screened);
    trunc_normal's (std 0.02) shrinks it ~1e-9, and the pre-screen stops it."""
    table = probe(mlp_factory(20, 1, depth=8, width=64), toy_regression(n=256, features=20),
                  [Config("default", "gelu"), Config("trunc_normal", "gelu")])  # fmt: skip
    default, tiny = _row(table, "default", "gelu"), _row(table, "trunc_normal", "gelu")
    assert -6 < default.signal_log10 < -4 and default.verdict is None
    assert SignalRatio(shrink=1e4).check(default.stats).kind == "vanishing"  # the old bound
    assert tiny.signal_log10 < -6 and tiny.verdict.kind == "vanishing"
    assert "last layer's output std" in tiny.verdict.reason


def test_probe_records_every_figure_per_layer(deep_data):
    config = Config("kaiming_normal", "tanh")
    table = probe(mlp_factory(16, 4, depth=3, width=8), deep_data, [config])
    stats = table[0].stats
    assert [lp.name for lp in stats.layers] == ["0", "2", "4", "6"]
    for lp in stats.layers:
        assert lp.output_std > 0 and math.isfinite(lp.output_mean)
        assert 0 <= lp.dead <= 1 and 0 <= lp.saturated <= 1 and lp.grad_rms > 0
    record = table[0].record()
    for key in ("layers", "output_std", "output_mean", "dead", "saturated", "grad_rms",
                "signal_log10", "gradient_log10", "worst_dead", "worst_saturated", "cause"):
        assert key in record, key
    assert ProbeStats.from_dict(record).layers == stats.layers


def test_probe_space_covers_leaky_relu_on_a_grid():
    configs = probe_space(["kaiming_normal"], ["relu", "leaky_relu"])
    slopes = [c.leaky_slope for c in configs if c.activation == "leaky_relu"]
    assert len(slopes) >= 3 and len(set(slopes)) == len(slopes)
    assert Config("kaiming_normal", "relu") in configs


def test_the_default_space_is_probed_whole(deep_data):
    table = probe(mlp_factory(16, 4, depth=2, width=8), deep_data, inits=["lsuv", "orthogonal"])
    assert len(table) == 2 * (len(autoinit.list_activations()) + 2)  # leaky relu: 3 slopes
    assert "config" in str(table).splitlines()[0]


# --- what is measured -------------------------------------------------------------------------


def test_dead_units_are_units_with_zero_output_for_the_whole_batch():
    model = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 2))
    with torch.no_grad():
        model[0].weight.fill_(-1.0)
        model[0].weight[:3] = 1.0  # 3 of 10 units see a positive input
        model[0].bias.zero_()
    x, y = torch.rand(32, 4) + 0.1, torch.randint(0, 2, (32,))
    stats = measure(model, x, y, nn.CrossEntropyLoss())
    assert stats.layers[0].dead == pytest.approx(0.7)
    assert stats.worst("dead") == (pytest.approx(0.7), "0")
    assert DeadUnits(0.6).check(stats).kind == "dead"
    assert DeadUnits(0.9).check(stats) is None


def test_saturated_outputs_of_bounded_activations_only():
    assert activation_bounds(nn.Tanh()) == (-1.0, 1.0)
    assert activation_bounds(nn.Sigmoid()) == (0.0, 1.0)
    assert activation_bounds(nn.ReLU()) is None and activation_bounds(nn.ELU()) is None
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
    with torch.no_grad():
        model[0].weight.normal_(0, 50.0)
    x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    stats = measure(model, x, y, nn.CrossEntropyLoss())
    assert stats.layers[0].saturated > 0.9
    assert SaturatedUnits().check(stats).kind == "saturated"


def test_reading_an_activations_bounds_inside_the_probe_does_not_count_as_an_output():
    from autoinit._probe import _stats

    _stats._BOUNDS.clear()  # the first probe of a tanh net reads tanh's bounds in its hook
    model = build(mlp_factory(8, 3, depth=2, width=16), Config("lsuv", "tanh"), seed=0,
                  batch=torch.randn(64, 8))  # fmt: skip
    x, y = toy_classification(n=64, features=8)
    first = measure(model, x, y, nn.CrossEntropyLoss())
    again = measure(model, x, y, nn.CrossEntropyLoss())
    assert first.layers[0].saturated == again.layers[0].saturated
    assert first.layers[0].saturated < 0.5


def test_a_probe_leaves_the_model_and_the_random_state_as_they_were():
    model = build(mlp_factory(8, 3, depth=2, width=8), Config("kaiming_normal", "relu"), seed=1)
    before = [p.detach().clone() for p in model.parameters()]
    rng = torch.random.get_rng_state()
    x, y = toy_classification(n=32, features=8)
    measure(model, x, y, nn.CrossEntropyLoss())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(rng, torch.random.get_rng_state())


def test_conv_and_recurrent_layers_are_probed():
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    stats = measure(cnn, torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)), nn.CrossEntropyLoss())
    assert [lp.name for lp in stats.layers] == ["0", "3"]

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.GRU(5, 6, batch_first=True), nn.Linear(6, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    stats = measure(Seq(), torch.randn(4, 7, 5), torch.randint(0, 2, (4,)), nn.CrossEntropyLoss())
    assert [lp.name for lp in stats.layers] == ["rnn", "head"]
    assert stats.layers[0].grad_rms > 0


# --- the rules, on synthetic statistics ---------------------------------------------------------


def _stats(stds=(1.0, 1.0), grads=(1.0, 1.0), **kwargs):
    layers = tuple(LayerProbe(str(i), 0.0, s, 0.0, 0.0, g)
                   for i, (s, g) in enumerate(zip(stds, grads)))  # fmt: skip
    return ProbeStats(layers, 1.0, **kwargs)


@pytest.mark.parametrize("stds, kind", [((1.0, 2e4), "exploding"), ((1.0, 5e-7), "vanishing"),
                                         ((1.0, 9e3), None), ((1.0, 2e-6), None),
                                         ((1.0, 4e-5), None)])  # fmt: skip
def test_signal_ratio_above_1e4_or_below_1e_minus_6(stds, kind):
    """A signal that shrinks 4e-5 (PyTorch's default init + GELU over 8 layers, which Adam
    trains) is not a collapse; one that grows 2e4 is."""
    stop = SignalRatio().check(_stats(stds=stds))
    assert (stop.kind if stop else None) == kind
    assert SignalRatio(shrink=1e4).check(_stats(stds=(1.0, 5e-5))).kind == "vanishing"


@pytest.mark.parametrize("grads, kind", [
    ((3e-7, 1.0), "vanishing"), ((2e4, 1.0), "exploding"), ((2e-4, 1.0), None),
    ((0.0, 1.0), "vanishing"),
])  # fmt: skip
def test_gradient_ratio_beyond_1e4_either_way(grads, kind):
    stop = GradientRatio().check(_stats(grads=grads))
    assert (stop.kind if stop else None) == kind
    if grads == (3e-7, 1.0):
        assert "3e-07 of the last layer's (vanishing)" in stop.reason


def test_non_finite_and_symmetric_rules_cite_where():
    assert "output of layer 3" in ProbeNonFinite().check(
        _stats(nonfinite="the output of layer 3")).reason  # fmt: skip
    assert ProbeSymmetric().check(_stats(symmetric="all 8 units are identical")).kind == "symmetric"
    assert screen(_stats()) is None


def test_the_guard_rules_judge_the_probe_as_step_zero():
    grads = GradStats(3e6, 1.0, 1.0, 1.0, 1.0, "0.weight", "2.weight")
    stats = _stats(step=StepStats(0, 2.0, 2.0, grads, [("0.weight", 3e6)]))
    assert GuardAtStepZero().check(stats).kind == "exploding"
    assert "norm 3e+06" in GuardAtStepZero().check(stats).reason
    loss = _stats(step=StepStats(0, 1e4, 1e4, grads._replace(total_norm=1.0)), classes=10)
    assert "exploding loss" in GuardAtStepZero().check(loss).reason


@pytest.mark.parametrize("bad", [lambda: SignalRatio(0.5), lambda: SignalRatio(shrink=1),
                                 lambda: GradientRatio("x"),
                                 lambda: DeadUnits(0), lambda: SaturatedUnits(1.5)])  # fmt: skip
def test_rule_options_are_checked(bad):
    with pytest.raises(ValueError, match="but got"):
        bad()


def test_default_rules_are_in_order():
    names = [type(r).__name__ for r in default_probe_rules()]
    assert names == ["ProbeNonFinite", "ProbeSymmetric", "GuardAtStepZero", "SignalRatio",
                     "GradientRatio", "DeadUnits", "SaturatedUnits"]


# --- the pre-screen of a search -----------------------------------------------------------------


DEEP = mlp_factory(16, 4, depth=12, width=32)
SPACE = {"inits": ["normal", "zeros", "kaiming_normal", "lsuv"], "activations": ["relu", "tanh"]}


def _prescreened(study):
    """The pre-screened trials (not their repeats, which point to them)."""
    return [t for t in study.trials if records.prune_kind(t) == records.PRESCREEN
            and records.TRIAL_DUPLICATE_OF not in t.user_attrs]  # fmt: skip


def test_prescreening_the_space_adds_collapsed_configs_as_pruned_trials_with_zero_steps(
    deep_data, storage_url
):
    study = search(DEEP, deep_data, n_trials=16, storage=storage_url, prescreen="space", **SPACE,
                   **FAST)  # fmt: skip
    screened = _prescreened(study)
    configs = {Config.from_dict(t.params) for t in screened}
    assert {Config("normal", "relu"), Config("zeros", "relu"), Config("zeros", "tanh")} <= configs
    assert not configs & {Config("kaiming_normal", "relu"), Config("lsuv", "tanh")}
    for trial in screened:
        assert trial.user_attrs[records.STEPS] == 0 and not trial.intermediate_values
        assert trial.user_attrs[records.PRUNE_REASON].startswith("pre-screened: ")
        assert trial.user_attrs[records.PROBE]["cause"] in trial.user_attrs[records.PRUNE_REASON]
        assert trial.distributions["init"].choices == tuple(SPACE["inits"])
    counts = records.trial_counts(study)
    assert counts.finished == 16 and counts.stopped[records.PRESCREEN] >= len(screened)
    trained = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert trained and not {Config.from_dict(t.params) for t in trained} & configs
    for trial in study.trials:  # every trial stores its probe, with the new fields
        if records.TRIAL_DUPLICATE_OF not in trial.user_attrs:  # a repeat points to its twin
            assert "grad_rms" in trial.user_attrs[records.PROBE], trial.number


def test_the_best_probed_configs_are_queued_right_after_the_baselines(deep_data, storage_url):
    study = search(DEEP, deep_data, n_trials=12, storage=storage_url, prescreen="space",
                   inits=["kaiming_normal", "lsuv", "orthogonal", "normal"],
                   activations=["relu", "tanh"], **FAST)  # fmt: skip
    table = probe(DEEP, deep_data, probe_space(["kaiming_normal", "lsuv", "orthogonal", "normal"],
                                               ["relu", "tanh"]), batch_size=None)  # fmt: skip
    ran = [t for t in study.trials if records.prune_kind(t) != records.PRESCREEN]
    first = [Config.from_dict(t.params) for t in ran[:3]]
    assert first[0] == Config("kaiming_normal", "relu")  # the baseline
    assert first[1:] == [c for c in table.best(3) if c != first[0]][:2]
    run = prepare_search(DEEP, deep_data, None, SearchOptions(
        storage=storage_url, study_name="fresh", inits=("kaiming_normal", "lsuv", "normal"),
        activations=("relu", "tanh"), n_trials=12, epochs=1, prescreen="space"))  # fmt: skip
    waiting = run.study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    queued = [t.system_attrs["fixed_params"] for t in waiting]
    assert queued[0] == {"init": "kaiming_normal", "activation": "relu"}  # the baseline
    assert len(queued) == 3 and all(q["init"] != "normal" for q in queued)


def test_prescreen_false_trains_every_config(deep_data, storage_url):
    study = search(DEEP, deep_data, n_trials=4, storage=storage_url, prescreen=False,
                   inits=["normal"], activations=["tanh", "relu"], **FAST)  # fmt: skip
    assert not _prescreened(study)
    assert all(t.user_attrs[records.STEPS] >= 0 for t in study.trials)


def test_prescreen_is_true_false_or_space():
    with pytest.raises(ConfigError, match="prescreen must be True, False or 'space' but got 'yes'"):
        SearchOptions(prescreen="yes")
    assert SearchOptions(prescreen="space").prescreen == "space"


def test_by_default_each_trial_screens_itself_and_nothing_is_added_up_front(deep_data,
                                                                          storage_url):  # fmt: skip
    """The default adds no trial before sampling (the whole-space pass, replayed, lost up to
    0.011 accuracy by leaving fewer trials to the sampler); a collapsed config the sampler
    draws still stops at 0 steps, on its own probe."""
    space = {"inits": ["xavier_uniform", "kaiming_normal"], "activations": ["sigmoid", "relu"]}
    run = prepare_search(mlp_factory(16, 4, depth=20, width=32), deep_data, None, SearchOptions(
        storage=storage_url, study_name="default", n_trials=8, epochs=1, **space))  # fmt: skip
    assert not run.study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert len(run.study.trials) == len(baselines(space["inits"], space["activations"]))
    study = run.optimize().study
    screened = _prescreened(study)
    assert screened and all(records.PID in t.user_attrs for t in study.trials)  # all sampled
    assert all(t.user_attrs[records.STEPS] == 0 for t in screened)


def test_the_prescreen_runs_once_per_study_and_not_again_on_resume(deep_data, storage_url):
    options = SearchOptions(storage=storage_url, study_name="once", n_trials=20, epochs=1,
                            prescreen="space", **SPACE)  # fmt: skip
    first = prepare_search(DEEP, deep_data, None, options)
    added = len(_prescreened(first.study))
    assert added >= 3
    again = prepare_search(DEEP, deep_data, None, options)  # another process, or a resume
    assert len(_prescreened(again.study)) == added
    assert prescreen_study(again.study, again.objective, n_trials=20) is None


def test_a_sampled_collapsing_config_stops_at_zero_steps(deep_data, storage_url):
    """Configs the budget left out of the up-front pre-screen are stopped by their own probe."""
    study = search(mlp_factory(16, 4, depth=20, width=32), deep_data, n_trials=3,
                   storage=storage_url, inits=["xavier_uniform"], activations=["sigmoid"],
                   **FAST)  # fmt: skip
    trial = study.trials[0]
    assert records.prune_kind(trial) == records.PRESCREEN
    assert trial.user_attrs[records.STEPS] == 0
    assert "(vanishing)" in trial.user_attrs[records.PRUNE_REASON]


def test_fixed_batch_is_seeded_and_the_same_for_every_call(deep_data):
    from autoinit.train import prepare_data

    data = prepare_data(deep_data, batch_size=32, seed=0)
    a, b = fixed_batch(data, 0), fixed_batch(data, 0)
    assert a[0].shape == (32, 16) and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], fixed_batch(data, 1)[0])
    class Pairs(torch.utils.data.Dataset):  # not a TensorDataset: stays a DataLoader
        def __len__(self):
            return len(deep_data[0])

        def __getitem__(self, i):
            return deep_data[0][i], deep_data[1][i]

    loader = torch.utils.data.DataLoader(Pairs(), batch_size=16, shuffle=True)
    from_loader = fixed_batch(prepare_data(loader, loader), 0)
    assert torch.equal(from_loader[0], deep_data[0][:16])  # in order; the shuffle untouched


def test_probe_is_exported():
    assert autoinit.probe is probe and "probe" in autoinit.__all__


def test_the_up_front_probe_is_skipped_when_it_would_cost_more_than_a_quarter_of_training(
    deep_data, storage_url
):
    tiny = SearchOptions(storage=storage_url, study_name="tiny", n_trials=4, epochs=1,
                         prescreen="space")  # fmt: skip
    run = prepare_search(DEEP, deep_data, None, tiny)  # 168 probes against 4 x 4 steps
    assert not _prescreened(run.study)
    roomy = SearchOptions(storage=storage_url, study_name="roomy", n_trials=4, epochs=1,
                          inits=("normal", "kaiming_normal"), activations=("relu",),
                          prescreen="space")  # fmt: skip
    assert _prescreened(prepare_search(DEEP, deep_data, None, roomy).study)

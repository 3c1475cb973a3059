"""The population search loop: trials asked together, trained as one batched model, recorded one
by one exactly as sequential trials are (issue 13, section 3)."""

from __future__ import annotations

import math

import optuna
import pytest
from click.testing import CliRunner
from torch import nn

from autoinit import records, search
from autoinit.cli import main
from autoinit.errors import ConfigError
from autoinit.options import SearchOptions
from autoinit.population_search import AUTO_SIZE, resolve_population
from autoinit.space import Config
from autoinit.testing import tiny_mlp, toy_classification

# Attributes that depend on the process or the clock, not on the training.
VOLATILE = {records.TRAIN_SECONDS, records.HOST, records.PID}


def _enqueued_search(storage_url, name, configs, population, **options):
    """``configs`` run in this order (enqueued on the study first), then ``search``."""
    study = optuna.create_study(storage=storage_url, study_name=name, direction="minimize")
    for config in configs:
        study.enqueue_trial({k: v for k, v in config.to_dict().items() if v is not None})
    options.setdefault("inits", tuple(dict.fromkeys(c.init for c in configs)))
    options.setdefault("activations", tuple(dict.fromkeys(c.activation for c in configs)))
    return search(
        options.pop("model_fn"), options.pop("data"), n_trials=len(configs), storage=storage_url,
        study_name=name, population=population, prescreen=False, **options,
    )  # fmt: skip


def _outcome(trial: optuna.trial.FrozenTrial) -> dict:
    attrs = {k: v for k, v in trial.user_attrs.items() if k not in VOLATILE}
    return {
        "params": trial.params, "state": trial.state, "value": trial.value,
        "intermediate": trial.intermediate_values, "attrs": attrs,
    }  # fmt: skip


def _assert_same(sequential: optuna.Study, batched: optuna.Study) -> None:
    one, many = sequential.trials, batched.trials
    assert len(one) == len(many)
    for a, b in zip(map(_outcome, one), map(_outcome, many)):
        assert a["params"] == b["params"] and a["state"] == b["state"]
        if a["value"] is None:
            assert b["value"] is None
        else:
            assert b["value"] == pytest.approx(a["value"], rel=1e-4, abs=1e-5)
        assert a["intermediate"].keys() == b["intermediate"].keys()
        for step, value in a["intermediate"].items():
            assert b["intermediate"][step] == pytest.approx(value, rel=1e-4, abs=1e-5)
        assert a["attrs"].keys() == b["attrs"].keys(), (a["params"], a["attrs"], b["attrs"])
        for key in (records.SEED, records.STEPS, records.PRUNE_KIND, records.METRIC_NAME,
                    records.TRIAL_DUPLICATE_OF):  # fmt: skip
            assert a["attrs"].get(key) == b["attrs"].get(key), (key, a["params"])
        if a["attrs"].get(records.METRIC) is not None:
            assert b["attrs"][records.METRIC] == pytest.approx(a["attrs"][records.METRIC],
                                                                abs=1e-6)  # fmt: skip


@pytest.fixture
def data():
    return toy_classification(n=240, features=8, classes=3)


@pytest.fixture
def model_fn():
    return tiny_mlp(8, 3, depth=3, width=16)


def test_population_matches_sequential_without_a_pruner(tmp_path, data, model_fn):
    """Several activation groups, a duplicate inside a round: every trial's record matches."""
    configs = [
        Config("kaiming_normal", "relu"), Config("xavier_uniform", "tanh"),
        Config("orthogonal", "relu"), Config("lecun_normal", "tanh"),
        Config("kaiming_normal", "relu"),  # the same round's twin: reused, not retrained
        Config("xavier_normal", "relu"),
        Config("zeros", "relu"),  # symmetric: stopped before training, in both
    ]  # fmt: skip
    options = dict(model_fn=model_fn, data=data, epochs=3, pruner=optuna.pruners.NopPruner())
    url = f"sqlite:///{tmp_path / 's.db'}"
    sequential = _enqueued_search(url, "one", configs, 1, **options)
    batched = _enqueued_search(url, "many", configs, 5, **dict(options, data=data))
    _assert_same(sequential, batched)
    kinds = [t.user_attrs.get(records.PRUNE_KIND) for t in batched.trials]
    assert kinds[-1] == "symmetric"
    assert batched.trials[4].user_attrs[records.TRIAL_DUPLICATE_OF] == 0


def test_pruned_and_diverged_members_are_recorded_as_sequential_ones(tmp_path, data):
    """One activation per round, so the successive-halving pruner sees the same values at each
    rung; a member the guard stops and members the pruner stops are recorded the same way."""
    model_fn = tiny_mlp(8, 3, depth=6, width=32)
    configs = [
        Config("kaiming_normal", "relu"), Config("normal", "relu"),  # normal(0, 1): diverges
        Config("xavier_uniform", "relu"), Config("orthogonal", "relu"),
        Config("lecun_normal", "relu"), Config("kaiming_uniform", "relu"),
        Config("default", "relu"), Config("trunc_normal", "relu"),
    ]  # fmt: skip
    steps_per_epoch = math.ceil(192 / 64)

    def options():
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=steps_per_epoch,
                                                        reduction_factor=2)  # fmt: skip
        return dict(model_fn=model_fn, data=data, epochs=4, pruner=pruner)

    url = f"sqlite:///{tmp_path / 's.db'}"
    sequential = _enqueued_search(url, "one", configs, 1, **options())
    batched = _enqueued_search(url, "many", configs, 4, **options())
    _assert_same(sequential, batched)
    kinds = [t.user_attrs.get(records.PRUNE_KIND) for t in batched.trials]
    assert "pruner" in kinds and kinds[1] in ("exploding", "non-finite"), kinds
    for trial in batched.trials:
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert trial.user_attrs[records.PRUNE_REASON]
            assert trial.user_attrs[records.STEPS] < 4 * steps_per_epoch


def test_budget_holds_across_rounds_and_on_resume(storage_url, data, model_fn):
    study = search(model_fn, data, n_trials=7, epochs=1, storage=storage_url, study_name="b",
                   population=3, prescreen=False)  # fmt: skip
    assert len(study.trials) == 7
    again = search(model_fn, data, n_trials=9, epochs=1, storage=storage_url, study_name="b",
                   population=4, prescreen=False)  # fmt: skip
    assert len(again.trials) == 9  # a round of 2, never 4
    assert {t.state for t in again.trials} <= set(records.FINISHED_STATES)
    assert all(t.user_attrs[records.PID] for t in again.trials)


def test_a_callback_can_stop_the_search(storage_url, data, model_fn):
    def stop(study, trial):
        study.stop()

    study = search(model_fn, data, n_trials=12, epochs=1, storage=storage_url, population=4,
                   callbacks=[stop], prescreen=False)  # fmt: skip
    assert len(study.trials) == 4  # the round ends, no other starts


class _Unbatchable(nn.Module):
    autoinit_batchable = False

    def __init__(self, activation=nn.ReLU) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), activation(), nn.Linear(16, 3))

    def forward(self, x):
        return self.body(x)


def test_members_that_cannot_batch_train_one_by_one_with_one_warning(storage_url, data):
    with pytest.warns(UserWarning, match="one after another") as caught:
        study = search(_Unbatchable, data, n_trials=4, epochs=1, storage=storage_url,
                       population=4, activations=["relu"], prescreen=False)  # fmt: skip
    assert len([w for w in caught if "one after another" in str(w.message)]) == 1
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all(t.user_attrs[records.STEPS] == 3 for t in study.trials)


def test_an_error_fails_the_rounds_unfinished_trials_and_is_raised(tmp_path, data):
    storage_url = f"sqlite:///{tmp_path / 'e.db'}"
    def broken(activation=nn.ReLU):
        if activation is nn.Tanh:
            raise RuntimeError("cannot build this one")
        return tiny_mlp(8, 3)(activation=activation)

    queue = optuna.create_study(storage=storage_url, study_name="e", direction="minimize")
    for init, act in [("kaiming_normal", "relu"), ("xavier_uniform", "tanh")]:
        queue.enqueue_trial({"init": init, "activation": act})
    with pytest.raises(RuntimeError, match="cannot build"):
        search(broken, data, n_trials=4, epochs=1, storage=storage_url, study_name="e",
               population=2, inits=["kaiming_normal", "xavier_uniform"],
               activations=["relu", "tanh"], prescreen=False)  # fmt: skip
    states = [t.state for t in optuna.load_study(study_name="e", storage=storage_url).trials]
    assert states == [optuna.trial.TrialState.FAIL] * 2


@pytest.mark.parametrize("bad", [0, -1, "many", 2.5, True])
def test_population_option_is_checked(bad):
    with pytest.raises(ConfigError, match="population must be a positive integer or 'auto'"):
        SearchOptions(population=bad)


def test_population_needs_one_process():
    with pytest.raises(ConfigError, match="n_jobs=1"):
        SearchOptions(population=4, n_jobs=2)
    SearchOptions(population="auto", n_jobs=2)  # auto means 1 with workers


def test_auto_population():
    assert resolve_population("auto", 50) == AUTO_SIZE
    assert resolve_population("auto", 3) == 3
    assert resolve_population(5, 50) == 5


def test_cli_population_and_search_rows(tmp_path):
    x, y = toy_classification(n=120, features=4, classes=2)
    lines = ["a,b,c,d,label"] + [",".join(f"{v:.4f}" for v in row) + f",{int(t)}"
                                 for row, t in zip(x.tolist(), y.tolist())]  # fmt: skip
    csv = tmp_path / "toy.csv"
    csv.write_text("\n".join(lines) + "\n")
    storage = f"sqlite:///{tmp_path / 'cli.db'}"
    result = CliRunner().invoke(main, [
        "search", "--data", str(csv), "--trials", "4", "--epochs", "1", "--depth", "2",
        "--width", "8", "--population", "2", "--search-rows", "50", "--seeds", "1",
        "--top-k", "1", "--storage", storage, "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert study.user_attrs[records.STUDY_BUDGET]["search_rows"] == 50
    assert len(study.get_trials(states=records.FINISHED_STATES)) == 4
    for bad, message in (("--population", "positive integer or 'auto'"),
                         ("--search-rows", "positive number of rows or 'all'")):  # fmt: skip
        refused = CliRunner().invoke(main, ["search", "--data", str(csv), bad, "0"])
        assert refused.exit_code == 2 and message in refused.output


def test_a_guard_of_rules_falls_back_to_sequential(storage_url, data, model_fn):
    from autoinit.monitor import NonFinite

    class Odd(NonFinite):  # a subclass: not one of the rules the batched guard reproduces
        pass

    with pytest.warns(UserWarning, match="cannot be judged in batch"):
        study = search(model_fn, data, n_trials=3, epochs=1, storage=storage_url,
                       population=3, guard=[Odd()], prescreen=False)  # fmt: skip
    assert len(study.get_trials(states=records.FINISHED_STATES)) == 3

"""search(): the one core path. Baselines, resumption, guard pruning, telemetry, metadata."""

import dataclasses
import os
import re

import optuna
import pytest
import torch

from autoinit import Config, search
from autoinit.errors import ConfigError, StorageError
from autoinit.models import mlp_factory
from autoinit.testing import tiny_mlp, toy_classification

FAST = {"epochs": 2, "seed": 0}
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def states(study):
    return [t.state for t in study.trials]


def test_baselines_run_first_and_only_where_they_fit(blobs, small_mlp, storage_url):
    study = search(small_mlp, blobs, n_trials=5, storage=storage_url, **FAST)
    first = [Config.from_dict(t.params) for t in study.trials[:4]]
    assert first == [Config("default", "relu"), Config("kaiming_normal", "relu"),
                     Config("xavier_uniform", "tanh"), Config("lecun_normal", "selu")]
    narrow = search(small_mlp, blobs, n_trials=3, storage=storage_url, study_name="narrow",
                    inits=["xavier_uniform", "he_normal"], activations=["tanh"], **FAST)
    assert Config.from_dict(narrow.trials[0].params) == Config("xavier_uniform", "tanh")
    assert {t.params["init"] for t in narrow.trials} <= {"xavier_uniform", "kaiming_normal"}


def test_n_trials_counts_toward_the_study_total_on_resume(blobs, small_mlp, storage_url):
    first = search(small_mlp, blobs, n_trials=6, storage=storage_url, **FAST)
    numbers = [(t.number, t.params) for t in first.trials]
    second = search(small_mlp, blobs, n_trials=9, storage=storage_url, **FAST)
    assert second.study_name == first.study_name
    assert len(second.trials) == 9
    assert [(t.number, t.params) for t in second.trials[:6]] == numbers
    third = search(small_mlp, blobs, n_trials=9, storage=storage_url, **FAST)
    assert len(third.trials) == 9  # nothing left to do, nothing done twice


def test_an_interrupted_search_resumes_to_its_budget(blobs, small_mlp, storage_url):
    def interrupt_after_three(study, trial):
        if trial.number == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(small_mlp, blobs, n_trials=7, storage=storage_url, callbacks=[interrupt_after_three],
               **FAST)
    study = search(small_mlp, blobs, n_trials=7, storage=storage_url, **FAST)
    finished = study.get_trials(states=FINISHED)
    assert len(finished) == 7
    baseline_params = [t.params for t in study.trials[:4]]
    assert len({tuple(sorted(p.items())) for p in baseline_params}) == 4  # no baseline twice


# No baseline fits this space: every trial is the sampler's draw.
UNQUEUED = {"inits": ["orthogonal", "lecun_uniform", "xavier_normal"],
            "activations": ["elu", "gelu", "silu"], "prescreen": False}  # fmt: skip


def test_a_resumed_search_does_not_replay_the_first_runs_draws(blobs, storage_url):
    def configs(n_trials):
        study = search(tiny_mlp(8, 3), blobs, n_trials=n_trials, storage=storage_url,
                       study_name="resumed", **UNQUEUED, **FAST)  # fmt: skip
        return [tuple(sorted(t.params.items())) for t in study.trials]

    first = configs(3)
    resumed = configs(6)
    assert resumed[:3] == first
    # The same sampler seed again would draw the first run's three configs again (and each
    # would only repeat its twin's stored result).
    assert resumed[3:] != first


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the trial left running is asked
def test_a_search_clears_a_trial_this_process_left_running(blobs, storage_url):
    """A trial of this process still RUNNING when a search starts (a notebook cell stopped while
    its write was lost) is failed and retried at once, not after the heartbeat's grace."""
    from autoinit import records
    from autoinit import study as studies

    first = search(tiny_mlp(8, 3), blobs, n_trials=1, storage=storage_url, study_name="left",
                   **UNQUEUED, **FAST)  # fmt: skip
    left = first.ask({"init": first.trials[0].distributions["init"],
                      "activation": first.trials[0].distributions["activation"]})
    for key, value in studies.this_process().items():
        left.set_user_attr(key, value)
    study = search(tiny_mlp(8, 3), blobs, n_trials=3, storage=storage_url, study_name="left",
                   **UNQUEUED, **FAST)  # fmt: skip
    trials = {t.number: t for t in study.trials}
    assert trials[left.number].state == optuna.trial.TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == left.number]
    assert retried and retried[0].params == trials[left.number].params
    assert retried[0].state in FINISHED and records.PID in retried[0].user_attrs


def test_the_search_runs_trials_one_by_one_in_populations_or_in_workers_as_asked(
    blobs, storage_url, monkeypatch
):
    """Which engine runs the trials, and with what (each engine's own behaviour is tested in
    test_population_search.py and test_workers.py)."""
    import autoinit._search as search_module

    calls = []
    for engine in ("optimize_here", "optimize_population", "optimize_in_workers"):
        monkeypatch.setattr(search_module, engine,
                            lambda *args, engine=engine: calls.append((engine, args)))  # fmt: skip

    def callback(study, trial):
        pass

    def engine_of(name, **options):
        calls.clear()
        study = search(tiny_mlp(8, 3), blobs, storage=storage_url, study_name=name, n_trials=5,
                       timeout=60.0, callbacks=[callback], **UNQUEUED, **options)  # fmt: skip
        (engine, args), = calls
        assert args[0] is study and isinstance(args[1], search_module.Objective)
        return engine, args[2:]

    assert engine_of("one") == ("optimize_here", (5, 60.0, [callback]))
    assert engine_of("two", population=2) == ("optimize_population", (5, 60.0, [callback], 2))
    assert engine_of("auto", population="auto") == (
        "optimize_population", (5, 60.0, [callback], 4))  # fmt: skip
    engine, args = engine_of("jobs", n_jobs=2, population="auto")  # workers: one at a time
    assert engine == "optimize_in_workers" and args[0].n_jobs == 2 and args[1] == [callback]


def test_the_search_trains_with_its_own_guard(blobs, storage_url):
    from autoinit import records

    strict = search(tiny_mlp(8, 3), blobs, n_trials=2, storage=storage_url, study_name="strict",
                    guard={"max_grad_norm": 1e-9}, **UNQUEUED, **FAST)  # fmt: skip
    for trial in strict.trials:
        assert trial.user_attrs[records.PRUNE_KIND] == "exploding", trial.user_attrs
        assert "> 1e-09" in trial.user_attrs[records.PRUNE_REASON]
    # guard=False: only non-finite losses stop a trial, and there is no symmetry check, so
    # zero weights (whose gradients vanish) train to the end.
    off = search(tiny_mlp(8, 3), blobs, n_trials=1, storage=storage_url, study_name="off",
                 guard=False, inits=["zeros"], activations=["relu"], prescreen=False, **FAST)
    assert off.trials[0].state == optuna.trial.TrialState.COMPLETE, off.trials[0].user_attrs
    on = search(tiny_mlp(8, 3), blobs, n_trials=1, storage=storage_url, study_name="on",
                inits=["zeros"], activations=["relu"], prescreen=False, **FAST)
    assert on.trials[0].state == optuna.trial.TrialState.PRUNED


def test_a_sampled_config_whose_probe_collapses_stops_at_step_0(storage_url):
    """With no room left in the budget for the pre-screen's trials, a collapsed config the
    sampler draws is stopped by its own probe before training; without the pre-screen it
    trains until the guard stops it."""
    from autoinit import records

    x, y = toy_classification(n=200, features=16, classes=4)
    for prescreen, kind in ((True, "prescreen"), (False, "vanishing")):
        # 24 ReLU layers at PyTorch's default init: the gradient vanishes from the first step
        study = search(mlp_factory(16, 4, depth=24, width=16), (x, y), n_trials=1,
                       storage=storage_url, study_name=f"probe-{prescreen}", inits=["default"],
                       activations=["relu"], prescreen=prescreen, **FAST)  # fmt: skip
        (trial,) = study.trials
        assert trial.user_attrs[records.PRUNE_KIND] == kind, trial.user_attrs
        assert (trial.user_attrs[records.STEPS] == 0) is prescreen


def test_a_trial_builds_and_trains_with_the_seed_it_is_given(blobs, storage_url):
    from autoinit._apply import build
    from autoinit._search import prepare_search
    from autoinit.options import SearchOptions
    from autoinit.train import fit

    options = SearchOptions(n_trials=1, max_steps=5, storage=storage_url, prescreen=False)
    objective = prepare_search(tiny_mlp(8, 3), blobs, None, options).objective
    config = Config("kaiming_normal", "relu")
    model, _, stop = objective.start(config, 5, guard={})
    expected = build(tiny_mlp(8, 3), config, seed=5)
    assert stop is None
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 expected.state_dict().values()))  # fmt: skip
    result = objective.attempt(config, 5, guard={})
    alone = fit(build(tiny_mlp(8, 3), config, seed=5), objective.data, objective.budget, seed=5)
    assert result.value == alone.value  # the batches drawn with the same seed too


def test_a_time_limit_alone_is_a_budget(blobs, storage_url):
    study = search(tiny_mlp(8, 3), blobs, n_trials=2, storage=storage_url, epochs=None,
                   trial_time_limit=0.5, **UNQUEUED)  # fmt: skip
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


def _cross_entropy(output, target):
    return torch.nn.functional.cross_entropy(output, target)


def test_prepare_search_builds_the_trials_and_the_study_from_every_option(blobs, storage_url):
    """Each option reaches what it sets: the budget, the split, the loss, the guard, the
    sampler, the pre-screen and the study's record (search() passing them on is tested in
    test_core_bugs.py)."""
    from autoinit._search import prepare_search
    from autoinit.options import SearchOptions
    from autoinit.train import Budget, prepare_data

    options = SearchOptions(
        n_trials=1, epochs=5, max_steps=7, trial_time_limit=30.0, batch_size=16,
        optimizer="sgd", lr=0.05, loss_fn=_cross_entropy, storage=storage_url, seed=3,
        val_fraction=0.3, guard={"max_grad_norm": 5.0}, prescreen=False, device="cpu",
        inits=("orthogonal", "xavier_normal"), activations=("elu",),
    )  # fmt: skip
    info = {"file": "blobs.csv", "sha256": "abcdef0123456789"}
    run = prepare_search(tiny_mlp(8, 3), blobs, None, options, data_info=info)
    objective = run.objective
    assert objective.budget == Budget(5, 7, 30.0, 16, "sgd", 0.05)
    assert objective.data.loss_fn is _cross_entropy and objective.data.batch_size == 16
    expected = prepare_data(blobs, batch_size=16, val_fraction=0.3, seed=3)
    assert torch.equal(objective.data.val[0], expected.val[0])  # the same split: 30%, seed 3
    assert objective.guard == {"max_grad_norm": 5.0} and objective.prescreen is False
    assert objective.seed == 3
    assert isinstance(run.study.sampler, optuna.samplers.TPESampler)
    attrs = run.study.user_attrs
    assert attrs["data"] == info and attrs["data_fingerprint"] == "abcdef012345"
    assert attrs["budget"] == {**Budget(5, 7, 30.0, 16, "sgd", 0.05).to_dict(), "seed": 3}
    assert attrs["space"] == {"inits": ["orthogonal", "xavier_normal"], "activations": ["elu"]}
    # guard=True is the default rules; a sampler given is kept, on a resumed study too
    run.optimize()
    sampler = optuna.samplers.RandomSampler(seed=1)
    again = prepare_search(tiny_mlp(8, 3), blobs, None, dataclasses.replace(
        options, guard=True, sampler=sampler, prescreen=True), data_info=info)  # fmt: skip
    assert again.objective.guard == {} and again.objective.prescreen is True
    assert again.study.sampler is sampler
    plain = prepare_search(tiny_mlp(8, 3), blobs, None, SearchOptions(
        n_trials=1, storage=storage_url, study_name="plain"))  # fmt: skip
    assert plain.study.user_attrs["data"] == {"description": plain.objective.data.describe()}


def test_one_job_needs_neither_a_database_nor_a_picklable_model(blobs):
    study = search(lambda: tiny_mlp(8, 3)(), blobs, n_trials=1, epochs=1, n_jobs=1,
                   storage=optuna.storages.InMemoryStorage(), **UNQUEUED)  # fmt: skip
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


def test_deep_relu_with_normal_init_is_pruned_within_two_steps(storage_url):
    x, y = toy_classification(n=200, features=16, classes=4)
    study = search(mlp_factory(16, 4, depth=20), (x, y), n_trials=2, storage=storage_url,
                   inits=["normal"], activations=["relu"], prescreen=False, **FAST)
    stored = optuna.load_study(study_name=study.study_name, storage=storage_url)
    trial = stored.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["steps"] <= 2
    assert trial.user_attrs["prune_kind"] == "exploding"
    assert "exploding" in trial.user_attrs["prune_reason"]
    assert stored.trials[1].user_attrs["duplicate_of"] == 0  # same config: not retrained


def test_zero_init_is_pruned_as_symmetric_early(storage_url):
    x, y = toy_classification(n=200, features=16, classes=4)
    study = search(mlp_factory(16, 4, depth=8), (x, y), n_trials=1, storage=storage_url,
                   inits=["zeros"], activations=["tanh"], **FAST)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["prune_kind"] == "symmetric"
    assert trial.user_attrs["steps"] == 0


def test_stored_study_has_telemetry_and_metadata(blobs, small_mlp, storage_url):
    study = search(small_mlp, blobs, n_trials=2, storage=storage_url, **FAST)
    stored = optuna.load_study(study_name=study.study_name, storage=storage_url)
    trial = stored.trials[1]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [3, 6]  # 192 samples / batch 64 = 3 steps
    attrs = trial.user_attrs
    for key in ("seed", "steps", "train_seconds", "loss_curve", "grad_norm_curve", "curve_steps",
                "metric", "metric_name", "probe"):
        assert key in attrs, key
    assert attrs["metric_name"] == "accuracy" and 0 <= attrs["metric"] <= 1
    assert len(attrs["loss_curve"]) == attrs["steps"]
    assert attrs["seed"] == FAST["seed"]  # the study's seed: every trial trains with it
    meta = stored.user_attrs
    assert meta["autoinit_version"] and meta["task"] == "classification"
    assert "MLP" in meta["model"] and meta["budget"]["epochs"] == 2
    assert meta["space"]["activations"][0] == "sigmoid"


def test_same_study_name_with_other_data_or_budget_is_refused(blobs, small_mlp, storage_url):
    search(small_mlp, blobs, n_trials=1, storage=storage_url, study_name="mine", **FAST)
    other = toy_classification(n=240, features=8, classes=3, seed=1)
    with pytest.raises(StorageError, match="another data fingerprint"):
        search(small_mlp, other, n_trials=2, storage=storage_url, study_name="mine", **FAST)
    with pytest.raises(StorageError, match="another budget"):
        search(small_mlp, blobs, n_trials=2, storage=storage_url, study_name="mine", epochs=3)
    with pytest.raises(StorageError, match="another space"):
        search(small_mlp, blobs, n_trials=2, storage=storage_url, study_name="mine",
               inits=["orthogonal"], **FAST)
    kept = optuna.load_study(study_name="mine", storage=storage_url)
    assert len(kept.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 1


def test_default_storage_is_created_under_the_working_directory(blobs, small_mlp, tmp_path,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = search(small_mlp, blobs, n_trials=1, **FAST)
    assert (tmp_path / "studies" / "autoinit.db").exists()
    assert study.study_name.startswith("MLP-")


def test_study_name_follows_the_data(blobs, small_mlp, storage_url):
    a = search(small_mlp, blobs, n_trials=1, storage=storage_url, **FAST).study_name
    b = search(small_mlp, toy_classification(n=240, features=8, classes=3, seed=5), n_trials=1,
               storage=storage_url, **FAST).study_name
    assert a != b


def test_threads_are_restored_and_device_is_checked(blobs, small_mlp, storage_url):
    before = torch.get_num_threads()
    search(small_mlp, blobs, n_trials=1, storage=storage_url, threads=1, **FAST)
    assert torch.get_num_threads() == before
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            search(small_mlp, blobs, n_trials=1, storage=storage_url, device="cuda", **FAST)


@pytest.mark.parametrize(
    "options, message",
    [({"n_trials": 0}, "n_trials"), ({"inits": ["kaiming_norml"]}, "kaiming_normal"),
     ({"activations": ["reLu"]}, "relu"), ({"task": "ranking"}, "task"),
     ({"epochs": None, "max_steps": None}, "unbounded"), ({"device": "tpu"}, "device")],
)
def test_bad_options_raise_config_errors_before_any_study_is_made(
    blobs, small_mlp, storage_url, options, message
):
    with pytest.raises(ConfigError, match=message):
        search(small_mlp, blobs, storage=storage_url, **{"epochs": 1, **options})
    assert not os.path.exists(storage_url.removeprefix("sqlite:///"))


def test_parallel_workers_share_one_sqlite_study(blobs, storage_url):
    study = search(tiny_mlp(8, 3), blobs, n_trials=8, storage=storage_url, n_jobs=2, **FAST)
    finished = study.get_trials(states=FINISHED)
    assert 8 <= len(finished) <= 9  # each worker stops once the total is reached
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))


def test_parallel_workers_need_a_storage_they_can_all_open(blobs):
    with pytest.raises(ConfigError) as refused:
        search(tiny_mlp(8, 3), blobs, n_trials=2, n_jobs=2,
               storage=optuna.storages.InMemoryStorage(), **FAST)  # fmt: skip
    assert str(refused.value) == "n_jobs > 1 needs a database storage URL (workers share it)."


def test_parallel_workers_need_a_picklable_model_fn(blobs, storage_url):
    with pytest.raises(ConfigError) as refused:
        search(lambda activation: torch.nn.Linear(8, 3), blobs, n_trials=2, n_jobs=2,
               storage=storage_url, **FAST)
    assert re.fullmatch(  # the pickling error's type and text (they vary with Python's version)
        r"n_jobs > 1 needs a picklable model_fn and data \((AttributeError|PicklingError): .+\); "
        r"use a module-level function or class instead of a lambda, or n_jobs=1\.",
        str(refused.value))


def test_resuming_with_another_seed_is_refused(blobs, small_mlp, storage_url):
    # All search trials share the seed, so results of two seeds cannot be ranked together.
    search(small_mlp, blobs, n_trials=1, storage=storage_url, study_name="s", epochs=1, seed=0)
    with pytest.raises(StorageError, match="was made with another"):
        search(small_mlp, blobs, n_trials=2, storage=storage_url, study_name="s", epochs=1, seed=1)
    x, y = blobs  # with a fixed validation set the data match, and the seed is in the budget
    train, val = (x[:200], y[:200]), (x[200:], y[200:])
    search(small_mlp, train, val, n_trials=1, epochs=1, storage=storage_url, study_name="f", seed=0)
    with pytest.raises(StorageError, match="another budget"):
        search(small_mlp, train, val, n_trials=2, epochs=1, storage=storage_url, study_name="f",
               seed=1)


def test_a_search_shows_no_experimental_warning(blobs, small_mlp, storage_url):
    """Heartbeats, the stale-trial retry and grouped TPE are experimental in Optuna: autoinit
    relies on them on purpose, and its users must not see Optuna's warning on every search."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search(small_mlp, blobs, n_trials=2, max_steps=5, storage=storage_url)
        search(small_mlp, blobs, n_trials=3, max_steps=5, storage=storage_url)  # resumed
    experimental = optuna.exceptions.ExperimentalWarning
    assert [str(w.message) for w in caught if issubclass(w.category, experimental)] == []

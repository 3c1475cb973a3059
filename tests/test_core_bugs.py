"""Bugs that once survived the suite, each pinned by a test that fails when it is planted.

Duplicate configs, the ranking of the top configs, a seed that diverged in confirmation, and
the torch thread count around a search. Real searches on real (SQLite) studies; nothing mocked.
"""

import contextlib
import dataclasses
import importlib
import math
import os
import uuid
import warnings

import optuna
import pytest
import torch
from study_factory import complete, make_study, pruned
from torch import nn

from autoinit import (
    Config,
    ConfigError,
    apply,
    build,
    get_initializer,
    list_initializers,
    recommend,
    records,
    register_initializer,
    search,
)
from autoinit.errors import NoRecommendation
from autoinit.models import MLP, mlp_factory
from autoinit.monitor import (
    DepthRatio,
    Diverged,
    DivergenceGuard,
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
    raise_diverged,
    symmetry_stop,
)
from autoinit.recommendation import Recommendation

FAST = {"epochs": 2, "seed": 0}
TANH = {"inits": ["xavier_uniform"], "activations": ["tanh"]}  # a space of one config


def core(name: str):
    """``autoinit._name`` (the private module) or, before the rename, ``autoinit.name``."""
    for module in (f"autoinit._{name}", f"autoinit.{name}"):
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
    raise ModuleNotFoundError(f"neither autoinit._{name} nor autoinit.{name}")


# Duplicates: every search trial trains with the study's seed, so a finished twin's result is
# reused, except a verdict of the learning-curve pruner, which depends on the other trials.


def test_a_twin_still_running_elsewhere_is_not_reused_but_a_finished_one_is():
    """Another process's RUNNING twin has no result yet: the trial trains. Once the twin is
    finished, its result is what a later twin reuses."""
    from autoinit.space import suggest

    finished_twin = core("search")._finished_twin
    study = optuna.create_study()
    params = {"init": "orthogonal", "activation": "tanh"}
    study.enqueue_trial(params)
    study.enqueue_trial(params)
    running, later = study.ask(), study.ask()
    assert suggest(running) == suggest(later)  # the same config, both RUNNING
    assert finished_twin(later) is None
    study.tell(running, 0.25)
    twin = finished_twin(later)
    assert twin is not None and twin.number == running.number and twin.value == 0.25


def test_a_complete_twin_after_one_the_pruner_stopped_is_reused():
    """Trial 0 was stopped by the pruner (a verdict about the others), trial 1 then trained the
    same config in full: trial 2 reuses trial 1, looking past trial 0."""
    finished_twin = core("search")._finished_twin
    study = optuna.create_study()
    params = {"init": "orthogonal", "activation": "tanh"}
    for _ in range(3):
        study.enqueue_trial(params)
    pruned = study.ask()
    pruned.set_user_attr(records.PRUNE_KIND, "pruner")
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    study.tell(study.ask(), 0.25)
    twin = finished_twin(study.ask())
    assert twin is not None and twin.number == 1 and twin.value == 0.25


def test_a_completed_twin_is_reused_not_retrained(blobs, small_mlp, storage_url):
    study = search(small_mlp, blobs, n_trials=2, storage=storage_url, **TANH, **FAST)
    first, twin = study.trials
    assert first.params == twin.params
    assert first.state == twin.state == optuna.trial.TrialState.COMPLETE
    assert records.TRAIN_SECONDS in first.user_attrs
    assert twin.user_attrs[records.TRIAL_DUPLICATE_OF] == first.number
    assert records.TRAIN_SECONDS not in twin.user_attrs  # nothing was trained
    assert twin.value == first.value
    assert twin.user_attrs[records.METRIC] == first.user_attrs[records.METRIC]


def test_a_twin_stopped_by_the_pruner_is_retrained(blobs, small_mlp, storage_url):
    # ThresholdPruner(upper=0) stops every run at its first report, as the median pruner
    # stops a run that is behind the others: a verdict about the study, not about the config.
    pruner = optuna.pruners.ThresholdPruner(upper=0.0)
    study = search(small_mlp, blobs, n_trials=2, storage=storage_url, pruner=pruner, **TANH,
                   **FAST)  # fmt: skip
    first, twin = study.trials
    assert first.params == twin.params
    for trial in (first, twin):
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert records.prune_kind(trial) == "pruner"
    assert records.TRIAL_DUPLICATE_OF not in twin.user_attrs
    assert records.TRAIN_SECONDS in twin.user_attrs  # trained again, on its own


def test_a_diverged_twin_is_reused_with_its_reason(storage_url):
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    study = search(mlp_factory(16, 2, depth=20), (x, y), n_trials=2, storage=storage_url,
                   inits=["normal"], activations=["relu"], **FAST)  # fmt: skip
    first, twin = study.trials
    assert first.state == twin.state == optuna.trial.TrialState.PRUNED
    assert records.prune_kind(first) != "pruner"  # the guard's verdict: the config's own
    assert twin.user_attrs[records.TRIAL_DUPLICATE_OF] == first.number
    assert twin.user_attrs[records.PRUNE_KIND] == first.user_attrs[records.PRUNE_KIND]
    assert str(first.number) in twin.user_attrs[records.PRUNE_REASON]
    assert records.TRAIN_SECONDS not in twin.user_attrs


# Ranking


def test_top_configs_are_best_first_and_distinct(tmp_path):
    study = make_study(tmp_path, [
        complete("default", "relu", 0.30),
        complete("kaiming_normal", "relu", 0.22),
        pruned("orthogonal", "selu", "exploding"),
        complete("xavier_uniform", "tanh", 0.25),
        complete("kaiming_normal", "relu", 0.20),  # the same config again, now better
        pruned("default", "selu", "pruner"),
    ])  # fmt: skip
    top_configs = core("recommend").top_configs
    best, second, third = (Config("kaiming_normal", "relu"), Config("xavier_uniform", "tanh"),
                           Config("default", "relu"))  # fmt: skip
    assert top_configs(study, 2) == [best, second]
    assert top_configs(study, 10) == [best, second, third]  # pruned ones never count
    assert top_configs(study, 1) == [best]


DIVERGING_SEED = 1001  # the second confirmation seed of a study with seed 0


class DivergesOnOneSeed(nn.Module):
    """A small MLP that is best with tanh, except that it diverges (NaN output) when built with
    tanh for :data:`DIVERGING_SEED`; with ReLU its output is shifted, so its loss stays high.

    ``build`` seeds torch with the run's seed before calling the model_fn, so the seed is
    ``torch.initial_seed()`` here. The NaN and the shift sit in buffers, which no initializer
    touches.
    """

    def __init__(self, activation=nn.ReLU):
        super().__init__()
        self.net = MLP(8, 3, depth=2, width=16, activation=activation)
        tanh = isinstance(activation(), nn.Tanh)
        poisoned = tanh and torch.initial_seed() == DIVERGING_SEED
        self.register_buffer("scale", torch.tensor(math.nan if poisoned else 1.0))
        self.register_buffer("shift", torch.tensor([0.0 if tanh else 6.0, 0.0, 0.0]))

    def forward(self, x):
        return self.net(x) * self.scale + self.shift


def test_a_seed_that_diverged_in_confirmation_counts_as_an_infinite_loss(blobs, storage_url):
    # race=False: every config trains on every seed (racing would drop tanh at its inf seed,
    # which tests/test_racing.py checks), so the inf must be kept, not dropped, to rank it last.
    rec = recommend(DivergesOnOneSeed, blobs, seeds=3, top_k=2, n_trials=2, storage=storage_url,
                    inits=["xavier_uniform"], activations=["tanh", "relu"], race=False,
                    **FAST)  # fmt: skip
    assert rec.seeds == (1000, DIVERGING_SEED, 1002)
    tanh = next(r for r in rec.ranking if r.config.activation == "tanh")
    assert len(tanh.values) == 3  # the diverged seed is kept, not dropped
    assert math.isinf(tanh.values[1]) and tanh.stops[1]
    relu = [r for r in rec.ranking if r.config.activation == "relu"]
    assert all(math.isfinite(r.mean) for r in relu)
    # Its seeds that trained beat every ReLU config: only the diverged seed ranks it last.
    assert max(tanh.values[0], tanh.values[2]) < min(r.mean for r in relu)
    assert math.isinf(tanh.mean)
    assert rec.ranking[-1] == tanh  # below every config that trained on all seeds
    assert rec.config.activation == "relu"
    stored = optuna.load_study(study_name=rec.study_name, storage=storage_url)
    ranked = stored.user_attrs[records.STUDY_RECOMMENDATION]["ranking"]
    assert [r["config"]["activation"] for r in ranked][-1] == "tanh"


# One confirmation per study: the others wait for it, or are told who runs it.


def _searched(blobs, small_mlp, storage_url):
    from autoinit._search import prepare_search
    from autoinit.options import SearchOptions

    options = SearchOptions(n_trials=2, storage=storage_url, prescreen=False, **TANH, **FAST)
    return prepare_search(small_mlp, blobs, None, options).optimize()


def test_a_confirmation_held_elsewhere_names_its_holder_or_is_waited_for(
    blobs, small_mlp, storage_url
):
    import os

    from autoinit import claims

    confirm_once, confirm = core("recommend").confirm_once, core("recommend").confirm
    run = _searched(blobs, small_mlp, storage_url)
    key = f"confirm:{run.options.n_trials}:2:1:True"
    assert claims.try_claim(run.study, key)  # as another process would have

    class Ahead:  # runs this process trained ahead for a confirmation it does not run
        closed = False

        def close(self):
            self.closed = True

    ahead = Ahead()
    with pytest.raises(core("recommend").ConfirmationElsewhere) as elsewhere:
        confirm_once(run, seeds=2, top_k=1, wait=False, ahead=ahead)
    assert ahead.closed  # its children stop: the other process's race will not take them
    message = str(elsewhere.value)
    host = claims.holder(run.study, key)["host"]
    assert message == (f"the confirmation of this study is being run by {host} (PID "
                       f"{os.getpid()}); its result will be stored with the study: read it with "
                       "`autoinit show`.")  # fmt: skip
    unknown = str(core("recommend").ConfirmationElsewhere({}))
    assert "being run by ? (PID ?);" in unknown
    assert elsewhere.value.holder["pid"] == os.getpid()
    assert records.STUDY_RECOMMENDATION not in run.study.user_attrs  # nothing was confirmed

    told = []

    def holder_finishes(holder):  # the holder stores its result while this one waits
        told.append(holder)
        done = confirm(run.study, run.objective, seeds=2, top_k=1)
        run.study.set_user_attr(records.STUDY_CONFIRMED, {"key": key})
        told.append(done)

    rec = confirm_once(run, seeds=2, top_k=1, on_wait=holder_finishes, poll_seconds=0.0)
    assert told[0]["pid"] == os.getpid() and len(told) == 2
    assert rec.config == told[1].config and rec.seeds == (1000, 1001)
    assert [r.values for r in rec.ranking] == [r.values for r in told[1].ranking]


def test_confirming_a_study_without_a_complete_trial_says_why_and_stores_nothing(storage_url):
    from autoinit._search import prepare_search
    from autoinit.options import SearchOptions
    from autoinit.recommendation import no_trial_reason

    confirm = core("recommend").confirm
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    options = SearchOptions(n_trials=2, storage=storage_url, inits=("normal",),
                            activations=("relu",), prescreen=False, **FAST)  # fmt: skip
    run = prepare_search(mlp_factory(16, 2, depth=20), (x, y), None, options).optimize()
    with pytest.raises(NoRecommendation) as raised:
        confirm(run.study, run.objective)
    rec = raised.value.recommendation
    reason = no_trial_reason(run.study)
    assert reason.startswith("None of the 2 trials completed")
    assert str(raised.value) == f"study {run.study.study_name!r} has no completed trial: {reason}"
    assert (rec.config, rec.ranking, rec.default, rec.seeds) == (None, (), None, ())
    assert (rec.metric_name, rec.study_name, rec.reason) == ("accuracy", run.study.study_name,
                                                             reason)  # fmt: skip
    assert records.STUDY_RECOMMENDATION not in run.study.user_attrs
    for bad in ({"seeds": 0}, {"top_k": 0}):
        with pytest.raises(ConfigError) as refused:
            confirm(run.study, run.objective, **bad)
        assert str(refused.value) == (f"seeds and top_k must be positive but got "
                                      f"{bad.get('seeds', 3)} and {bad.get('top_k', 3)}.")


class Blaring(nn.Module):
    """Every config's logits are scaled by 1e8: the loss stays finite (a search without the
    guard completes), but the gradient norm is far past the guard's bound at step 0."""

    def __init__(self, activation=nn.ReLU):
        super().__init__()
        self.net = MLP(8, 3, depth=2, width=16, activation=activation)
        self.register_buffer("gain", torch.tensor(1e8))

    def forward(self, x):
        return self.net(x) * self.gain


@pytest.mark.parametrize("race", [True, False], ids=["race", "in-full"])
def test_a_confirmation_where_every_config_diverges_stores_and_raises_why(
    blobs, storage_url, race
):
    from autoinit._search import prepare_search
    from autoinit.options import SearchOptions
    from autoinit.recommendation import all_diverged_reason

    confirm = core("recommend").confirm
    options = SearchOptions(n_trials=2, storage=storage_url, guard=False, prescreen=False,
                            inits=("xavier_uniform",), activations=("tanh", "relu"),
                            **FAST)  # fmt: skip
    run = prepare_search(Blaring, blobs, None, options).optimize()
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in run.study.trials)
    with pytest.raises(NoRecommendation) as raised:
        confirm(run.study, run.objective, seeds=2, top_k=2, race=race)
    rec = raised.value.recommendation
    assert rec.config is None and rec.ranking and rec.seeds == (1000, 1001)
    assert rec.reason == all_diverged_reason(rec.ranking) and str(raised.value) == rec.reason
    assert all(math.isinf(v) for r in rec.ranking for v in r.values)
    # The first round trains both seeds together, so both are run and reported, race or not;
    # the race then drops every config for diverging.
    assert all(r.seeds == (1000, 1001) and len(r.values) == 2 for r in rec.ranking)
    dropped = "out after seed 2: it diverged" if race else None
    assert all(r.dropped == dropped for r in rec.ranking)
    stored = optuna.load_study(study_name=run.study.study_name, storage=storage_url)
    assert stored.user_attrs[records.STUDY_RECOMMENDATION]["config"] is None
    assert stored.user_attrs[records.STUDY_RECOMMENDATION]["reason"] == rec.reason


def test_a_confirmed_study_is_read_back_not_confirmed_again(blobs, small_mlp, storage_url,
                                                           monkeypatch):  # fmt: skip
    import os

    from autoinit._search import prepare_search
    from autoinit.options import SearchOptions

    recommending = core("recommend")
    three = {"inits": ["xavier_uniform", "orthogonal", "xavier_normal"], "activations": ["tanh"]}
    options = SearchOptions(n_trials=3, storage=storage_url, prescreen=False, **three, **FAST)
    run = prepare_search(small_mlp, blobs, None, options).optimize()
    assert len(recommending.top_configs(run.study, 3)) == 3
    first = recommending.confirm_once(run, seeds=2, top_k=1)
    assert len(first.ranking) == 2 and first.seeds == (1000, 1001)  # top_k and seeds passed on
    assert first.found and first.reason is None
    confirmed = run.study.user_attrs[records.STUDY_CONFIRMED]
    assert confirmed["key"] == f"confirm:{run.options.n_trials}:2:1:True"
    assert confirmed["pid"] == os.getpid()

    def no_training(*args, **kwargs):
        raise AssertionError("a confirmed study was confirmed again")

    monkeypatch.setattr(recommending, "_race", no_training)
    again = recommending.confirm_once(run, seeds=2, top_k=1)
    assert again.config == first.config
    assert [r.values for r in again.ranking] == [r.values for r in first.ranking]


def test_a_stored_confirmation_without_a_winner_is_raised_again(blobs, small_mlp, storage_url):
    confirm_once = core("recommend").confirm_once
    run = _searched(blobs, small_mlp, storage_url)
    nothing = Recommendation(None, (), None, (1000,), "accuracy", run.study.study_name,
                             reason="every confirmed config diverged")  # fmt: skip
    nothing.store(run.study)
    run.study.set_user_attr(records.STUDY_CONFIRMED, {"key": "confirm:2:3:3:True"})
    with pytest.raises(NoRecommendation, match="every confirmed config diverged") as raised:
        confirm_once(run)
    assert raised.value.recommendation.reason == "every confirmed config diverged"
    assert raised.value.recommendation.study_name == run.study.study_name
    dataclasses.replace(nothing, reason=None).store(run.study)
    with pytest.raises(NoRecommendation) as raised:
        confirm_once(run)
    assert str(raised.value) == "nothing to recommend"
    kept = optuna.load_study(study_name=run.study.study_name, storage=storage_url)
    assert kept.user_attrs[records.STUDY_RECOMMENDATION]["config"] is None  # not re-confirmed


def test_recommend_without_options_runs_its_documented_defaults(blobs, small_mlp, storage_url):
    """The defaults take effect (a signature check cannot see a changed default through
    mutmut's trampoline): 50 trials, 10 epochs, one process, no trial added before sampling
    (the pre-screen is per trial), 3 seeds."""
    rec = recommend(small_mlp, blobs, storage=storage_url)
    study = optuna.load_study(study_name=rec.study_name, storage=storage_url)
    assert len(study.trials) == 50
    steps_per_epoch = math.ceil(len(blobs[0]) * 0.8 / 64)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert {t.user_attrs[records.STEPS] for t in complete} == {10 * steps_per_epoch}
    assert {t.user_attrs.get(records.PID) for t in study.trials} == {os.getpid()}
    assert rec.seeds == (1000, 1001, 1002)
    assert 3 <= len(rec.ranking) <= 4 and rec.default.config == Config("default", "relu")


def test_recommend_passes_every_option_on(monkeypatch, blobs, small_mlp):
    """Each argument reaches the search's options or the confirmation unchanged."""
    recommending = core("recommend")
    seen = {}

    class Prepared:
        def optimize(self, callbacks=()):
            seen["callbacks"] = callbacks
            return self

    def prepare(model_fn, train, val, options):
        seen["options"], seen["val"] = options, val
        return Prepared()

    class Ahead:
        def after_trial(self, study, trial):
            return None

    ahead = Ahead()

    @contextlib.contextmanager
    def confirming_ahead(run, **kwargs):
        seen["ahead"] = kwargs
        yield ahead

    def confirm_once(run, **kwargs):
        seen["confirm"] = kwargs
        raise KeyboardInterrupt  # stop here: nothing trains

    monkeypatch.setattr(recommending, "prepare_search", prepare)
    monkeypatch.setattr(recommending, "confirming_ahead", confirming_ahead)
    monkeypatch.setattr(recommending, "confirm_once", confirm_once)
    sampler, pruner = optuna.samplers.RandomSampler(), optuna.pruners.NopPruner()

    def loss(a, b):
        return (a - b).abs().mean()

    def callback(study, trial):
        return None

    given = dict(
        n_trials=7, timeout=99.0, epochs=2, max_steps=5, trial_time_limit=3.0, batch_size=16,
        optimizer="sgd", lr=0.01, inits=("zeros",), activations=("tanh",), loss_fn=loss,
        task="regression", storage="sqlite:///x.db", study_name="named", sampler=sampler,
        pruner=pruner, guard={"max_grad_norm": 5.0}, seed=3, device="cpu", n_jobs=2, threads=1,
        val_fraction=0.3, callbacks=(callback,), prescreen=False, population=1, search_rows=100,
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        recommend(small_mlp, blobs, blobs, seeds=5, top_k=2, race=False, confirm_jobs=3, **given)
    options = seen["options"]
    assert {name: getattr(options, name) for name in given} == given
    assert seen["val"] is blobs
    confirming = {"seeds": 5, "top_k": 2, "race": False, "jobs": 3}
    assert seen["ahead"] == confirming and seen["callbacks"] == [ahead.after_trial]
    assert seen["confirm"] == {**confirming, "ahead": ahead}
    with pytest.raises(ConfigError, match="confirm_jobs must be a positive integer or 'auto'"):
        recommend(small_mlp, blobs, confirm_jobs=0)  # refused before any search
    for bad in ({"seeds": 0}, {"top_k": 0}):
        with pytest.raises(ConfigError) as refused:
            recommend(small_mlp, blobs, **bad)
        assert str(refused.value) == (f"seeds and top_k must be positive but got "
                                      f"{bad.get('seeds', 3)} and {bad.get('top_k', 3)}.")


def test_search_passes_every_option_on_and_runs_its_documented_defaults(monkeypatch, blobs,
                                                                        small_mlp):  # fmt: skip
    """search() hands each argument to the one core path unchanged; with none, the defaults
    that the docs promise (50 trials, 10 epochs, one process, the pre-screen...)."""
    from autoinit.options import SearchOptions

    searching = core("search")
    seen = []

    class Prepared:
        def optimize(self):
            raise KeyboardInterrupt  # stop here: nothing trains

    def prepare(model_fn, train, val, options):
        seen.append((options, val))
        return Prepared()

    monkeypatch.setattr(searching, "prepare_search", prepare)

    def loss(a, b):
        return (a - b).abs().mean()

    given = dict(
        n_trials=7, timeout=99.0, epochs=2, max_steps=5, trial_time_limit=3.0, batch_size=16,
        optimizer="sgd", lr=0.01, inits=("zeros",), activations=("tanh",), loss_fn=loss,
        task="regression", storage="sqlite:///x.db", study_name="named",
        sampler=optuna.samplers.RandomSampler(), pruner=optuna.pruners.NopPruner(),
        guard={"max_grad_norm": 5.0}, seed=3, device="cpu", n_jobs=2, threads=1,
        val_fraction=0.3, callbacks=(print,), prescreen=False, population="auto",
        search_rows=100,
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        search(small_mlp, blobs, blobs, **given)
    options, val = seen[-1]
    assert {name: getattr(options, name) for name in given} == given and val is blobs
    with pytest.raises(KeyboardInterrupt):
        search(small_mlp, blobs)
    assert seen[-1] == (SearchOptions(), None)
    assert SearchOptions() == SearchOptions(
        n_trials=50, timeout=None, epochs=10, max_steps=None, trial_time_limit=None,
        batch_size=None, optimizer="adam", lr=1e-3, inits=None, activations=None, loss_fn=None,
        task=None, storage=None, study_name=None, sampler=None, pruner=None, guard=True, seed=0,
        device="auto", n_jobs=1, threads=None, val_fraction=0.2, callbacks=(), prescreen=True,
        population=1, search_rows=20_000,
    )  # fmt: skip


def test_recommends_defaults_are_searchs_and_the_confirmations():
    """One default per option: recommend() spells out search()'s and confirm()'s parameters."""
    import inspect

    def defaults(function):
        return {name: p.default for name, p in inspect.signature(function).parameters.items()
                if p.default is not inspect.Parameter.empty}  # fmt: skip

    rec, confirm = defaults(recommend), defaults(core("recommend").confirm)
    assert {k: v for k, v in rec.items() if k in confirm} == {k: confirm[k] for k in rec
                                                              if k in confirm}  # fmt: skip
    assert {k: rec[k] for k in defaults(search)} == defaults(search)
    assert set(rec) == set(defaults(search)) | {"seeds", "top_k", "race", "confirm_jobs"}
    assert rec["confirm_jobs"] == confirm["jobs"] == "auto"  # confirm()'s jobs, named apart


# Threads


@pytest.mark.parametrize("start, threads", [(3, 1), (1, 2), (2, None)])
def test_the_thread_count_is_restored_after_a_search(blobs, small_mlp, storage_url, start,
                                                     threads):  # fmt: skip
    during = []
    before = torch.get_num_threads()
    torch.set_num_threads(start)
    try:
        search(small_mlp, blobs, n_trials=1, storage=storage_url, threads=threads, epochs=1,
               callbacks=[lambda study, trial: during.append(torch.get_num_threads())])
        assert torch.get_num_threads() == start
        assert during == [threads or 1]  # None: one thread on the CPU
        recommend(small_mlp, blobs, seeds=1, top_k=1, n_trials=1, storage=storage_url,
                  threads=threads, epochs=1)  # fmt: skip
        assert torch.get_num_threads() == start
    finally:
        torch.set_num_threads(before)


# Survivors of mutation testing (python -m benchmarks.mutation): apply and build


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y.to(x.dtype)) for x, y in zip(_weights(a), _weights(b)))


def test_apply_and_build_default_to_seed_0():
    config = Config("xavier_uniform", "tanh")
    net = lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))  # noqa: E731
    assert _same(apply(net(), config), apply(net(), config, seed=0))
    assert not _same(apply(net(), config), apply(net(), config, seed=1))
    assert _same(build(net, config), build(net, config, seed=0))


def test_build_seeds_the_weights_of_a_model_fn_without_activation():
    config = Config("xavier_uniform", "tanh")
    net = lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))  # noqa: E731
    assert _same(build(net, config, seed=5), build(net, config, seed=5))
    assert not _same(build(net, config, seed=5), build(net, config, seed=6))


def test_build_leaves_fixed_activations_of_a_model_fn_that_takes_one():
    # The model was built with the searched activation; its fixed output Tanh is no hidden unit.
    def model_fn(activation):
        return nn.Sequential(nn.Linear(4, 8), activation(), nn.Linear(8, 2), nn.Tanh())

    model = build(model_fn, Config("xavier_uniform", "relu"))
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear, nn.Tanh]


def test_weights_are_drawn_in_float32_whatever_the_default_dtype():
    config = Config("kaiming_normal", "relu")
    net = lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))  # noqa: E731
    expected = apply(net(), config, seed=3)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        wide = apply(net(), config, seed=3)
    finally:
        torch.set_default_dtype(before)
    assert next(wide.parameters()).dtype == torch.float64
    assert _same(expected, wide)  # the same draws, only widened


class _FunctionalNet(nn.Module):
    """Calls its activation as a function: nothing for apply to swap."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def forward(self, x):
        return torch.relu(self.layer(x))


def test_a_model_without_activation_modules_is_warned_about_once_per_class():
    # Fresh class names on each run: the classes already warned about are kept per process.
    tag = uuid.uuid4().hex[:8]
    first = type(f"First{tag}", (_FunctionalNet,), {})
    second = type(f"Second{tag}", (first,), {})
    config = Config("xavier_uniform", "tanh")
    for cls in (first, second):
        with pytest.warns(UserWarning, match=rf"^{cls.__name__} has no activation module"):
            apply(cls(), config)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            apply(cls(), config)  # the same class again: no second warning


# Survivors of mutation testing: the initializers


def test_an_unknown_initializer_is_named_as_one():
    with pytest.raises(ConfigError, match=r"^unknown initializer 'xavier_unifrom'\. Did you mean "
                                          r"'xavier_uniform'\?"):  # fmt: skip
        get_initializer("xavier_unifrom")


@pytest.fixture
def unique_name():
    """A registry name no other test uses; removed from the registry (and aliases) afterwards,
    so that tests listing the registry never see it."""
    name = f"test_init_{uuid.uuid4().hex[:8]}"
    yield name
    registry = importlib.import_module("autoinit.initializers")
    registry._REGISTRY.pop(name, None)
    for alias in [a for a, target in registry._ALIASES.items() if target == name]:
        del registry._ALIASES[alias]


def test_a_registered_initializer_keeps_its_aliases(unique_name):
    name = unique_name

    @register_initializer(name, aliases=(f"{name}_alias",))
    def fn(tensor, *, gain, generator):
        """W ~ N(0, 0.25)"""
        return tensor.normal_(0.0, 0.5, generator=generator)

    init = get_initializer(f"{name}_alias")
    assert init.name == name and init.aliases == (f"{name}_alias",)
    assert init.formula == "W ~ N(0, 0.25)"


def test_a_registered_initializer_without_a_docstring_has_an_empty_formula(unique_name):
    name = unique_name

    @register_initializer(name)
    def fn(tensor, *, gain, generator):
        return tensor.normal_(0.0, 0.5, generator=generator)

    assert get_initializer(name).formula == ""  # `autoinit list` prints it


@pytest.mark.parametrize("name", list_initializers())
def test_every_initializer_draws_from_the_generator_only(name):
    init = get_initializer(name)
    state = torch.random.get_rng_state()
    draws = []
    for _ in range(2):
        tensor = torch.full((16, 8), 7.0)
        init(tensor, gain=1.0, generator=torch.Generator().manual_seed(11))
        draws.append(tensor)
    assert torch.equal(draws[0], draws[1])  # the same seed, the same weights
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone


# Survivors of mutation testing: the divergence guard (autoinit.monitor)


def _stats(step=1, loss=1.0, first_loss=1.0, *, total=1.0, first=1.0, last=1.0, first_rms=1.0,
           last_rms=1.0):  # fmt: skip
    grads = GradStats(total, first, last, first_rms, last_rms, "0.weight", "2.weight")
    return StepStats(step, loss, first_loss, grads, [("0.weight", first), ("2.weight", last)])


def test_the_default_rules_and_guard_read_back_with_their_options():
    assert repr(DivergenceGuard()) == (
        "DivergenceGuard([NonFinite(), LossBound(max_loss=None, classes=None, factor=100.0), "
        "GradNormBound(max_norm=100000.0), DepthRatio(max_ratio=1000.0), "
        "Growth(factor=1000.0, reference_steps=3, patience=2), "
        "Vanishing(patience=5, floor=1e-08)], dense_steps=100, check_every=25)"
    )
    rules = default_rules(max_grad_norm=7.0, max_loss=9.0, growth_factor=10.0, reference_steps=2,
                          growth_patience=3, max_depth_ratio=50.0, vanish_floor=1e-6,
                          vanish_patience=2)  # fmt: skip
    assert repr(rules) == (
        "[NonFinite(), LossBound(max_loss=9.0, classes=None, factor=100.0), "
        "GradNormBound(max_norm=7.0), DepthRatio(max_ratio=50.0), "
        "Growth(factor=10.0, reference_steps=2, patience=3), "
        "Vanishing(patience=2, floor=1e-06)]"
    )
    assert rules[-1].rule.floor == 1e-6  # the wrapped rule has the floor too
    assert repr(Patient(NonFinite(), 2)) == "Patient(NonFinite(), patience=2)"
    alone = [GradNormBound(), DepthRatio(), Growth(), FirstLayerFloor(), Vanishing()]
    assert repr(alone) == (  # each rule's own defaults, the same as the guard's
        "[GradNormBound(max_norm=100000.0), DepthRatio(max_ratio=1000.0), "
        "Growth(factor=1000.0, reference_steps=3, patience=2), FirstLayerFloor(floor=1e-08), "
        "Vanishing(patience=5, floor=1e-08)]"
    )


@pytest.mark.parametrize("make, error, message", [
    (lambda: GradNormBound(0), ValueError,
     "GradNormBound's max_norm must be greater than 0 but got 0."),
    (lambda: DepthRatio(1), ValueError,
     "DepthRatio's max_ratio must be greater than 1 but got 1."),
    (lambda: Growth(1), ValueError, "Growth's factor must be greater than 1 but got 1."),
    (lambda: Growth(10, reference_steps=0), ValueError,
     "Growth's reference_steps must be an integer of at least 1 but got 0."),
    (lambda: Growth(10, reference_steps=1.5), ValueError, "Growth's reference_steps must be an"),
    (lambda: LossBound(factor=0), ValueError,
     "LossBound's factor must be greater than 0 but got 0."),
    (lambda: LossBound(math.nan), ValueError, "LossBound's max_loss must be a number but got nan."),
    (lambda: FirstLayerFloor(-1.0), ValueError,
     "FirstLayerFloor's floor must be at least 0 but got -1.0."),
    (lambda: Patient("NonFinite", 2), TypeError, "Patient wraps a Rule but got 'NonFinite'."),
    (lambda: Patient(NonFinite(), 0), ValueError,
     "Patient's patience must be an integer of at least 1 but got 0."),
    (lambda: Vanishing(0), ValueError, "Vanishing's patience must be an integer of at least 1"),
    (lambda: DivergenceGuard(dense_steps=-1), ValueError,
     "dense_steps must be an integer >= 0 but got -1."),
    (lambda: DivergenceGuard(dense_steps=2.5), ValueError, "dense_steps must be an integer"),
    (lambda: DivergenceGuard(check_every=0), ValueError,
     "check_every must be at least 1 but got 0."),
    (lambda: DivergenceGuard(check_every=2.5), ValueError, "check_every must be at least 1"),
    (lambda: DivergenceGuard("abc"), TypeError,
     "rules must be a list of Rule objects but got 'abc'."),
    (lambda: DivergenceGuard(NonFinite()), TypeError, "rules must be a list of Rule objects"),
    (lambda: DivergenceGuard([NonFinite()], zeta=1, alpha=2), TypeError,
     "give rules or the default rules' options, not both; got rules and alpha, zeta."),
])  # fmt: skip
def test_bad_guard_options_are_refused_with_the_value(make, error, message):
    with pytest.raises(error) as caught:
        make()
    assert str(caught.value).startswith(message)


def test_guard_options_just_inside_their_limits_are_accepted():
    GradNormBound(1e-9), DepthRatio(1.001), Growth(1.001, reference_steps=1), LossBound(factor=0.5)
    FirstLayerFloor(0.0), Patient(NonFinite(), 1), Vanishing(1)
    DivergenceGuard(dense_steps=0, check_every=1)


def test_rules_fire_only_strictly_past_their_bound():
    assert GradNormBound(10).check(_stats(total=10.0)) is None
    assert GradNormBound(10).check(_stats(total=10.5)).kind == "exploding"
    assert LossBound(2.0).check(_stats(loss=2.0)) is None
    assert LossBound(2.0).check(_stats(loss=2.5)).kind == "exploding"
    assert DepthRatio(100).check(_stats(step=0, first_rms=100.0, last_rms=1.0)) is None
    assert DepthRatio(100).check(_stats(step=0, first_rms=101.0, last_rms=1.0)).kind == "exploding"
    assert DepthRatio(100).check(_stats(step=0, first_rms=1e9, last=0.0, last_rms=0.0)) is None
    assert FirstLayerFloor(1e-8).check(_stats(first=1e-8)) is None
    assert FirstLayerFloor(1e-8).check(_stats(first=0.5e-8)).kind == "vanishing"


def test_growth_is_measured_against_the_first_steps_and_a_rising_loss():
    growth = Growth(10.0, reference_steps=1)
    assert growth.check(_stats(step=0, total=2.0)) is None  # the reference: 2
    assert growth.check(_stats(step=1, loss=2.0, total=20.0)) is None  # 10x: not over
    assert growth.check(_stats(step=1, loss=1.0, total=25.0)) is None  # the loss did not rise
    stop = growth.check(_stats(step=1, loss=2.0, total=25.0))
    assert stop.kind == "exploding" and "grew 12.5x over the first 1 steps" in stop.reason
    growth.start()
    assert growth.check(_stats(step=5, loss=2.0, total=1e9)) is None  # no reference yet
    assert growth.check(_stats(step=0, total=0.0)) is None  # a zero reference still counts
    assert growth.check(_stats(step=1, loss=2.0, total=1.0)).kind == "exploding"


def test_growth_spaced_out_needs_its_patience_and_a_dense_check_fires_at_once():
    """A batch of outliers late in training lifts the norm and its loss for one check; an
    explosion stays. While every step is checked, one check is enough."""
    growth = Growth(10.0, reference_steps=1, patience=2)
    spike = {"loss": 2.0, "total": 50.0}
    assert growth.check(_stats(step=0, total=1.0)) is None
    assert growth.check(_stats(step=1, loss=0.5, total=1.0)) is None
    assert growth.check(_stats(step=125, **spike)) is None  # one spaced-out check: not yet
    assert growth.check(_stats(step=150, loss=0.5, total=1.0)) is None  # it passed: reset
    assert growth.check(_stats(step=175, **spike)) is None
    assert growth.check(_stats(step=200, loss=0.9, total=50.0)) is None  # the loss fell: reset
    assert growth.check(_stats(step=225, **spike)) is None
    stop = growth.check(_stats(step=250, **spike))  # twice in a row
    assert stop.kind == "exploding" and "at step 250: norm 50 grew 50x" in stop.reason
    growth.start()
    assert growth.check(_stats(step=0, total=1.0)) is None
    assert growth.check(_stats(step=1, **spike)).kind == "exploding"  # dense: at once
    patient = Growth(10.0, reference_steps=1, patience=3)
    for step in (0, 2, 4):  # spaced out by 2: three checks in a row needed
        assert patient.check(_stats(step=step, **(spike if step else {"total": 1.0}))) is None
    assert patient.check(_stats(step=6, **spike)).kind == "exploding"
    with pytest.raises(ValueError, match="patience"):
        Growth(patience=0)


def test_loss_bound_keeps_its_own_classes_and_patient_passes_them_on():
    own = LossBound(classes=10)
    own.start(classes=3)
    assert own.bound == pytest.approx(100 * math.log(10))
    wrapped = Patient(LossBound(), 1)
    wrapped.start(classes=10)
    assert wrapped.rule.bound == pytest.approx(100 * math.log(10))


def test_from_option_gives_each_guard_the_trial_and_its_own_rules():
    trial = optuna.create_study().ask()
    shared = Growth(5.0)
    for option in (True, False, {"dense_steps": 3}, {"rules": [shared]}, [shared]):
        guard = DivergenceGuard.from_option(option, trial=trial)
        assert guard.trial is trial
        assert all(rule is not shared for rule in guard.rules)  # copied, never shared
    with pytest.raises(ConfigError, match=r"^guard must be True, False, a dict of DivergenceGuard "
                                          r"options or a list of rules but got 'yes'\.$"):
        DivergenceGuard.from_option("yes")


class _Recorder(Rule):
    """An every-step rule that records what it was shown and is quiet below a loss of 5."""

    reads_gradients = False

    def __init__(self):
        self.seen = []

    def quiet_below(self):
        return 5.0

    def check(self, stats):
        self.seen.append((stats.step, stats.first_loss))
        return None


def _backward(model):
    model.zero_grad()
    model(torch.ones(3, 4)).sum().backward()


def test_steps_without_gradients_skip_quiet_losses_and_keep_the_first_loss():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    _backward(model)
    recorder = _Recorder()
    guard = DivergenceGuard([recorder, LossBound(100.0)], dense_steps=1, check_every=1000)
    assert guard.stopped is None
    for loss in (2.0, 1.0, 7.0):  # step 0 reads gradients; steps 1 and 2 do not
        assert guard.observe(torch.tensor(loss), model.named_parameters()) is None
    assert recorder.seen == [(0, 2.0), (2, 2.0)]  # step 1's loss was below the quiet bound
    assert guard.grad_steps == [0] and guard.losses == [2.0, 1.0, 7.0]
    stop = guard.observe(1e6, model.named_parameters())  # a loss-only step that fires
    worst = max(((n, float(p.grad.norm())) for n, p in model.named_parameters()),
                key=lambda pair: pair[1])[0]  # fmt: skip
    assert stop.kind == "exploding" and stop.reason.endswith(f"(worst layer {worst})")
    assert guard.stopped == stop
    guard.start()
    assert guard.stopped is None and guard.losses == []


def test_step_stats_measure_the_first_and_last_weight_layers():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3, bias=False))
    _backward(model)
    stats = StepStats.measure(4, 1.5, model.named_parameters(), first_loss=2.0)
    first, last = model[0].weight.grad, model[2].weight.grad
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert (stats.step, stats.loss, stats.first_loss) == (4, 1.5, 2.0)
    assert stats.grads.first_layer == "0.weight" and stats.grads.last_layer == "2.weight"
    assert stats.grads.total_norm == pytest.approx(float(total))
    assert stats.grads.first_norm == pytest.approx(float(first.norm()))
    assert stats.grads.last_norm == pytest.approx(float(last.norm()))
    assert stats.grads.first_rms == pytest.approx(float(first.norm()) / 32**0.5)
    assert stats.grads.last_rms == pytest.approx(float(last.norm()) / 24**0.5)
    assert [n for n, _ in stats.layer_norms] == ["0.weight", "0.bias", "2.weight"]
    lazy = StepStats.measure(4, 1.5, model.named_parameters(), first_loss=2.0, gradients=False)
    assert (lazy.step, lazy.loss, lazy.first_loss, lazy.grads) == (4, 1.5, 2.0, None)
    assert [n for n, _ in lazy.layer_norms] == [n for n, _ in stats.layer_norms]
    assert [v for _, v in lazy.layer_norms] == pytest.approx([v for _, v in stats.layer_norms])
    empty = StepStats.measure(4, 1.5, nn.Linear(2, 2).named_parameters(), first_loss=2.0)
    assert (empty.step, empty.loss, empty.first_loss, empty.grads) == (4, 1.5, 2.0, None)
    norm = nn.LayerNorm(4)  # no matrix at all: the first and last parameters stand in
    norm(torch.randn(3, 4)).sum().backward()
    grads = StepStats.measure(0, 1.0, norm.named_parameters()).grads
    assert (grads.first_layer, grads.last_layer) == ("weight", "bias")


def test_the_worst_layer_is_the_largest_norm_or_the_first_non_finite():
    assert StepStats(0, 1.0, layers=[("b", 1.0), ("a", 5.0)]).worst_layer == "a"
    blown = [("b", 1.0), ("a", math.inf), ("c", math.nan)]
    assert StepStats(0, 1.0, layers=blown).worst_layer == "a"
    assert StepStats(0, 1.0).worst_layer == "?"


def test_symmetry_is_judged_on_hidden_matrices_with_several_units():
    def net(*layers):
        torch.manual_seed(0)
        return nn.Sequential(*layers)

    assert symmetry_stop(net(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))) is None
    assert symmetry_stop(net(nn.Linear(4, 1), nn.Tanh(), nn.Linear(1, 2))) is None  # one unit
    twins = net(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2), nn.Tanh(), nn.Linear(2, 2))
    with torch.no_grad():
        twins[2].weight.copy_(torch.arange(1.0, 9.0).repeat(2, 1))  # the last hidden layer
    stop = symmetry_stop(twins)
    assert stop.kind == "symmetric"
    assert stop.reason == ("symmetric weights at step 0: all 2 units of 2.weight are identical "
                           "(value 1), so they can never differ")  # fmt: skip
    trial = optuna.create_study().ask()
    with pytest.raises(Diverged):
        check_symmetry(twins, trial)
    assert trial.study.trials[0].user_attrs[records.PRUNE_KIND] == "symmetric"


def test_the_signal_probe_skips_outputs_without_a_spread():
    model = nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 1))
    probe = SignalProbe(model)
    model(torch.ones(1, 4))  # outputs of 2 elements, then of 1
    record = probe.remove()
    assert record["layers"] == ["0"] and len(record["output_std"]) == 1


def test_raise_diverged_stores_the_reason_and_raises_it():
    trial = optuna.create_study().ask()
    with pytest.raises(Diverged) as caught:
        raise_diverged("vanishing", "why it stopped", trial)
    assert str(caught.value) == "why it stopped"
    assert caught.value.stop == Stop("vanishing", "why it stopped")
    attrs = trial.study.trials[0].user_attrs
    assert (attrs[records.PRUNE_KIND], attrs[records.PRUNE_REASON]) == ("vanishing",
                                                                        "why it stopped")


def test_an_initializer_called_without_a_gain_uses_gain_1():
    init = get_initializer("kaiming_normal")  # scales by the gain it is given
    drawn = [init(torch.empty(64, 32), generator=torch.Generator().manual_seed(0)),
             init(torch.empty(64, 32), gain=1.0, generator=torch.Generator().manual_seed(0))]
    assert torch.equal(*drawn)


def test_build_passes_the_batch_to_a_data_dependent_init_of_any_model_fn():
    net = lambda: nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))  # noqa: E731
    model = build(net, Config("lsuv", "tanh"), batch=torch.randn(32, 4))  # no `activation` arg
    assert isinstance(model[1], nn.Tanh)


def test_swapping_activations_counts_the_modules_swapped():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                          nn.Sequential(nn.Linear(8, 8), nn.ReLU()), nn.Linear(8, 2))  # fmt: skip
    swap = core("apply").swap_activation_modules
    assert swap(model, Config("xavier_uniform", "tanh")) == 3
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 3


def test_recurrent_weights_are_drawn_from_the_seed_alone():
    config = Config("xavier_uniform", "tanh")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a GRU has no activation module to swap
        first = apply(nn.GRU(4, 8), config, seed=0)
        torch.randn(100)  # the global RNG moves on; the weights must not depend on it
        second = apply(nn.GRU(4, 8), config, seed=0)
    assert _same(first, second)


def test_the_leaky_slope_sets_the_gain():
    net = lambda: nn.Sequential(nn.Linear(64, 64), nn.LeakyReLU(), nn.Linear(64, 2))  # noqa: E731
    steep = apply(net(), Config("kaiming_normal", "leaky_relu", 0.5), seed=0)[0].weight
    flat = apply(net(), Config("kaiming_normal", "leaky_relu", 0.01), seed=0)[0].weight
    ratio = math.sqrt(2 / (1 + 0.5**2)) / math.sqrt(2 / (1 + 0.01**2))
    assert torch.allclose(steep, flat * ratio, rtol=1e-5, atol=1e-7)


def test_a_config_is_clearly_worse_only_by_a_t_test_over_two_seeds_or_more():
    worse = core("recommend")._clearly_worse
    assert worse([5.0], [1.0]) is None  # one seed: no test
    # the same gap on every seed: no spread
    assert worse([2.0, 3.0], [1.0, 2.0]) == "+1 vs the leader over 2 seeds (t-test, 95%, 1 df)"
    assert worse([1.0, 2.0], [1.0, 2.0]) is None and worse([0.5, 1.5], [1.0, 2.0]) is None
    assert worse([2.0, 3.1], [1.0, 2.0]) is not None  # gaps 1.0, 1.1: t = 21 > t(0.95, 1) = 6.3
    assert worse([1.1, 4.0], [1.0, 2.0]) is None  # gaps 0.1, 2.0: t = 1.1, not clear
    assert worse([2.0, 3.2, 3.9], [1.0, 2.0, 3.0]).endswith("over 3 seeds (t-test, 95%, 2 df)")
    assert worse([1.2, 2.0, 3.1], [1.0, 2.0, 3.0]) is None  # t = 1.7 < t(0.95, 2) = 2.9

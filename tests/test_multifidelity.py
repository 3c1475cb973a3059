"""Multi-fidelity search (issue 13, section 1): the default pruner's rungs fall on the steps that
trials report, the divergence guard still stops a trial at any fidelity, and large data is
searched on a stratified subsample while the confirmation trains on every row."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
import torch

from autoinit import records, search
from autoinit import study as studies
from autoinit._search import prepare_search, subsample_rows
from autoinit.errors import ConfigError, StorageError
from autoinit.options import SearchOptions
from autoinit.testing import tiny_mlp, toy_classification, toy_regression
from autoinit.train import prepare_data


def _rungs(pruner: optuna.pruners.BasePruner) -> list[int]:
    """The steps at which the default successive-halving pruner judges a trial."""
    assert isinstance(pruner, studies.SuccessiveHalving)
    return pruner.rung_steps()


@pytest.mark.parametrize("steps_per_epoch, epochs", [(20, 10), (313, 10), (50, 4), (675, 20)])
def test_default_pruner_rungs_fall_on_report_steps(steps_per_epoch, epochs):
    """Trials report after every epoch, at ``epoch * steps_per_epoch``: every rung is one, and
    none is after the first quarter of the budget."""
    total = steps_per_epoch * epochs
    rungs = _rungs(studies.default_pruner(total, steps_per_epoch))
    reported = {steps_per_epoch * e for e in range(1, epochs + 1)}
    assert rungs and set(rungs) <= reported, (rungs, sorted(reported))
    assert max(rungs) * studies.REDUCTION_FACTOR <= total
    if epochs == 10:  # one rung: the best quarter after one epoch trains to the end
        assert rungs == [steps_per_epoch]
    if epochs == 20:
        assert rungs == [steps_per_epoch, 4 * steps_per_epoch]


@pytest.mark.parametrize("steps_per_epoch, epochs",
                         [(8, 10), (19, 10), (50, 1), (675, 3), (None, None)])  # fmt: skip
def test_short_epochs_or_short_budgets_keep_the_median_rule(steps_per_epoch, epochs):
    total = steps_per_epoch * epochs if steps_per_epoch else None
    pruner = studies.default_pruner(total, steps_per_epoch)
    assert isinstance(pruner, optuna.pruners.MedianPruner)


def _judge(pruner, reports: list[tuple[int, float]], study: optuna.Study) -> bool:
    trial = study.ask()
    for step, value in reports:
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return True
    study.tell(trial, reports[-1][1])
    return False


def test_a_trial_behind_at_3_epochs_but_best_at_the_end_is_not_stopped():
    """PyTorch's default + GELU on the 20,000-row table: ahead after one epoch, behind after 3
    of 10 (its validation loss swings between epochs there), best at the end. A reduction factor
    of 3 judged it again at 3 epochs and stopped it; the default judges once, after one epoch."""
    per_epoch, epochs = 20, 10
    fast = [(per_epoch * e, max(1.0 - 0.2 * (e - 1), 0.5)) for e in range(1, epochs + 1)]
    late = [(per_epoch * e, 0.9 if e <= 3 else 0.9 - 0.1 * (e - 3)) for e in range(1, epochs + 1)]
    total = per_epoch * epochs
    for pruner, stopped in ((studies.SuccessiveHalving(per_epoch, 3, total), True),
                            (studies.default_pruner(total, per_epoch), False)):  # fmt: skip
        study = optuna.create_study(pruner=pruner)
        for _ in range(3):
            assert not _judge(pruner, fast, study)
        assert _judge(pruner, late, study) is stopped
    assert study.best_value == late[-1][1] < fast[-1][1]


def test_no_rung_in_the_last_third_of_the_budget():
    """Optuna's rung at 90 of 100 steps prunes a trial that has cost 90%; ours lets it finish."""
    for pruner, pruned_late in (
        (optuna.pruners.SuccessiveHalvingPruner(min_resource=10, reduction_factor=3), True),
        (studies.SuccessiveHalving(10, 3, 100), False),
    ):
        study = optuna.create_study(pruner=pruner)
        assert not _judge(pruner, [(10, 1.0), (30, 1.0), (90, 0.1), (100, 0.1)], study)
        assert _judge(pruner, [(10, 0.5), (30, 0.5), (90, 5.0), (100, 5.0)], study) is pruned_late
        assert _judge(pruner, [(10, 0.9), (30, 0.9)], study)  # not in the best third at 10


def test_trials_stop_at_rungs_and_cost_less_than_the_full_budget(storage_url):
    x, y = toy_classification(n=400, features=8, classes=3)
    study = search(tiny_mlp(8, 3, depth=3, width=16), (x, y), n_trials=16, epochs=9,
                   batch_size=16, storage=storage_url, prescreen=False)  # fmt: skip
    assert isinstance(study.pruner, studies.SuccessiveHalving)
    per_epoch = 20  # 320 training rows, batch 16
    full = 9 * per_epoch
    pruned = [t for t in study.trials if records.prune_kind(t) == "pruner"]
    assert pruned, "the default pruner stopped nothing in 16 trials"
    rungs = set(_rungs(study.pruner))
    for trial in pruned:
        assert trial.user_attrs[records.STEPS] in rungs
        assert trial.user_attrs[records.PRUNE_REASON].startswith("pruned by the study's pruner")
    steps = sum(t.user_attrs.get(records.STEPS, 0) for t in study.trials)
    assert steps < 0.8 * 16 * full


def test_the_guard_stops_a_diverging_trial_whatever_the_fidelity(tmp_path):
    storage_url = f"sqlite:///{tmp_path / 'g.db'}"
    x, y = toy_classification(n=240, features=8, classes=3)
    queue = optuna.create_study(storage=storage_url, study_name="g", direction="minimize")
    for init in ("kaiming_normal", "normal"):
        queue.enqueue_trial({"init": init, "activation": "relu"})
    study = search(tiny_mlp(8, 3, depth=6, width=32), (x, y), n_trials=2, epochs=6,
                   storage=storage_url, study_name="g", inits=["kaiming_normal", "normal"],
                   activations=["relu"], prescreen=False)  # fmt: skip
    diverged = study.trials[1]
    assert diverged.state == optuna.trial.TrialState.PRUNED
    assert records.prune_kind(diverged) in ("exploding", "non-finite")


# --- searching on a subsample ----------------------------------------------------------------


def test_subsample_keeps_class_shares_and_every_class():
    x = torch.randn(10_000, 4)
    y = torch.cat([torch.zeros(9_000), torch.ones(990), torch.full((10,), 2.0)]).long()
    data = prepare_data((x, y), seed=0)
    small = subsample_rows(data, 500, seed=0)
    counts = torch.bincount(small.train[1], minlength=3)
    full = torch.bincount(data.train[1], minlength=3)
    assert counts.sum() == 500 and counts[2] >= 1
    assert abs(counts[1] / 500 - full[1] / full.sum()) < 0.01
    assert small.val is data.val  # validation is never subsampled
    again = subsample_rows(data, 500, seed=0)
    assert torch.equal(again.train[0], small.train[0])  # the same rows in every process


def test_a_class_too_rare_for_its_share_keeps_one_row_of_the_subsample():
    """100 of 10,000 rows take every 100th row of the rows sorted by class: a class of one row
    gets no position, so its row is added (the subsample holds 101)."""
    x = torch.arange(10_000, dtype=torch.float32).reshape(-1, 1)
    y = torch.cat([torch.zeros(5_000), torch.ones(4_999), torch.full((1,), 2.0)]).long()
    data = dataclasses.replace(prepare_data((x, y), seed=0), train=(x, y))  # every row trains
    small = subsample_rows(data, 100, seed=0)
    assert torch.bincount(small.train[1], minlength=3).tolist() == [50, 50, 1]
    rows = small.train[0].flatten().long()
    assert torch.equal(small.train[1], y[rows])  # each row keeps its own label
    assert torch.equal(rows, torch.sort(rows).values) and len(set(rows.tolist())) == 101
    assert int(rows[-1]) == 9_999  # the rare class's row, in file order


def _streamed(x: torch.Tensor, y: torch.Tensor):
    """A DataLoader over a dataset that is not a TensorDataset: read batch by batch, never held
    in memory."""
    from torch.utils.data import DataLoader, Dataset

    class Rows(Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return x[i], y[i]

    return DataLoader(Rows(), batch_size=32)


def test_a_dataloader_is_searched_whole(storage_url):
    """Data read batch by batch from the user's loader is never subsampled, whatever
    ``search_rows`` says."""
    loader = _streamed(*toy_classification(n=300, features=4, classes=2))
    study = search(tiny_mlp(4, 2), loader, loader, n_trials=1, epochs=1, search_rows=100,
                   storage=storage_url, prescreen=False)  # fmt: skip
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert "search_rows" not in study.user_attrs["budget"]


def test_only_in_memory_data_can_be_subsampled():
    loader = _streamed(*toy_regression(n=200, features=4))
    data = prepare_data(loader, loader, seed=0)
    with pytest.raises(ValueError, match=r"^only in-memory data can be subsampled\.$"):
        subsample_rows(data, 100, seed=0)


def test_a_subsample_of_every_row_is_the_data_and_several_targets_are_stratified_by_the_first():
    x, y = toy_regression(n=2_000, features=4)
    data = prepare_data((x, torch.cat([y.reshape(-1, 1), -y.reshape(-1, 1)], dim=1)), seed=0)
    assert subsample_rows(data, len(data.train[0]), seed=0) is data
    small = subsample_rows(data, 200, seed=0)
    assert small.train[1].shape == (200, 2)
    assert torch.equal(small.train[1][:, 1], -small.train[1][:, 0])  # rows kept whole


def test_subsample_keeps_the_regression_targets_spread():
    x, y = toy_regression(n=5_000, features=4)
    data = prepare_data((x, y), seed=0)
    small = subsample_rows(data, 400, seed=0)
    assert len(small.train[0]) == 400
    full_q = torch.quantile(data.train[1].flatten(), torch.tensor([0.1, 0.5, 0.9]))
    small_q = torch.quantile(small.train[1].flatten(), torch.tensor([0.1, 0.5, 0.9]))
    assert torch.allclose(full_q, small_q, atol=0.1 * float(data.train[1].std()))


def test_trials_search_the_subsample_and_confirmation_gets_every_row(storage_url):
    x, y = toy_classification(n=1_000, features=8, classes=3)
    options = SearchOptions(n_trials=2, epochs=1, storage=storage_url, search_rows=300,
                            prescreen=False)  # fmt: skip
    run = prepare_search(tiny_mlp(8, 3), (x, y), None, options)
    assert len(run.search_objective.data.train[0]) == 300
    assert len(run.objective.data.train[0]) == 800  # what confirm() retrains with
    assert run.objective.data.val is run.search_objective.data.val
    assert run.study.user_attrs[records.STUDY_BUDGET]["search_rows"] == 300
    run.optimize()
    steps = {t.user_attrs[records.STEPS] for t in run.study.trials if t.state.is_finished()}
    assert steps == {5}  # ceil(300 / 64) steps: one epoch of the subsample


def test_no_subsample_when_the_rows_fit_or_when_turned_off(storage_url):
    x, y = toy_classification(n=200, features=8, classes=3)
    for rows in (None, 160, 10_000):
        options = SearchOptions(n_trials=1, storage=storage_url, study_name=f"s{rows}",
                                search_rows=rows, prescreen=False)  # fmt: skip
        run = prepare_search(tiny_mlp(8, 3), (x, y), None, options)
        assert run.search_objective.data is run.objective.data
        assert "search_rows" not in run.study.user_attrs[records.STUDY_BUDGET]


def test_resuming_with_other_search_rows_is_refused(storage_url):
    x, y = toy_classification(n=1_000, features=8, classes=3)
    prepare_search(tiny_mlp(8, 3), (x, y), None,
                   SearchOptions(storage=storage_url, study_name="r", search_rows=300))
    with pytest.raises(StorageError, match="another budget"):
        prepare_search(tiny_mlp(8, 3), (x, y), None,
                       SearchOptions(storage=storage_url, study_name="r", search_rows=400))


@pytest.mark.parametrize("bad", [0, -5, 2.5, "all"])
def test_search_rows_option_is_checked(bad):
    with pytest.raises(ConfigError, match="search_rows must be a positive integer"):
        SearchOptions(search_rows=bad)


def test_recommend_confirms_on_every_row(storage_url, monkeypatch):
    """The confirmation's retraining sees all 800 training rows, the trials 300."""
    from autoinit import _recommend

    x, y = toy_classification(n=1_000, features=8, classes=3)
    searched, confirmed = set(), set()
    attempt = _recommend.Objective.attempt

    def search_spy(self, config, seed, **kwargs):
        if kwargs.get("trial") is not None:  # a search trial
            searched.add(len(self.data.train[0]))
        return attempt(self, config, seed, **kwargs)

    def confirm_spy(train):  # a confirmation round, one config or several together
        def spy(objective, *args):
            confirmed.add(len(objective.data.train[0]))
            return train(objective, *args)

        return spy

    monkeypatch.setattr(_recommend.Objective, "attempt", search_spy)
    for name in ("_train_once", "_train_together"):
        monkeypatch.setattr(_recommend, name, confirm_spy(getattr(_recommend, name)))
    _recommend.recommend(tiny_mlp(8, 3), (x, y), n_trials=3, epochs=1, storage=storage_url,
                         search_rows=300, seeds=1, top_k=1, prescreen=False)  # fmt: skip
    assert searched == {300} and confirmed == {800}

"""The racing confirmation: who leaves the race, when, and what the stored evidence says.

The racing rule is pure logic over per-seed losses, so an objective that returns chosen losses
drives it; ``tests/test_deep_nets.py`` and ``tests/test_core_bugs.py`` race real training runs.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import warnings
from dataclasses import dataclass, field

import optuna
import pytest
from test_population import Refusing as _Unbatchable  # autoinit_batchable = False

from autoinit import Config
from autoinit._recommend import _clearly_worse, _race, _rank, _residual_spread
from autoinit.monitor import Diverged

A, B, C, D = (Config("kaiming_normal", "relu"), Config("orthogonal", "tanh"),
              Config("xavier_uniform", "selu"), Config("default", "relu"))  # fmt: skip


@dataclass
class _Result:
    value: float
    metric: float = 0.9
    stop: None = None  # train() raises for a stopped run


@dataclass
class ScriptedObjective:
    """Returns the loss scripted for (config, seed); ``inf`` means the guard stopped the run."""

    losses: dict[Config, list[float]]
    calls: list[tuple[Config, int]] = field(default_factory=list)
    guard: dict = field(default_factory=dict)

    def train(self, config: Config, seed: int, *, guard) -> _Result:
        self.calls.append((config, seed))
        value = self.losses[config][seed - 1000]
        if math.isinf(value):
            raise Diverged("exploding", f"exploding gradient at step 3: norm 1e+09 (seed {seed})")
        return _Result(value)


SEEDS = (1000, 1001, 1002)


def test_a_diverged_config_leaves_at_once_and_keeps_its_loss():
    objective = ScriptedObjective({A: [0.2, 0.21, 0.2], D: [math.inf, 0.1, 0.1]})
    ranked = {r.config: r for r in _race(objective, [A, D], SEEDS, race=True)}
    assert ranked[D].values == (math.inf,) and ranked[D].seeds == (1000,)
    assert ranked[D].dropped == "out after seed 1: it diverged"
    assert "exploding gradient at step 3" in ranked[D].stops[0]
    assert (D, 1001) not in objective.calls
    assert ranked[A].seeds == (1000,)  # alone after seed 1: the winner is separated


def test_a_clearly_worse_config_is_dropped_after_two_seeds_and_a_close_one_is_not():
    losses = {A: [0.20, 0.22, 0.21], B: [0.40, 0.43, 0.41], C: [0.21, 0.21, 0.22]}
    objective = ScriptedObjective(losses)
    ranked = {r.config: r for r in _race(objective, [A, B, C], SEEDS, race=True)}
    assert ranked[B].seeds == (1000, 1001) and ranked[B].dropped.startswith("out after seed 2: +")
    assert "t-test, 95%, 2 df" in ranked[B].dropped  # 3 configs x 2 seeds: (3-1)(2-1) df
    assert ranked[A].seeds == ranked[C].seeds == SEEDS and ranked[C].dropped is None
    assert len(objective.calls) == 8  # 3 + 3 + 2: B skipped its third seed
    ranking = _rank(list(ranked.values()))
    assert [r.config for r in ranking] == [A, C, B]  # finishers first, best mean first


def test_the_race_pools_the_spread_so_a_clear_loser_leaves_after_two_seeds():
    """Alone, B's two gaps (0.10, 0.14) are 6.0 standard errors: under t(1) = 6.31. The race's
    four configs pool the seed-to-seed spread over 3 degrees of freedom (t = 2.35): B leaves."""
    losses = {A: [0.20, 0.22, 0.21], B: [0.30, 0.36, 0.33], C: [0.21, 0.21, 0.22],
              D: [0.22, 0.23, 0.22]}  # fmt: skip
    assert _clearly_worse(losses[B][:2], losses[A][:2]) is None
    objective = ScriptedObjective(losses)
    ranked = {r.config: r for r in _race(objective, [A, B, C, D], SEEDS, race=True)}
    assert ranked[B].dropped == (
        "out after seed 2: +0.12 vs the leader over 2 seeds (t-test, 95%, 3 df)")
    assert ranked[B].seeds == (1000, 1001) and ranked[C].seeds == ranked[D].seeds == SEEDS
    assert len(objective.calls) == 4 + 4 + 3


def test_a_race_cut_short_says_how_many_seeds_each_config_got_everywhere():
    """The leader is alone after two seeds, so the race ends there: every display says the
    winner's mean is over seeds 1000 and 1001, not over the three that were planned."""
    from autoinit.cli_output import _ranking_table
    from autoinit.plots import plot_confirmation
    from autoinit.recommendation import Recommendation
    from autoinit.report import _evidence_table

    losses = {A: [0.20, 0.21, 0.2], B: [0.40, 0.42, 0.4], D: [0.30, 0.33, 0.3]}
    ranking = _rank(_race(ScriptedObjective(losses), [A, B, D], SEEDS, race=True))
    default = next(r for r in ranking if r.config == D)
    rec = Recommendation(A, ranking, default, SEEDS, "accuracy", "cut")
    assert ranking[0].seeds == (1000, 1001) and not rec.full_race
    assert "over seeds 1000, 1001;" in rec.headline() and "1002" not in rec.headline()
    assert "over seeds 1000, 1001" in str(rec) and "1002" not in str(rec)
    table = _ranking_table(rec)
    assert [row.split()[-1] for row in table[1:]][:1] == ["2"]  # the winner's seeds column
    assert _evidence_table(rec)[1][-1].render(str) == "1000, 1001"  # the report's row
    study = optuna.create_study(study_name="cut")
    rec.store(study)
    assert "confirmed over seeds 1000, 1001:" in rec.explain(study)
    figure = plot_confirmation(study)
    assert figure.layout.title.text == "Confirmation over seeds (up to 3 seeds)"
    assert "kaiming_normal + relu (2 of 3 seeds)" in figure.data[0].y
    full = Recommendation(A, _rank(_race(ScriptedObjective(losses), [A, B, D], SEEDS,
                                         race=False)), default, SEEDS, "accuracy")  # fmt: skip
    assert full.full_race and "over seeds 1000, 1001, 1002" in str(full)


def test_a_default_dropped_before_the_winner_finished_shows_its_own_seeds():
    """The default leaves after two seeds while two configs race on: the comparison says each
    side's seeds (the winner's three, the default's two), in the headline, print and explain."""
    from autoinit.recommendation import Recommendation

    losses = {A: [0.20, 0.22, 0.21], C: [0.21, 0.21, 0.22], D: [0.40, 0.43, 0.41]}
    ranking = _rank(_race(ScriptedObjective(losses), [A, C, D], SEEDS, race=True))
    default = next(r for r in ranking if r.config == D)
    assert ranking[0].seeds == SEEDS and default.seeds == (1000, 1001)
    rec = Recommendation(A, ranking, default, SEEDS, "accuracy", "dropped-default")
    assert rec.own_seeds(ranking[0]) == "" and rec.own_seeds(default) == " over seeds 1000, 1001"
    assert "over seeds 1000, 1001, 1002, against 0.415 ± 0.021 over seeds 1000, 1001 for " \
           "PyTorch's default" in rec.headline()
    assert "validation loss 0.415 ± 0.021 over seeds 1000, 1001; out after seed 2" in str(rec)
    study = optuna.create_study(study_name="dropped-default")
    rec.store(study)
    assert "0.415 ± 0.021 over seeds 1000, 1001 for PyTorch's default" in rec.explain(study)


def test_the_pooled_spread_is_the_paired_tests_for_two_configs_and_ignores_block_effects():
    values, leader = [0.31, 0.52, 0.40], [0.20, 0.21, 0.26]
    gaps = [v - lead for v, lead in zip(values, leader)]
    spread, df = _residual_spread([values, leader])
    assert df == 2 and spread * math.sqrt(2) == pytest.approx(statistics.stdev(gaps))
    rows = [values, leader, [0.25, 0.27, 0.22]]
    spread, df = _residual_spread(rows)
    assert df == 4  # (3 configs - 1) x (3 seeds - 1)
    # a config's level and a seed's level (an easy seed for everyone) are not noise
    shifted = [[v + 1.0 + (0.5 if j == 1 else 0.0) for j, v in enumerate(row)] for row in rows]
    shifted[0] = [v + 3.0 for v in shifted[0]]
    assert _residual_spread(shifted) == (pytest.approx(spread), 4)
    assert _residual_spread([[0.1, 0.2], [0.3, 0.4]]) == (pytest.approx(0.0, abs=1e-12), 1)
    assert _residual_spread([[0.1], [0.3], [0.2]]) == (0.0, 0)  # one seed: no test


def test_without_racing_every_config_gets_every_seed():
    objective = ScriptedObjective({A: [0.2, 0.2, 0.2], B: [0.9, 0.9, 0.9], D: [math.inf] * 3})
    ranked = _race(objective, [A, B, D], SEEDS, race=False)
    assert all(r.seeds == SEEDS and r.dropped is None for r in ranked)
    assert len(objective.calls) == 9


def test_a_dropped_config_with_a_lower_mean_never_outranks_a_finisher():
    dropped = _race(ScriptedObjective({B: [0.1, 0.1, 0.1]}), [B], SEEDS, race=True)[0]
    finisher = _race(ScriptedObjective({A: [0.3, 0.3, 0.3]}), [A], SEEDS, race=False)[0]
    late = type(dropped)(B, (0.1, 0.1), (0.9, 0.9), (None, None), (1000, 1001), "dropped")
    assert [r.config for r in _rank([late, finisher])] == [A, B]
    assert dropped.seeds == (1000,)  # a lone config needs no second seed


@pytest.mark.parametrize(
    ("values", "leader", "worse"),
    [
        ([0.5, 0.5], [0.2, 0.2], True),  # equal gaps: no spread, clearly worse
        ([0.30, 0.50], [0.20, 0.21], False),  # gaps 0.1 and 0.29: t(1) = 6.3 needs far more
        ([0.30, 0.31, 0.30], [0.20, 0.21, 0.20], True),
        ([0.2, 0.2], [0.3, 0.3], False),  # better than the leader
        ([0.9], [0.1], False),  # one seed never drops a finite config
        ([0.3, 0.4], [0.2, 0.2], False),  # gaps 0.1, 0.2: 3 s.e., under t(1) = 6.3 (not t(3))
        ([0.3, 0.4, 0.5], [0.2, 0.2, 0.2], True),  # 3.5 s.e. over t(2) = 2.9: / sqrt(n), not *
    ],
)
def test_the_paired_rule(values, leader, worse):
    assert (_clearly_worse(values, leader) is not None) is worse


def test_recommend_races_real_runs_and_stores_the_seeds_each_config_got(blobs, storage_url):
    from autoinit import recommend
    from autoinit.testing import tiny_mlp

    rec = recommend(tiny_mlp(8, 3), blobs, n_trials=4, max_steps=20, seeds=3, top_k=3,
                    inits=["zeros", "kaiming_normal", "default"], activations=["relu"],
                    storage=storage_url)  # fmt: skip
    stored = optuna.load_study(study_name=rec.study_name, storage=storage_url)
    for entry, ranked in zip(stored.user_attrs["recommendation"]["ranking"], rec.ranking):
        assert entry["seeds"] == list(ranked.seeds) and len(entry["values"]) == len(ranked.seeds)
    assert rec.winner.dropped is None and rec.winner.seeds == rec.seeds[: len(rec.winner.seeds)]


def test_a_race_trained_together_gives_the_race_trained_one_by_one(blobs, storage_url, monkeypatch):
    """Each round trains as one batched model: the same losses, drops and seeds."""
    import autoinit._rounds as recommend_module
    from autoinit._search import prepare_search
    from autoinit.options import SearchOptions
    from autoinit.population import train_population
    from autoinit.testing import tiny_mlp

    configs = [Config("kaiming_normal", "relu"), Config("xavier_uniform", "tanh"),
               Config("orthogonal", "leaky_relu", 0.1), Config("default", "relu"),
               Config("zeros", "relu")]  # fmt: skip  (zeros: stopped as symmetric, unstarted)
    options = SearchOptions(n_trials=1, max_steps=30, storage=storage_url, prescreen=False)
    objective = prepare_search(tiny_mlp(8, 3, depth=3, width=16), blobs, None, options).objective
    one_by_one = _race(objective, configs, SEEDS, race=True, together=False)
    engines, rounds, activations = [], [], []
    with monkeypatch.context() as patch:  # a spy: the rounds really train batched
        def spy(models, *args, seeds, **kwargs):
            activations.append([repr(model[1]) for model in models])  # before training
            results = train_population(models, *args, seeds=seeds, **kwargs)
            engines.append({r.engine for r in results})
            rounds.append(list(seeds))
            return results

        patch.setattr(recommend_module, "train_population", spy)
        together = _race(objective, configs, SEEDS, race=True, together=True)
    assert engines and all(e == {"bmm"} for e in engines)
    # The first round trains the 4 configs that start on the first two seeds at once (the
    # zeros config stops as symmetric before training); each later round one seed.
    assert sorted(rounds[0]) == [1000] * 4 + [1001] * 4
    # Members of one activation side by side (each activation then runs on one slice of rows):
    # ReLU's four runs (two configs, two seeds), tanh's two and Leaky ReLU's two.
    first = activations[0]
    assert sorted(first.count(kind) for kind in set(first)) == [2, 2, 4]
    assert all(first[first.index(kind) : first.index(kind) + first.count(kind)] ==
               [kind] * first.count(kind) for kind in first)  # fmt: skip
    assert all(set(r) == {1002} for r in rounds[1:]) and len(rounds) <= 2
    assert [r.config for r in together] == configs
    for batched, alone in zip(together[:-1], one_by_one):
        assert batched.seeds == alone.seeds and batched.dropped == alone.dropped
        assert batched.stops == alone.stops
        assert batched.values == pytest.approx(alone.values, rel=1e-4, abs=1e-5)
        assert batched.metrics == pytest.approx(alone.metrics, abs=1e-6)
    # One by one, zeros leaves after its first seed; together, its second seed was run in the
    # same round, and is kept: a run paid for is a run reported.
    assert one_by_one[-1].seeds == SEEDS[:1] and one_by_one[-1].dropped == (
        "out after seed 1: it diverged")  # fmt: skip
    zeros = together[-1]
    assert zeros.seeds == SEEDS[:2] and zeros.values == (math.inf, math.inf)
    assert zeros.dropped == "out after seed 2: it diverged"
    assert all("symmetric" in stop for stop in zeros.stops)
    assert all(math.isfinite(v) for r in together[:-1] for v in r.values)


def test_without_the_race_every_seed_trains_in_one_round(blobs, storage_url, monkeypatch):
    import autoinit._rounds as recommend_module
    from autoinit._search import prepare_search
    from autoinit.options import SearchOptions
    from autoinit.population import train_population
    from autoinit.testing import tiny_mlp

    configs = [Config("kaiming_normal", "relu"), Config("xavier_uniform", "tanh")]
    options = SearchOptions(n_trials=1, max_steps=20, storage=storage_url, prescreen=False)
    objective = prepare_search(tiny_mlp(8, 3, depth=2, width=8), blobs, None, options).objective
    rounds = []
    with monkeypatch.context() as patch:
        def spy(models, *args, seeds, **kwargs):
            rounds.append(list(seeds))
            return train_population(models, *args, seeds=seeds, **kwargs)

        patch.setattr(recommend_module, "train_population", spy)
        together = _race(objective, configs, SEEDS, race=False, together=True)
    assert rounds == [[1000, 1001, 1002] * 2]  # one round: ReLU's three seeds, then tanh's
    one_by_one = _race(objective, configs, SEEDS, race=False, together=False)
    for batched, alone in zip(together, one_by_one):
        assert batched.seeds == alone.seeds == SEEDS
        assert batched.values == pytest.approx(alone.values, rel=1e-4, abs=1e-5)
    rounds.clear()  # a lone config in a race: its first seed only, nothing trained ahead
    with monkeypatch.context() as patch:
        patch.setattr(recommend_module, "train_population", spy)
        lone = _race(objective, configs[:1], SEEDS, race=True, together=True)
    assert lone[0].seeds == (1000,) and len(rounds) <= 1 and all(r == [1000] for r in rounds)


def _objective(blobs, storage_url, model_fn=None, **options):
    from autoinit._search import prepare_search
    from autoinit.options import SearchOptions
    from autoinit.testing import tiny_mlp

    options = SearchOptions(n_trials=1, max_steps=20, storage=storage_url, prescreen=False,
                            **options)  # fmt: skip
    model_fn = model_fn or tiny_mlp(8, 3, depth=3, width=16)
    return prepare_search(model_fn, blobs, None, options).objective


@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "together"])
def test_the_confirmation_keeps_the_searchs_own_guard_options(blobs, storage_url, together):
    objective = _objective(blobs, storage_url, guard={"max_grad_norm": 1e-9})
    ranked = _race(objective, [A, B], SEEDS, race=True, together=together)
    n = 2 if together else 1  # together, the first round runs the first two seeds
    for r in ranked:
        assert r.values == (math.inf,) * n and r.dropped == f"out after seed {n}: it diverged"
        assert all("exploding gradient at step 0" in s and "> 1e-09" in s for s in r.stops)


@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "together"])
def test_the_confirmation_guards_even_when_the_search_did_not(blobs, storage_url, together):
    objective = _objective(blobs, storage_url, guard=False)
    ranked = _race(objective, [Config("zeros", "relu"), A], SEEDS, race=True, together=together)
    assert "symmetric" in ranked[0].stops[0] and math.isinf(ranked[0].values[0])
    assert math.isfinite(ranked[1].values[0])


def test_configs_that_cannot_batch_train_one_by_one_without_a_warning(blobs, storage_url):
    objective = _objective(blobs, storage_url, model_fn=_Unbatchable)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the population's fallback warning would fail here
        together = _race(objective, [A, B], SEEDS[:2], race=False, together=True)
    alone = _race(objective, [A, B], SEEDS[:2], race=False, together=False)
    assert [r.values for r in together] == [r.values for r in alone]  # the same code path


class _WarnsInForward(_Unbatchable):
    def forward(self, x):
        warnings.warn("a warning of the user's own model", UserWarning, stacklevel=2)
        return super().forward(x)


def test_a_round_together_hides_only_the_fallback_warning(blobs, storage_url):
    objective = _objective(blobs, storage_url, model_fn=_WarnsInForward)
    with pytest.warns(UserWarning, match="the user's own model") as caught:
        _race(objective, [A, B], SEEDS[:1], race=False, together=True)
    assert not any("train one after another" in str(w.message) for w in caught)
    own = [w for w in caught if "the user's own model" in str(w.message)]
    assert len(own) >= 2 * 20  # every training step's, not only those before the round


def test_a_round_where_every_run_stops_before_training_counts_each_as_diverged(
    blobs, storage_url
):
    """Zero weights are stopped as symmetric before their first step: when every run of a
    batched round stops so, nothing is trained and each still counts as a diverged seed."""
    objective = _objective(blobs, storage_url)
    configs = [Config("zeros", "relu"), Config("zeros", "tanh")]
    ranked = _race(objective, configs, SEEDS, race=True, together=True)
    for r in ranked:
        assert r.seeds == SEEDS[:2] and r.values == (math.inf, math.inf)
        assert all("symmetric" in stop for stop in r.stops)
        assert r.dropped == "out after seed 2: it diverged"


# --- the race's rounds shared among processes (forked children: Linux) ---------------------------

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork: Linux only")
RACED = [Config("kaiming_normal", "relu"), Config("xavier_uniform", "tanh"),
         Config("orthogonal", "leaky_relu", 0.1), Config("default", "relu")]  # fmt: skip


def _logged(monkeypatch, log):
    """Every batched training appends its runs to ``log``, in whichever process it runs."""
    import autoinit._rounds as rounds

    real = rounds.train_together

    def spy(objective, runs, guard):
        with open(log, "a", encoding="utf-8") as out:
            out.write(" ".join(f"{c.init}:{s}" for c, s in runs) + f" pid={os.getpid()}\n")
        return real(objective, runs, guard)

    monkeypatch.setattr(rounds, "train_together", spy)
    return lambda: log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def _values(ranked):
    return [(r.config, r.seeds, r.values, r.metrics, r.dropped) for r in ranked]


def _raced(objective, jobs, ahead_jobs=0, ahead_configs=()):
    """A race on ``jobs`` processes, with ``ahead_configs`` trained ahead first; its children
    stopped after it, as :func:`autoinit._recommend.confirm` stops them."""
    from autoinit._rounds import Ahead

    ahead = Ahead(objective, SEEDS, 3, ahead_jobs, 1)
    ahead.want(ahead_configs)
    try:
        return _race(objective, RACED, SEEDS, race=True, together=True, jobs=jobs, ahead=ahead)
    finally:
        ahead.close()


@linux_only
def test_a_race_gives_the_same_numbers_with_any_number_of_processes(
    blobs, storage_url, monkeypatch, tmp_path
):
    objective = _objective(blobs, storage_url)
    log = _logged(monkeypatch, tmp_path / "runs.log")
    shared = {jobs: _raced(objective, jobs) for jobs in (2, 3)}
    assert _values(shared[2]) == _values(shared[3])  # exactly: each part is computed alike
    pids = {line.split("pid=")[1] for line in log()}
    assert len(pids) >= 3 and str(os.getpid()) not in pids  # each part in a child
    one = _race(objective, RACED, SEEDS, race=True, together=True)  # one batched model a round
    for alone, parted in zip(one, shared[2]):
        assert alone.seeds == parted.seeds and alone.dropped == parted.dropped
        assert alone.values == pytest.approx(parted.values, rel=1e-4, abs=1e-5)


@linux_only
def test_parts_trained_ahead_are_taken_by_the_race_not_trained_again(
    blobs, storage_url, monkeypatch, tmp_path
):
    from autoinit._rounds import train_parts

    objective = _objective(blobs, storage_url)
    default = RACED[-1]
    plain = _raced(objective, 2)
    whole = [v for v, _, _ in train_parts(objective, [(default, SEEDS)], {})[0]]
    log = _logged(monkeypatch, tmp_path / "runs.log")
    # The default, two children at a time, before the race: all its seeds as one part.
    raced = _raced(objective, 2, ahead_jobs=2, ahead_configs=[default])
    for alone, ahead in zip(plain, raced):
        n = min(len(alone.values), len(ahead.values))
        if ahead.config == default:  # the seeds the race took, of the part trained ahead
            assert list(ahead.values) == whole[: len(ahead.values)]
            assert alone.values[:n] == pytest.approx(ahead.values[:n], rel=1e-4, abs=1e-5)
        else:
            assert alone.values[:n] == ahead.values[:n]  # their parts: the same as without
    lines = log()
    default_runs = [line for line in lines if line.startswith("default:")]
    # The default's part trained once, in a child (whether the race used every seed or not).
    assert [line.split(" pid=")[0] for line in default_runs] == [
        "default:1000 default:1001 default:1002"]  # fmt: skip
    assert all(line.split("pid=")[1] != str(os.getpid()) for line in default_runs)
    trained = [run for line in lines for run in line.split(" pid=")[0].split()]
    assert len(trained) == len(set(trained))  # no run trained twice
    assert {f"{r.config.init}:{s}" for r in raced for s in r.seeds} <= set(trained)


@linux_only
def test_a_child_a_round_leaves_free_trains_a_later_rounds_part(
    blobs, storage_url, monkeypatch, tmp_path
):
    from autoinit._recommend import _train_together
    from autoinit._rounds import Ahead

    objective = _objective(blobs, storage_url)
    log = _logged(monkeypatch, tmp_path / "runs.log")
    ahead = Ahead(objective, SEEDS, 3, 0, 1)
    first = [(RACED[0], 1000), (RACED[0], 1001)]  # one part on 2 processes: one child free
    spare = [(RACED[1], 1002), (RACED[0], 1002)]  # the next round's runs, the best first
    try:
        _train_together(objective, first, 2, ahead, spare)
        assert (RACED[1], (1002,)) in ahead  # started alongside, the best first
        second = _train_together(objective, [(RACED[0], 1002), (RACED[1], 1002)], 2, ahead)
    finally:
        ahead.close()
    lines = [line.split(" pid=")[0] for line in log()]
    assert lines.count("xavier_uniform:1002") == 1  # not trained again in its own round
    assert len(lines) == len(set(lines)) == 3  # no part twice
    fresh = Ahead(objective, SEEDS, 3, 0, 1)
    alone = _train_together(objective, [(RACED[1], 1002)], 2, fresh)
    assert second[1] == alone[0]  # the spare's outcome: what its own round would have trained


@linux_only
def test_ctrl_c_during_a_round_stops_its_children(blobs, storage_url, monkeypatch, tmp_path):
    import time

    import autoinit._rounds as rounds
    from autoinit._recommend import confirm

    objective = _objective(blobs, storage_url)
    study = _study_of({RACED[0]: 0.5, RACED[1]: 0.6})  # a search's two best
    pids = tmp_path / "pids"

    def training_for_a_minute(objective, parts, guard):
        with open(pids, "a", encoding="utf-8") as out:
            out.write(f"{os.getpid()}\n")
        time.sleep(60)

    def ctrl_c_once_both_train(children):
        deadline = time.monotonic() + 60
        while len(pids.read_text().split() if pids.exists() else []) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        raise KeyboardInterrupt

    monkeypatch.setattr(rounds, "train_parts", training_for_a_minute)
    monkeypatch.setattr(rounds, "wait_any", ctrl_c_once_both_train)
    with pytest.raises(KeyboardInterrupt):
        confirm(study, objective, seeds=2, top_k=2, jobs=2)
    for pid in pids.read_text().split():
        with pytest.raises(ProcessLookupError):  # killed and reaped, not left for 60 s
            os.kill(int(pid), 0)


class _Child:
    """A stand-in for a forked child: it records its task and never finishes by itself."""

    def __init__(self, task, threads):
        self.task, self.killed = task, False

    def finished(self):
        return False

    def kill(self):
        self.killed = True


@linux_only
def test_runs_are_trained_ahead_only_where_a_core_would_be_idle(blobs, storage_url, monkeypatch):
    import autoinit._rounds as rounds
    from autoinit._recommend import confirming_ahead
    from autoinit._search import prepare_search
    from autoinit.options import SearchOptions
    from autoinit.testing import tiny_mlp

    children = []
    monkeypatch.setattr(rounds, "Forked", lambda task, threads: children.append(
        _Child(task, threads)) or children[-1])  # fmt: skip

    def ahead_of(jobs, **options):
        children.clear()
        run = prepare_search(tiny_mlp(8, 3), blobs, None, SearchOptions(
            n_trials=2, max_steps=5, storage=storage_url, study_name=f"s{len(options)}{jobs}",
            **options))  # fmt: skip
        with confirming_ahead(run, seeds=3, top_k=3, jobs=jobs) as ahead:
            parts = [task.args[1] for task in (c.task for c in children)]
            run.optimize(callbacks=[ahead.after_trial])  # a finished trial asks for more
            queued = list(ahead._queue)
        return parts, queued, [c.killed for c in children]

    parts, queued, killed = ahead_of(2)  # one idle core: one child at a time
    default = Config("default", "relu")
    assert parts == [[(default, (1000, 1001, 1002))]]  # every seed of it, as one part
    assert queued and all(c != default and seeds == (1000, 1001, 1002) for c, seeds in queued)
    assert killed == [True]  # leaving the block kills what still trains
    assert ahead_of(1)[0] == []  # one process: nothing ahead
    assert ahead_of(3, n_jobs=2)[0] == []  # the search's own workers take the cores


def _study_of(losses):
    """An in-memory study whose complete trials are ``losses``' configs."""
    choices = {"init": sorted({c.init for c in losses}),
               "activation": sorted({c.activation for c in losses})}  # fmt: skip
    study = optuna.create_study()
    for config, loss in losses.items():
        study.add_trial(optuna.trial.create_trial(
            params={"init": config.init, "activation": config.activation}, value=loss,
            distributions={k: optuna.distributions.CategoricalDistribution(v)
                           for k, v in choices.items()}))  # fmt: skip
    return study


def test_the_default_takes_no_guess_from_the_searchs_leaders(monkeypatch):
    """The default trains ahead anyway: with it best in the search, the next k - 1 configs are
    the guesses (it used to take one of the k - 1, and a search whose default led early got
    only one config trained ahead)."""
    import autoinit._rounds as rounds
    from autoinit._rounds import Ahead

    monkeypatch.setattr(rounds, "Forked", _Child)
    default, a, b, c = D, A, B, C
    study = _study_of({default: 0.1, a: 0.2, b: 0.3, c: 0.4})
    ahead = Ahead(ScriptedObjective({}), SEEDS, 3, 1, 1)
    ahead.want([default])
    ahead.after_trial(study, study.trials[-1])
    wanted = [part[0] for part in [*ahead._running, *ahead._queue]]
    assert set(wanted) == {default, a, b}  # k - 1 = 2 guesses besides the default
    ahead.after_trial(study, study.trials[-1])  # asked again: nothing more
    assert sorted(map(str, wanted)) == sorted(str(p[0]) for p in [*ahead._running, *ahead._queue])
    assert len(wanted) == 3  # each config once, all its seeds as one part


@linux_only
def test_a_child_killed_mid_round_costs_time_not_a_result(blobs, storage_url, monkeypatch):
    """The pool's fault path: a child that dies (the OOM killer, a kill -9) sends nothing, and
    its part trains again in the main process, to the same numbers."""
    import signal

    import autoinit._rounds as rounds

    objective = _objective(blobs, storage_url)
    expected = _raced(objective, 2)
    parent, real = os.getpid(), rounds.train_parts

    def dies_in_a_child(objective, parts, guard):
        if os.getpid() != parent and parts[0][0] == RACED[1]:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(objective, parts, guard)

    monkeypatch.setattr(rounds, "train_parts", dies_in_a_child)
    assert _values(_raced(objective, 2)) == _values(expected)


@linux_only
def test_a_lone_config_takes_the_run_it_trained_ahead(blobs, storage_url, monkeypatch, tmp_path):
    """A race of the default alone (the search completed nothing else) runs one seed: with
    processes, the one its part trained ahead, not a run trained again."""
    from autoinit._rounds import Ahead, train_parts

    objective = _objective(blobs, storage_url)
    default = RACED[-1]
    whole = train_parts(objective, [(default, SEEDS)], {})[0]
    log = _logged(monkeypatch, tmp_path / "runs.log")
    ahead = Ahead(objective, SEEDS, 3, 1, 1)
    ahead.want([default])
    try:
        (ranked,) = _race(objective, [default], SEEDS, race=True, together=True, jobs=2,
                          ahead=ahead)  # fmt: skip
    finally:
        ahead.close()
    assert ranked.seeds == SEEDS[:1] and ranked.values == (whole[0][0],)
    assert [line.split(" pid=")[0] for line in log()] == [
        "default:1000 default:1001 default:1002"]  # fmt: skip

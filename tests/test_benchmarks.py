"""Smoke test of ``python -m benchmarks.run --quick``: it runs, and its JSON has every field.

The figures themselves are measurements, not pass/fail checks; only their presence and types are
tested here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBER = (int, float)
OPTIONAL_NUMBER = (int, float, type(None))

# section -> figure -> the type it must have
FIELDS = {
    "overhead": {
        "trials": NUMBER, "epochs": NUMBER, "plain_s_per_trial": NUMBER,
        "search_s_per_trial": NUMBER, "ratio": NUMBER, "cpu_ratio": NUMBER,
        "overhead_ms_per_trial": NUMBER, "in_loop_ms_per_trial": NUMBER,
        "outside_loop_ms_per_trial": NUMBER, "guard_cpu_share": NUMBER, "storage": dict,
    },
    "guard": {
        "configs": NUMBER, "full_steps": NUMBER, "seconds_with_guard": NUMBER,
        "seconds_without_guard": NUMBER, "speedup": NUMBER, "cpu_speedup": NUMBER,
        "stopped_by_guard": NUMBER, "stopped_without_guard": NUMBER, "ideal_speedup": NUMBER,
        "steps_fraction_mean": NUMBER, "steps_fraction_max": NUMBER, "best_with_guard": str,
        "best_without_guard": str, "same_best": bool, "trials": dict,
        "prescreened": NUMBER, "prescreen_recall": NUMBER, "prescreen_missed": list,
        "prescreen_extra": list, "prescreen_top3": NUMBER, "prescreen_verdicts": dict,
    },
    "efficiency": {
        "grid_trials": NUMBER, "stopped_by_guard": NUMBER, "best": str, "best_value": NUMBER,
        "within_1pct": list, "baseline_within_1pct": bool, "cap": NUMBER,
        "tpe_trials_median": NUMBER, "tpe_distinct_median": NUMBER,
        "tpe_fraction_of_grid": NUMBER, "tpe_trials": list, "random_trials_median": NUMBER,
        "random_distinct_median": NUMBER, "random_fraction_of_grid": NUMBER,
        "random_trials": list, "grid_steps": NUMBER, "probe_steps": NUMBER,
        **{f"{s}_{m}_{k}": kind for s in ("tpe", "random")
           for m in ("plain", "prescreen", "prescreen_random")
           for k, kind in (("steps", list), ("steps_median", NUMBER),
                           ("fraction_of_grid_steps", NUMBER))},
        "prescreen_saving": NUMBER, "prescreen": dict, "probe_rank_correlation": OPTIONAL_NUMBER,
        "datasets": dict, "top3_prescreened": NUMBER,
    },
    "scaling": {
        "epoch_by_rows": list, "epoch_by_depth": list, "csv": list, "rows_exponent": NUMBER,
        "depth_exponent": NUMBER, "train_peak_over_data": NUMBER, "csv_rows": NUMBER,
        "csv_time_ratio": NUMBER, "csv_cpu_ratio": NUMBER, "csv_peak_over_data": NUMBER,
    },
    "parallel": {
        "trials": NUMBER, "worker_start_s": NUMBER, "trials_per_minute_1": NUMBER,
        "trials_per_minute_2": NUMBER, "speedup": NUMBER, "cpu_per_trial_ratio": NUMBER,
        "cpu_bound_speedup": NUMBER, "worker_crashes": NUMBER,
    },
    "known": {
        "epochs": NUMBER, "seeds": NUMBER, "accuracy": dict, "orderings": dict,
        "papers_hold": bool, "at_chance": bool, "separation_step": OPTIONAL_NUMBER,
        "eval_every": NUMBER, "plain_vs_autoinit_max_diff": NUMBER, "new_inits": dict,
        "lsuv_rescues_sigmoid": bool, "variance_preserving_rescues_sigmoid": bool,
    },
    "threads": {
        "seconds_1_threads_idle": NUMBER, "seconds_2_threads_idle": NUMBER,
        "seconds_1_threads_busy": NUMBER, "seconds_2_threads_busy": NUMBER,
        "slowdown_2_threads_idle": NUMBER, "slowdown_2_threads_busy": NUMBER,
    },
    "population": {
        **{f"speedup_{m}_{k}": NUMBER for m in ("mlp", "cnn", "gru") for k in (4, 12, 32)},
        "timings": list, "steps": NUMBER, "drop_seconds_32_half_stopped": NUMBER,
        "drop_seconds_16": NUMBER, "drop_seconds_32": NUMBER, "drop_overhead": NUMBER,
        "drop_masking_would_cost": NUMBER,
    },
    "cost": {
        "rows": NUMBER, "trials": NUMBER, "epochs": NUMBER, "fte_today": NUMBER,
        "fte_new": NUMBER, "time_ratio_today": NUMBER, "time_ratio_new": NUMBER,
        "time_ratio_plain_today": NUMBER, "time_ratio_plain_new": NUMBER,
        "cpu_ratio_today": NUMBER, "cpu_ratio_new": NUMBER, "metric_gap": OPTIONAL_NUMBER,
        "worst_metric_gap": OPTIONAL_NUMBER, "judged_gap": OPTIONAL_NUMBER,
        "worst_judged_gap": OPTIONAL_NUMBER, "datasets": dict,
    },
}  # fmt: skip
COST_RUN = ("fte", "search_fte", "confirm_fte", "probe_fte", "seconds", "time_ratio",
            "time_ratio_plain", "cpu_ratio", "trials", "pruned_by_pruner",
            "confirm_runs")  # each run of each dataset in "cost"
NESTED = {  # figures made of numbers: every leaf must be a number
    ("overhead", "storage"): ("autoinit_ms_per_trial", "plain_rdb_ms_per_trial", "speedup"),
    ("scaling", "epoch_by_rows"): ("rows", "depth", "epoch_s", "peak_mb", "peak_over_data"),
    ("scaling", "epoch_by_depth"): ("rows", "depth", "epoch_s", "peak_mb", "peak_over_data"),
    ("scaling", "csv"): (
        "rows", "megabytes", "read_csv_s", "load_csv_s", "time_ratio", "cpu_ratio",
        "read_csv_peak_over_data", "load_csv_peak_over_data", "file_over_data",
    ),
}  # fmt: skip


def _benchmarks(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("benchmarks")
    output = folder / "quick.json"
    done = _benchmarks("--quick", "--output", str(output), "--workdir", str(folder), cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MISSED" in done.stdout or " ok" in done.stdout  # the table was printed
    return json.loads(output.read_text())


def _is(value, kind) -> bool:
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


@pytest.mark.slow
def test_quick_run_has_every_section_and_field(quick_report):
    assert quick_report["meta"]["quick"] is True
    assert set(quick_report["sections"]) == set(FIELDS)
    for name, fields in FIELDS.items():
        section = quick_report["sections"][name]
        assert _is(section["seconds"], NUMBER) and _is(section["load_before"], NUMBER)
        figures = section["figures"]
        assert sorted(set(fields) - set(figures)) == [], name
        for field, kind in fields.items():
            assert _is(figures[field], kind), (name, field, figures[field])


@pytest.mark.slow
def test_quick_run_nested_figures_are_numbers(quick_report):
    for (name, field), keys in NESTED.items():
        value = quick_report["sections"][name]["figures"][field]
        for row in value if isinstance(value, list) else [value]:
            for key in keys:
                assert _is(row[key], NUMBER), (name, field, key, row)
    for row in quick_report["sections"]["known"]["figures"]["accuracy"].values():
        assert _is(row["mean"], NUMBER) and _is(row["std"], NUMBER)
    for dataset in quick_report["sections"]["cost"]["figures"]["datasets"].values():
        for key in ("full_training_s", "fte_today", "fte_new", "time_ratio_today",
                    "time_ratio_new"):  # fmt: skip
            assert _is(dataset[key], NUMBER), (dataset["file"], key)
        for run in dataset["runs"].values():
            for key in COST_RUN:
                assert _is(run[key], NUMBER), (dataset["file"], key, run)
            assert isinstance(run["recommendation"], str) and run["seeds"]
        for share in dataset["levers"].values():
            for key in ("fte_saved", "time_ratio_saved", "cpu_ratio_saved"):
                assert _is(share[key], NUMBER), (dataset["file"], key)


@pytest.mark.slow
def test_quick_run_targets_are_well_formed(quick_report):
    for name, section in quick_report["sections"].items():
        assert section["targets"], name
        for row in section["targets"]:
            assert set(row) == {"figure", "value", "target", "met"}, (name, row)
            assert isinstance(row["met"], bool) and row["target"].split()[0] in ("<=", ">=", "==")


def test_unknown_section_is_refused_with_the_valid_names(tmp_path):
    done = _benchmarks("--only", "overhead,bogus", cwd=tmp_path)
    assert done.returncode == 2
    assert "'bogus'" in done.stderr and "overhead, guard, efficiency" in done.stderr


def test_mutation_retest_keeps_only_the_kills_of_the_last_run(tmp_path):
    """``--retest``: the killed mutants keep their result; mutmut tests the others again."""
    from benchmarks import mutation

    path = "autoinit/_recommend.py"
    last = tmp_path / "last"
    meta = last / "mutants" / (path + ".meta")
    meta.parent.mkdir(parents=True)
    codes = {"a__mutmut_1": 1, "a__mutmut_2": 0, "a__mutmut_3": 33, "a__mutmut_4": 37,
             "a__mutmut_5": 36}  # fmt: skip
    meta.write_text(json.dumps({"exit_code_by_key": codes, "hash_by_function_name": {"a": "h"}}))
    kept = mutation.killed_before(last, [path, "autoinit/absent.py"])
    assert list(kept) == [path]
    fresh = tmp_path / "fresh"
    mutation.restore(fresh, kept)
    restored = json.loads((fresh / "mutants" / (path + ".meta")).read_text())
    assert restored["exit_code_by_key"] == {"a__mutmut_1": 1, "a__mutmut_2": None,
                                            "a__mutmut_3": None, "a__mutmut_4": 37,
                                            "a__mutmut_5": None}  # fmt: skip
    assert restored["hash_by_function_name"] == {"a": "h"}  # mutmut resets changed functions
    resumed = mutation.killed_before(last, [path], mutation.RESUMED)  # --resume: all decided
    assert resumed[path]["exit_code_by_key"] == {"a__mutmut_1": 1, "a__mutmut_2": 0,
                                                 "a__mutmut_3": 33, "a__mutmut_4": 37,
                                                 "a__mutmut_5": None}  # fmt: skip


def test_a_mutation_run_past_its_minutes_is_stopped_with_what_it_started(tmp_path):
    """``--minutes``: the command and the processes it started are stopped; a run that ends in
    time keeps its exit code."""
    from benchmarks import mutation

    started = tmp_path / "child.pid"
    script = (f"import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', "
              f"'import time; time.sleep(60)']); "
              f"open({str(started)!r}, 'w').write(str(child.pid)); time.sleep(60)")  # fmt: skip
    with open(tmp_path / "log", "w") as log:
        assert mutation.run_for([sys.executable, "-c", "raise SystemExit(3)"], tmp_path,
                                dict(os.environ), log, minutes=1) == (3, False)  # fmt: skip
        code, stopped = mutation.run_for([sys.executable, "-c", script], tmp_path,
                                         dict(os.environ), log, minutes=0.1)  # fmt: skip
    assert (code, stopped) == (0, True)
    child = int(started.read_text())
    for _ in range(50):  # the grandchild got the signal too
        if not Path(f"/proc/{child}").exists() or "Z" in _state(child):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"process {child}, started by the stopped command, still runs")
    assert mutation.parse_args(["--minutes", "30"]).minutes == 30


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return "Z"


# --- cost_study's replays (issue 13): the modes compared in benchmarks/README.md ---------------


@pytest.fixture(scope="module")
def replay_setup():
    """A 12-layer MLP on a small generated table, over a space with collapsing configs (small
    enough that the whole-space probe is worth it at this budget)."""
    import argparse
    import dataclasses

    from autoinit.models import mlp_factory
    from autoinit.testing import toy_classification
    from benchmarks.cost_study import Table, _objective

    x, y = toy_classification(n=160, features=8, classes=3)
    data = argparse.Namespace(X_train=x[:128], y_train=y[:128], X_val=x[128:], y_val=y[128:],
                              task="classification")  # fmt: skip
    objective = dataclasses.replace(
        _objective(mlp_factory(8, 3, depth=12, width=16), data, 4),
        inits=("normal", "zeros", "kaiming_normal", "xavier_uniform", "trunc_normal"),
        activations=("relu", "tanh", "sigmoid"),
    )  # fmt: skip
    return objective, Table(objective)


def test_the_prescreen_replay_counts_added_trials_toward_n_trials_only_when_counted(replay_setup):
    import optuna

    from benchmarks.cost_study import replay

    objective, table = replay_setup
    runs = {mode: replay(objective, table, optuna.pruners.NopPruner(), 10, 0, prescreen=mode)
            for mode in (None, "counted", "free", "per_trial")}  # fmt: skip
    assert runs[None]["prescreen"] == runs["per_trial"]["prescreen"] == 0
    assert 0 < runs["counted"]["prescreen"] <= 5 < runs["free"]["prescreen"]  # at most half
    for mode, run in runs.items():
        sampled = sum(run[k] for k in ("complete", "pruner", "guard", "twin", "screened"))
        assert sampled == 10 - (run["prescreen"] if mode == "counted" else 0), mode
    assert runs[None]["screened"] == 0  # off: a collapsed config trains until the guard stops it
    # The whole-space pass pays one probe step per config; per trial, the trials' own probes
    # are not counted (every mode has them), and the collapsed cost nothing.
    assert runs["counted"]["fte"] > runs["per_trial"]["fte"]


def test_the_search_block_race_replay_counts_the_searched_runs_as_free(replay_setup):
    from autoinit.space import Config
    from benchmarks.cost_study import race_replay

    _, table = replay_setup
    candidates = [Config("kaiming_normal", "relu"), Config("xavier_uniform", "tanh")]
    fresh = race_replay(table, candidates, pooled=True)
    free = race_replay(table, candidates, pooled=True, searched=candidates, fresh=2)
    paid = race_replay(table, candidates, pooled=True, searched=[], fresh=2)
    assert 3 <= fresh["runs"] <= 9  # the default is raced too
    # The same race on the same seeds: only the candidates' study-seed runs are free.
    assert paid["pick"] == free["pick"] and paid["runs"] - free["runs"] in (1, 2)


def test_a_replayed_round_judges_every_member_and_spends_their_steps():
    """``population`` > 1 in the replay: every member of a round reports, the pruner stops one
    at its rung, and the pruned, the guard-stopped and the complete runs cost their steps."""
    import optuna

    from autoinit import study as studies
    from autoinit.space import Config
    from benchmarks.cost_study import Run, _train_round

    def run(first: float, steps: int = 100, stop: str | None = None) -> Run:
        reports = [(s, first / (s // 10)) for s in range(10, steps + 1, 10)]
        return Run(reports, steps, reports[-1][1], 0.0, stop)

    configs = [Config(init, "relu") for init in ("normal", "orthogonal", "zeros", "xavier_normal")]
    runs = dict(zip(configs, [run(1.0), run(0.5), run(3.0), run(0.2, steps=15, stop="exploding")]))
    table = type("Fixed", (), {"get": lambda self, config, seed: runs[config]})()
    study = optuna.create_study(pruner=studies.SuccessiveHalving(10, 4, 100))
    members = [(study.ask(), config) for config in configs]
    outcome = dict.fromkeys(("complete", "pruner", "guard", "twin"), 0)
    spent = _train_round(study, members, table, 0, outcome)  # type: ignore[arg-type]
    # At the rung (step 10) "zeros" is not in the best quarter of the four; the others are.
    assert outcome == {"complete": 2, "pruner": 1, "guard": 1, "twin": 0}
    assert spent == 100 + 100 + 10 + 15
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == 2
    assert all(t.intermediate_values for t in study.trials)  # every member reported


def test_a_replayed_search_capped_at_fewer_epochs_ends_its_trials_there():
    """``search_epochs`` in the replay: a trial past the rung ends at the cap, valued at its
    loss there; a guard stop after the cap never happens, one before it still counts."""
    import optuna

    from autoinit import study as studies
    from autoinit.space import Config
    from benchmarks.cost_study import Run, _train_round

    def run(first: float, steps: int = 100, stop: str | None = None) -> Run:
        reports = [(s, first / (s // 10)) for s in range(10, steps + 1, 10)]
        return Run(reports, steps, reports[-1][1], 0.0, stop)

    configs = [Config(init, "relu") for init in ("normal", "orthogonal", "xavier_normal")]
    runs = dict(zip(configs, [run(1.0), run(0.5, steps=80, stop="exploding"),
                              run(0.2, steps=30, stop="vanishing")]))  # fmt: skip
    table = type("Fixed", (), {"get": lambda self, config, seed: runs[config]})()
    study = optuna.create_study(pruner=studies.SuccessiveHalving(10, 4, 100))
    outcome = dict.fromkeys(("complete", "pruner", "guard", "twin"), 0)
    members = [(study.ask(), config) for config in configs]
    spent = _train_round(study, members, table, 0, outcome, cap=50)  # type: ignore[arg-type]
    assert outcome == {"complete": 2, "pruner": 0, "guard": 1, "twin": 0}
    assert spent == 50 + 50 + 30
    normal, orthogonal, _ = study.trials
    assert normal.value == 1.0 / 5 and orthogonal.value == 0.5 / 5  # the loss at step 50
    assert max(normal.intermediate_values) == 50


def test_the_cost_benchmark_steps_autoinit_0_1s_plain_adam_for_today_and_the_fused_lever():
    """``today`` (and the ``fused`` lever) must train as autoinit 0.1 did, with PyTorch's default
    Adam; every other run with the fused one that ``train.make_optimizer`` gives."""
    import torch

    from autoinit.train import Budget, make_optimizer
    from benchmarks.cost import LEVERS, TODAY, _optimizer

    weight = torch.nn.Parameter(torch.ones(3))
    with _optimizer(fused=False):
        assert not make_optimizer(Budget(epochs=1), [weight]).defaults.get("fused")
    with _optimizer(fused=True):
        assert make_optimizer(Budget(epochs=1), [weight]).defaults.get("fused")
    assert make_optimizer(Budget(epochs=1), [weight]).defaults.get("fused")  # patch undone
    assert TODAY["fused"] is False and "fused" in LEVERS

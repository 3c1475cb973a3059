"""9. Cost: what a default ``autoinit search`` spends, in full trainings, today's way and the new.

Cost is counted in full-training equivalents (FTE): every optimizer step of the search trials
(a duplicate trial, which reuses its twin, costs nothing), of the confirmation and of the step-0
probes (one forward and backward pass each, counted as a step), over the steps of one full
training of one config at the study's budget on all training rows. Every confirmation run
started counts, whether the race used it or not (a run trained ahead while the search ran, or
by a process a round left idle, for a config that then left the race). The time is the whole
``autoinit search`` path (``load_csv``, ``prepare_search``, ``SearchRun.optimize``,
``confirm_once``) over one full training of one config (``kaiming_normal`` + ReLU, all rows),
timed in the same run: one full training before every search, the median kept, each the faster
of one torch thread and one per core (the confirmation uses every core). It is timed twice:
with autoinit's fused optimizer (``time_ratio``: autoinit's own full training) and with
PyTorch's default Adam (``time_ratio_plain``: the full training of autoinit 0.1, and of a
hand-written loop on a CPU).

Configurations, on the same data:

- ``today``: the median pruner, every row searched, one trial at a time, every confirmed config
  trained on every seed (``race=False``), one config at a time (``together=False``) in one
  process, no pre-screen, PyTorch's default (unfused) Adam: the search of autoinit 0.1.
- ``new``: the defaults (the successive-halving pruner, ``search_rows``, ``population``, the
  racing confirmation, its rounds trained together and shared among the cores, with the runs
  trained ahead on the core the search leaves idle, the pre-screen).
- one run per lever with only that lever set back to today's (leave one out): each lever's
  share is what the new search saves with it. Setting back the confirmation reuses the new
  search's study and only confirms again.

Quality, two ways, of the new search's recommendation against today's, on the same data and
split (the configs found may differ):

- ``metric_gap``: the metric the confirmation measured for each pick, over its 3 seeds on all
  rows (seeds the race did not give the winner are trained after the timing). The two sides
  train differently (today's one run at a time, the new in batched parts), and on a noisy
  target float rounding alone moves these numbers: the same config can differ by 0.01.
- ``judged_gap``: each pick trained again, alone, the same way for every side, on 3 fresh
  seeds (:data:`JUDGE_SEEDS`, which picked nothing), after the timing. The same pick gives the
  same number, and a different pick is judged on seeds it was not chosen on.

Data: a generated 50,000-row table (``benchmarks.cost_study.generated_frame``: a price-like
regression target; 5,000 rows with ``--quick``), the same at 5,000 rows (an epoch of 63 steps:
successive halving on, every row searched) and at 20,000 rows (16,000 training rows, every one
searched: the largest search before the subsample) and the bundled ``examples/*.csv``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from autoinit import records, train
from autoinit import study as studies
from autoinit._recommend import confirm, confirm_once, confirming_ahead
from autoinit._search import Objective, prepare_search
from autoinit.options import SearchOptions
from autoinit.space import Config, resolve_space
from autoinit.train import Budget, prepare_data
from autoinit.workers import torch_threads, usable_cores
from benchmarks.common import target, timed
from benchmarks.cost_study import EXAMPLES, generated_frame, load

TODAY = {"pruner": "median", "search_rows": None, "population": 1, "race": False,
         "together": False, "prescreen": False, "fused": False, "processes": 1}  # fmt: skip
# Leave-one-out: the new search with this lever set back to today's value. "population" is off
# by default, so its run is the new search with population="auto" added instead. "processes":
# the confirmation's processes (``confirm_jobs``: "auto" is one per core, and the runs trained
# ahead while the search runs; 1: one process, nothing ahead).
LEVERS = ("race", "together", "pruner", "search_rows", "fused", "processes")
CONFIRM_OPTIONS = ("pruner", "race", "together", "fused", "processes")  # not SearchOptions'

ADDED = {"population": "auto"}
REFERENCE = Config("kaiming_normal", "relu")
JUDGE_SEEDS = (2000, 2001, 2002)  # fresh: the confirmation's are 1000-1002


@dataclasses.dataclass
class Setting:
    trials: int
    epochs: int
    rows: int
    bundled: tuple[str, ...]
    levers: tuple[str, ...]  # the lever runs on the generated table
    smaller: tuple[int, ...] = ()  # generated tables of these sizes too (no levers)


def _setting(quick: bool) -> Setting:
    if quick:
        return Setting(trials=12, epochs=3, rows=5_000, bundled=("breast_cancer",),
                       levers=("race", "together"))  # fmt: skip
    bundled = tuple(sorted(p.stem for p in EXAMPLES.glob("*.csv")))
    return Setting(trials=40, epochs=10, rows=50_000, bundled=bundled, levers=LEVERS,
                   smaller=(5_000, 20_000))  # fmt: skip


@contextlib.contextmanager
def _optimizer(fused: bool) -> Any:
    """Every run inside steps autoinit's fused optimizer, or with ``fused=False`` PyTorch's
    default (on a CPU, a Python loop over the tensors: autoinit 0.1's)."""
    plain = {name: _unfused(cls) for name, cls in train.OPTIMIZERS.items()}
    with mock.patch.dict(train.OPTIMIZERS, {} if fused else plain):
        yield


def _unfused(cls: Any) -> Any:
    return lambda params, lr, **_: cls(params, lr=lr)  # make_optimizer's fused=True dropped


def _search(path: Path, changes: dict[str, Any], setting: Setting, storage: str,
            name: str) -> dict[str, Any]:  # fmt: skip
    """One ``autoinit search`` as the CLI runs it (its defaults with ``changes``): its cost,
    time and recommendation."""
    with _optimizer(changes.get("fused", True)):
        return _search_here(path, changes, setting, storage, name)


def _search_here(path: Path, changes: dict[str, Any], setting: Setting, storage: str,
                 name: str) -> dict[str, Any]:  # fmt: skip
    race, together = changes.get("race", True), changes.get("together", True)
    jobs = changes.get("processes", "auto")
    with contextlib.ExitStack() as stack:
        counted = stack.enter_context(_counting_confirmation_runs())

        def search() -> Any:
            model_fn, data = load(path)
            fields = {k: v for k, v in changes.items() if k not in CONFIRM_OPTIONS}
            options = SearchOptions(n_trials=setting.trials, epochs=setting.epochs,
                                    storage=storage, study_name=name, device="cpu",
                                    **fields)  # fmt: skip
            if changes.get("pruner") == "median":  # today's: its warm-up is 30% of all steps
                steps = setting.epochs * math.ceil(len(data.X_train) / 64)
                options = dataclasses.replace(options, pruner=studies.median_pruner(steps))
            run = prepare_search(model_fn, (data.X_train, data.y_train),
                                 (data.X_val, data.y_val), options,
                                 data_info={"file": path.name})  # fmt: skip
            ahead = stack.enter_context(confirming_ahead(run, seeds=3, top_k=3, race=race,
                                                         together=together, jobs=jobs))  # fmt: skip
            return run.optimize(callbacks=[ahead.after_trial]), ahead

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (run, ahead), searching = timed(search)
        return _confirmed(run, searching, race=race, together=together, jobs=jobs,
                          ahead=ahead, counted=counted)  # fmt: skip


@contextlib.contextmanager
def _counting_confirmation_runs() -> Iterator[Callable[[], int]]:
    """Every confirmation run started, wherever it trains: in a round, ahead in a child while
    the search runs (forked children inherit the patch), or as a round's spare, used or not.
    Each appends its count to a file; a run killed part-way counts in full (an upper bound)."""
    import autoinit._recommend as recommending
    import autoinit._rounds as rounds

    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "runs"

        def count(n: int) -> None:
            with open(log, "a", encoding="utf-8") as out:
                out.write(f"{n}\n")

        def together(objective: Any, runs: Any, guard: Any) -> Any:
            count(len(runs))
            return real_together(objective, runs, guard)

        def once(objective: Any, config: Any, seed: int) -> Any:
            count(1)
            return real_once(objective, config, seed)

        real_together, real_once = rounds.train_together, recommending._train_once
        with mock.patch.object(rounds, "train_together", together), mock.patch.object(
            recommending, "train_together", together), mock.patch.object(
                recommending, "_train_once", once):  # fmt: skip
            yield lambda: sum(int(n) for n in log.read_text().split()) if log.exists() else 0


def _confirmed(run: Any, searching: Any, *, race: bool, together: bool, jobs: Any = "auto",
               ahead: Any = None, counted: Callable[[], int] | None = None,
               again: bool = False) -> dict[str, Any]:  # fmt: skip
    """``run``'s search confirmed (``race`` or in full, ``together`` or one config at a time,
    in ``jobs`` processes, with the runs trained ``ahead``; ``again``: a study confirmed
    before): its cost, time and recommendation."""
    with contextlib.ExitStack() as stack, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counted = counted or stack.enter_context(_counting_confirmation_runs())
        if again:  # confirm_once would return the stored result of the same key
            rec, confirming = timed(confirm, run.study, run.objective, seeds=3, top_k=3,
                                    race=race, together=together, jobs=jobs)  # fmt: skip
        else:
            rec, confirming = timed(confirm_once, run, seeds=3, top_k=3, race=race,
                                    together=together, jobs=jobs, ahead=ahead)  # fmt: skip
        trained = counted()
    return {"run": run, "rec": rec, "searching": searching,
            "seconds": float(searching) + float(confirming),
            "cpu": searching.cpu + confirming.cpu, **_cost(run, rec, trained)}  # fmt: skip


def _cost(run: Any, rec: Any, trained: int) -> dict[str, Any]:
    objective = run.objective  # every row: the unit of cost
    full = objective.budget.epochs * objective.data.steps_per_epoch
    trials = run.study.get_trials(deepcopy=False, states=studies.COUNTED_STATES)
    search_steps = sum(t.user_attrs.get(records.STEPS, 0) for t in trials
                       if records.TRIAL_DUPLICATE_OF not in t.user_attrs)  # fmt: skip
    probes = _probe_count(run)
    confirm_runs = trained  # every run started, used by the race or not (ahead, spares)
    confirm_steps = confirm_runs * full  # a run the guard stopped counts as full: an upper bound
    return {
        "search_fte": search_steps / full, "confirm_fte": confirm_steps / full,
        "probe_fte": probes / full, "fte": (search_steps + confirm_steps + probes) / full,
        "confirm_runs": confirm_runs, "raced_runs": sum(len(r.values) for r in rec.ranking),
        "trials": len(trials),
        "pruned_by_pruner": sum(records.prune_kind(t) == "pruner" for t in trials),
    }  # fmt: skip


def _probe_count(run: Any) -> int:
    """The step-0 probes of the pre-screen: one per trial that trained or was screened (not a
    twin), and with ``prescreen="space"`` one per config of the space probed up front."""
    if not run.options.prescreen:
        return 0
    from autoinit._probe import probe_space

    own = sum(records.PROBE in t.user_attrs and records.TRIAL_DUPLICATE_OF not in t.user_attrs
              and records.PID in t.user_attrs for t in run.study.trials)  # fmt: skip
    if run.options.prescreen != "space":
        return own
    objective = run.search_objective or run.objective
    return own + len(probe_space(objective.inits, objective.activations))


def _full_training(path: Path, epochs: int, fused: bool = True) -> Any:
    """The time of one full training of :data:`REFERENCE` on every training row, guarded, as
    a confirmation run trains it (``fused``: see :func:`_optimizer`): the faster of one torch
    thread and one per core (PyTorch's default), as a user training it alone would choose."""
    model_fn, data = load(path)
    prepared = prepare_data((data.X_train, data.y_train), (data.X_val, data.y_val),
                            task=data.task, seed=0)  # fmt: skip
    inits, activations = resolve_space(None, None)
    objective = Objective(model_fn, prepared, Budget(epochs=epochs), inits, activations, 0, {})
    times = []
    for threads in sorted({1, usable_cores()}):
        with _optimizer(fused), torch_threads(threads, torch.device("cpu")):
            times.append(timed(objective.attempt, REFERENCE, 1000, guard={})[1])
    return min(times, key=float)


def _three_seed_metric(result: dict[str, Any]) -> float | None:
    """The recommendation's metric over all 3 confirmation seeds, on every row.

    The racing confirmation may give the winner fewer seeds (a race of one ends after one);
    the missing seeds are trained here, untimed and uncounted, so every side is judged alike.
    """
    run, winner = result["run"], result["rec"].ranking[0]
    got = dict(zip(winner.seeds, winner.metrics))
    values = []
    for seed in result["rec"].seeds:
        if seed not in got:
            trained = run.objective.attempt(winner.config, seed, guard=run.objective.guard or {})
            got[seed] = None if trained.stop is not None else trained.metric
        values.append(got[seed])
    return None if any(v is None for v in values) else statistics.fmean(values)


def _summary(result: dict[str, Any], unit: float, unit_cpu: float,
             unit_plain: float | None = None) -> dict[str, Any]:  # fmt: skip
    winner = result["rec"].ranking[0]
    metrics = [m for m in winner.metrics if m is not None]
    if "metric_3_seeds" not in result:
        result["metric_3_seeds"] = _three_seed_metric(result)
    return {
        "fte": result["fte"], "search_fte": result["search_fte"],
        "confirm_fte": result["confirm_fte"], "probe_fte": result["probe_fte"],
        "seconds": result["seconds"], "time_ratio": result["seconds"] / unit,
        "time_ratio_plain": result["seconds"] / unit_plain if unit_plain else None,
        "cpu_ratio": result["cpu"] / unit_cpu, "trials": result["trials"],
        "pruned_by_pruner": result["pruned_by_pruner"], "confirm_runs": result["confirm_runs"],
        "raced_runs": result["raced_runs"], "recommendation": winner.config.label,
        "metric": statistics.fmean(metrics) if metrics else None, "seeds": list(winner.seeds),
        "metric_3_seeds": result["metric_3_seeds"],
    }  # fmt: skip


def _dataset(path: Path, setting: Setting, workdir: Path, levers: tuple[str, ...]) -> dict:
    storage = f"sqlite:///{workdir / (path.stem + '.db')}"
    units: list[Any] = []
    plain: list[Any] = []
    runs: dict[str, dict[str, Any]] = {}
    _full_training(path, 1)  # a warm-up: the first training in a process pays one-off costs
    units.append(_full_training(path, setting.epochs))  # before each search: the yardstick
    plain.append(_full_training(path, setting.epochs, fused=False))
    runs["today"] = _search(path, TODAY, setting, storage, "today")
    _progress(path, "today", runs, units)
    units.append(_full_training(path, setting.epochs))
    plain.append(_full_training(path, setting.epochs, fused=False))
    runs["new"] = _search(path, {}, setting, storage, "new")
    _progress(path, "new", runs, units)
    for lever in levers:
        units.append(_full_training(path, setting.epochs))
        if lever in ("race", "together"):  # the new search's study, confirmed today's way
            runs[lever] = _confirmed(runs["new"]["run"], runs["new"]["searching"],
                                     **{"race": True, "together": True, lever: False},
                                     again=True)  # fmt: skip
        else:
            change = {lever: ADDED.get(lever, TODAY[lever])}
            runs[lever] = _search(path, change, setting, storage, f"lever-{lever}")
        _progress(path, lever, runs, units)
    one = statistics.median(float(u) for u in units)
    one_cpu = statistics.median(u.cpu for u in units)
    one_plain = statistics.median(float(u) for u in plain)
    rows = {name: _summary(result, one, one_cpu, one_plain) for name, result in runs.items()}
    judged: dict[Config, float | None] = {}
    for name, result in runs.items():
        pick = result["rec"].ranking[0].config
        if pick not in judged:
            judged[pick] = _judged_metric(runs["new"]["run"].objective, pick)
        rows[name]["metric_judged"] = judged[pick]
    new, today = rows["new"], rows["today"]

    def saved(lever: str, key: str) -> float:  # by the lever, in the new default search
        sign = -1 if lever in ADDED else 1
        return sign * (rows[lever][key] - new[key])

    shares = {lever: {"fte_saved": saved(lever, "fte"), "time_ratio_saved": saved(
        lever, "time_ratio"), "cpu_ratio_saved": saved(lever, "cpu_ratio")} for lever in levers}
    return {
        "file": path.name, "full_training_s": one, "full_training_cpu_s": one_cpu,
        "full_training_s_all": [float(u) for u in units], "full_training_plain_s": one_plain,
        "full_training_plain_s_all": [float(u) for u in plain], "runs": rows, "levers": shares,
        "fte_today": today["fte"], "fte_new": new["fte"],
        "time_ratio_today": today["time_ratio"], "time_ratio_new": new["time_ratio"],
        "time_ratio_plain_today": today["time_ratio_plain"],
        "time_ratio_plain_new": new["time_ratio_plain"],
        "cpu_ratio_today": today["cpu_ratio"], "cpu_ratio_new": new["cpu_ratio"],
        "metric_today": today["metric_3_seeds"], "metric_new": new["metric_3_seeds"],
        "metric_gap": None if today["metric_3_seeds"] is None or new["metric_3_seeds"] is None
        else new["metric_3_seeds"] - today["metric_3_seeds"],
        "judged_today": today["metric_judged"], "judged_new": new["metric_judged"],
        "judged_gap": None if today["metric_judged"] is None or new["metric_judged"] is None
        else new["metric_judged"] - today["metric_judged"],
    }  # fmt: skip


def _judged_metric(objective: Objective, config: Config) -> float | None:
    """``config``'s metric over :data:`JUDGE_SEEDS`, each trained alone on all rows (None if
    one diverged): every side's pick judged by the same training."""
    values = []
    for seed in JUDGE_SEEDS:
        trained = objective.attempt(config, seed, guard=objective.guard or {})
        if trained.stop is not None:
            return None
        values.append(trained.metric)
    return statistics.fmean(values)


def _progress(path: Path, name: str, runs: dict[str, Any], units: list[Any]) -> None:
    """A line on stderr per run (the section takes minutes)."""
    row = _summary(runs[name], statistics.median(float(u) for u in units),
                   statistics.median(u.cpu for u in units))  # fmt: skip
    print(f"  cost {path.stem} {name}: FTE {row['fte']:.2f} (search {row['search_fte']:.2f}, "
          f"confirm {row['confirm_fte']:.2f}, probes {row['probe_fte']:.2f}), time "
          f"{row['time_ratio']:.1f}x, CPU {row['cpu_ratio']:.1f}x one training "
          f"({row['seconds']:.1f} s), "
          f"{row['recommendation']} {row['metric']}", file=sys.stderr, flush=True)


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    setting = _setting(quick)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        datasets = {name: _dataset(EXAMPLES / f"{name}.csv", setting, workdir, ())
                    for name in setting.bundled}  # fmt: skip
        for rows in setting.smaller:  # the middle ground: an epoch of ~60 steps
            smaller = workdir / f"generated_{rows}.csv"
            generated_frame(rows, "regression").to_csv(smaller, index=False)
            datasets[f"generated_{rows}"] = _dataset(smaller, setting, workdir, ())
        generated = workdir / f"generated_{setting.rows}.csv"
        generated_frame(setting.rows, "regression").to_csv(generated, index=False)
        datasets["generated"] = _dataset(generated, setting, workdir, setting.levers)
    finally:
        torch.set_num_threads(before)
    big = datasets["generated"]
    gaps = [d["metric_gap"] for d in datasets.values() if d["metric_gap"] is not None]
    judged = [d["judged_gap"] for d in datasets.values() if d["judged_gap"] is not None]
    figures = {
        "rows": setting.rows, "trials": setting.trials, "epochs": setting.epochs,
        "fte_today": big["fte_today"], "fte_new": big["fte_new"],
        "time_ratio_today": big["time_ratio_today"], "time_ratio_new": big["time_ratio_new"],
        "time_ratio_plain_today": big["time_ratio_plain_today"],
        "time_ratio_plain_new": big["time_ratio_plain_new"],
        "cpu_ratio_today": big["cpu_ratio_today"], "cpu_ratio_new": big["cpu_ratio_new"],
        "metric_gap": big["metric_gap"], "worst_metric_gap": min(gaps) if gaps else None,
        "judged_gap": big["judged_gap"], "worst_judged_gap": min(judged) if judged else None,
        "datasets": datasets,
    }  # fmt: skip
    targets = [
        target("FTE of the default search, generated table", big["fte_new"], "<=", 8.0),
        target("end-to-end / one full training, generated table", big["time_ratio_new"], "<=",
               10.0),  # fmt: skip
        target("the same / one plain-Adam training (0.1's yardstick)",
               big["time_ratio_plain_new"], "<=", 10.0),  # fmt: skip
        target("worst metric gap, new - today (every dataset)", figures["worst_metric_gap"],
               ">=", -0.005),  # fmt: skip
        target("worst judged gap: the picks trained alike on fresh seeds (every dataset)",
               figures["worst_judged_gap"], ">=", -0.005),  # fmt: skip
    ]
    return {"figures": figures, "targets": targets}

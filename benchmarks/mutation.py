"""Mutation testing of autoinit's core with mutmut: how many planted bugs do the tests catch?

Usage::

    python -m benchmarks.mutation                      # every module (hours on 2 cores)
    python -m benchmarks.mutation --module initializers
    python -m benchmarks.mutation --module search,recommend --max-children 1
    python -m benchmarks.mutation --rev HEAD           # the last commit, not the working tree
    python -m benchmarks.mutation --module search --retest --minutes 30   # bounded; go on later
    python -m benchmarks.mutation --list               # the modules, their files and tests

Each module is mutated in its own scratch copy of the project (``build/mutation/<module>/``,
gitignored), never in the working tree, and only the test files that exercise it are run:
mutmut runs them once to learn which test reaches which function, then runs, for each mutant,
only the tests that reach the mutated function. ``PYTHONPATH`` points at the mutated copy, so
worker processes and ``python -m autoinit.cli`` subprocesses run the mutant too.

The score is killed / (all mutants) per module; every mutant that is not killed is listed, with
its diff, in ``build/mutation/report.md``. The latest figures and why each survivor is left are
in ``benchmarks/README.md`` ("Mutation testing"). CI does not run this.
Needs ``pip install -e '.[mutation]'`` (mutmut).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Target:
    """The files to mutate (globs; the first existing spelling of each) and the tests to run."""

    sources: tuple[tuple[str, ...], ...]  # each entry: alternative spellings (private or not)
    tests: tuple[str, ...]
    # Tests that cannot pass under mutmut's trampolines (each with its reason, see MODULES).
    deselect: tuple[str, ...] = ()

    def files(self, root: Path = ROOT) -> list[str]:
        found: list[str] = []
        for spellings in self.sources:
            for pattern in spellings:
                matches = sorted(
                    str(Path(p).relative_to(root)) for p in glob.glob(str(root / pattern))
                    if not p.endswith("__init__.py")
                )  # fmt: skip
                if matches:
                    found += matches
                    break
        return found

    def test_files(self, root: Path = ROOT) -> list[str]:
        """The tests (files, or ``file::test`` node ids) whose file exists."""
        return [t for t in self.tests if (root / t.split("::")[0]).exists()]


def _bugs(*names: str) -> tuple[str, ...]:
    """Tests of ``tests/test_core_bugs.py`` by name (its searches are too slow to run for every
    mutant of a module they only pass through)."""
    return tuple(f"tests/test_core_bugs.py::{name}" for name in names)


def _workers(*names: str) -> tuple[str, ...]:
    """Tests of ``tests/test_workers.py`` by name (the others repeat the spawned workers over
    PostgreSQL and the CLI, ~20 s each)."""
    return tuple(f"tests/test_workers.py::{name}" for name in names)


# The core, and the tests that exercise each part. Module names list the private spelling
# (``_search.py``) next to the public one, so a rename needs no change here.
MODULES: dict[str, Target] = {
    "initializers": Target(
        sources=(("autoinit/_initializers.py", "autoinit/initializers.py"),),
        tests=("tests/test_initializers.py", *_bugs(
            "test_an_unknown_initializer_is_named_as_one",
            "test_a_registered_initializer_keeps_its_aliases",
            "test_a_registered_initializer_without_a_docstring_has_an_empty_formula",
            "test_every_initializer_draws_from_the_generator_only",
            "test_an_initializer_called_without_a_gain_uses_gain_1",
        )),
    ),
    "apply": Target(
        sources=(("autoinit/_apply.py", "autoinit/apply.py"),),
        tests=("tests/test_apply.py", *_bugs(
            "test_apply_and_build_default_to_seed_0",
            "test_build_seeds_the_weights_of_a_model_fn_without_activation",
            "test_build_leaves_fixed_activations_of_a_model_fn_that_takes_one",
            "test_weights_are_drawn_in_float32_whatever_the_default_dtype",
            "test_a_model_without_activation_modules_is_warned_about_once_per_class",
            "test_build_passes_the_batch_to_a_data_dependent_init_of_any_model_fn",
            "test_swapping_activations_counts_the_modules_swapped",
            "test_recurrent_weights_are_drawn_from_the_seed_alone",
            "test_the_leaky_slope_sets_the_gain",
        )),
        # It checks a warning's stacklevel; the trampoline adds frames between test and apply.
        deselect=("tests/test_apply.py::test_functional_activations_warn_once_per_class",),
    ),
    "monitor": Target(
        sources=(("autoinit/monitor/_*.py", "autoinit/monitor.py"),),
        tests=("tests/test_monitor.py", "tests/test_train.py", *_bugs(
            "test_the_default_rules_and_guard_read_back_with_their_options",
            "test_bad_guard_options_are_refused_with_the_value",
            "test_guard_options_just_inside_their_limits_are_accepted",
            "test_rules_fire_only_strictly_past_their_bound",
            "test_growth_is_measured_against_the_first_steps_and_a_rising_loss",
            "test_growth_spaced_out_needs_its_patience_and_a_dense_check_fires_at_once",
            "test_loss_bound_keeps_its_own_classes_and_patient_passes_them_on",
            "test_from_option_gives_each_guard_the_trial_and_its_own_rules",
            "test_steps_without_gradients_skip_quiet_losses_and_keep_the_first_loss",
            "test_step_stats_measure_the_first_and_last_weight_layers",
            "test_the_worst_layer_is_the_largest_norm_or_the_first_non_finite",
            "test_symmetry_is_judged_on_hidden_matrices_with_several_units",
            "test_the_signal_probe_skips_outputs_without_a_spread",
            "test_raise_diverged_stores_the_reason_and_raises_it",
        )),
    ),
    "search": Target(  # duplicates, the budget, worker processes, threads
        sources=(
            ("autoinit/_search.py", "autoinit/search.py"),
            ("autoinit/_workers.py", "autoinit/workers.py"),
        ),
        # One spawned-worker test (the others repeat it over PostgreSQL and the CLI, ~20 s each),
        # the worker body run in this process (mutmut sees no spawned process),
        # and of test_core_bugs.py the tests of search (the rest are recommend's: 50 s a mutant).
        tests=("tests/test_search.py", "tests/test_multifidelity.py", "tests/test_probe.py",
               "tests/test_workers.py::test_two_workers_share_a_sqlite_study",
               *_workers("test_a_worker_trains_the_study_with_a_sampler_seeded_by_its_index",
                         "test_a_terminated_worker_fails_its_trial_and_returns",
                         "test_the_timeout_stops_starting_trials_here_and_in_a_worker",
                         "test_optimize_here_stops_at_the_study_total",
                         "test_a_worker_prunes_with_the_studys_pruner",
                         "test_n_jobs_starts_one_worker_per_extra_job_each_with_its_index"),
               # Objective.train's guard, as the confirmation trains through it.
               "tests/test_racing.py::test_the_confirmation_keeps_the_searchs_own_guard_options",
               "tests/test_racing.py::test_the_confirmation_guards_even_when_the_search_did_not",
               *_bugs(
                   "test_a_completed_twin_is_reused_not_retrained",
                   "test_a_complete_twin_after_one_the_pruner_stopped_is_reused",
                   "test_a_twin_still_running_elsewhere_is_not_reused_but_a_finished_one_is",
                   "test_a_twin_stopped_by_the_pruner_is_retrained",
                   "test_a_diverged_twin_is_reused_with_its_reason",
                   "test_the_thread_count_is_restored_after_a_search",
                   "test_recommends_defaults_are_searchs_and_the_confirmations",
                   "test_search_passes_every_option_on_and_runs_its_documented_defaults",
               )),  # fmt: skip
        # The same two workers on one SQLite study as the test_workers.py test above.
        deselect=("tests/test_search.py::test_parallel_workers_share_one_sqlite_study",),
    ),
    "recommend": Target(  # ranking, confirmation
        sources=(("autoinit/_recommend.py", "autoinit/recommend.py"),),
        tests=("tests/test_recommend.py", "tests/test_racing.py", "tests/test_core_bugs.py"),
    ),
    "data": Target(  # the loader's row handling: parsed rows -> block, pieces, the split
        sources=(
            ("autoinit/data/_frame.py",),
            ("autoinit/data/_reading.py",),
            ("autoinit/data/_split.py",),
        ),
        tests=("tests/test_data.py", "tests/test_data_fuzz.py"),
    ),
}

KILLED = ("killed", "caught by type check")  # what --retest keeps
# --resume keeps every decided result; mutmut tests the mutants not checked (and timeouts).
RESUMED = (*KILLED, "survived", "no tests", "suspicious", "segfault")
NOT_KILLED = ("survived", "no tests", "timeout", "suspicious", "segfault", "not checked")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mutation", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--module", default=",".join(MODULES),
        help=f"comma-separated modules (default: all: {','.join(MODULES)})",
    )  # fmt: skip
    parser.add_argument(
        "--max-children", type=int, default=os.cpu_count() or 2,
        help="mutants tested at once (default: the number of cores)",
    )  # fmt: skip
    parser.add_argument(
        "--workdir", type=Path, default=ROOT / "build" / "mutation",
        help="where the scratch copies and report.md go (default: build/mutation)",
    )  # fmt: skip
    parser.add_argument(
        "--rev", default=None,
        help="test a commit (git archive REV) instead of the working tree, e.g. HEAD",
    )  # fmt: skip
    parser.add_argument(
        "--retest", action="store_true",
        help="keep what the module's last run in --workdir killed; test again only the mutants "
             "left and those of functions changed since (tests are only ever added)",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action="store_true",
        help="keep every result of the module's last run (survivors too) and test only what it "
             "did not reach and the functions changed since: the cheap way to finish a run "
             "stopped by --minutes (survivors are tried again only by --retest)",
    )  # fmt: skip
    parser.add_argument(
        "--minutes", type=float, default=None,
        help="stop each module's run after this many minutes and report what it reached (the "
             "rest counts as not checked; --resume or --retest goes on from there)",
    )  # fmt: skip
    parser.add_argument("--list", action="store_true", help="print the modules and exit")
    args = parser.parse_args(argv)
    args.modules = [name.strip() for name in args.module.split(",") if name.strip()]
    unknown = [name for name in args.modules if name not in MODULES]
    if unknown or not args.modules:
        names = ", ".join(map(repr, unknown))
        parser.error(f"unknown module(s) {names}; valid: {', '.join(MODULES)}.")
    if args.minutes is not None and args.minutes <= 0:
        parser.error(f"--minutes must be positive but got {args.minutes:g}.")
    if args.max_children < 1:
        parser.error(f"--max-children must be at least 1 but got {args.max_children}.")
    return args


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def mutmut_table(target: Target, source: Path = ROOT) -> str:
    """The project's ``[tool.mutmut]`` table, with this module's files and tests filled in."""
    base = tomllib.loads((source / "pyproject.toml").read_text())["tool"].get("mutmut", {})
    table = {
        **base,
        "source_paths": ["autoinit"],
        "also_copy": ["examples"],  # the bundled CSV files some tests read
        "only_mutate": target.files(source),
        "pytest_add_cli_args_test_selection": target.test_files(source),
        "pytest_add_cli_args": [
            *base.get("pytest_add_cli_args", []),
            *(arg for test in target.deselect for arg in ("--deselect", test)),
        ],
    }
    lines = ["[tool.mutmut]"]
    for key, value in table.items():
        if isinstance(value, list):
            lines.append(f"{key} = {_toml_list([str(v) for v in value])}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def _without_mutmut_table(pyproject: str) -> str:
    kept, skipping = [], False
    for line in pyproject.splitlines():
        if line.startswith("["):
            skipping = line.strip() == "[tool.mutmut]"
        if not skipping:
            kept.append(line)
    return "\n".join(kept) + "\n"


_KEEP_DECORATED = {"staticmethod", "classmethod", "overload", "setter", "getter", "deleter"}


def undecorate(source: str) -> str:
    """``@deco`` + ``def f`` -> ``def f`` + ``f = deco(f)``: the same module, mutable by mutmut.

    mutmut leaves every decorated function alone (it cannot put its trampoline under the
    decorator), which would leave out registered initializers, properties and context managers.
    Nested functions are left as they are (they are mutated as part of their parent), and so are
    decorators whose meaning depends on the name being bound first (``@x.setter``).
    """
    import libcst as cst

    class Undecorate(cst.CSTTransformer):
        depth = 0

        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            self.depth += 1
            return True

        def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef):
            self.depth -= 1
            if self.depth or not updated.decorators:
                return updated
            code = [cst.Module([]).code_for_node(d.decorator) for d in updated.decorators]
            if any(c.split("(")[0].rsplit(".", 1)[-1] in _KEEP_DECORATED for c in code):
                return updated
            wrapped: cst.BaseExpression = updated.name
            for decorator in reversed(updated.decorators):
                wrapped = cst.Call(func=decorator.decorator, args=[cst.Arg(wrapped)])
            assign = cst.SimpleStatementLine(
                [cst.Assign(targets=[cst.AssignTarget(updated.name)], value=wrapped)]
            )
            bare = updated.with_changes(
                decorators=[], leading_lines=updated.decorators[0].leading_lines
            )
            return cst.FlattenSentinel([bare, assign])

    return cst.parse_module(source).visit(Undecorate()).code


def prepare(name: str, target: Target, workdir: Path, source: Path = ROOT) -> Path:
    """A fresh scratch copy of the project for ``name``: the package, the tests, the config."""
    scratch = workdir / name
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "studies")
    for folder in ("autoinit", "tests", "examples"):
        if (source / folder).is_dir():
            shutil.copytree(source / folder, scratch / folder, ignore=ignore)
    for path in target.files(source):
        (scratch / path).write_text(undecorate((scratch / path).read_text()))
    pyproject = _without_mutmut_table((source / "pyproject.toml").read_text())
    (scratch / "pyproject.toml").write_text(pyproject + "\n" + mutmut_table(target, source))
    # Made now, not by mutmut: a PYTHONPATH entry missing at start-up is skipped for good.
    (scratch / "mutants").mkdir()
    return scratch


def export(rev: str, folder: Path) -> Path:
    """The project as committed in ``rev`` (``git archive``), in ``folder``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT,
                             capture_output=True, check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def _env(path: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Subprocesses (spawned workers, `python -m autoinit.cli`) import the same copy.
    env["PYTHONPATH"] = os.pathsep.join([str(path), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("CI", None)  # a skipped optional test must not fail the mutants' runs
    env.setdefault("AUTOINIT_FUZZ_EXAMPLES", "20")  # tests/test_data_fuzz.py: 100 in the suite
    return env


def failing_tests(scratch: Path, target: Target, log) -> list[str]:
    """The selected tests that fail on the unmutated copy: mutmut needs a clean run, and a
    known bug must not stop the mutation testing of everything else."""
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
               "-p", "no:xdist", "-o", "addopts=", *target.test_files(scratch),
               *(arg for test in target.deselect for arg in ("--deselect", test))]  # fmt: skip
    done = subprocess.run(command, cwd=scratch, env=_env(scratch), capture_output=True,
                          text=True, check=False)  # fmt: skip
    log.write(done.stdout + done.stderr)
    return sorted({line.split()[1] for line in done.stdout.splitlines()
                   if line.startswith(("FAILED ", "ERROR "))})  # fmt: skip


def run_mutmut(scratch: Path, max_children: int, log, minutes: float | None) -> tuple[int, bool]:
    """mutmut's exit code, and whether it was stopped at ``minutes``."""
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    return run_for(command, scratch, _env(scratch / "mutants"), log, minutes)


def run_for(command: list[str], cwd: Path, env: dict, log, minutes: float | None
            ) -> tuple[int, bool]:  # fmt: skip
    """Run ``command``; past ``minutes``, stop it and every process it started (mutmut records
    each mutant's result as it goes: what it did not reach stays "not checked")."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    try:
        return process.wait(timeout=None if minutes is None else minutes * 60), False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return 0, True


STATUS = {  # mutmut's exit codes (mutmut.stats.status_by_exit_code)
    1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
    35: "suspicious", 36: "timeout", 37: "caught by type check", -24: "timeout", 24: "timeout",
    152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault", None: "not checked",
}  # fmt: skip


def results(scratch: Path, files: list[str]) -> dict[str, str]:
    """Mutant name -> status, for the mutated files."""
    statuses: dict[str, str] = {}
    for path in files:
        meta = scratch / "mutants" / (path + ".meta")
        if not meta.exists():
            continue
        data = json.loads(meta.read_text())
        for mutant, code in data["exit_code_by_key"].items():
            statuses[mutant] = STATUS.get(code, "suspicious")
    return statuses


def killed_before(
    scratch: Path, files: list[str], keep: tuple[str, ...] = KILLED
) -> dict[str, dict]:
    """The last run's records of ``files`` in ``scratch``, with only the results in ``keep``
    kept (default: the kills): mutmut then tests the rest again (and, from the function hashes,
    every mutant of a changed function)."""
    kept: dict[str, dict] = {}
    for path in files:
        meta = scratch / "mutants" / (path + ".meta")
        if meta.exists():
            data = json.loads(meta.read_text())
            data["exit_code_by_key"] = {
                mutant: code if STATUS.get(code) in keep else None
                for mutant, code in data["exit_code_by_key"].items()
            }  # fmt: skip
            kept[path] = data
    return kept


def restore(scratch: Path, kept: dict[str, dict]) -> None:
    for path, data in kept.items():
        meta = scratch / "mutants" / (path + ".meta")
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps(data))


def diff(scratch: Path, mutant: str) -> str:
    shown = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", mutant], cwd=scratch, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    lines = shown.stdout.splitlines()
    return "\n".join(line for line in lines[1:] if not line.startswith(("---", "+++")))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, target in MODULES.items():
            print(f"{name}: {', '.join(target.files())}")
            print(f"    tests: {', '.join(target.test_files())}")
        return 0
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print("error: mutmut is not installed; pip install -e '.[mutation]'", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    source = ROOT if args.rev is None else export(args.rev, args.workdir / "_source")
    report = [f"# Mutation testing ({time.strftime('%Y-%m-%d %H:%M')})", ""]
    table = ["| module | mutants | killed | not killed | score | minutes |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    total = Counter()
    failed = False
    for name in args.modules:
        target = MODULES[name]
        files = target.files(source)
        if not files or not target.test_files(source):
            print(f"{name}: no files or no tests found; skipped", flush=True)
            continue
        print(f"{name}: mutating {', '.join(files)}", flush=True)
        print(f"    with {', '.join(target.test_files(source))}", flush=True)
        started = time.monotonic()
        kept = {}
        if args.retest or args.resume:
            kept = killed_before(args.workdir / name, files, RESUMED if args.resume else KILLED)
        scratch = prepare(name, target, args.workdir, source)
        restore(scratch, kept)
        broken: list[str] = []
        with open(args.workdir / f"{name}.log", "w") as log:
            broken = failing_tests(scratch, target, log)
            if broken:
                print(f"    failing before any mutation, left out: {', '.join(broken)}",
                      flush=True)  # fmt: skip
                target = dataclasses.replace(target, deselect=(*target.deselect, *broken))
                prepare(name, target, args.workdir, source)
                restore(scratch, kept)
            code, stopped = run_mutmut(scratch, args.max_children, log, args.minutes)
        minutes = (time.monotonic() - started) / 60
        statuses = results(scratch, files)
        if code != 0 or not statuses:
            failed = True
            log = args.workdir / f"{name}.log"
            print(f"    mutmut failed (exit {code}); see {log}", flush=True)
            continue
        counts = Counter(statuses.values())
        killed = counts["killed"] + counts["caught by type check"]
        left = {m: s for m, s in statuses.items() if s in NOT_KILLED}
        score = killed / len(statuses)
        total.update(mutants=len(statuses), killed=killed)
        table.append(f"| {name} | {len(statuses)} | {killed} | {len(left)} | {score:.1%} | "
                     f"{minutes:.1f} |")  # fmt: skip
        print(f"    {killed}/{len(statuses)} killed ({score:.1%}) in {minutes:.1f} min; "
              f"not killed: {dict(Counter(left.values())) or 'none'}", flush=True)  # fmt: skip
        if stopped:
            print(f"    stopped at --minutes {args.minutes:g} with {counts['not checked']} not "
                  "checked; go on with --retest", flush=True)  # fmt: skip
        report += [f"## {name}", ""]
        if broken:
            report += ["Left out, failing before any mutation: " + ", ".join(broken), ""]
        for mutant, status in sorted(left.items()):
            report += [f"### {mutant} ({status})", "", "```diff", diff(scratch, mutant), "```", ""]
    if total["mutants"]:
        table.append(f"| all | {total['mutants']} | {total['killed']} | "
                     f"{total['mutants'] - total['killed']} | "
                     f"{total['killed'] / total['mutants']:.1%} | |")  # fmt: skip
    report[2:2] = [*table, ""]
    (args.workdir / "report.md").write_text("\n".join(report) + "\n")
    print("\n".join(table))
    print(f"survivors and their diffs: {args.workdir / 'report.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

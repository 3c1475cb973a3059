"""The ``autoinit`` command line, in-process through click's CliRunner (one subprocess smoke test).

Searches are tiny (3 trials of 1 epoch on a 2x8 MLP) so that the whole file runs in seconds.
Every bad input must give exactly one ``error: ...`` line, exit status 2, no traceback, and leave
the storage without a study (or with an existing study unchanged).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result

from autoinit import records
from autoinit.activations import list_activations
from autoinit.cli import main
from autoinit.initializers import list_initializers
from autoinit.study import open_storage

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BREAST_CANCER = EXAMPLES / "breast_cancer.csv"
DIABETES = EXAMPLES / "diabetes.csv"
TINY = ["--trials", "3", "--epochs", "1", "--seeds", "2", "--top-k", "1", "--depth", "2",
        "--width", "8"]  # fmt: skip


# --- helpers and fixtures ------------------------------------------------------------------------


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a fresh working directory, where the default ``studies/`` folder would go."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def storage(cwd: Path) -> str:
    return f"sqlite:///{cwd / 's.db'}"


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args: str | Path) -> Result:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def search(data: Path, storage: str, *extra: str | Path) -> Result:
    return ok("search", "--data", data, "--storage", storage, *TINY, *extra)


def stored_studies(storage: str) -> dict[str, list[tuple]]:
    """{study name: [(number, state, params, value)]} of the finished trials (not the baselines
    still queued); {} when the database was never made."""
    if not Path(storage.removeprefix("sqlite:///")).exists():
        return {}
    opened = optuna.storages.RDBStorage(storage)
    try:
        return {
            s.study_name: [
                (t.number, t.state, t.params, t.value)
                for t in optuna.load_study(study_name=s.study_name, storage=opened).get_trials(
                    states=records.FINISHED_STATES
                )
            ]
            for s in optuna.get_all_study_summaries(opened)
        }
    finally:
        opened.engine.dispose()


def assert_one_error_line(result: Result, *names: str) -> str:
    """Exit 2, stdout empty, one ``error:`` line on stderr naming ``names``; returns the line."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # not an uncaught exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def classification_csv(path: Path, rows: int = 60) -> Path:
    lines = ["a,b,c,label"]
    for i in range(rows):
        lines.append(f"{i % 7},{(i * 3) % 11 / 10},{i % 2},{'yes' if i % 2 else 'no'}")
    return write(path, "\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Result]:
    """One real search on breast_cancer.csv, shared by the tests that only read it."""
    folder = tmp_path_factory.mktemp("searched")
    storage = f"sqlite:///{folder / 's.db'}"
    result = ok("search", "--data", BREAST_CANCER, "--storage", storage, *TINY)
    return storage, "breast_cancer-2x8", result


# --- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["search"], ["show"], ["list"], ["report"],
                                     ["dashboard"]])  # fmt: skip
def test_every_help_shows_an_example(command: list[str]) -> None:
    result = ok(*command, "--help")
    assert "Example" in result.output or "Quick start" in result.output
    assert "autoinit " in result.output.split("Example")[-1]


def test_version() -> None:
    import importlib.metadata

    import autoinit

    assert autoinit.__version__ in ok("--version").output
    assert importlib.metadata.version("autoinit") == autoinit.__version__


# --- search --------------------------------------------------------------------------------------


def test_search_with_defaults_reports_target_task_table_and_next_steps(
    searched: tuple[str, str, Result],
) -> None:
    storage, name, result = searched
    notes = result.stderr
    assert "target: 'diagnosis' (the last column" in notes
    assert "task: target 'diagnosis' is text with 2 distinct values -> classification" in notes
    assert "trials: 100%" in notes and "pruned=" in notes and "best=" in notes  # the progress bar
    assert "and PyTorch's default in a race over up to" in notes
    out = result.stdout
    assert "Recommended: " in out
    assert "lower validation loss than the default" in out or "default diverged" in out
    header = next(line for line in out.splitlines() if line.startswith("rank"))
    assert header.split()[:11] == ["rank", "init", "activation", "slope", "val", "loss", "(mean",
                                   "±", "std)", "accuracy", "seeds"]  # fmt: skip
    assert header.split()[11:] in ([], ["note"])  # a note only where one config has one
    assert "default" in out and "relu" in out  # PyTorch's default is always in the table
    assert "3 trials: " in out and "Stopped early: " in out
    assert f"Study '{name}' stored in {storage}" in out
    assert f"autoinit report --storage {storage} --study-name {name}" in out
    assert f"optuna-dashboard {storage}" in out
    assert len(stored_studies(storage)[name]) == 3


def test_search_regression_as_json(storage: str) -> None:
    result = search(DIABETES, storage, "--json")
    payload = json.loads(result.stdout)  # nothing but JSON on stdout
    assert "-> regression" in result.stderr and "target: 'progression'" in result.stderr
    assert payload["study_name"] == "diabetes-2x8"
    assert payload["storage"] == storage
    assert payload["task"] == "regression"
    assert payload["trials"] == 3
    recommendation = payload["recommendation"]
    assert recommendation["metric_name"] == "r2"
    assert recommendation["config"]["init"] and recommendation["config"]["activation"]
    assert recommendation["default"]["config"] == {"init": "default", "activation": "relu",
                                                   "leaky_slope": None}  # fmt: skip
    assert set(payload["stopped_early"]) >= set(records.PRUNE_KINDS)


def test_search_default_storage_is_studies_folder_in_cwd(cwd: Path) -> None:
    ok("search", "--data", BREAST_CANCER, *TINY)
    assert "breast_cancer-2x8" in stored_studies(f"sqlite:///{cwd / 'studies' / 'autoinit.db'}")


def test_search_options_reach_the_study(storage: str, cwd: Path) -> None:
    """Column names are only data: shell syntax in them is printed, never run."""
    path = write(cwd / "odd names.csv", "\n".join(
        ["$(touch pwned),; rm -rf x,`id`"]
        + [f"{i % 5},{i / 10},{'cat' if i % 3 else 'dog'}" for i in range(40)]
    ) + "\n")  # fmt: skip
    result = search(
        path, storage, "--target", "$(touch pwned)", "--task", "classification",
        "--inits", "he_normal, xavier_uniform", "--activations", "relu,tanh",
        "--study-name", "odd $(name)", "--timeout", "600", "--jobs", "2", "--device", "cpu",
        "--seed", "7", "--lr", "0.01",
    )  # fmt: skip
    assert not (cwd / "pwned").exists()
    assert "target: '$(touch pwned)' (as requested)" in result.stderr
    assert "task: task 'classification' was requested" in result.stderr
    assert "autoinit report --storage" in result.stdout
    assert "--study-name 'odd $(name)'" in result.stdout  # quoted for the shell
    study = optuna.load_study(study_name="odd $(name)", storage=storage)  # name and storage
    finished = study.get_trials(states=records.FINISHED_STATES)
    assert 3 <= len(finished) <= 4  # --trials 3, plus at most the other worker's trial in flight
    assert study.user_attrs[records.STUDY_BUDGET]["seed"] == 7
    assert study.user_attrs[records.STUDY_BUDGET]["epochs"] == 1
    assert study.user_attrs[records.STUDY_BUDGET]["lr"] == 0.01
    assert study.user_attrs[records.STUDY_TASK] == "classification"
    assert study.user_attrs[records.STUDY_SPACE] == {
        "inits": ["kaiming_normal", "xavier_uniform"], "activations": ["relu", "tanh"]
    }
    assert {t.params["init"] for t in study.trials} <= {"kaiming_normal", "xavier_uniform"}
    assert study.user_attrs[records.STUDY_DATA]["target"] == "$(touch pwned)"


def test_search_resumes_and_refuses_other_data(storage: str, cwd: Path) -> None:
    search(BREAST_CANCER, storage, "--study-name", "s")
    before = stored_studies(storage)["s"]
    assert len(before) == 3

    other = classification_csv(cwd / "other.csv")
    refused = invoke("search", "--data", other, "--storage", storage, *TINY, "--study-name", "s")
    line = assert_one_error_line(refused, "'s'", "data fingerprint", "another study name")
    assert "resume it with the same data" in line
    assert stored_studies(storage)["s"] == before

    more = search(BREAST_CANCER, storage, "--study-name", "s", "--trials", "5")
    after = stored_studies(storage)["s"]
    assert len(after) == 5 and after[:3] == before  # continued, the first trials untouched
    assert "5 trials: " in more.stdout
    again = search(BREAST_CANCER, storage, "--study-name", "s", "--trials", "5")
    assert stored_studies(storage)["s"] == after  # already at its budget: nothing trained
    assert "5/5" in again.stderr


def test_ctrl_c_prints_the_resume_hint_and_exits_130(
    storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl+C in the second trial's training: one hint, exit 130, the first trial kept."""
    search_module = importlib.import_module("autoinit._search")
    real_run, calls = search_module.fit, []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(*args, **kwargs)

    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append  # what reaches optuna's own handlers
    logging.getLogger("optuna").addHandler(handler)
    monkeypatch.setattr(search_module, "fit", interrupt_second)
    try:
        result = invoke("search", "--data", BREAST_CANCER, "--storage", storage, *TINY)
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert not [r for r in logged if r.exc_info]  # optuna's traceback of the stopped trial
    hint = result.stderr.strip().splitlines()[-1]
    assert hint.startswith("interrupted: ") and storage in hint and "breast_cancer-2x8" in hint
    assert "run the same command again to resume" in hint
    assert len(stored_studies(storage)["breast_cancer-2x8"]) == 1  # the finished trial is kept
    monkeypatch.undo()
    search(BREAST_CANCER, storage)
    assert len(stored_studies(storage)["breast_cancer-2x8"]) == 3


# --- bad input -----------------------------------------------------------------------------------

HEADER = "x1,x2,y\n"
GOOD_ROWS = "".join(f"{i},{i % 3},{i % 2}\n" for i in range(30))

# name: (file content or None for no file, extra options, words the error line must contain)
BAD_FILES = {
    "missing file": (None, [], ["data.csv", "not found"]),
    "empty": ("", [], ["data.csv", "empty"]),
    "header only": (HEADER, [], ["data.csv", "no data rows"]),
    "too few rows": (HEADER + "1,2,0\n2,3,1\n3,4,0\n", [], ["data.csv", "rows"]),
    "wrong field count": (HEADER + GOOD_ROWS + "1,2,3,4\n", [], ["data.csv", "line 32"]),
    "target missing": (HEADER + GOOD_ROWS, ["--target", "price"],
                       ["'price'", "data.csv", "'x1', 'x2', 'y'"]),
    "one class": ("x1,y\n" + "".join(f"{i},same\n" for i in range(30)), [],
                  ["'y'", "single value", "--target"]),
    "target all missing": ("x1,y\n" + "".join(f"{i},\n" for i in range(30)), [],
                           ["'y'", "no values"]),
    "regression target with units": (
        "x1,weight\n" + "".join(f"{i},{i}.5kg\n" for i in range(30)), ["--task", "regression"],
        ["'weight'", "numeric", "kg"]),
    "no feature columns": ("y\n" + "".join(f"{i % 2}\n" for i in range(30)), [],
                           ["data.csv", "no features"]),
    "duplicate columns": ("a,a,y\n" + GOOD_ROWS, [], ["data.csv", "duplicate", "'a'"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_csv_gives_one_error_line_and_no_study(case: str, cwd: Path, storage: str) -> None:
    content, extra, words = BAD_FILES[case]
    path = cwd / "data.csv"
    if content is not None:
        write(path, content)
    result = invoke("search", "--data", path, "--storage", storage, *TINY, *extra)
    assert_one_error_line(result, *words)
    assert stored_studies(storage) == {}


@pytest.mark.parametrize("case, content, words", [
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ["data.csv", "binary"]),
    ("latin-1", "name,y\n".encode() + "café,1\n".encode("latin-1") * 20,
     ["data.csv", "UTF-8"]),
])  # fmt: skip
def test_bad_bytes_give_one_error_line(case, content, words, cwd: Path, storage: str) -> None:
    (cwd / "data.csv").write_bytes(content)
    result = invoke("search", "--data", cwd / "data.csv", "--storage", storage, *TINY)
    assert_one_error_line(result, *words)
    assert stored_studies(storage) == {}


def test_a_directory_as_data(cwd: Path, storage: str) -> None:
    (cwd / "folder").mkdir()
    result = invoke("search", "--data", cwd / "folder", "--storage", storage, *TINY)
    assert_one_error_line(result, "folder", "directory")
    assert stored_studies(storage) == {}


@pytest.mark.parametrize("option, value, words", [
    ("--inits", "he_normall,xavier_uniform", ["he_normall", "Did you mean 'he_normal'"]),
    ("--activations", "relu,tanhh", ["tanhh", "Did you mean 'tanh'"]),
    ("--inits", " , ", ["search space is empty"]),
])  # fmt: skip
def test_unknown_names_suggest_the_nearest(option, value, words, storage: str) -> None:
    result = invoke("search", "--data", BREAST_CANCER, "--storage", storage, *TINY, option, value)
    assert_one_error_line(result, *words)
    assert stored_studies(storage) == {}


def test_bad_storage_url(cwd: Path) -> None:
    result = invoke("search", "--data", BREAST_CANCER, "--storage", "not a url", *TINY)
    assert_one_error_line(result, "'not a url'", "sqlite:///")
    assert list(cwd.iterdir()) == []


def test_unwritable_studies_folder(cwd: Path) -> None:
    write(cwd / "plain-file", "not a folder")
    storage = f"sqlite:///{cwd / 'plain-file' / 'studies' / 's.db'}"
    result = invoke("search", "--data", BREAST_CANCER, "--storage", storage, *TINY)
    assert_one_error_line(result, "plain-file", "--storage")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu(storage: str) -> None:
    result = invoke("search", "--data", BREAST_CANCER, "--storage", storage, *TINY,
                    "--device", "cuda")  # fmt: skip
    assert_one_error_line(result, "cuda", "cpu")
    assert stored_studies(storage) == {}


def test_the_advice_when_nothing_trains_names_real_options(storage: str) -> None:
    """Every ``--flag`` the no-recommendation advice suggests is an option of ``search`` (it
    once suggested ``--lr``, which did not exist), and ``--lr`` reaches the trials."""
    import re

    from autoinit.recommendation import ADVICE

    flags = re.findall(r"--[a-z][a-z-]*", ADVICE)
    assert flags and all(flag in invoke("search", "--help").output for flag in flags)
    result = invoke("search", "--data", BREAST_CANCER, "--storage", storage, *TINY,
                    "--inits", "normal", "--activations", "relu", "--depth", "20",
                    "--study-name", "nothing")  # fmt: skip
    assert result.exit_code == 3 and "--lr" in result.output
    assert "confirming" not in result.stderr  # nothing completed: there is nothing to confirm


def test_prescreen_flags(storage: str) -> None:
    """``--prescreen-space`` adds the space's collapsed configs before any trial trains (none
    without it); with ``--no-prescreen`` it is one clear error and nothing is stored."""
    space = ("--inits", "zeros,kaiming_normal", "--activations", "relu,tanh")
    ok("search", "--data", BREAST_CANCER, "--storage", storage, *TINY, *space, "--study-name",
       "space", "--prescreen-space")  # fmt: skip
    added = [t for t in optuna.load_study(study_name="space", storage=storage).trials
             if records.PID not in t.user_attrs]  # fmt: skip
    assert added and all(records.prune_kind(t) == records.PRESCREEN for t in added)
    ok("search", "--data", BREAST_CANCER, "--storage", storage, *TINY, *space, "--study-name",
       "trials")  # fmt: skip
    study = optuna.load_study(study_name="trials", storage=storage)
    assert all(records.PID in t.user_attrs for t in study.trials)
    both = invoke("search", "--data", BREAST_CANCER, "--storage", storage, *TINY,
                  "--study-name", "both", "--no-prescreen", "--prescreen-space")  # fmt: skip
    assert_one_error_line(both, "--no-prescreen", "--prescreen-space")
    assert "both" not in stored_studies(storage)


@pytest.mark.parametrize("args", [["--trials", "0"], ["--epochs", "-1"], ["--seed", "-1"],
                                  ["--lr", "0"], ["--confirm-jobs", "0"],
                                  ["--task", "cluster"], ["--no-such-option"]])  # fmt: skip
def test_click_usage_errors_exit_2_without_a_traceback(args: list[str], storage: str) -> None:
    """Usage errors keep click's own format (usage line, then ``Error: ...``): see cli.py."""
    result = invoke("search", "--data", BREAST_CANCER, "--storage", storage, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert result.stdout == ""
    assert stored_studies(storage) == {}


# --- show ----------------------------------------------------------------------------------------


def test_show_lists_and_shows_without_retraining(
    searched: tuple[str, str, Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    import autoinit.train

    def no_training(*args, **kwargs):
        raise AssertionError("show must not train")

    monkeypatch.setattr(autoinit.train, "run", no_training)
    storage, name, _ = searched
    before = stored_studies(storage)

    listing = ok("show", "--storage", storage).stdout
    assert name in listing and "3 trials" in listing and "classification" in listing
    assert json.loads(ok("show", "--storage", storage, "--json").stdout)[0]["study_name"] == name

    shown = ok("show", "--storage", storage, "--study-name", name).stdout
    assert shown.startswith("Recommended: ")
    assert "Confirmed over 2 seeds:" in shown and "rank" in shown
    payload = json.loads(ok("show", "--storage", storage, "--study-name", name, "--json").stdout)
    assert payload["recommendation"]["seeds"] and payload["task"] == "classification"
    assert stored_studies(storage) == before


def test_show_an_unconfirmed_study_ranks_its_trials(tmp_path: Path) -> None:
    from study_factory import make_study, mixed_trials, sqlite_url

    study = make_study(tmp_path, mixed_trials())
    shown = ok("show", "--storage", sqlite_url(tmp_path), "--study-name", study.study_name).stdout
    assert "Ranked by the search trials (one seed each, not confirmed):" in shown
    assert "kaiming_normal  leaky_relu  0.02" in shown
    assert "Stopped early: " in shown and "exploding 2" in shown


def test_show_missing_or_empty_storage_and_unknown_study(storage: str) -> None:
    assert_one_error_line(invoke("show", "--storage", storage), "no study database")
    assert not Path(storage.removeprefix("sqlite:///")).exists()  # a typo creates nothing
    open_storage(storage)  # a database with no study yet
    assert "no study in" in ok("show", "--storage", storage).stdout
    assert json.loads(ok("show", "--storage", storage, "--json").stdout) == []
    optuna.create_study(storage=storage, study_name="other")
    assert "other" in ok("show", "--storage", storage).stdout
    result = invoke("show", "--storage", storage, "--study-name", "nope")
    assert_one_error_line(result, "no study")


# --- list ----------------------------------------------------------------------------------------


def test_list_prints_the_whole_space() -> None:
    out = ok("list").stdout
    for name in [*list_initializers(), *list_activations()]:
        assert f"  {name} " in out, name
    assert "glorot_uniform" in out and "he_normal" in out and "swish" in out  # aliases
    assert "fan_in" in out  # formulas
    assert "Softmax is not a hidden activation" in out


# --- report --------------------------------------------------------------------------------------


def test_report_default_path_and_output(
    searched: tuple[str, str, Result], cwd: Path
) -> None:
    storage, name, _ = searched
    result = ok("report", "--storage", storage, "--study-name", name)
    default = cwd / "studies" / f"{name}.html"
    assert default.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert str(Path("studies") / f"{name}.html") in result.stdout
    ok("report", "--storage", storage, "--output", cwd / "r.html")  # the latest study
    assert (cwd / "r.html").stat().st_size > 1000


def test_report_errors(searched: tuple[str, str, Result], cwd: Path, storage: str) -> None:
    assert_one_error_line(invoke("report", "--storage", storage), "no study", "autoinit search")
    write(cwd / "plain-file", "x")
    result = invoke("report", "--storage", searched[0], "--output", cwd / "plain-file" / "r.html")
    assert_one_error_line(result, "plain-file")


# --- dashboard -----------------------------------------------------------------------------------


def test_dashboard_missing_says_how_to_install(
    storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import autoinit.dashboard

    monkeypatch.setattr(autoinit.dashboard, "_optuna_dashboard", lambda: None)
    result = invoke("dashboard", "--storage", storage)
    assert_one_error_line(result, "pip install 'autoinit[dashboard]'")


def test_dashboard_serves_the_storage(storage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import autoinit.dashboard

    calls = []
    optuna.create_study(storage=storage)  # the database must exist
    monkeypatch.setattr(autoinit.dashboard, "run_dashboard",
                        lambda url, **kwargs: calls.append((url, kwargs)))  # fmt: skip
    ok("dashboard", "--storage", storage, "--port", "8123")
    ok("dashboard", "--storage", storage, "--host", "0.0.0.0")
    assert calls == [(storage, {"host": "127.0.0.1", "port": 8123}),
                     (storage, {"host": "0.0.0.0", "port": 8080})]  # fmt: skip


def test_dashboard_port_in_use(storage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import autoinit.dashboard

    def busy(url, **kwargs):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(autoinit.dashboard, "run_dashboard", busy)
    optuna.create_study(storage=storage)
    assert_one_error_line(invoke("dashboard", "--storage", storage), "8080", "--port")
    assert_one_error_line(invoke("dashboard", "--storage", "::"), "'::'")


# --- the installed entry point -------------------------------------------------------------------


def test_installed_entry_point(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "autoinit"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    help_text = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0 and "autoinit search --data" in help_text.stdout
    bad = subprocess.run(
        [script, "search", "--data", tmp_path / "missing.csv",
         "--storage", f"sqlite:///{tmp_path / 's.db'}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.splitlines() == [
        f"error: file not found: {str(tmp_path / 'missing.csv')!r}; check the path."
    ]


def test_no_race_confirms_every_config_on_every_seed(storage: str) -> None:
    """``--no-race``: PyTorch's default diverges on a 20-layer net, which would drop it from the
    race after its first round; without the race it still trains on all three seeds."""
    args = ("search", "--data", BREAST_CANCER, "--storage", storage, *TINY, "--seeds", "3",
            "--depth", "20", "--inits", "kaiming_normal", "--activations", "relu", "--json")
    raced = json.loads(ok(*args, "--study-name", "raced").stdout)["recommendation"]["ranking"]
    full = json.loads(ok(*args, "--study-name", "full", "--no-race").stdout)
    ranking = full["recommendation"]["ranking"]
    default = next(r for r in ranking if r["label"] == "default + relu")
    assert default["diverged"] > 0 and default["dropped"] is None
    assert all(r["seeds"] == [1000, 1001, 1002] for r in ranking)
    assert any(len(r["seeds"]) < 3 for r in raced)  # the race stopped early on the same data


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="processes: fork, Linux only")
def test_the_confirmation_gives_the_same_result_in_one_process_or_several(storage: str) -> None:
    """``--confirm-jobs``: the race's runs shared among 3 processes, or trained ahead while the
    search runs, give the same numbers as 2 processes, and the same ranking as one."""
    args = ("search", "--data", BREAST_CANCER, "--storage", storage, *TINY, "--seeds", "3",
            "--json")  # fmt: skip
    results = {jobs: json.loads(ok(*args, "--study-name", f"jobs{jobs}", "--confirm-jobs",
                                   str(jobs)).stdout)["recommendation"]  # fmt: skip
               for jobs in (1, 2, 3)}

    def numbers(rec: dict) -> list:
        return [(r["label"], r["seeds"], r["values"]) for r in rec["ranking"]]

    assert numbers(results[2]) == numbers(results[3])  # exactly: part by part alike
    one, two = results[1]["ranking"], results[2]["ranking"]
    assert [(r["label"], r["seeds"]) for r in one] == [(r["label"], r["seeds"]) for r in two]
    for a, b in zip(one, two):  # one process: one batched model a round, rounding apart
        assert a["values"] == pytest.approx(b["values"], rel=1e-3)


def test_ranking_table_keeps_columns_aligned_when_a_config_left_the_race() -> None:
    """Why a config left the race or diverged is long: it goes in a last column, so the metric
    and seed counts of every row stay under their headers."""
    from autoinit.cli_output import _ranking_table
    from autoinit.recommendation import Ranked, Recommendation
    from autoinit.space import PYTORCH_DEFAULT, Config

    seeds = (1000, 1001, 1002)
    winner = Ranked(Config("lsuv", "mish"), (0.19, 0.2, 0.21), (0.93, 0.94, 0.92), seeds=seeds)
    default = Ranked(PYTORCH_DEFAULT, (0.21, 0.22, 0.2), (0.91, 0.9, 0.92), seeds=seeds)
    why = "out after seed 2: +0.0614 vs the leader over 2 seeds (t-test, 95%, 3 df)"
    left = Ranked(Config("orthogonal", "mish"), (0.27, 0.3), (0.94, 0.93), seeds=seeds[:2],
                  dropped=why)
    diverged = Ranked(Config("normal", "tanh"), (math.inf,), (None,), ("exploding gradient",),
                      seeds[:1], dropped="out after seed 1: it diverged")  # fmt: skip
    rec = Recommendation(winner.config, (winner, default, left, diverged), default, seeds,
                         "accuracy")  # fmt: skip
    header, *rows = _ranking_table(rec)
    at = {name: header.index(name) for name in ("accuracy", "seeds", "note")}
    by_config = {row.split()[1] + " " + row.split()[2]: row for row in rows}
    assert by_config["orthogonal mish"][at["accuracy"]:].startswith("0.935")
    assert by_config["orthogonal mish"][at["seeds"]:].startswith("2 ")
    assert by_config["orthogonal mish"][at["note"]:].startswith("out after seed 2: +0.0614")
    assert by_config["lsuv mish"][at["seeds"]:].rstrip() == "3"  # no note: nothing after
    assert by_config["normal tanh"][at["seeds"]:].startswith("1 ")
    assert "diverged on its seed 1000 (exploding gradient)" in by_config["normal tanh"]
    no_notes = Recommendation(winner.config, (winner, default), default, seeds, "accuracy")
    assert "note" not in _ranking_table(no_notes)[0]

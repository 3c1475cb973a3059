"""``autoinit search`` on every kind of data and model, in-process through click's CliRunner.

Searches are tiny (3 trials of 1 epoch, a narrow space) so that the file runs in a minute or two.
Every bad input gives exactly one ``error: ...`` line, exit status 2, and stores no study.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import optuna
import pandas as pd
import pytest
from click.testing import Result
from PIL import Image
from test_cli import assert_one_error_line, invoke, ok, stored_studies

from autoinit import records

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DIGITS = EXAMPLES / "digits"
WAVES = EXAMPLES / "waves.npz"
USER_CNN = EXAMPLES / "user_cnn.py"
BREAST_CANCER = EXAMPLES / "breast_cancer.csv"
BUDGET = ["--trials", "3", "--epochs", "1", "--seeds", "2", "--top-k", "1"]
SPACE = ["--inits", "default,kaiming_normal,xavier_uniform", "--activations", "relu,tanh"]
SIZE = ["--depth", "2", "--width", "8"]


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a fresh working directory, where the default ``studies/`` folder would go."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def storage(cwd: Path) -> str:
    return f"sqlite:///{cwd / 's.db'}"


def search(data: Path, storage: str, *extra: str | Path) -> Result:
    return ok("search", "--data", data, "--storage", storage, *BUDGET, *SPACE, *extra)


def study(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture(scope="module")
def searches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Result]]:
    """One search per kind of data and model, on one storage, shared by the tests that read."""
    folder = tmp_path_factory.mktemp("kinds")
    storage = f"sqlite:///{folder / 's.db'}"
    frame = pd.read_csv(BREAST_CANCER)
    frame.to_parquet(folder / "bc.parquet", index=False)
    return {
        "images": (storage, search(DIGITS, storage, *SIZE)),
        "sequences": (storage, search(WAVES, storage, *SIZE)),
        "user": (storage, search(DIGITS, storage, "--model", f"{USER_CNN}:Net")),
        "parquet": (storage, search(folder / "bc.parquet", storage, *SIZE)),
    }


@pytest.mark.parametrize("case, name, kind, model, data_line", [
    ("images", "digits-cnn2x8", "images", "CNN(1 -> 2x8 conv -> 10)",
     "data: digits: 500 images 1x16x16 (L), target 'class folder' (classification, 10 classes)"),
    ("sequences", "waves-gru2x8", "sequences", "RecurrentNet(gru 1 -> 2x8 -> 3)",
     "data: waves.npz: 2000 sequences of 32 steps x 1 feature, target 'y' (classification"),
    ("user", "digits-Net", "images", "Net: ", "data: digits: 500 images"),
    ("parquet", "bc-2x8", "tabular", "MLP(30 -> 2x8 -> 2)",
     "data: bc.parquet: "),
])  # fmt: skip
def test_each_kind_is_searched_and_recorded(searches, case, name, kind, model, data_line) -> None:
    storage, result = searches[case]
    assert data_line in result.stderr
    assert f"model: {model}" in result.stderr
    assert f"Study '{name}' stored in {storage}" in result.stdout
    assert "Recommended: " in result.stdout
    attrs = study(storage, name).user_attrs
    assert attrs[records.STUDY_DATA_KIND] == kind
    assert attrs[records.STUDY_DATA]["kind"] == kind
    assert attrs[records.STUDY_MODEL].startswith(model)
    assert len(stored_studies(storage)[name]) == 3


def test_show_json_and_report_name_the_kind_and_the_model(searches, tmp_path: Path) -> None:
    storage, _ = searches["images"]
    payload = json.loads(ok("show", "--storage", storage, "--study-name", "digits-cnn2x8",
                            "--json").stdout)  # fmt: skip
    assert payload["data"]["kind"] == "images" and payload["data"]["image_size"] == "16x16"
    assert payload["recommendation"]["config"]["init"]
    for name, model in (("digits-cnn2x8", "CNN(1 -&gt; 2x8 conv -&gt; 10)"), ("digits-Net", "Net:"),
                        ("waves-gru2x8", "RecurrentNet(gru 1 -&gt; 2x8 -&gt; 3)")):  # fmt: skip
        output = tmp_path / f"{name}.html"
        ok("report", "--storage", storage, "--study-name", name, "--output", output)
        page = output.read_text(encoding="utf-8")
        assert "kind: images" in page or "kind: sequences" in page
        assert model in page


def test_the_user_model_receives_the_searched_activation(searches) -> None:
    storage, result = searches["user"]
    trials = study(storage, "digits-Net").get_trials(states=records.FINISHED_STATES)
    assert {t.params["activation"] for t in trials} <= {"relu", "tanh"}
    assert "warning:" not in result.stderr  # Net takes activation: nothing to swap, no warning


def test_rnn_searches_only_its_own_nonlinearities_and_resumes(cwd: Path, storage: str) -> None:
    result = ok("search", "--data", WAVES, "--storage", storage, *BUDGET, "--model", "rnn",
                "--inits", "default,orthogonal", *SIZE)  # fmt: skip
    assert "model: RecurrentNet(rnn 1 -> 2x8 -> 3)" in result.stderr
    stored = study(storage, "waves-rnn2x8")
    assert stored.user_attrs[records.STUDY_SPACE]["activations"] == ["tanh", "relu"]
    assert {t.params["activation"] for t in stored.trials} <= {"tanh", "relu"}
    before = stored_studies(storage)["waves-rnn2x8"]
    resumed = ok("search", "--data", WAVES, "--storage", storage, *BUDGET, "--model", "rnn",
                 "--inits", "default,orthogonal", *SIZE, "--trials", "4", "--json")  # fmt: skip
    after = stored_studies(storage)["waves-rnn2x8"]
    assert len(after) == 4 and after[:3] == before  # resumed, the first trials untouched
    assert json.loads(resumed.stdout)["data"]["kind"] == "sequences"


def test_an_image_folder_with_mixed_modes_and_a_corrupt_png(cwd: Path, storage: str) -> None:
    root = cwd / "pics"
    rng = np.random.default_rng(0)
    for c in range(2):
        for i in range(8):
            pixels = np.clip(60 + 120 * c + rng.normal(0, 9, (6, 6)), 0, 255).astype(np.uint8)
            (root / f"c{c}").mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(pixels)
            (image.convert("RGB") if i == 0 else image).save(root / f"c{c}" / f"{i}.png")
    (root / "c1" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\ncorrupt")
    result = ok("search", "--data", root, "--storage", storage, "--trials", "1", "--epochs", "1",
                "--seeds", "1", "--top-k", "1", "--inits", "default", "--activations", "relu",
                "--depth", "1", "--width", "4", "--image-size", "4")  # fmt: skip
    assert "converted 14 grey image(s) to RGB, as the others have colour" in result.stderr
    assert result.stderr.count("skipped 1 unreadable image(s) of 17") == 1  # a note, not twice
    assert "16 images 3x4x4 (RGB)" in result.stderr
    assert "pics-cnn1x4" in stored_studies(storage)


@pytest.mark.slow
def test_a_user_model_with_worker_processes(cwd: Path, storage: str) -> None:
    """--jobs 2: the worker loads examples/user_cnn.py itself, by its path. The trials are
    slow enough (~1 s each, 12 of them) that the worker, started at once, takes some."""
    result = ok("search", "--data", DIGITS, "--storage", storage, "--model", f"{USER_CNN}:Net",
                "--jobs", "2", "--trials", "12", "--epochs", "3", "--seeds", "1", "--top-k", "1",
                "--inits", "kaiming_uniform,orthogonal,lecun_uniform,xavier_normal,trunc_normal",
                "--activations", "elu,gelu,silu,mish",  # 20 configs, none a baseline (queued
                # for the main process alone), few repeats (reused, not trained)
                "--no-prescreen")  # and no pre-screened trials counted before the worker starts
    assert "Recommended: " in result.stdout
    trials = study(storage, "digits-Net").get_trials(states=records.FINISHED_STATES)
    assert len(trials) >= 12 and all(t.state.name != "FAIL" for t in trials)
    # A worker that cannot load the file by its path dies at start: the search warns.
    assert "exited abnormally" not in result.stderr, result.stderr[-2000:]
    # Which process trains how many trials depends on the machine's load (a busy machine can
    # let the main process finish all 12 before the worker has imported torch), so the PIDs
    # are not counted here; tests/test_workers.py proves that workers share the work.
    assert all(t.user_attrs.get(records.PID) for t in trials)


def test_resuming_with_another_model_is_refused(searches) -> None:
    storage, _ = searches["images"]
    before = stored_studies(storage)["digits-cnn2x8"]
    refused = invoke("search", "--data", DIGITS, "--storage", storage, *BUDGET, *SPACE,
                     "--model", "mlp", "--study-name", "digits-cnn2x8")  # fmt: skip
    assert_one_error_line(refused, "'digits-cnn2x8'", "another model", "another study name")
    assert stored_studies(storage)["digits-cnn2x8"] == before


# --- bad input -----------------------------------------------------------------------------------

BAD_FACTORIES = """
import torch
from torch import nn

CONFIG = {"width": 3}

def fails(in_channels, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(3, num_classes))

def too_few(in_channels, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(16, num_classes - 1))
"""


def _classes(root: Path, names: str, count: int = 6, data: bytes | None = None) -> Path:
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            path = root / name / f"{i}.png"
            if data is None:
                Image.fromarray(np.full((4, 4), 11 * i % 256, np.uint8)).save(path)
            else:
                path.write_bytes(data)
    return root


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays, allow_pickle=True)
    return path


def _bad_input(case: str, cwd: Path) -> tuple[Path, list[str]]:
    """The data path and the extra options for each bad input."""
    x, y = np.random.default_rng(0).normal(size=(30, 4)), np.arange(30) % 2
    models = cwd / "models.py"
    models.write_text(BAD_FACTORIES)
    folder = _classes(cwd / "imgs", "ab")
    cases = {
        "empty folder": lambda: ((cwd / "empty").mkdir() or cwd / "empty", []),
        "one class": lambda: (_classes(cwd / "one", "a", 20), []),
        "all corrupt": lambda: (_classes(cwd / "bad", "ab", 6, b"\x89PNG\r\n\x1a\nxx"), []),
        "npz without y": lambda: (_npz(cwd / "d.npz", x=x, labels=y), []),
        "npz lengths": lambda: (_npz(cwd / "d.npz", x=x, y=y[:-1]), []),
        "npz objects": lambda: (_npz(cwd / "d.npz", x=np.array([{}] * 30), y=y), []),
        "npy 3-D": lambda: (np.save(cwd / "d.npy", np.zeros((9, 2, 2))) or cwd / "d.npy", []),
        "factory file missing": lambda: (folder, ["--model", "nothere.py:Net"]),
        "no such factory": lambda: (folder, ["--model", f"{models}:Nett"]),
        "not callable": lambda: (folder, ["--model", f"{models}:CONFIG"]),
        "fails on first batch": lambda: (folder, ["--model", f"{models}:fails"]),
        "wrong output shape": lambda: (folder, ["--model", f"{models}:too_few"]),
        "depth with a factory": lambda: (folder, ["--model", f"{models}:fails", "--depth", "3"]),
        "unknown model": lambda: (folder, ["--model", "cnnn"]),
        "cnn on a table": lambda: (BREAST_CANCER, ["--model", "cnn"]),
        "rnn with gelu": lambda: (WAVES, ["--model", "rnn", "--activations", "relu,gelu"]),
        "target of a folder": lambda: (folder, ["--target", "label"]),
        "image size of a csv": lambda: (BREAST_CANCER, ["--image-size", "8"]),
        "bad image size": lambda: (folder, ["--image-size", "8y8"]),
        "regression on images": lambda: (folder, ["--task", "regression"]),
    }
    return cases[case]()


BAD_INPUTS = {
    "empty folder": ["empty is an empty directory", "one subfolder of images per class"],
    "one class": ["one has only one class folder with images ('a')"],
    "all corrupt": ["none of the 12 image files in bad could be read", "a/0.png"],
    "npz without y": ["d.npz has no array 'y'", "numpy.savez(path, x=x, y=y)"],
    "npz lengths": ["x in d.npz has 30 samples but y has 29"],
    "npz objects": ["array 'x' in d.npz holds Python objects", "never loads"],
    "npy 3-D": ["d.npy holds an array of shape (9, 2, 2)", ".npz"],
    "factory file missing": ["model file nothere.py not found"],
    "no such factory": ["models.py has no attribute 'Nett'"],
    "not callable": ["models.py:CONFIG is a dict, not a class or function"],
    "fails on first batch": ["models.py:fails failed on the first batch, of shape (8, 1, 4, 4)",
                             "RuntimeError", "mat1 and mat2", "run the factory by hand",
                             "python -c"],
    "wrong output shape": ["outputs shape (8, 1)", "the data has 2 classes", "must output (8, 2)"],
    "depth with a factory": ["--depth and --width size the built-in models"],
    "unknown model": ["unknown model 'cnnn'", "Did you mean 'cnn'"],
    "cnn on a table": ["--model cnn needs images (N, C, H, W), but the data is tabular"],
    "rnn with gelu": ["--model rnn searches only", "'gelu'"],
    "target of a folder": ["--target names a column of a CSV or Parquet file", "imgs"],
    "image size of a csv": ["--image-size applies to image folders"],
    "bad image size": ["image size must be N or WIDTHxHEIGHT", "'8y8'"],
    "regression on images": ["the task is classification"],
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_error_line_and_no_study(case: str, cwd: Path, storage: str) -> None:
    data, extra = _bad_input(case, cwd)
    result = invoke("search", "--data", data, "--storage", storage, *BUDGET, *extra)
    assert_one_error_line(result, *BAD_INPUTS[case])
    assert stored_studies(storage) == {}


def test_parquet_without_pyarrow(cwd: Path, storage: str) -> None:
    pd.DataFrame({"a": np.arange(30.0), "y": np.arange(30) % 2}).to_parquet(cwd / "t.parquet")
    with mock.patch.dict(sys.modules, {"pyarrow": None, "pyarrow.parquet": None}):
        result = invoke("search", "--data", cwd / "t.parquet", "--storage", storage, *BUDGET)
    assert_one_error_line(result, "needs pyarrow", "pip install 'autoinit[parquet]'")
    assert stored_studies(storage) == {}


def test_search_help_names_every_kind_and_model() -> None:
    text = " ".join(ok("search", "--help").output.split())
    for word in ("Parquet", ".npz", "folder of images", "--model", "FILE.py:FACTORY", "cnn",
                 "gru", "--image-size", "4 for cnn"):  # fmt: skip
        assert word in text, word

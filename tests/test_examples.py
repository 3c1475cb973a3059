"""Smoke tests: each example runs end to end with ``--quick`` and leaves no files behind."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT_S = 180
SCRIPTS = ["recommend_tabular.py", "cnn_digits.py", "gru_sequence.py"]


def _run(script, *args, cwd):
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    return completed.stdout


@pytest.mark.parametrize("script", ["cnn_digits.py", "gru_sequence.py"])
def test_example_runs_quick_in_a_temporary_storage(script, tmp_path):
    stdout = _run(script, cwd=tmp_path)
    assert "Recommended:" in stdout
    assert "PyTorch default (default + relu)" in stdout
    assert list(tmp_path.iterdir()) == [], "the example left files in its working directory"


def test_tabular_example_keeps_its_study_in_the_given_storage(tmp_path):
    database = tmp_path / "kept" / "tabular.db"
    stdout = _run("recommend_tabular.py", "--storage", f"sqlite:///{database}", cwd=tmp_path)
    assert "Recommended:" in stdout
    assert "Built 30 -> 8x64 -> 2 MLP with" in stdout
    assert database.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_example_explains_itself(script):
    source = (EXAMPLES / script).read_text(encoding="utf-8")
    assert source.startswith('"""'), f"{script} needs a module docstring"
    assert "--quick" in source

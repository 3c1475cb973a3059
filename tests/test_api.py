"""The public API: everything in __all__ resolves, figures load lazily."""

import subprocess
import sys

import autoinit


def test_every_public_name_resolves():
    for name in autoinit.__all__:
        assert getattr(autoinit, name) is not None, name


def test_plot_functions_are_exported_and_return_figures(tmp_path):
    import optuna
    import plotly.graph_objects as go

    study = optuna.create_study()
    assert isinstance(autoinit.plot_heatmap(study), go.Figure)


def test_importing_autoinit_does_not_load_plotly():
    code = "import sys, autoinit; print('plotly' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""optuna-dashboard integration: it reads the same storage, so the study needs only a note.

optuna-dashboard is optional (``pip install 'autoinit[dashboard]'``); it is imported only when
used, and a missing install is a :class:`~autoinit.errors.ConfigError` that says how to add it.
"""

from __future__ import annotations

import shlex
from types import ModuleType

import optuna

from autoinit import plots, records
from autoinit.errors import ConfigError
from autoinit.report import summary_markdown

HEATMAP_ID = "autoinit-heatmap"
CONFIRMATION_ID = "autoinit-confirmation"
SIGNAL_ID = "autoinit-signal"
MISSING = "optuna-dashboard is not installed; install it with: pip install 'autoinit[dashboard]'"


def _optuna_dashboard() -> ModuleType | None:
    try:
        import optuna_dashboard
    except ImportError:
        return None
    return optuna_dashboard


def available() -> bool:
    """Whether optuna-dashboard can be imported (the optional extra ``autoinit[dashboard]``)."""
    return _optuna_dashboard() is not None


def save_to_dashboard(study: optuna.Study) -> bool:
    """Save the summary as the study's note and the heatmap, the step-0 signal propagation
    (and the confirmation) as its figures.

    Saving again replaces them. Returns False, saving nothing, when optuna-dashboard is missing.
    """
    dashboard = _optuna_dashboard()
    if dashboard is None:
        return False
    dashboard.save_note(study, summary_markdown(study))
    dashboard.save_plotly_graph_object(
        study, plots.plot_heatmap(study), graph_object_id=HEATMAP_ID
    )
    if plots._get_signal_info(study).lines:  # a study whose trials recorded a step-0 probe
        dashboard.save_plotly_graph_object(
            study, plots.plot_signal(study), graph_object_id=SIGNAL_ID
        )
    if study.user_attrs.get(records.STUDY_RECOMMENDATION):
        dashboard.save_plotly_graph_object(
            study, plots.plot_confirmation(study), graph_object_id=CONFIRMATION_ID
        )
    return True


def dashboard_command(storage_url: str) -> str:
    """The command line that opens the dashboard on ``storage_url``, quoted for a POSIX shell."""
    return f"optuna-dashboard {shlex.quote(storage_url)}"


def run_dashboard(storage_url: str, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard on ``storage_url`` in this process until interrupted.

    Binds to ``127.0.0.1`` unless told otherwise, so the study is not exposed to the network.
    """
    dashboard = _optuna_dashboard()
    if dashboard is None:
        raise ConfigError(MISSING)
    dashboard.run_server(storage_url, host=host, port=port)

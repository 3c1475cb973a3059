"""plotly figures of an autoinit study, drawn from its stored records alone.

As in ``optuna/visualization/_intermediate_values.py``, each figure has a ``_get_*_info(study)``
that computes a small NamedTuple of plain data (what the tests check) and a ``plot_*(study)`` that
draws it. Nothing is retrained, so a study run on another machine plots the same, and every figure
copes with an empty study, or one with only pruned or failed trials, by saying so in the figure.
"""

from autoinit.plots._common import FAILED, KIND_LABELS
from autoinit.plots._confirmation import _get_confirmation_info, plot_confirmation
from autoinit.plots._signal import _get_signal_info, plot_signal
from autoinit.plots._trials import (
    _get_grad_norm_info,
    _get_heatmap_info,
    _get_history_info,
    _get_importance_info,
    _get_learning_curves_info,
    _get_prune_info,
    plot_grad_norms,
    plot_heatmap,
    plot_history,
    plot_importance,
    plot_learning_curves,
    plot_prune_reasons,
)

FIGURES = (
    plot_heatmap,
    plot_confirmation,
    plot_signal,
    plot_history,
    plot_learning_curves,
    plot_grad_norms,
    plot_prune_reasons,
    plot_importance,
)
"""Every figure, in the order the report shows them."""

__all__ = [
    "FAILED", "FIGURES", "KIND_LABELS", "plot_confirmation", "plot_grad_norms", "plot_heatmap",
    "plot_history", "plot_importance", "plot_learning_curves", "plot_prune_reasons", "plot_signal",
    "_get_confirmation_info", "_get_grad_norm_info", "_get_heatmap_info", "_get_history_info",
    "_get_importance_info", "_get_learning_curves_info", "_get_prune_info", "_get_signal_info",
]  # fmt: skip

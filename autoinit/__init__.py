"""autoinit: find the weight initializer and activation that make your network train best.

Example:
    >>> from autoinit import recommend                      # doctest: +SKIP
    >>> rec = recommend(model_fn, train_loader, n_trials=40)
    >>> model = rec.build(model_fn)
"""

__version__ = "0.1.0"

from autoinit.activations import (
    create_activation,
    get_activation,
    list_activations,
    register_activation,
)
from autoinit.apply import apply, build
from autoinit.errors import AutoinitError, ConfigError, DataError, StorageError
from autoinit.initializers import get_initializer, list_initializers, register_initializer
from autoinit.monitor import Diverged, DivergenceGuard
from autoinit.recommend import Recommendation, recommend
from autoinit.search import search
from autoinit.space import PYTORCH_DEFAULT, Config, suggest

_LAZY = {  # plotly loads only when a figure or report is asked for
    "plot_confirmation": "autoinit.plots",
    "plot_grad_norms": "autoinit.plots",
    "plot_heatmap": "autoinit.plots",
    "plot_history": "autoinit.plots",
    "plot_importance": "autoinit.plots",
    "plot_learning_curves": "autoinit.plots",
    "plot_prune_reasons": "autoinit.plots",
    "write_report": "autoinit.report",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'autoinit' has no attribute {name!r}")


__all__ = [
    "__version__",
    "AutoinitError",
    "Config",
    "ConfigError",
    "DataError",
    "Diverged",
    "DivergenceGuard",
    "PYTORCH_DEFAULT",
    "Recommendation",
    "StorageError",
    "apply",
    "build",
    "create_activation",
    "get_activation",
    "get_initializer",
    "list_activations",
    "list_initializers",
    "recommend",
    "register_activation",
    "register_initializer",
    "search",
    "suggest",
    *_LAZY,
]

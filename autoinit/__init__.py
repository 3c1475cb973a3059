"""autoinit: find the weight initializer and activation that make your network train best.

Example:
    >>> from autoinit import recommend                      # doctest: +SKIP
    >>> rec = recommend(model_fn, train_loader, n_trials=40)
    >>> model = rec.build(model_fn)

``__all__`` is the user API. Internals stay importable from their modules (``autoinit.train``,
``autoinit.study``...); the implementations of the functions below live in private modules
(``autoinit._search``, ``autoinit._recommend``, ``autoinit._apply``), so that no module is
shadowed by a function of the same name.
"""

__version__ = "0.2.0"

from autoinit._apply import apply, build
from autoinit._probe import ProbeTable, probe
from autoinit._recommend import recommend
from autoinit._search import search
from autoinit.activations import get_activation, list_activations, register_activation
from autoinit.errors import AutoinitError, ConfigError, DataError, NoRecommendation, StorageError
from autoinit.initializers import get_initializer, list_initializers, register_initializer
from autoinit.monitor import (
    DepthRatio,
    Diverged,
    DivergenceGuard,
    GradNormBound,
    Growth,
    LossBound,
    NonFinite,
    Patient,
    Rule,
    StepStats,
    Stop,
    Vanishing,
)
from autoinit.recommendation import Ranked, Recommendation
from autoinit.space import PYTORCH_DEFAULT, Config

_LAZY = {  # plotly loads only when a figure or report is asked for
    "plot_confirmation": "autoinit.plots",
    "plot_grad_norms": "autoinit.plots",
    "plot_heatmap": "autoinit.plots",
    "plot_history": "autoinit.plots",
    "plot_importance": "autoinit.plots",
    "plot_learning_curves": "autoinit.plots",
    "plot_prune_reasons": "autoinit.plots",
    "plot_signal": "autoinit.plots",
    "write_report": "autoinit.report",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'autoinit' has no attribute {name!r}")


__all__ = [
    "__version__",
    # search and recommend
    "search",
    "recommend",
    "Recommendation",
    "Ranked",
    "Config",
    "PYTORCH_DEFAULT",
    "apply",
    "build",
    # the step-0 probe of every config
    "probe",
    "ProbeTable",
    # the space
    "list_initializers",
    "get_initializer",
    "register_initializer",
    "list_activations",
    "get_activation",
    "register_activation",
    # the divergence guard and its rules
    "DivergenceGuard",
    "Diverged",
    "Rule",
    "StepStats",
    "Stop",
    "NonFinite",
    "LossBound",
    "GradNormBound",
    "DepthRatio",
    "Growth",
    "Vanishing",
    "Patient",
    # errors
    "AutoinitError",
    "ConfigError",
    "DataError",
    "NoRecommendation",
    "StorageError",
    # figures and the report
    *_LAZY,
]

"""The step-0 probe of every config, the pre-screen built on it, and its rules.

``autoinit.probe(model_fn, data)`` (this package's :func:`probe`) returns a :class:`ProbeTable`;
every search trial screens itself with :func:`trial_probe`, and ``search(prescreen="space")``
also calls :func:`prescreen_study` right after queueing the baselines. The package is
private (``autoinit._probe``) so that the public function ``autoinit.probe`` is never shadowed
by a module of the same name; its names are importable from here.
"""

from autoinit._probe._rules import (
    CAUSES,
    DeadUnits,
    GradientRatio,
    GuardAtStepZero,
    ProbeNonFinite,
    ProbeRule,
    ProbeSymmetric,
    SaturatedUnits,
    SignalRatio,
    default_probe_rules,
    screen,
)
from autoinit._probe._screen import PROBE_QUEUE, prescreen_study
from autoinit._probe._stats import LayerProbe, ProbeStats, activation_bounds, measure
from autoinit._probe._table import (
    PROBE_SLOPES,
    ProbeRow,
    ProbeTable,
    fixed_batch,
    health_score,
    probe,
    probe_configs,
    probe_model,
    probe_record,
    probe_space,
    trial_probe,
)

__all__ = [
    "CAUSES",
    "PROBE_QUEUE",
    "PROBE_SLOPES",
    "DeadUnits",
    "GradientRatio",
    "GuardAtStepZero",
    "LayerProbe",
    "ProbeNonFinite",
    "ProbeRow",
    "ProbeRule",
    "ProbeStats",
    "ProbeSymmetric",
    "ProbeTable",
    "SaturatedUnits",
    "SignalRatio",
    "activation_bounds",
    "default_probe_rules",
    "fixed_batch",
    "health_score",
    "measure",
    "prescreen_study",
    "probe",
    "probe_configs",
    "probe_model",
    "probe_record",
    "probe_space",
    "screen",
    "trial_probe",
]

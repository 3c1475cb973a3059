"""Divergence detection for any training loop, and the step-0 checks.

:class:`DivergenceGuard` is checked after ``loss.backward()`` and before ``optimizer.step()``.
It measures the step once into a :class:`StepStats` and asks its rules in order; each rule
returns a :class:`Stop` (a kind and a reason) or nothing. The default rules:

- :class:`NonFinite`: the loss or the gradient norm is non-finite (``non-finite``);
- :class:`LossBound`: a classifier's loss exceeds ``100 * ln(classes)`` (``exploding``);
- :class:`GradNormBound`: the global gradient norm exceeds ``1e5`` (``exploding``);
- :class:`DepthRatio`: at step 0, the first layer's RMS gradient is over 1000x the output
  layer's (``exploding`` across depth);
- :class:`Growth`: the gradient norm grew 1000x over the first steps while the loss rose
  (``exploding``);
- :class:`Vanishing`: the first layer's gradient norm stays below ``1e-8`` for 5 checks
  (``vanishing``), i.e. :class:`FirstLayerFloor` wrapped in :class:`Patient`.

``guard.check`` raises :class:`Diverged`, an ``optuna.TrialPruned``; ``guard.observe`` returns
the :class:`Stop` instead. :func:`check_symmetry` catches the last failure mode before training:
hidden units with identical weights (``zeros`` init) get identical updates forever
(``symmetric``).
"""

from autoinit.monitor._guard import DivergenceGuard, GuardOption
from autoinit.monitor._probe import SignalProbe, check_symmetry, symmetry_stop
from autoinit.monitor._rules import (
    LOSS_BOUND_FACTOR,
    DepthRatio,
    FirstLayerFloor,
    GradNormBound,
    Growth,
    LossBound,
    NonFinite,
    Patient,
    Rule,
    Vanishing,
    default_rules,
)
from autoinit.monitor._stats import GradStats, NamedParams, StepStats
from autoinit.monitor._stop import PRUNER, Diverged, Stop, raise_diverged

__all__ = [
    "LOSS_BOUND_FACTOR",
    "PRUNER",
    "DepthRatio",
    "DivergenceGuard",
    "Diverged",
    "FirstLayerFloor",
    "GradNormBound",
    "GradStats",
    "Growth",
    "GuardOption",
    "LossBound",
    "NamedParams",
    "NonFinite",
    "Patient",
    "Rule",
    "SignalProbe",
    "StepStats",
    "Stop",
    "Vanishing",
    "check_symmetry",
    "default_rules",
    "raise_diverged",
    "symmetry_stop",
]

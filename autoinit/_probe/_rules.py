"""Pre-screen rules: small objects that read one :class:`ProbeStats` and return a :class:`Stop`.

The same pattern as the divergence guard's rules (:mod:`autoinit.monitor`): a rule has one method,
``check(stats)``, and returns why the config collapsed at step 0, or None. The default rules, in
the order they are asked:

- :class:`ProbeNonFinite`: a non-finite output, loss or gradient (``non-finite``);
- :class:`ProbeSymmetric`: hidden units with identical weights (``symmetric``);
- :class:`GuardAtStepZero`: the divergence guard's own rules on the probe's pass, read as a
  training step 0 (its loss bound, gradient-norm bound and depth ratio): a config the guard
  would stop at its first step is not trained either;
- :class:`SignalRatio`: the last layer's output std over the first's above 1e4 (``exploding``)
  or below 1e-6 (``vanishing``: a shrunk signal whose gradient still reaches the first layer
  trains under Adam; PyTorch's default init + GELU/SiLU over 8 layers is at 4e-5);
- :class:`GradientRatio`: the first layer's gradient RMS over the last's beyond 1e±4;
- :class:`DeadUnits`: over 90% of a hidden layer's units output zero for the whole batch
  (``dead``);
- :class:`SaturatedUnits`: over 90% of a hidden layer's outputs within 1% of a bounded
  activation's bounds (``saturated``).

How the thresholds were set: see the README section "Probe and pre-screen" and
``benchmarks/efficiency.py``/``benchmarks/guard.py`` (which measure them on every benchmark
space and on the bundled datasets).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

from autoinit._probe._stats import ProbeStats
from autoinit.monitor import Rule, Stop, default_rules

MAX_SIGNAL_RATIO = 1e4
MAX_SIGNAL_SHRINK = 1e6  # measured: benchmarks/README.md, "The pre-screen's shrink bound"
MAX_GRADIENT_RATIO = 1e4
MAX_DEAD = 0.9
MAX_SATURATED = 0.9
CAUSES = ("non-finite", "symmetric", "exploding", "vanishing", "dead", "saturated")


class ProbeRule(abc.ABC):
    """A pre-screen rule. Subclass it and write :meth:`check`.

    Example:
        >>> class LossCeiling(ProbeRule):
        ...     def check(self, stats):
        ...         if stats.loss > 50:
        ...             return Stop("exploding", f"at step 0 the loss was {stats.loss:.3g}")
        ...         return None
    """

    @abc.abstractmethod
    def check(self, stats: ProbeStats) -> Stop | None:
        """Why this config collapsed at step 0, or ``None``."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def _limit(rule: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and value > 1):
        raise ValueError(f"{rule}'s limit must be a number above 1 but got {value!r}.")
    return float(value)


def _fraction(rule: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and 0 < value <= 1):
        raise ValueError(f"{rule}'s max_fraction must be in (0, 1] but got {value!r}.")
    return float(value)


class ProbeNonFinite(ProbeRule):
    """A non-finite output, loss or gradient at step 0 (``non-finite``)."""

    def check(self, stats: ProbeStats) -> Stop | None:
        if stats.nonfinite is None:
            return None
        return Stop("non-finite", f"at step 0 {stats.nonfinite} was not finite (non-finite)")


class ProbeSymmetric(ProbeRule):
    """Hidden units with identical weights, which can never differ (``symmetric``)."""

    def check(self, stats: ProbeStats) -> Stop | None:
        if stats.symmetric is None:
            return None
        return Stop("symmetric", f"{stats.symmetric} (symmetric)")


class GuardAtStepZero(ProbeRule):
    """The divergence guard's rules (``monitor.default_rules`` unless given) at step 0.

    The probe's pass is measured exactly as the guard measures a training step, so the same
    rule objects judge it; what the guard would stop before the first update is pre-screened.
    """

    def __init__(self, rules: Sequence[Rule] | None = None) -> None:
        self.rules = None if rules is None else list(rules)

    def check(self, stats: ProbeStats) -> Stop | None:
        if stats.step is None:
            return None
        for rule in default_rules() if self.rules is None else self.rules:
            rule.start(classes=stats.classes)
            stop = rule.check(stats.step)
            if stop is not None:
                return stop
        return None


class SignalRatio(ProbeRule):
    """The last layer's output std over the first's beyond ``limit`` or below ``1 / shrink``.

    The bounds differ: a signal that grows 1e4 makes the loss explode, while one that shrinks
    still trains under Adam as long as the gradient reaches the first layer
    (:class:`GradientRatio` judges that); only a far smaller signal (tiny inits) is a collapse.
    """

    def __init__(self, limit: float = MAX_SIGNAL_RATIO, shrink: float = MAX_SIGNAL_SHRINK) -> None:
        self.limit = _limit("SignalRatio", limit)
        self.shrink = _limit("SignalRatio", shrink)

    def check(self, stats: ProbeStats) -> Stop | None:
        log = stats.signal_log10
        if log is None or -math.log10(self.shrink) <= log <= math.log10(self.limit):
            return None
        if log > 0:
            return Stop("exploding", f"at step 0 the last layer's output std was "
                        f"{_times(log)} the first layer's (exploding)")  # fmt: skip
        return Stop("vanishing", f"at step 0 the last layer's output std was {_of(log)} the "
                    "first layer's (vanishing)")  # fmt: skip


class GradientRatio(ProbeRule):
    """The first layer's gradient RMS over the last's beyond ``limit`` or below ``1 / limit``."""

    def __init__(self, limit: float = MAX_GRADIENT_RATIO) -> None:
        self.limit = _limit("GradientRatio", limit)

    def check(self, stats: ProbeStats) -> Stop | None:
        log = stats.gradient_log10
        if log is None or abs(log) <= math.log10(self.limit):
            return None
        if log > 0:
            return Stop("exploding", f"at step 0 the first layer's gradient was {_times(log)} "
                        "the last layer's (exploding)")  # fmt: skip
        return Stop("vanishing", f"at step 0 the first layer's gradient was {_of(log)} the last "
                    "layer's (vanishing)")  # fmt: skip


def _times(log10: float) -> str:
    return "infinitely larger than" if math.isinf(log10) else f"{10 ** log10:.1g} times"


def _of(log10: float) -> str:
    return "zero against" if math.isinf(log10) else f"{10 ** log10:.1g} of"


class DeadUnits(ProbeRule):
    """Over ``max_fraction`` of a hidden layer's units output zero for the whole batch."""

    def __init__(self, max_fraction: float = MAX_DEAD) -> None:
        self.max_fraction = _fraction("DeadUnits", max_fraction)

    def check(self, stats: ProbeStats) -> Stop | None:
        fraction, layer = stats.worst("dead")
        if not fraction > self.max_fraction:
            return None
        return Stop("dead", f"at step 0 {fraction:.0%} of the units after layer {layer} output "
                    "zero for the whole batch (dead)")  # fmt: skip


class SaturatedUnits(ProbeRule):
    """Over ``max_fraction`` of a hidden layer's outputs within 1% of the activation's bounds."""

    def __init__(self, max_fraction: float = MAX_SATURATED) -> None:
        self.max_fraction = _fraction("SaturatedUnits", max_fraction)

    def check(self, stats: ProbeStats) -> Stop | None:
        fraction, layer = stats.worst("saturated")
        if not fraction > self.max_fraction:
            return None
        return Stop("saturated", f"at step 0 {fraction:.0%} of the outputs after layer {layer} "
                    "were within 1% of the activation's bounds (saturated)")  # fmt: skip


def default_probe_rules(
    *,
    max_signal_ratio: float = MAX_SIGNAL_RATIO,
    max_signal_shrink: float = MAX_SIGNAL_SHRINK,
    max_gradient_ratio: float = MAX_GRADIENT_RATIO,
    max_dead: float = MAX_DEAD,
    max_saturated: float = MAX_SATURATED,
) -> list[ProbeRule]:
    """The pre-screen's rules, in the order they are asked."""
    return [
        ProbeNonFinite(),
        ProbeSymmetric(),
        GuardAtStepZero(),
        SignalRatio(max_signal_ratio, max_signal_shrink),
        GradientRatio(max_gradient_ratio),
        DeadUnits(max_dead),
        SaturatedUnits(max_saturated),
    ]


def screen(stats: ProbeStats, rules: Sequence[ProbeRule] | None = None) -> Stop | None:
    """The first rule's :class:`Stop` for this probe (the default rules unless given), or None."""
    for rule in default_probe_rules() if rules is None else rules:
        stop = rule.check(stats)
        if stop is not None:
            return stop
    return None

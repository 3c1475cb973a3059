"""Divergence rules: small objects that read one :class:`StepStats` and return a :class:`Stop`.

As with Optuna's pruners, a rule is a small class with one method to write, and a wrapper adds
patience to any rule (:class:`Patient`, like ``optuna.pruners.PatientPruner``). ``Vanishing`` is
a few lines over ``FirstLayerFloor``, as ``MedianPruner`` is over ``PercentilePruner``.

A rule with ``reads_gradients = True`` (the default) is asked only on the steps whose gradients
were read (every step for the guard's first ``dense_steps`` steps, then every ``check_every``
steps); one with ``reads_gradients = False`` is asked every step and must cope with
``stats.grads is None``.
"""

from __future__ import annotations

import abc
import math

from autoinit.monitor._stats import StepStats
from autoinit.monitor._stop import Stop

LOSS_BOUND_FACTOR = 100.0  # a classifier's loss starts near ln(classes); 100x that is divergence


class Rule(abc.ABC):
    """A divergence rule. Subclass it and write :meth:`check`.

    Example:
        >>> class LossCeiling(Rule):
        ...     reads_gradients = False                # asked every step
        ...     def check(self, stats):
        ...         if stats.loss > 50:
        ...             return Stop("exploding", f"exploding loss at step {stats.step}")
        ...         return None
    """

    reads_gradients: bool = True

    @abc.abstractmethod
    def check(self, stats: StepStats) -> Stop | None:
        """The reason to stop after this step, or ``None``."""

    def start(self, *, classes: int | None = None) -> None:  # noqa: B027 - optional hook
        """Called before a run's first step: forget any state from an earlier run.

        ``classes`` is a classifier's number of outputs (``None`` for other tasks or unknown).
        """

    def quiet_below(self) -> float | None:
        """For a rule asked every step: a loss below which it never fires on a step whose
        gradients were not read, or ``None`` (the default: always ask).

        An optional speed hint: when every such rule gives one, the guard skips building the
        record on those steps while the loss stays below them all. Read at the guard's start.
        """
        return None

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({options})"


def _positive(owner: str, name: str, value: float, low: float) -> float:
    if not value > low:
        raise ValueError(f"{owner}'s {name} must be greater than {low} but got {value}.")
    return value


def _count(owner: str, name: str, value: int) -> int:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}'s {name} must be an integer of at least 1 but got {value!r}.")
    return value


class NonFinite(Rule):
    """Stop on a non-finite loss (every step) or gradient norm (``non-finite``)."""

    reads_gradients = False

    def quiet_below(self) -> float:
        return math.inf  # any finite loss

    def check(self, stats: StepStats) -> Stop | None:
        if not math.isfinite(stats.loss):
            return Stop("non-finite", f"non-finite loss at step {stats.step}: {stats.loss}")
        grads = stats.grads
        if grads is not None and not math.isfinite(grads.total_norm):
            return Stop(
                "non-finite",
                f"non-finite gradient at step {stats.step} (layer {stats.worst_layer})",
            )
        return None


class GradNormBound(Rule):
    """Stop when the global gradient norm exceeds ``max_norm`` (``exploding``).

    Catches a 20-layer ReLU net with N(0, 1) weights at step 0, whose gradient norm is ~1e16 and
    which Adam never turns into NaN.
    """

    def __init__(self, max_norm: float = 1e5) -> None:
        self.max_norm = _positive("GradNormBound", "max_norm", max_norm, 0)

    def check(self, stats: StepStats) -> Stop | None:
        grads = stats.grads
        if grads is None or not grads.total_norm > self.max_norm:
            return None
        return Stop(
            "exploding",
            f"exploding gradient at step {stats.step}: norm {grads.total_norm:.3g} > "
            f"{self.max_norm:.3g} (worst layer {stats.worst_layer})",
        )


class LossBound(Rule):
    """Stop when the loss exceeds a bound, checked every step (``exploding``).

    Args:
        max_loss: the bound; ``None`` derives it from ``classes``.
        classes: a classifier's number of outputs: the bound is then ``factor * ln(classes)``
            (its loss starts near ``ln(classes)``). Told by the guard at the start of a run
            when not given; without either, the rule never fires.
        factor: see ``classes``.
    """

    reads_gradients = False

    def __init__(
        self,
        max_loss: float | None = None,
        *,
        classes: int | None = None,
        factor: float = LOSS_BOUND_FACTOR,
    ) -> None:
        if max_loss is not None and math.isnan(max_loss):
            raise ValueError(f"LossBound's max_loss must be a number but got {max_loss}.")
        self.max_loss = max_loss
        self.classes = classes
        self.factor = _positive("LossBound", "factor", factor, 0)
        self._bound = self._bound_for(classes)

    def _bound_for(self, classes: int | None) -> float:
        if self.max_loss is not None:
            return self.max_loss
        if classes is None:
            return math.inf
        return self.factor * math.log(max(classes, 2))

    @property
    def bound(self) -> float:
        """The bound in force (``inf`` when there is none)."""
        return self._bound

    def start(self, *, classes: int | None = None) -> None:
        self._bound = self._bound_for(self.classes if self.classes is not None else classes)

    def quiet_below(self) -> float:
        return self._bound

    def check(self, stats: StepStats) -> Stop | None:
        if not stats.loss > self._bound:
            return None
        return Stop(
            "exploding",
            f"exploding loss at step {stats.step}: {stats.loss:.3g} > {self._bound:.3g} "
            f"(worst layer {stats.worst_layer})",
        )


class Growth(Rule):
    """Stop when the gradient norm grows ``factor`` times over its early value (``exploding``).

    The early value is the largest norm of the first ``reference_steps`` steps. The rule fires
    only while the loss is above its step-0 value: that spares a one-step spike of a run that is
    learning (such as PyTorch's default init, whose step-0 norm is tiny), and catches a too-large
    learning rate a few steps in. While every step is checked, one check fires it (such a run
    turns non-finite a step or two later); once checks are spaced out (after the guard's dense
    steps), both must hold on ``patience`` checks in a row: one batch of outliers late in
    training (a heavy-tailed regression target) lifts the norm and that batch's loss together,
    for one check only, while a run that explodes stays exploded or turns non-finite.
    """

    def __init__(
        self, factor: float = 1e3, *, reference_steps: int = 3, patience: int = 2
    ) -> None:
        self.factor = _positive("Growth", "factor", factor, 1)
        self.reference_steps = _count("Growth", "reference_steps", reference_steps)
        self.patience = _count("Growth", "patience", patience)
        self.start()

    def start(self, *, classes: int | None = None) -> None:
        self._reference = 0.0
        self._streak = 0  # checks in a row on which the norm grew while the loss rose
        self._last_step = -1  # the step of the previous check

    def check(self, stats: StepStats) -> Stop | None:
        grads = stats.grads
        if grads is None:
            return None
        norm = grads.total_norm
        spaced_out = stats.step - self._last_step > 1
        self._last_step = stats.step
        if stats.step < self.reference_steps:
            self._reference = max(self._reference, norm, 1e-12)
            return None
        grew = self._reference > 0 and norm > self.factor * self._reference
        self._streak = self._streak + 1 if grew and stats.loss > stats.first_loss else 0
        if self._streak < (self.patience if spaced_out else 1):
            return None
        return Stop(
            "exploding",
            f"exploding gradient at step {stats.step}: norm {norm:.3g} grew "
            f"{norm / self._reference:.3g}x over the first {self.reference_steps} steps while "
            f"the loss rose to {stats.loss:.3g} (worst layer {stats.worst_layer})",
        )


class DepthRatio(Rule):
    """At step 0, stop when the first layer's RMS gradient is ``max_ratio`` times the output
    layer's (``exploding`` across depth).

    Catches saturated tanh nets with unscaled weights, which otherwise train at chance without
    tripping any bound. Per-element (RMS) gradients, so that layer sizes do not matter.
    """

    def __init__(self, max_ratio: float = 1e3) -> None:
        self.max_ratio = _positive("DepthRatio", "max_ratio", max_ratio, 1)

    def check(self, stats: StepStats) -> Stop | None:
        grads = stats.grads
        if stats.step != 0 or grads is None or not grads.last_norm > 0:
            return None
        ratio = grads.first_rms / grads.last_rms
        if not ratio > self.max_ratio:
            return None
        return Stop(
            "exploding",
            f"exploding gradient across depth at step 0: the first layer's "
            f"({grads.first_layer}) gradients are {ratio:.3g}x the output layer's",
        )


class FirstLayerFloor(Rule):
    """Stop when the first layer's gradient norm is below ``floor`` (``vanishing``), at once.

    Use :class:`Vanishing` (this rule with patience) for training; alone, it judges a probe.
    """

    def __init__(self, floor: float = 1e-8) -> None:
        if not floor >= 0:
            raise ValueError(f"FirstLayerFloor's floor must be at least 0 but got {floor}.")
        self.floor = floor

    def check(self, stats: StepStats) -> Stop | None:
        grads = stats.grads
        if grads is None or not grads.first_norm < self.floor:
            return None
        return Stop(
            "vanishing",
            f"vanishing gradient at step {stats.step}: first layer ({grads.first_layer}) "
            f"gradient norm {grads.first_norm:.3g} < {self.floor:.3g}",
        )


class Patient(Rule):
    """Fire only when ``rule`` fires on ``patience`` consecutive checks (``PatientPruner``).

    One check on which ``rule`` is quiet resets the count. The reason is the wrapped rule's,
    followed by "for N checks".
    """

    def __init__(self, rule: Rule, patience: int) -> None:
        if not isinstance(rule, Rule):
            raise TypeError(f"Patient wraps a Rule but got {rule!r}.")
        self.rule = rule
        self.patience = _count(type(self).__name__, "patience", patience)
        self.reads_gradients = rule.reads_gradients
        self._count = 0

    def start(self, *, classes: int | None = None) -> None:
        self._count = 0
        self.rule.start(classes=classes)

    def __repr__(self) -> str:
        return f"Patient({self.rule!r}, patience={self.patience})"

    def check(self, stats: StepStats) -> Stop | None:
        stop = self.rule.check(stats)
        self._count = self._count + 1 if stop is not None else 0
        if stop is None or self._count < self.patience:
            return None
        return Stop(stop.kind, f"{stop.reason} for {self.patience} checks")


class Vanishing(Patient):
    """Stop when the first layer's gradient norm stays below ``floor`` for ``patience``
    consecutive checks (``vanishing``: deep sigmoid nets)."""

    def __init__(self, patience: int = 5, *, floor: float = 1e-8) -> None:
        super().__init__(FirstLayerFloor(floor), patience)
        self.floor = floor

    def __repr__(self) -> str:
        return f"Vanishing(patience={self.patience}, floor={self.floor!r})"


def default_rules(
    *,
    max_grad_norm: float = 1e5,
    max_loss: float | None = None,
    growth_factor: float = 1e3,
    reference_steps: int = 3,
    growth_patience: int = 2,
    max_depth_ratio: float = 1e3,
    vanish_floor: float = 1e-8,
    vanish_patience: int = 5,
) -> list[Rule]:
    """The guard's rules, in the order they are asked, from the keyword options of old.

    ``max_loss=None`` bounds a classifier's loss by ``100 * ln(classes)`` (see :class:`LossBound`).
    """
    return [
        NonFinite(),
        LossBound(max_loss),
        GradNormBound(max_grad_norm),
        DepthRatio(max_depth_ratio),
        Growth(growth_factor, reference_steps=reference_steps, patience=growth_patience),
        Vanishing(vanish_patience, floor=vanish_floor),
    ]

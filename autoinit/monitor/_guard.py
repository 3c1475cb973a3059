"""The divergence guard: measures each step once and asks its rules, in order."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

import optuna
import torch

from autoinit.errors import ConfigError
from autoinit.monitor._rules import NonFinite, Rule, default_rules
from autoinit.monitor._stats import NamedParams, StepStats, layer_norms
from autoinit.monitor._stop import Diverged, Stop

GuardOption = Union[bool, Mapping[str, Any], Sequence[Rule]]


class DivergenceGuard:
    """Stop a training run as soon as its gradients blow up or die out.

    Checked after ``loss.backward()`` and before ``optimizer.step()``, the point where skorch
    calls ``on_grad_computed``. Each step is measured once into a :class:`StepStats`, then each
    rule is asked in order; the first :class:`Stop` wins.

    Args:
        rules: the rules, asked in this order; default :func:`default_rules`: ``NonFinite``,
            ``LossBound``, ``GradNormBound``, ``DepthRatio``, ``Growth``, ``Vanishing``.
        dense_steps, check_every: gradients are read every step for ``dense_steps`` steps, then
            every ``check_every`` steps (rules with ``reads_gradients = False``, such as the
            loss rules, are asked every step). Gradient norms cost ~8% of a small MLP's step,
            and a non-finite gradient shows in the next loss.
        trial: if given, the reason is stored on it (``prune_kind``, ``prune_reason``) on firing.
        **options: instead of ``rules``, the keyword options of :func:`default_rules`
            (``max_grad_norm``, ``max_loss``, ``growth_factor``, ``reference_steps``,
            ``growth_patience``, ``max_depth_ratio``, ``vanish_floor``, ``vanish_patience``).

    The guard keeps its curves in memory (``losses`` every step; ``grad_steps`` and
    ``grad_norms`` on the steps whose gradients were read) and never touches storage in the
    loop. Its verdict, once it fires, is ``stopped``.

    Example:
        >>> guard = DivergenceGuard()
        >>> for x, y in loader:                          # doctest: +SKIP
        ...     loss = loss_fn(model(x), y)
        ...     optimizer.zero_grad(); loss.backward()
        ...     guard.check(loss, model.named_parameters())   # raises Diverged
        ...     optimizer.step()
    """

    def __init__(
        self,
        rules: Sequence[Rule] | None = None,
        *,
        dense_steps: int = 100,
        check_every: int = 25,
        trial: optuna.Trial | None = None,
        **options: Any,
    ) -> None:
        if rules is None:
            rules = default_rules(**options)
        elif options:
            raise TypeError(
                f"give rules or the default rules' options, not both; got rules and "
                f"{', '.join(sorted(options))}."
            )
        self.rules: tuple[Rule, ...] = _checked(rules)
        if not isinstance(dense_steps, int) or dense_steps < 0:
            raise ValueError(f"dense_steps must be an integer >= 0 but got {dense_steps!r}.")
        if not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"check_every must be at least 1 but got {check_every!r}.")
        self.dense_steps = dense_steps
        self.check_every = check_every
        self.trial = trial
        self._every_step = tuple(rule for rule in self.rules if not rule.reads_gradients)
        self._quiet_below = self._quiet_loss()
        self.losses: list[float] = []  # every step
        self.grad_steps: list[int] = []  # the steps whose gradients were read...
        self.grad_norms: list[float] = []  # ...and their global norms
        self.stopped: Stop | None = None

    @classmethod
    def from_option(
        cls, option: GuardOption, *, trial: optuna.Trial | None = None
    ) -> DivergenceGuard:
        """A fresh guard for ``search(guard=option)``.

        ``True``: the default rules; ``False``: only :class:`NonFinite` (nothing trains on past
        a NaN); a mapping: this class's keyword arguments (``rules`` or the default rules'
        options, ``dense_steps``, ``check_every``); a sequence: the rules. Rules are copied, so
        that the option can make a guard for each trial. Raises :class:`ConfigError`.
        """
        try:
            if option is True:
                return cls(trial=trial)
            if option is False:
                return cls([NonFinite()], trial=trial)
            if isinstance(option, Mapping):
                return cls(**copy.deepcopy(dict(option)), trial=trial)
            if isinstance(option, Sequence) and not isinstance(option, (str, bytes)):
                return cls(copy.deepcopy(list(option)), trial=trial)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"invalid guard option: {error}") from None
        raise ConfigError(
            "guard must be True, False, a dict of DivergenceGuard options or a list of rules "
            f"but got {option!r}."
        )

    @property
    def step(self) -> int:
        """Number of steps checked so far."""
        return len(self.losses)

    def start(self, *, classes: int | None = None) -> None:
        """Begin a run: clear the curves and the verdict, and tell each rule.

        ``classes``: a classifier's number of outputs, from which :class:`LossBound` derives its
        bound. A fresh guard needs no ``start``; ``train.run`` calls it at the first step.
        """
        self.losses, self.grad_steps, self.grad_norms = [], [], []
        self.stopped = None
        for rule in self.rules:
            rule.start(classes=classes)
        self._quiet_below = self._quiet_loss()

    def _quiet_loss(self) -> float:
        """A loss below which no every-step rule fires without gradients (-inf: always ask)."""
        bounds = [rule.quiet_below() for rule in self._every_step]
        return min((-math.inf if b is None else b for b in bounds), default=math.inf)

    def observe(self, loss: torch.Tensor | float, named_parameters: NamedParams) -> Stop | None:
        """Record this step's loss (and gradient norms); return the first rule's :class:`Stop`.

        ``named_parameters`` may be a generator: it is read at most once.
        """
        step = len(self.losses)
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        self.losses.append(value)
        first_loss = self.losses[0]
        if step < self.dense_steps or step % self.check_every == 0:
            stats = StepStats.measure(step, value, named_parameters, first_loss=first_loss)
            if stats.grads is not None:
                self.grad_steps.append(step)
                self.grad_norms.append(stats.grads.total_norm)
            rules = self.rules
        elif value < self._quiet_below:  # the loss alone, and no rule would fire on it
            return None
        else:  # the loss alone: per-layer norms only if a rule's message asks for them
            stats = StepStats(step, value, first_loss, None, lambda: layer_norms(named_parameters))
            rules = self._every_step
        for rule in rules:
            stop = rule.check(stats)
            if stop is not None:
                return self.fire(stop)
        return None

    def check(self, loss: torch.Tensor | float, named_parameters: NamedParams) -> None:
        """:meth:`observe`, raising :class:`Diverged` (an ``optuna.TrialPruned``) on a stop."""
        stop = self.observe(loss, named_parameters)
        if stop is not None:
            raise Diverged(stop.kind, stop.reason)

    def fire(self, stop: Stop) -> Stop:
        """Make ``stop`` this run's verdict and store it on the trial; return it."""
        self.stopped = stop
        stop.store(self.trial)
        return stop

    def __repr__(self) -> str:
        return (
            f"DivergenceGuard({list(self.rules)!r}, dense_steps={self.dense_steps}, "
            f"check_every={self.check_every})"
        )


def _checked(rules: Sequence[Rule]) -> tuple[Rule, ...]:
    if isinstance(rules, (str, bytes)) or not isinstance(rules, Sequence):
        raise TypeError(f"rules must be a list of Rule objects but got {rules!r}.")
    for rule in rules:
        if not isinstance(rule, Rule):
            raise TypeError(
                f"each rule must be an autoinit.monitor.Rule (with a check(stats) method) "
                f"but got {rule!r}."
            )
    return tuple(rules)

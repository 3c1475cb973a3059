"""The divergence guard's thresholds for a population, and how a guard option maps to them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

from autoinit.errors import ConfigError
from autoinit.monitor import (
    LOSS_BOUND_FACTOR,
    DepthRatio,
    DivergenceGuard,
    GradNormBound,
    Growth,
    LossBound,
    NonFinite,
    Rule,
    Vanishing,
)

GuardOption = Union["GuardLimits", bool, Mapping[str, Any], Sequence[Rule], None]


@dataclasses.dataclass(frozen=True)
class GuardLimits:
    """The divergence guard's thresholds, judged for all members at once.

    The fields and defaults are :class:`~autoinit.monitor.DivergenceGuard`'s keyword options, so
    ``GuardLimits(**options)`` takes the search's guard options. Each check, by the rule of
    :func:`~autoinit.monitor.default_rules` it reproduces, in the order they are asked:

    - ``NonFinite``: a non-finite loss (every step) or gradient norm (always on);
    - ``LossBound``: the loss above ``max_loss`` (``None``: ``100 * ln(classes)`` for a
      classifier, none for regression), every step;
    - ``GradNormBound``: the global gradient norm above ``max_grad_norm``;
    - ``DepthRatio``: at step 0, the first layer's RMS gradient over the output layer's above
      ``max_depth_ratio``;
    - ``Growth``: the norm above ``growth_factor`` times its largest value over the first
      ``reference_steps`` steps, while the loss is above its step-0 value (once checks are
      spaced out: on ``growth_patience`` checks in a row);
    - ``Vanishing``: the first layer's gradient norm below ``vanish_floor`` for
      ``vanish_patience`` consecutive checks.

    Gradients are read every step for ``dense_steps`` steps, then every ``check_every``.
    """

    max_grad_norm: float = 1e5
    max_loss: float | None = None
    growth_factor: float = 1e3
    reference_steps: int = 3
    growth_patience: int = 2
    max_depth_ratio: float = 1e3
    vanish_floor: float = 1e-8
    vanish_patience: int = 5
    dense_steps: int = 100
    check_every: int = 25

    def __post_init__(self) -> None:
        for name, low in [("max_grad_norm", 0), ("max_depth_ratio", 1), ("growth_factor", 1)]:
            value = getattr(self, name)
            if not value > low:
                raise ConfigError(f"{name} must be greater than {low} but got {value}.")
        for name in ("reference_steps", "growth_patience", "vanish_patience", "check_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer of at least 1 but got {value!r}.")
        if not isinstance(self.dense_steps, int) or self.dense_steps < 0:
            raise ConfigError(f"dense_steps must be an integer >= 0 but got {self.dense_steps!r}.")
        if not self.vanish_floor >= 0:
            raise ConfigError(f"vanish_floor must be at least 0 but got {self.vanish_floor}.")
        if self.max_loss is not None and math.isnan(self.max_loss):
            raise ConfigError(f"max_loss must be a number or None but got {self.max_loss}.")

    @classmethod
    def off(cls) -> GuardLimits:
        """Only non-finite values stop (the search's ``guard=False``)."""
        return cls(
            max_grad_norm=math.inf, max_loss=math.inf, growth_factor=math.inf,
            max_depth_ratio=math.inf, vanish_patience=1 << 62,
        )  # fmt: skip

    @classmethod
    def from_option(cls, option: GuardOption) -> GuardLimits | None:
        """The limits for a guard option as ``search(guard=...)`` takes it, or ``None`` when the
        option holds rules that cannot be judged in batch (the members then train one by one).

        ``True``: the defaults; ``False`` or ``None``: :meth:`off`; a dict: the options (or
        ``rules`` with ``dense_steps``, ``check_every``); a list of rules: those of
        :func:`~autoinit.monitor.default_rules` (exact classes, at most one each, in that order,
        ``NonFinite`` included), the missing ones off.
        """
        if isinstance(option, GuardLimits):
            return option
        if option is True:
            return cls()
        if option is False or option is None:
            return cls.off()
        if isinstance(option, Mapping):
            options = dict(option)
            if "rules" in options:  # DivergenceGuard(rules, dense_steps=..., check_every=...)
                limits = cls._from_rules(list(options.pop("rules")))
                if limits is None or set(options) - {"dense_steps", "check_every"}:
                    return None
                return dataclasses.replace(limits, **options)
            unknown = set(options) - {f.name for f in dataclasses.fields(cls)}
            return None if unknown else cls(**options)
        if isinstance(option, Sequence) and not isinstance(option, (str, bytes)):
            return cls._from_rules(list(option))
        raise ConfigError(
            "guard must be True, False, None, a GuardLimits, a dict of DivergenceGuard options "
            f"or a list of rules but got {option!r}."
        )

    @classmethod
    def _from_rules(cls, rules: list[Any]) -> GuardLimits | None:
        order: list[type] = [NonFinite, LossBound, GradNormBound, DepthRatio, Growth, Vanishing]
        kinds = [type(rule) for rule in rules]
        if NonFinite not in kinds or not set(kinds) <= set(order) or len(set(kinds)) < len(kinds):
            return None
        if kinds != sorted(kinds, key=order.index):  # another order can give another verdict
            return None
        options = dataclasses.asdict(cls.off())
        for rule in rules:
            if isinstance(rule, LossBound):
                if rule.max_loss is not None:
                    options["max_loss"] = rule.max_loss
                elif rule.classes is not None:
                    options["max_loss"] = rule.factor * math.log(max(rule.classes, 2))
                elif rule.factor == LOSS_BOUND_FACTOR:
                    options["max_loss"] = None  # from the number of classes, at step 0
                else:
                    return None
            elif isinstance(rule, GradNormBound):
                options["max_grad_norm"] = rule.max_norm
            elif isinstance(rule, DepthRatio):
                options["max_depth_ratio"] = rule.max_ratio
            elif isinstance(rule, Growth):
                options.update(growth_factor=rule.factor, reference_steps=rule.reference_steps,
                               growth_patience=rule.patience)  # fmt: skip
            elif isinstance(rule, Vanishing):
                options.update(vanish_floor=rule.floor, vanish_patience=rule.patience)
        return cls(**options)

    def guard(self) -> DivergenceGuard:
        """The sequential guard with the same limits (for the sequential fallback)."""
        return DivergenceGuard(**dataclasses.asdict(self))

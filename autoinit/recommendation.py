"""The stored recommendation: one owner of its shape, and the one reader every display uses.

As Optuna's ``FrozenTrial`` is the only way Optuna reads a trial back, :class:`Recommendation` is
the only way autoinit reads a confirmation back: ``str(rec)``, the CLI's table and ``--json``,
``show``, the HTML report, its figures and the optuna-dashboard note all go through
:meth:`Recommendation.from_study`. It tolerates missing or ``None`` fields, so a diverged default
(whose mean is not finite) or a study never confirmed is a result to show, never a crash.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import statistics
from collections.abc import Callable
from typing import Any

import optuna
from torch import nn

from autoinit import records
from autoinit.space import PYTORCH_DEFAULT, Config

Quote = Callable[[str], str]  # how study text (config labels) is escaped for a format


def _same(text: str) -> str:
    return text


def _short(reason: str | None) -> str:
    """A stop reason's first clause: ``"vanishing gradient at step 30"``."""
    return (reason or "stopped").split(":", 1)[0].strip()


@dataclasses.dataclass(frozen=True)
class Ranked:
    """One config's confirmation results, one entry per seed it was trained on.

    A seed whose run diverged has an infinite loss and its reason in ``stops``; the config's
    :attr:`mean` is then infinite too, so it ranks below every config that trained on all seeds.
    """

    config: Config
    values: tuple[float, ...]
    metrics: tuple[float | None, ...] = ()
    stops: tuple[str | None, ...] = ()  # why each seed's run stopped; None: it trained to the end
    seeds: tuple[int, ...] = ()  # the seeds it got (the race may drop it before the last one)
    dropped: str | None = None  # why the racing confirmation dropped it, if it did

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.inf

    @property
    def std(self) -> float:
        finite = all(math.isfinite(v) for v in self.values)
        return statistics.stdev(self.values) if finite and len(self.values) > 1 else 0.0

    @property
    def trained(self) -> tuple[float, ...]:
        """The losses of the seeds that trained (finite)."""
        return tuple(v for v in self.values if math.isfinite(v))

    @property
    def n_diverged(self) -> int:
        return len(self.values) - len(self.trained)

    @property
    def metric_mean(self) -> float | None:
        known = [m for m in self.metrics if m is not None]
        return statistics.fmean(known) if known else None

    @property
    def metric_std(self) -> float | None:
        known = [m for m in self.metrics if m is not None]
        return statistics.stdev(known) if len(known) > 1 else (0.0 if known else None)

    def metric_text(self, missing: str) -> str:
        """The metric over seeds as printed everywhere (``missing`` when none was measured)."""
        known = sum(m is not None for m in self.metrics)
        spread = self.metric_std if known > 1 else None  # one seed has no spread
        return records.format_pm(self.metric_mean, spread, missing=missing)

    def divergence(self, quote: Quote = _same) -> str | None:
        """``"diverged on 2 of 3 seeds (vanishing gradient at step 30)"``; None if it never did."""
        if not self.n_diverged:
            return None
        reasons = list(dict.fromkeys(quote(_short(r)) for r, v in zip(self._stops(), self.values)
                                     if not math.isfinite(v)))  # fmt: skip
        n, why = len(self.values), "; ".join(reasons[:2])
        if self.n_diverged == n == 1:
            seed = f" {self.seeds[0]}" if self.seeds else ""
            return f"diverged on its seed{seed} ({why})"
        if self.n_diverged == n:
            return f"diverged on {'both' if n == 2 else f'all {n}'} seeds ({why})"
        return f"diverged on {self.n_diverged} of {n} seeds ({why})"

    def loss_text(self) -> str:
        """The validation loss over seeds as printed everywhere: ``0.1224 ± 0.028`` or why not."""
        if not self.n_diverged:  # one seed has no spread: no "± 0"
            return records.format_pm(self.mean, self.std if len(self.values) > 1 else None)
        trained = self.trained
        if not trained:
            return "diverged"
        spread = statistics.stdev(trained) if len(trained) > 1 else None
        return f"{records.format_pm(statistics.fmean(trained), spread)} on {len(trained)} seed(s)"

    def evidence(self, quote: Quote = _same) -> str:
        """:meth:`loss_text` and, where it diverged, on how many seeds and why."""
        divergence = self.divergence(quote)
        if divergence is None:
            text = self.loss_text()
            return f"{text}; {quote(self.dropped)}" if self.dropped else text
        return f"{self.loss_text()}; {divergence}" if self.trained else divergence

    def _stops(self) -> tuple[str | None, ...]:
        return self.stops or tuple(None for _ in self.values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "label": self.config.label,
            "mean": records.finite_or_none(self.mean),
            "std": records.finite_or_none(self.std),
            "metric_mean": self.metric_mean,
            "metric_std": self.metric_std,
            "values": [records.finite_or_none(v) for v in self.values],
            "metrics": list(self.metrics),
            "stops": list(self._stops()),
            "seeds": list(self.seeds),
            "diverged": self.n_diverged,
            "dropped": self.dropped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ranked:
        values = tuple(math.inf if v is None else float(v) for v in data.get("values") or ())
        if not values and data.get("mean") is not None:  # a summary without per-seed values
            values = (float(data["mean"]),)
        return cls(
            Config.from_dict(data["config"]),
            values,
            tuple(data.get("metrics") or ()),
            tuple(data.get("stops") or ()),
            tuple(data.get("seeds") or ()),
            data.get("dropped"),
        )


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """The winning config with its evidence against PyTorch's default, or why there is none.

    Attributes:
        config: the winning :class:`Config`; None when nothing trained (see ``reason``).
        ranking: every confirmed config, best mean validation loss first (default included).
        default: PyTorch's default's results (None if it was not part of the comparison).
        seeds: the confirmation seeds (one, the search's, when ``confirmed`` is False).
        metric_name: ``"accuracy"`` or ``"r2"``.
        study_name: the study it came from.
        confirmed: False when read off single search trials because no confirmation was stored.
        reason: why there is no recommendation, when ``config`` is None.
        best_trial: the number of the best search trial (for an unconfirmed study).
        trials, study_attrs: the study's trials and attributes, carried for :meth:`explain`
            (set by :meth:`from_study` and :meth:`with_trials`; not stored, not compared).
    """

    config: Config | None
    ranking: tuple[Ranked, ...]
    default: Ranked | None
    seeds: tuple[int, ...]
    metric_name: str
    study_name: str | None = None
    confirmed: bool = True
    reason: str | None = None
    best_trial: int | None = None
    trials: tuple[optuna.trial.FrozenTrial, ...] = dataclasses.field(
        default=(), compare=False, repr=False
    )
    study_attrs: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def found(self) -> bool:
        return self.config is not None

    @property
    def winner(self) -> Ranked | None:
        return self.ranking[0] if self.found and self.ranking else None

    @property
    def improvement(self) -> float | None:
        """Default's mean validation loss minus the winner's (positive: the winner is better).

        None when there is no winner or the default diverged on any seed: there is no finite
        difference to give, and :meth:`headline` says what happened instead.
        """
        if self.winner is None or self.default is None or not math.isfinite(self.default.mean):
            return None
        return self.default.mean - self.winner.mean

    @property
    def improvement_pct(self) -> float | None:
        if self.improvement is None or self.default is None or self.default.mean == 0:
            return None
        return 100.0 * self.improvement / self.default.mean

    def apply(self, model: nn.Module, *, seed: int = 0, batch: Any = None) -> nn.Module:
        """Swap the activations of ``model`` and initialise it with the winning config.

        ``batch``: model inputs, needed when the winner is data-dependent (``lsuv``,
        ``variance_preserving``); see :func:`autoinit.apply`.
        """
        from autoinit._apply import apply as apply_config

        return apply_config(model, self._config(), seed=seed, batch=batch)

    def build(self, model_fn: Any, *, seed: int = 0, batch: Any = None) -> nn.Module:
        """Make a model with ``model_fn`` the way the search did, with the winning config.

        ``batch``: model inputs, needed when the winner is data-dependent.
        """
        from autoinit._apply import build

        return build(model_fn, self._config(), seed=seed, batch=batch)

    def _config(self) -> Config:
        if self.config is None:
            from autoinit.errors import ConfigError

            raise ConfigError(f"there is no recommendation to apply: {self.reason}")
        return self.config

    # --- the words every display shares --------------------------------------------------------

    def headline(self, quote: Quote = _same) -> str:
        """The one-sentence verdict; ``quote`` escapes study text (labels) for the output format."""
        winner = self.winner
        if winner is None or self.config is None:
            if self.confirmed and self.ranking:  # rebuilt, so that its labels are quoted
                return all_diverged_reason(self.ranking, quote)
            return self.reason or "No recommendation: nothing trained."
        if not self.confirmed:
            trial = f"#{self.best_trial}, " if self.best_trial is not None else ""
            return (
                "No confirmation over seeds was run, so this is not a recommendation yet. "
                f"The best single trial is {trial}{quote(self.config.label)}: "
                f"{self._scores(winner)}."
            )
        seeds = self.over(winner)
        evidence = f"validation loss {winner.loss_text()}"
        default = self.default
        if default is None:
            return f"Use {quote(self.config.label)}: {evidence} over {seeds}."
        name = f"PyTorch's default ({quote(default.config.label)})"
        if default.config == self.config:
            return f"Keep PyTorch's default: no configuration beat it ({evidence} over {seeds})."
        own = self.own_seeds(default)
        if default.n_diverged == len(default.values):
            return (
                f"Use {quote(self.config.label)}: {evidence} over {seeds}. {name} "
                f"{default.divergence(quote)}; the winner trained on all of its seeds."
            )
        if default.n_diverged:
            return (
                f"Use {quote(self.config.label)}: {evidence} over {seeds}, against "
                f"{default.loss_text()}{own} for {name}, which {default.divergence(quote)}."
            )
        gain = ""
        if self.improvement is not None and self.improvement_pct is not None:
            direction = "lower" if self.improvement >= 0 else "higher"
            gain = f"; {abs(self.improvement):.3g} {direction} ({abs(self.improvement_pct):.1f}%)"
        if own:
            return (f"Use {quote(self.config.label)}: {evidence} over {seeds}, against "
                    f"{default.loss_text()}{own} for {name}{gain}.")  # fmt: skip
        return (
            f"Use {quote(self.config.label)}: {evidence} against {default.loss_text()} for "
            f"{name} over {seeds}{gain}."
        )

    def seeds_of(self, ranked: Ranked) -> tuple[int, ...]:
        """The seeds ``ranked`` trained on: fewer than :attr:`seeds` when the race dropped it, or
        ended (its leader alone) before the last seed. Records from before the race list none."""
        return ranked.seeds or self.seeds[: len(ranked.values)]

    def over(self, ranked: Ranked) -> str:
        """``"seeds 1000, 1001"``: what ``ranked``'s mean ± std is over."""
        seeds = self.seeds_of(ranked)
        return f"seed{'s' if len(seeds) != 1 else ''} {', '.join(str(s) for s in seeds)}"

    def own_seeds(self, ranked: Ranked) -> str:
        """``" over seeds 1000, 1001"`` where ``ranked`` got other seeds than the winner (the race
        dropped it early), else nothing: a comparison says each side's seeds only if they differ."""
        winner = self.winner
        same = winner is not None and self.seeds_of(ranked) == self.seeds_of(winner)
        return "" if same else f" over {self.over(ranked)}"

    @property
    def full_race(self) -> bool:
        """Whether every confirmed config trained on every seed (no race cut it short)."""
        return all(len(self.seeds_of(r)) == len(self.seeds) for r in self.ranking)

    def _scores(self, ranked: Ranked) -> str:
        text = f"validation loss {records.format_pm(ranked.mean, None)}"
        if ranked.metric_mean is not None:
            text += f", {records.metric_label(self.metric_name)} {ranked.metric_mean:.4g}"
        return text

    def evidence_rows(self) -> list[tuple[str, Ranked]]:
        """``(role, result)`` rows of the recommended config and the default, as compared."""
        rows = [("recommended", self.winner)] if self.winner is not None else []
        if self.default is not None and (self.winner is None or self.default is not self.winner):
            rows.append(("PyTorch default", self.default))
        return [(role, ranked) for role, ranked in rows if ranked is not None]

    def __str__(self) -> str:
        winner = self.winner
        if winner is None or self.config is None:
            lines = [self.headline()]
            lines += [f"  {r.config.label}: {r.evidence()}" for r in self.ranking]
            return "\n".join(lines)
        metric = winner.metric_mean
        first = f"Recommended: {self.config.label}" if self.confirmed else self.headline()
        lines = [
            first,
            f"  validation loss {winner.loss_text()}"
            + (f", {records.metric_label(self.metric_name)} {winner.metric_text('-')}"
               if metric is not None else "")
            + f" over {self.over(winner)}",
        ]  # fmt: skip
        default = self.default
        if default is not None and default.config == self.config:
            lines.append(
                f"  PyTorch default ({default.config.label}) won: no configuration beat it"
            )
        if default is not None and default.config != self.config:
            name = f"PyTorch default ({default.config.label})"
            if not default.trained:
                lines.append(f"  {name} {default.divergence()}; the winner trained on all of "
                             "its seeds")  # fmt: skip
            else:
                why = default.divergence() or default.dropped
                lines.append(f"  {name}: validation loss {default.loss_text()}"
                             f"{self.own_seeds(default)}" + (f"; {why}" if why else ""))
            if self.improvement_pct is not None:
                lines.append(
                    f"  {self.improvement_pct:+.1f}% lower validation loss than the default"
                )
        return "\n".join(lines)

    # --- storage ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        winner = self.winner.to_dict() if self.winner is not None else {}
        return {
            "found": self.found,
            "confirmed": self.confirmed,
            "reason": self.reason,
            "config": self.config.to_dict() if self.config else None,
            "label": self.config.label if self.config else None,
            "mean": winner.get("mean"),
            "std": winner.get("std"),
            "metric_name": self.metric_name,
            "metric_mean": winner.get("metric_mean"),
            "metric_std": winner.get("metric_std"),
            "default": self.default.to_dict() if self.default else None,
            "improvement": _maybe(self.improvement),
            "improvement_pct": _maybe(self.improvement_pct),
            "headline": self.headline(),
            "seeds": list(self.seeds),
            "ranking": [r.to_dict() for r in self.ranking],
            "study_name": self.study_name,
            "best_trial": self.best_trial,
        }

    def to_json(self, path: str | pathlib.Path | None = None) -> str:
        """The recommendation as JSON; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            pathlib.Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recommendation:
        ranking = tuple(Ranked.from_dict(r) for r in data.get("ranking") or ())
        config = Config.from_dict(data["config"]) if data.get("config") else None
        default = Ranked.from_dict(data["default"]) if data.get("default") else None
        if default is not None:  # the same object as its ranking entry, when it is there
            default = next((r for r in ranking if r.config == default.config), default)
        return cls(
            config, ranking, default, tuple(data.get("seeds") or ()),
            data.get("metric_name") or "accuracy", data.get("study_name"),
            bool(data.get("confirmed", True)), data.get("reason"), data.get("best_trial"),
        )  # fmt: skip

    @classmethod
    def from_study(cls, study: optuna.Study) -> Recommendation:
        """The stored recommendation, or, for a study never confirmed, one read off its trials.

        Without a confirmation each config's evidence is its single search trial (one seed);
        a study with no completed trial gives a Recommendation whose ``reason`` says why.
        """
        stored = study.user_attrs.get(records.STUDY_RECOMMENDATION)
        if stored:
            return cls.from_dict({**stored, "study_name": study.study_name}).with_trials(study)
        return _from_trials(study).with_trials(study)

    def with_trials(self, study: optuna.Study) -> Recommendation:
        """This recommendation with ``study``'s trials, so that :meth:`explain` can read them."""
        return dataclasses.replace(
            self, trials=tuple(study.get_trials(deepcopy=False)), study_attrs=dict(study.user_attrs)
        )

    def explain(self, study: optuna.Study | None = None) -> str:
        """Why the winner won, and why each stopped baseline and pre-screened family stopped.

        In plain words, citing the stored figures: the winner's step-0 probe and its
        confirmation against PyTorch's default; each baseline's outcome; each pre-screened
        init + activation family's probe verdict. Reads the trials this recommendation carries
        (:meth:`from_study`, ``recommend()``), or those of ``study`` when given.
        """
        from autoinit._probe._explain import explain

        return explain(self, study)

    def store(self, study: optuna.Study) -> None:
        """Write this recommendation on ``study`` (the only writer of the stored record)."""
        study.set_user_attr(records.STUDY_RECOMMENDATION, self.to_dict())


def _maybe(value: float | None) -> float | None:
    return None if value is None else records.finite_or_none(value)


ADVICE = (  # what to try when nothing trains
    "try a lower learning rate (--lr, lr=), other initializers (kaiming_normal, orthogonal, "
    "lecun_normal), or a shallower model"
)


def no_trial_reason(study: optuna.Study) -> str:
    """Why a study without a completed trial has nothing to recommend, with what to try."""
    counts = records.trial_counts(study)
    if not counts.total:
        return "The study has no trials yet, so there is nothing to recommend."
    if not counts.finished and not counts.failed:
        return (
            f"None of the {counts.total} trials has finished yet, so there is nothing to recommend."
        )
    return (
        f"None of the {counts.total} trials completed, so there is nothing to recommend. "
        f"Trials: {counts.describe()}. To get one, {ADVICE}."
    )


def all_diverged_reason(ranking: tuple[Ranked, ...], quote: Quote = _same) -> str:
    """Why a confirmation in which every config diverged on some seed recommends nothing."""
    each = "; ".join(f"{quote(r.config.label)} {r.divergence(quote)}" for r in ranking)
    return (
        f"No recommendation: every confirmed configuration diverged on at least one seed "
        f"({each}); {ADVICE}."
    )


def _from_trials(study: optuna.Study) -> Recommendation:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    metric_name = study.user_attrs.get(records.STUDY_METRIC_NAME, "accuracy")
    if not complete:
        return Recommendation(
            None, (), None, (), metric_name, study.study_name, confirmed=False,
            reason=no_trial_reason(study),
        )  # fmt: skip
    best: dict[Config, optuna.trial.FrozenTrial] = {}
    for trial in complete:
        config = Config.from_dict(trial.params)
        if config not in best or records.loss_of(trial) < records.loss_of(best[config]):
            best[config] = trial
    seed = complete[0].user_attrs.get(records.SEED, 0)
    ranked = {
        c: Ranked(c, (records.loss_of(t),), (t.user_attrs.get(records.METRIC),), (None,), (seed,))
        for c, t in best.items()
    }
    ranking = tuple(sorted(ranked.values(), key=lambda r: r.mean))
    default = ranked.get(PYTORCH_DEFAULT)
    return Recommendation(
        ranking[0].config, ranking, default, (seed,), metric_name, study.study_name,
        confirmed=False, best_trial=best[ranking[0].config].number,
    )  # fmt: skip

"""The words of ``Recommendation.explain()``: why the winner won, why the others were stopped.

Read from the study's trials alone (their stored probe, prune kind and reason), so a study run
elsewhere explains the same. :class:`~autoinit.recommendation.Recommendation` owns the result;
this module only turns it and the trials into sentences.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoinit import records
from autoinit._probe._stats import ProbeStats
from autoinit.space import Config, baselines

if TYPE_CHECKING:
    from autoinit.recommendation import Recommendation


def _config(trial: FrozenTrial) -> Config | None:
    try:
        return Config.from_dict(trial.params)
    except (KeyError, ValueError):
        return None


def _times(log10: float | None, what: str) -> str:
    if log10 is None:
        return f"{what} could not be compared"
    if math.isinf(log10):
        return f"{what} was {'infinitely larger' if log10 > 0 else 'zero against'}"
    return f"{what} was {10 ** log10:.2g}x"


def probe_sentence(probe: dict[str, Any]) -> str:
    """``"at step 0 the last layer's output std was 1x the first layer's, ..."``."""
    stats = ProbeStats.from_dict(probe)
    dead = probe.get("worst_dead") or 0.0
    sat = probe.get("worst_saturated") or 0.0
    return (
        f"at step 0 {_times(stats.signal_log10, 'the last layer output std')} the first "
        f"layer's, {_times(stats.gradient_log10, 'the first layer gradient')} the last layer's, "
        f"and at most {max(dead, sat):.0%} of a layer's units were dead or saturated"
    )


def _origin(trial: FrozenTrial, trials: Sequence[FrozenTrial]) -> FrozenTrial:
    """The trial whose result ``trial`` reused (a repeated config), else ``trial`` itself."""
    twin = trial.user_attrs.get(records.TRIAL_DUPLICATE_OF)
    if twin is None:
        return trial
    return next((t for t in trials if t.number == twin), trial)


def _cause(trial: FrozenTrial) -> str:
    """The named cause of a stop: the probe's for a pre-screened trial, else the prune kind."""
    kind = trial.user_attrs.get(records.PRUNE_KIND, "pruner")
    if kind == records.PRESCREEN:
        return (trial.user_attrs.get(records.PROBE) or {}).get("cause") or kind
    return records.STOP_LABELS.get(kind, kind)


def stop_sentence(trial: FrozenTrial) -> str:
    """Why a pruned trial stopped, citing its stored figure, with its cause named."""
    reason = str(trial.user_attrs.get(records.PRUNE_REASON) or "no reason was recorded")
    reason = reason.removeprefix("pre-screened: ")
    cause = _cause(trial)
    steps = trial.user_attrs.get(records.STEPS)
    where = "pre-screened" if trial.user_attrs.get(records.PRUNE_KIND) == records.PRESCREEN else (
        f"stopped after {steps} step{'s' if steps != 1 else ''}" if steps is not None else "stopped"
    )
    text = f"{where}: {reason}"
    return text if f"({cause})" in text or reason.startswith(cause) else f"{text} ({cause})"


def _winner_trial(trials: Sequence[FrozenTrial], config: Config) -> FrozenTrial | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and _config(t) == config]
    with_probe = [t for t in done if t.user_attrs.get(records.PROBE)]
    pool = with_probe or done
    return min(pool, key=records.loss_of) if pool else None


def _winner_lines(rec: Recommendation, trials: Sequence[FrozenTrial]) -> list[str]:
    if rec.config is None or rec.winner is None:
        return [rec.headline()]
    lines = [f"Why {rec.config.label} won:"]
    trial = _winner_trial(trials, rec.config)
    probe = trial.user_attrs.get(records.PROBE) if trial is not None else None
    if trial is not None and probe and probe.get("output_std"):
        lines.append(f"  - its probe (trial #{trial.number}): {probe_sentence(probe)}.")
    else:
        lines.append("  - no step-0 probe was recorded for it.")
    winner, default = rec.winner, rec.default
    seeds = rec.over(winner)
    if not rec.confirmed:
        lines.append(f"  - not confirmed over seeds: its single search trial had validation loss "
                     f"{records.format_pm(winner.mean, None)}.")  # fmt: skip
    elif default is None:
        lines.append(f"  - confirmed over {seeds}: validation loss {winner.loss_text()}.")
    elif default.config == rec.config:
        lines.append(f"  - it is PyTorch's default, and no configuration beat it over "
                     f"{seeds} ({winner.loss_text()}).")  # fmt: skip
    elif default.n_diverged:
        lines.append(f"  - confirmed over {seeds}: validation loss {winner.loss_text()}; "
                     f"PyTorch's default ({default.config.label}) {default.divergence()}.")
    else:
        gain = f", {rec.improvement_pct:.1f}% lower" if rec.improvement_pct is not None else ""
        lines.append(f"  - confirmed over {seeds}: validation loss {winner.loss_text()} "
                     f"against {default.loss_text()}{rec.own_seeds(default)} for PyTorch's default "
                     f"({default.config.label}){gain}.")  # fmt: skip
    return lines


def _baseline_lines(study_attrs: dict[str, Any], trials: Sequence[FrozenTrial]) -> list[str]:
    space = study_attrs.get(records.STUDY_SPACE) or {}
    inits, acts = space.get("inits"), space.get("activations")
    if not inits or not acts:
        inits = sorted({str(t.params["init"]) for t in trials if "init" in t.params})
        acts = sorted({str(t.params["activation"]) for t in trials if "activation" in t.params})
    lines = []
    for config in baselines(inits, acts):
        mine = [t for t in trials if _config(t) == config and t.state in records.FINISHED_STATES]
        if not mine:
            continue
        first = min(mine, key=lambda t: t.number)
        if first.state == TrialState.PRUNED:
            origin = _origin(first, trials)
            lines.append(f"  - {config.label} (trial #{origin.number}) {stop_sentence(origin)}")
        else:
            lines.append(f"  - {config.label} (trial #{first.number}) trained: validation loss "
                         f"{records.format_pm(first.value, None)}")  # fmt: skip
    return ["Baselines:", *lines] if lines else []


def _family(config: Config) -> str:
    return f"{config.init} + {config.activation}"


def _prescreen_lines(trials: Sequence[FrozenTrial]) -> list[str]:
    screened = [t for t in trials if records.prune_kind(t) == records.PRESCREEN
                and t.user_attrs.get(records.TRIAL_DUPLICATE_OF) is None]  # fmt: skip
    families: dict[str, list[FrozenTrial]] = collections.defaultdict(list)
    for trial in screened:
        config = _config(trial)
        if config is not None:
            families[_family(config)].append(trial)
    if not families:
        return []
    lines = [f"Pre-screened at step 0, never trained ({len(screened)} configs in "
             f"{len(families)} families):"]  # fmt: skip
    for family, members in families.items():
        first = min(members, key=lambda t: t.number)
        more = f" ({len(members)} slopes)" if len(members) > 1 else ""
        reason = stop_sentence(first).removeprefix("pre-screened: ")
        lines.append(f"  - {family}{more}: {reason}")
    return lines


def explain(rec: Recommendation, study: optuna.Study | None = None) -> str:
    """The explanation of ``rec`` from its study's trials (carried, or read from ``study``)."""
    from autoinit.errors import ConfigError

    if study is not None:
        trials: Sequence[FrozenTrial] = study.get_trials(deepcopy=False)
        attrs = dict(study.user_attrs)
    elif rec.trials:
        trials, attrs = rec.trials, dict(rec.study_attrs)
    else:
        raise ConfigError(
            "explain() needs the study's trials: use Recommendation.from_study(study).explain() "
            "or rec.explain(study)."
        )
    counts = collections.Counter(_cause(_origin(t, trials)) for t in trials
                                 if t.state == TrialState.PRUNED)  # fmt: skip
    blocks = [_winner_lines(rec, trials), _baseline_lines(attrs, trials), _prescreen_lines(trials)]
    if counts:
        stopped = ", ".join(f"{kind} {n}" for kind, n in counts.most_common())
        blocks.append([f"Stopped early, by cause: {stopped}."])
    return "\n".join(line for block in blocks if block for line in block)

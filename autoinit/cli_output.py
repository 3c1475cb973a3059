"""What ``autoinit search`` and ``autoinit show`` print: the progress bar, the result table,
the JSON, and notes about the confirmation run by another process."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from typing import Any

import click
import optuna

from autoinit import records
from autoinit.recommendation import Recommendation
from autoinit.study import display_url


def _note(message: str) -> None:
    click.echo(message, err=True)


def _note_confirmer(study: optuna.Study) -> None:
    """Say so when another process (another worker, another machine) ran the confirmation."""
    import os
    import socket

    who = study.user_attrs.get(records.STUDY_CONFIRMED) or {}
    if who and (who.get("pid"), who.get("host")) != (os.getpid(), socket.gethostname()):
        _note(f"the confirmation was run by {who.get('host')} (PID {who.get('pid')}); "
              "its stored result:")  # fmt: skip


def _waiting_note() -> Callable[[dict[str, Any]], None]:
    """A note on stderr, every 30 s, while another process runs the study's confirmation."""
    import time

    last = [0.0]

    def note(holder: dict[str, Any]) -> None:
        if time.monotonic() - last[0] >= 30:
            last[0] = time.monotonic()
            _note(f"waiting for the confirmation run by {holder.get('host', '?')} (PID "
                  f"{holder.get('pid', '?')}); Ctrl+C stops waiting, the result will be stored "
                  "with the study.")  # fmt: skip

    return note


def _print_result(study: optuna.Study, rec: Any, storage_url: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(_result_json(study, rec, storage_url), indent=2))
    else:
        click.echo(_result_text(study, rec, storage_url))


class _Progress:
    """A progress bar on stderr: trials done, pruned so far, best validation loss so far.

    It is an Optuna callback that counts the study's finished trials, so a resumed study's and
    other workers' trials count too.
    """

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.total = total
        self.bar = tqdm(total=total, desc="trials", unit="trial", file=sys.stderr,
                        dynamic_ncols=True, leave=True)  # fmt: skip

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial | None) -> None:
        finished = study.get_trials(deepcopy=False, states=records.FINISHED_STATES)
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in finished)
        values = [t.value for t in finished if t.value is not None]
        self.bar.n = min(len(finished), self.total)
        self.bar.set_postfix(pruned=pruned, best=f"{min(values):.4g}" if values else "-")

    def finish(self, study: optuna.Study | None = None) -> None:
        """Show ``study``'s final count (a resumed study may have had nothing to run); close."""
        if study is not None and not self.bar.disable:
            self(study, None)
        self.bar.close()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


MAX_ROWS = 10  # rows of the ranking table in text output (the JSON has them all)


def _ranking_table(rec: Recommendation) -> list[str]:
    """The ranking as aligned columns; why a config diverged or left the race comes last, so a
    long reason does not push the other columns out of line."""
    metric = records.metric_label(rec.metric_name)
    rows: list[tuple[str, ...]] = [("rank", "init", "activation", "slope", "val loss (mean ± std)",
                                    metric, "seeds", "note")]  # fmt: skip
    for index, ranked in enumerate(rec.ranking[:MAX_ROWS], start=1):
        config = ranked.config
        rows.append((
            str(index), config.init, config.activation,
            "" if config.leaky_slope is None else f"{config.leaky_slope:.3g}",
            ranked.loss_text(),
            ranked.metric_text("-"),
            str(len(ranked.values)), ranked.divergence() or ranked.dropped or "",
        ))  # fmt: skip
    if not any(row[-1] for row in rows[1:]):
        rows = [row[:-1] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if len(rec.ranking) > MAX_ROWS:
        table.append(f"... and {len(rec.ranking) - MAX_ROWS} more (--json lists them all)")
    return table


def _result_text(study: optuna.Study, rec: Recommendation, storage_url: str) -> str:
    from autoinit.dashboard import dashboard_command

    lines = ["", str(rec), ""]
    if rec.ranking:
        if rec.confirmed and rec.full_race:
            lines.append(f"Confirmed over {_plural(len(rec.seeds), 'seed')}:")
        elif rec.confirmed:
            lines.append(f"Raced over up to {_plural(len(rec.seeds), 'seed')} (a config leaves "
                         "once it is clearly worse; seeds: how many each got):")  # fmt: skip
        else:
            lines.append("Ranked by the search trials (one seed each, not confirmed):")
        lines += [*_ranking_table(rec), ""]
    counts = records.trial_counts(study)
    stopped = ", ".join(f"{records.STOP_LABELS.get(k, k)} {n}" for k, n in counts.stopped.items())
    if counts.failed:
        stopped += (", " if stopped else "") + f"failed {counts.failed}"
    shown = display_url(storage_url)
    quoted_url, quoted_name = shlex.quote(shown), shlex.quote(study.study_name)
    return "\n".join([
        *lines,
        f"{_plural(counts.finished, 'trial')}: {counts.complete} complete, {counts.pruned} pruned"
        + (f", {counts.failed} failed" if counts.failed else ""),
        f"Stopped early: {stopped or 'none'}",
        f"Study {study.study_name!r} stored in {shown}",
        "Look at it with:",
        f"  autoinit report --storage {quoted_url} --study-name {quoted_name}",
        f"  {dashboard_command(shown)}",
    ])  # fmt: skip


def _result_json(study: optuna.Study, rec: Recommendation, storage_url: str) -> dict[str, Any]:
    counts = records.trial_counts(study)
    return {
        "study_name": study.study_name,
        "storage": display_url(storage_url),
        "trials": counts.finished,
        "trial_states": {k: v for k, v in counts.to_dict().items() if k in
                         ("complete", "pruned", "failed")},  # fmt: skip
        "task": study.user_attrs.get(records.STUDY_TASK),
        "data": study.user_attrs.get(records.STUDY_DATA),
        "stopped_early": records.stop_counts(study),
        "recommendation": rec.to_dict(),
    }

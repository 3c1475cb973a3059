"""One self-contained HTML report of a study, and its summary in Markdown.

Both are made from the stored study alone (``autoinit/records.py``), so a study run on another
machine can be reported anywhere. The summary is computed once as plain text templates whose
study-derived parts (names, labels, columns) are filled in escaped for each format: study text is
data, never markup.
"""

from __future__ import annotations

import html
import json
import re
import string
from pathlib import Path
from typing import Any, Callable, NamedTuple

import optuna
import plotly.offline
from optuna.trial import TrialState

from autoinit import plots, records
from autoinit.space import Config


class _Text(NamedTuple):
    """A sentence whose ``$name`` placeholders are study text, escaped when rendered."""

    template: str
    data: dict[str, str]

    def render(self, quote: Callable[[str], str]) -> str:
        data = {key: quote(value) for key, value in self.data.items()}
        return string.Template(self.template).substitute(data)


def _plain(template: str) -> _Text:
    return _Text(template.replace("$", "$$"), {})


class _Summary(NamedTuple):
    title: _Text
    headline: _Text  # the recommendation, the best trial, or why there is none
    table: list[list[_Text]]  # recommended vs default, first row the header; empty without one
    facts: list[tuple[str, _Text]]  # data, model, budget, trials
    snippet: str | None  # the Python that applies the configuration


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _spread(mean: float | None, std: float | None) -> str:
    return _num(mean) if std is None or mean is None else f"{mean:.4g} ± {std:.2g}"


def _study_text(value: Any) -> _Text:
    """A recorded study attribute (a dict as ``key: value, ...``), or say it was not recorded."""
    if isinstance(value, dict):
        value = ", ".join(f"{k}: {v}" for k, v in value.items() if v is not None)
    return _Text("$value", {"value": str(value)}) if value else _plain("not recorded")


def _snippet(config: Config) -> str:
    args = f"{json.dumps(config.init)}, {json.dumps(config.activation)}"
    if config.leaky_slope is not None:
        args += f", leaky_slope={config.leaky_slope!r}"
    return f"from autoinit import Config, apply\n\nmodel = apply(model, Config({args}))"


def _trial_counts(study: optuna.Study) -> _Text:
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return _plain("none yet")
    states = {s: sum(t.state == s for t in trials) for s in TrialState}
    pruned = records.stop_counts(study)
    pruned.pop(plots.FAILED)
    kinds = ", ".join(f"{plots.KIND_LABELS[k]} {n}" for k, n in pruned.items() if n)
    parts = [f"{states[TrialState.COMPLETE]} complete"]
    parts.append(f"{states[TrialState.PRUNED]} pruned" + (f" ({kinds})" if kinds else ""))
    parts.append(f"{states[TrialState.FAIL]} failed")
    parts += [f"{n} {s.name.lower()}" for s, n in states.items() if n and not s.is_finished()]
    return _plain(f"{len(trials)}: " + ", ".join(parts))


def _recommended(rec: dict[str, Any]) -> tuple[_Text, list[list[_Text]], Config]:
    """The headline and the evidence table of a confirmed recommendation."""
    default = rec["default"]
    seeds = ", ".join(str(s) for s in rec.get("seeds", []))
    data = {"winner": rec["label"], "default": default["label"]}
    evidence = (
        f"validation loss {_spread(rec['mean'], rec.get('std'))} against "
        f"{_spread(default['mean'], default.get('std'))} for PyTorch's default ($default) "
        f"over seeds {seeds}"
    )
    if rec["label"] == default["label"]:
        headline = _Text(f"Keep PyTorch's default: no configuration beat it ({evidence}).", data)
    else:
        direction = "lower" if rec["improvement"] >= 0 else "higher"
        gain = f"{abs(rec['improvement']):.3g} {direction} ({abs(rec['improvement_pct']):.1f}%)"
        headline = _Text(f"Use $winner: {evidence}; {gain}.", data)
    metric = records.METRIC_LABELS.get(rec.get("metric_name"), rec.get("metric_name") or "metric")
    table = [[_plain(h) for h in ("", "configuration", "validation loss", metric)]]
    for role, row in (("recommended", rec), ("PyTorch default", default)):
        table.append(
            [
                _plain(role),
                _Text("$label", {"label": row["label"]}),
                _plain(_spread(row["mean"], row.get("std"))),
                _plain(_spread(row.get("metric_mean"), row.get("metric_std"))),
            ]
        )
    return headline, table, Config.from_dict(rec["config"])


def _best_trial(study: optuna.Study) -> tuple[_Text, Config | None]:
    """Without a confirmation: the best single trial, or why there is none."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        n = len(study.get_trials(deepcopy=False))
        why = "The study has no trials yet" if n == 0 else f"None of the {n} trials completed"
        return _plain(f"{why}, so there is nothing to recommend."), None
    best = min(done, key=lambda t: t.value)
    config = Config.from_dict(best.params)
    metric = best.user_attrs.get(records.METRIC)
    name = records.METRIC_LABELS.get(best.user_attrs.get(records.METRIC_NAME), "metric")
    scores = f"validation loss {_num(best.value)}" + (
        f", {name} {_num(metric)}" if metric is not None else ""
    )
    text = (
        f"No confirmation over seeds was run, so this is not a recommendation yet. "
        f"The best single trial is #{best.number}, $label: {scores}."
    )
    return _Text(text, {"label": config.label}), config


def _summary(study: optuna.Study) -> _Summary:
    attrs = study.user_attrs
    rec = attrs.get(records.STUDY_RECOMMENDATION)
    if rec:
        headline, table, config = _recommended(rec)
    else:
        headline, config = _best_trial(study)
        table = []
    facts = [
        ("Data", _study_text(attrs.get(records.STUDY_DATA))),
        ("Model", _study_text(attrs.get(records.STUDY_MODEL))),
        ("Budget", _study_text(attrs.get(records.STUDY_BUDGET))),
        ("Trials", _trial_counts(study)),
    ]
    return _Summary(
        title=_Text("autoinit report: $name", {"name": study.study_name}),
        headline=headline,
        table=table,
        facts=facts,
        snippet=_snippet(config) if config else None,
    )


def _md_code(text: str) -> str:
    """Study text as a Markdown code span: shown literally, never read as markup."""
    return "`" + text.replace("`", "'").replace("\n", " ") + "`"


def _md_cell(text: str) -> str:
    """Study text in a Markdown table cell, where a bare ``|`` would end the cell."""
    return _md_code(text).replace("|", "\\|")


def summary_markdown(study: optuna.Study) -> str:
    """The report's summary in Markdown (for the dashboard note and the terminal)."""
    s = _summary(study)
    lines = [f"## {s.title.render(_md_code)}", "", s.headline.render(_md_code), ""]
    for i, row in enumerate(s.table):
        lines.append("| " + " | ".join(cell.render(_md_cell) for cell in row) + " |")
        if i == 0:
            lines.append("|" + "---|" * len(row))
    lines += [""] if s.table else []
    lines += [f"- **{name}**: {text.render(_md_code)}" for name, text in s.facts]
    if s.snippet:
        lines += ["", "Apply it:", "", "```python", s.snippet, "```"]
    return "\n".join(lines) + "\n"


def _summary_html(s: _Summary) -> str:
    esc = html.escape
    rows = [
        "<tr>" + "".join(f"<{tag}>{c.render(esc)}</{tag}>" for c in row) + "</tr>"
        for row, tag in zip(s.table, ["th"] + ["td"] * len(s.table))
    ]
    facts = "".join(f"<dt>{name}</dt><dd>{text.render(esc)}</dd>" for name, text in s.facts)
    parts = [f"<h1>{s.title.render(esc)}</h1>", f'<p class="headline">{s.headline.render(esc)}</p>']
    parts += [f"<table>{''.join(rows)}</table>"] if rows else []
    parts += [f"<dl>{facts}</dl>"]
    if s.snippet:
        parts += ["<p>Apply it:</p>", f"<pre><code>{esc(s.snippet)}</code></pre>"]
    return "\n".join(parts)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
.headline { font-size: 1.15em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .3em .8em; text-align: left; }
dt { font-weight: bold; float: left; clear: left; width: 5em; }
dd { margin-left: 6em; margin-bottom: .3em; }
pre { background: #f4f4f4; padding: 1em; }
.figure { margin: 2em 0; }
"""


def default_report_path(study_name: str) -> Path:
    """``studies/<study name>.html``, the name made safe for a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study_name).strip("._") or "study"
    return Path("studies") / f"{safe}.html"


def write_report(study: optuna.Study, path: str | Path | None = None) -> Path:
    """Write one HTML file that works offline (plotly.js embedded once) and return its path.

    Args:
        study: The autoinit study, as stored.
        path: Where to write; defaults to ``studies/<study name>.html`` under the working directory.
    """
    path = Path(path) if path is not None else default_report_path(study.study_name)
    figures = [
        f'<div class="figure">{fig(study).to_html(full_html=False, include_plotlyjs=False)}</div>'
        for fig in plots.FIGURES
    ]
    summary = _summary(study)
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{summary.title.render(html.escape)}</title>",
            f"<style>{_STYLE}</style>",
            f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>',
            "</head><body><main>",
            _summary_html(summary),
            *figures,
            "</main></body></html>",
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path

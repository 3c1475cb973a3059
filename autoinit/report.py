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

from autoinit import plots, records
from autoinit.recommendation import Recommendation
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
    headline: Callable[[Callable[[str], str]], str]  # the verdict, given how to quote study text
    table: list[list[_Text]]  # recommended vs default, first row the header; empty without one
    facts: list[tuple[str, _Text]]  # data, model, budget, trials
    snippet: str | None  # the Python that applies the configuration


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


def _evidence_table(rec: Recommendation) -> list[list[_Text]]:
    """Recommended vs PyTorch's default, as confirmed; empty when there was no confirmation."""
    rows = rec.evidence_rows() if rec.confirmed else []
    if not rows:
        return []
    metric = records.metric_label(rec.metric_name)
    table = [[_plain(h) for h in ("", "configuration", "validation loss", metric, "seeds")]]
    for role, ranked in rows:
        loss = _plain(ranked.loss_text())
        if ranked.n_diverged:  # the stored stop reasons are study text: quoted
            loss = _Text("$loss", {"loss": ranked.evidence()})
        table.append([
            _plain(role),
            _Text("$label", {"label": ranked.config.label}),
            loss,
            _plain(ranked.metric_text("n/a")),
            _plain(", ".join(str(seed) for seed in rec.seeds_of(ranked))),  # the race may cut
        ])  # fmt: skip
    return table


def _summary(study: optuna.Study) -> _Summary:
    attrs = study.user_attrs
    rec = Recommendation.from_study(study)
    facts = [
        ("Data", _study_text(attrs.get(records.STUDY_DATA))),
        ("Model", _study_text(attrs.get(records.STUDY_MODEL))),
        ("Budget", _study_text(attrs.get(records.STUDY_BUDGET))),
        ("Trials", _plain(records.trial_counts(study).describe())),
    ]
    return _Summary(
        title=_Text("autoinit report: $name", {"name": study.study_name}),
        headline=rec.headline,
        table=_evidence_table(rec),
        facts=facts,
        snippet=_snippet(rec.config) if rec.config else None,
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
    lines = [f"## {s.title.render(_md_code)}", "", s.headline(_md_code), ""]
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
    parts = [f"<h1>{s.title.render(esc)}</h1>", f'<p class="headline">{s.headline(esc)}</p>']
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

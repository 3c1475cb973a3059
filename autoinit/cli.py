"""The ``autoinit`` command line: parse, call the library, print. No logic of its own.

Every :class:`~autoinit.errors.AutoinitError` becomes one line, ``error: ...``, and exit status 2.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click
import optuna

from autoinit import records
from autoinit.errors import AutoinitError

EPILOG_SEARCH = """\b
Examples:
  autoinit search --data examples/breast_cancer.csv
  autoinit search --data sales.csv --target revenue --trials 80 --epochs 15
  autoinit search --data big.csv --jobs 2 --storage postgresql://me@db/studies
"""


class UserError(click.ClickException):
    """A problem in the user's input: one line and exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _user_errors(command: Callable) -> Callable:
    """Turn library errors the user can fix into :class:`UserError`."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AutoinitError as error:
            raise UserError(str(error)) from None

    return wrapper


def _names(value: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; None stays None (the default space)."""
    if value is None:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


def _note(message: str) -> None:
    click.echo(message, err=True)


storage_option = click.option(
    "--storage", default=None, metavar="URL",
    help="Optuna storage URL [default: sqlite:///studies/autoinit.db].",
)  # fmt: skip
study_option = click.option(
    "--study-name", default=None, metavar="NAME", help="The study [default: the latest one]."
)


@click.group(
    epilog="Run `autoinit COMMAND --help` for each command's options and examples.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="autoinit")
def main() -> None:
    """Find the weight initializer and activation that make your network train best.

    \b
    Quick start:
      autoinit search --data examples/breast_cancer.csv
      autoinit report
      optuna-dashboard sqlite:///studies/autoinit.db
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@main.command(epilog=EPILOG_SEARCH)
@click.option("--data", "data_path", required=True, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False), help="A CSV file with a header row.")
@click.option("--target", default=None, metavar="COL", help="Column to predict [default: last].")
@click.option("--task", type=click.Choice(["auto", "classification", "regression"]),
              default="auto", show_default=True)
@click.option("--trials", default=40, show_default=True, type=click.IntRange(min=1),
              help="Finished trials the study should hold (a rerun resumes up to it).")
@click.option("--timeout", default=None, type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS", help="Stop starting new trials after this long.")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1),
              help="Training epochs per trial.")
@click.option("--depth", default=8, show_default=True, type=click.IntRange(min=1),
              help="Hidden layers of the MLP.")
@click.option("--width", default=64, show_default=True, type=click.IntRange(min=1),
              help="Units per hidden layer.")
@click.option("--inits", default=None, metavar="A,B", help="Initializers to search [default: all].")
@click.option("--activations", default=None, metavar="X,Y",
              help="Activations to search [default: all].")
@storage_option
@click.option("--study-name", default=None, metavar="NAME",
              help="[default: FILE's stem, depth and width, e.g. breast_cancer-8x64].")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes sharing the storage.")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1),
              help="Seeds to confirm the best configs over.")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1),
              help="Configs to confirm (plus PyTorch's default).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@_user_errors
def search(data_path: str, target: str | None, task: str, trials: int, timeout: float | None,
           epochs: int, depth: int, width: int, inits: str | None, activations: str | None,
           storage: str | None, study_name: str | None, jobs: int, seeds: int, top_k: int,
           device: str, seed: int, as_json: bool) -> None:  # fmt: skip
    """Search initializers x activations for an MLP on a CSV file.

    The task (classification or regression) is detected from the target column; the model is
    an MLP of DEPTH x WIDTH, deep enough by default that the init decides whether it trains.
    """
    from autoinit.data import load_csv
    from autoinit.models import mlp_factory
    from autoinit.recommend import confirm
    from autoinit.search import run_search, search_defaults
    from autoinit.space import resolve_space
    from autoinit.study import DEFAULT_STORAGE, open_storage

    resolve_space(_names(inits), _names(activations))  # bad names fail before any work
    storage_url = storage or DEFAULT_STORAGE
    open_storage(storage_url)  # a bad URL or folder fails before the data is read
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_csv(data_path, target=target, task=task, seed=seed)
    _note(f"data: {data.describe()}")
    for line in [*data.notes, f"task: {data.task_reason}"]:
        _note(f"  {line}")
    for warning in caught:
        _note(f"warning: {warning.message}")
    n_out = data.n_classes if data.task == "classification" else 1
    name = study_name or f"{data_path.rsplit('/', 1)[-1].rsplit('.', 1)[0]}-{depth}x{width}"
    progress = _Progress(trials)
    try:
        finished = run_search(
            mlp_factory(data.n_features, n_out, depth=depth, width=width),
            (data.X_train, data.y_train), (data.X_val, data.y_val),
            **search_defaults(
                n_trials=trials, timeout=timeout, epochs=epochs, inits=_names(inits),
                activations=_names(activations), task=data.task, storage=storage_url,
                study_name=name, seed=seed, device=device, n_jobs=jobs,
                data_info=data.fingerprint, callbacks=[progress],
            ),
        )  # fmt: skip
        progress.close()
        _note(f"confirming the top {top_k} configs and PyTorch's default over {seeds} seeds...")
        rec = confirm(finished.study, finished.objective, seeds=seeds, top_k=top_k)
    except KeyboardInterrupt:
        progress.close()
        _note(f"interrupted: finished trials are stored in {storage_url} (study {name!r}); "
              "run the same command again to resume.")
        sys.exit(130)
    finally:
        progress.close()
    study = optuna.load_study(study_name=name, storage=open_storage(storage_url))
    _save_dashboard_extras(study)
    if as_json:
        click.echo(json.dumps(_result_json(study, rec, storage_url), indent=2))
    else:
        click.echo(_result_text(study, rec, storage_url))


class _Progress:
    """A progress bar on stderr: trials done, pruned so far, best validation loss so far."""

    def __init__(self, total: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="trials", unit="trial", file=sys.stderr,
                        dynamic_ncols=True, leave=True)  # fmt: skip

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        finished = study.get_trials(deepcopy=False, states=records.FINISHED_STATES)
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in finished)
        values = [t.value for t in finished if t.value is not None]
        self.bar.n = min(len(finished), self.bar.total)
        self.bar.set_postfix(pruned=pruned, best=f"{min(values):.4g}" if values else "-")

    def close(self) -> None:
        self.bar.close()


def _save_dashboard_extras(study: optuna.Study) -> None:
    from autoinit.dashboard import save_to_dashboard

    save_to_dashboard(study)


def _metric_label(name: str) -> str:
    return "R²" if name == "r2" else name


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None or not math.isfinite(mean):
        return "diverged"
    return f"{mean:.4f} ± {std or 0.0:.4f}"


def _result_text(study: optuna.Study, rec: Any, storage_url: str) -> str:
    from autoinit.dashboard import dashboard_command

    metric = _metric_label(rec.metric_name)
    rows = [("rank", "init", "activation", "slope", "val loss (mean ± std)", metric)]
    for index, ranked in enumerate(rec.ranking, start=1):
        config = ranked.config
        rows.append((
            str(index), config.init, config.activation,
            "" if config.leaky_slope is None else f"{config.leaky_slope:.3g}",
            _pm(ranked.mean, ranked.std), _pm(ranked.metric_mean, ranked.metric_std),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines = ["", str(rec), "", f"Confirmed over {len(rec.seeds)} seeds:", *table, ""]
    stops = {k: n for k, n in records.stop_counts(study).items() if n}
    if stops:
        lines.append("Stopped early: " + ", ".join(
            f"{records.STOP_LABELS[k]} {n}" for k, n in stops.items()))  # fmt: skip
    lines += [
        f"Study {study.study_name!r} stored in {storage_url}",
        "Look at it with:",
        f"  autoinit report --storage {storage_url} --study-name {study.study_name}",
        f"  {dashboard_command(storage_url)}",
    ]
    return "\n".join(lines)


def _result_json(study: optuna.Study, rec: Any, storage_url: str) -> dict[str, Any]:
    return {
        "study_name": study.study_name,
        "storage": storage_url,
        "trials": len(study.trials),
        "stopped_early": records.stop_counts(study),
        "recommendation": rec.to_dict(),
    }


@main.command()
@storage_option
@study_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@_user_errors
def show(storage: str | None, study_name: str | None, as_json: bool) -> None:
    """List the stored studies, or print one study's recommendation. Never retrains.

    \b
    Examples:
      autoinit show
      autoinit show --study-name breast_cancer-8x64 --json
    """
    from autoinit.recommend import Recommendation
    from autoinit.study import DEFAULT_STORAGE, load_study, open_storage

    storage_url = storage or DEFAULT_STORAGE
    opened = open_storage(storage_url)
    if study_name is None:
        summaries = optuna.get_all_study_summaries(opened, include_best_trial=True)
        listing = [
            {"study_name": s.study_name, "trials": s.n_trials,
             "best_value": s.best_trial.value if s.best_trial else None,
             "task": s.user_attrs.get(records.STUDY_TASK)}
            for s in summaries
        ]  # fmt: skip
        if as_json:
            click.echo(json.dumps(listing, indent=2))
        elif not listing:
            click.echo(f"no study in {storage_url} yet; run `autoinit search --data FILE`.")
        else:
            for item in listing:
                best = "-" if item["best_value"] is None else f"{item['best_value']:.4g}"
                click.echo(f"{item['study_name']}  {item['trials']} trials  best val loss {best}"
                           f"  {item['task'] or ''}".rstrip())  # fmt: skip
        return
    study = load_study(opened, study_name)
    rec = Recommendation.from_study(study)
    if as_json:
        click.echo(json.dumps(_result_json(study, rec, storage_url), indent=2))
    else:
        click.echo(_result_text(study, rec, storage_url).lstrip("\n"))


@main.command(name="list")
def list_space() -> None:
    """Show the search space: initializers (formulas, aliases) and activations (gains)."""
    from autoinit.activations import get_activation, list_activations
    from autoinit.initializers import get_initializer, list_initializers

    click.echo("Initializers:")
    for name in list_initializers():
        init = get_initializer(name)
        aliases = f" (alias: {', '.join(init.aliases)})" if init.aliases else ""
        gain = " [scaled by the activation's gain]" if init.uses_gain else ""
        click.echo(f"  {name:<17} {init.formula}{gain}{aliases}")
    click.echo("\nActivations (gain used by kaiming/orthogonal):")
    for name in list_activations():
        act = get_activation(name)
        gain = "sqrt(2 / (1 + slope²))" if callable(act.gain) else f"{act.gain:.4g}"
        aliases = f" (alias: {', '.join(act.aliases)})" if act.aliases else ""
        click.echo(f"  {name:<11} gain {gain}{aliases}")
    click.echo("\nSoftmax is not a hidden activation: for classification it is the output, "
               "applied inside the cross-entropy loss.")  # fmt: skip


@main.command()
@storage_option
@study_option
@click.option("--output", default=None, metavar="FILE.html",
              help="[default: studies/<study>.html]")
@_user_errors
def report(storage: str | None, study_name: str | None, output: str | None) -> None:
    """Write a self-contained HTML report of a study (works offline).

    \b
    Example:
      autoinit report --study-name breast_cancer-8x64 --output report.html
    """
    from autoinit.report import write_report
    from autoinit.study import load_study, open_storage

    study = load_study(open_storage(storage), study_name)
    try:
        path = write_report(study, output)
    except OSError as error:
        raise UserError(f"cannot write the report to {error.filename}: {error.strerror}.") from None
    click.echo(f"report written to {path}")


@main.command()
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@_user_errors
def dashboard(storage: str | None, host: str, port: int) -> None:
    """Review the studies in optuna-dashboard (pip install 'autoinit[dashboard]').

    \b
    Example:
      autoinit dashboard --port 8081
    """
    from autoinit.dashboard import run_dashboard
    from autoinit.study import DEFAULT_STORAGE, open_storage

    storage_url = storage or DEFAULT_STORAGE
    open_storage(storage_url)
    click.echo(f"optuna-dashboard on http://{host}:{port} for {storage_url} (Ctrl+C to stop)")
    run_dashboard(storage_url, host=host, port=port)

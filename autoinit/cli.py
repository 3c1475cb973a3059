"""The ``autoinit`` command line: parse, call the library, print (:mod:`autoinit.cli_output`).

Every :class:`~autoinit.errors.AutoinitError` becomes one line, ``error: ...``, and exit status 2,
with no traceback. Click's own usage errors (an unknown option, ``--trials 0``) keep click's format,
``Usage: ...`` then ``Error: ...``, and also exit 2: they are about the command line, not the data,
and click's usage lines are what fixes them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import optuna

from autoinit import records
from autoinit.cli_output import (
    _note,
    _note_confirmer,
    _print_result,
    _Progress,
    _result_json,
    _result_text,
    _waiting_note,
)
from autoinit.errors import AutoinitError, ConfigError, NoRecommendation
from autoinit.recommendation import Recommendation
from autoinit.study import display_url

EPILOG_SEARCH = """\b
Examples:
  autoinit search --data examples/breast_cancer.csv
  autoinit search --data examples/digits              # images: a small CNN
  autoinit search --data examples/waves.npz --model lstm
  autoinit search --data photos/ --model my_net.py:Net --image-size 32
  autoinit search --data sales.csv --target revenue --trials 80 --epochs 15
  autoinit search --data big.csv --jobs 2 --storage postgresql://me@db/studies
"""


class UserError(click.ClickException):
    """A problem in the user's input: one line and exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {' '.join(self.format_message().splitlines())}", err=True)


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


storage_option = click.option(
    "--storage", default=None, metavar="URL",
    help="Optuna storage URL [default: sqlite:///studies/autoinit.db].",
)  # fmt: skip
study_option = click.option(
    "--study-name", default=None, metavar="NAME", help="The study [default: the latest one]."
)


ERROR_LOG = Path("studies") / "autoinit-error.log"


class _Main(click.Group):
    """The command group; an unexpected exception (a bug, not a user error) becomes one line.

    Its traceback goes to :data:`ERROR_LOG` and the exit status is 1. Trials are stored as they
    finish, so rerunning the same command resumes where the crash left off.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:  # noqa: BLE001 - the one place every bug is caught
            where = _log_internal_error(ctx)
            summary = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            click.echo(
                f"error: internal error in autoinit ({summary}); the traceback is in {where}. "
                "Finished trials are stored: run the same command again to resume, and please "
                "report the log.",
                err=True,
            )
            raise click.exceptions.Exit(1) from None


def _log_internal_error(ctx: click.Context) -> Path:
    """Append the current traceback to the error log (or a temp file if studies/ is read-only)."""
    import datetime
    import tempfile
    import traceback

    entry = (f"--- {datetime.datetime.now().isoformat(timespec='seconds')} "
             f"autoinit {' '.join(map(shlex.quote, sys.argv[1:]))}\n{traceback.format_exc()}\n")
    for path in (ERROR_LOG, Path(tempfile.gettempdir()) / ERROR_LOG.name):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as log:
                log.write(entry)
            return path
        except OSError:
            continue
    return ERROR_LOG


@click.group(
    cls=_Main,
    epilog="Run `autoinit COMMAND --help` for each command's options and examples.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="autoinit")
def main() -> None:
    """Find the weight initializer and activation that make your network train best.

    \b
    Quick start:
      autoinit search --data examples/breast_cancer.csv
      autoinit show
      autoinit report
      autoinit dashboard
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _count_or(word: str, expected: str) -> Callable[..., int | str | None]:
    """A click callback for an option that takes a positive integer or ``word``."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> int | str | None:
        if value is None or value == word:
            return value
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 1:
            raise click.BadParameter(f"expected {expected} or {word!r} but got {value!r}.")
        return count

    return check


_population = _count_or("auto", "a positive integer")  # --population and --confirm-jobs
_search_rows = _count_or("all", "a positive number of rows")  # --search-rows


def _given(*, population: int | str | None, search_rows: int | str | None, unset: bool) -> dict:
    """The options given on the command line; the others keep ``SearchOptions``' defaults."""
    given: dict[str, Any] = {} if population is None else {"population": population}
    if not unset:
        given["search_rows"] = search_rows
    return given


@main.command(epilog=EPILOG_SEARCH)
# No exists=True here: the readers check the path and say in one line what is wrong with it.
@click.option("--data", "data_path", required=True, metavar="PATH", type=click.Path(),
              help="A CSV/TSV file with a header row, a Parquet file, an .npz file (arrays x "
                   "and y) or .npy file (last column = target), or a folder of images with one "
                   "subfolder per class.")
@click.option("--target", default=None, metavar="COL", help="Column to predict [default: last].")
@click.option("--task", type=click.Choice(["auto", "classification", "regression"]),
              default="auto", show_default=True, help="auto: detected from the target column.")
@click.option("--model", "model", default=None, metavar="NAME",
              help="mlp, cnn, gru, lstm, rnn, or your own factory as FILE.py:FACTORY or "
                   "package.module:FACTORY (FILE.py is run, as Python) [default: mlp for "
                   "tables, cnn for images, gru for sequences].")
@click.option("--image-size", default=None, metavar="N|WxH",
              help="Resize every image to this [default: the most common size, at most 64].")
@click.option("--trials", default=40, show_default=True, type=click.IntRange(min=1),
              help="Finished trials the study should hold (a rerun resumes up to it).")
@click.option("--timeout", default=None, type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS", help="Stop starting new trials after this long.")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1),
              help="Training epochs per trial.")
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Adam's learning rate for every trial and the confirmation.")
@click.option("--depth", default=None, type=click.IntRange(min=1),
              help="Hidden layers (mlp), conv blocks (cnn) or recurrent layers [default: 8 for "
                   "mlp, 4 for cnn, 2 for gru/lstm/rnn].")
@click.option("--width", default=None, type=click.IntRange(min=1),
              help="Units (mlp, gru, lstm, rnn) or channels (cnn) per layer [default: 64 for "
                   "mlp, 16 for cnn, 32 for gru/lstm/rnn].")
@click.option("--inits", default=None, metavar="A,B", help="Initializers to search [default: all].")
@click.option("--activations", default=None, metavar="X,Y",
              help="Activations to search [default: all].")
@storage_option
@click.option("--study-name", default=None, metavar="NAME",
              help="The study to create or resume [default: PATH's stem and the model, "
                   "e.g. breast_cancer-8x64, digits-cnn4x16].")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes sharing the storage.")
@click.option("--population", default=None, metavar="K|auto", callback=_population,
              help="Trials trained together as one batched model (auto: 4, or 1 with "
                   "--jobs) [default: 1].")
@click.option("--search-rows", default=None, metavar="N|all", callback=_search_rows,
              help="Trials train on a stratified subsample of N training rows when there are "
                   "more; the confirmation uses every row (all: no subsample) [default: 20000].")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1),
              help="Seeds to confirm the best configs over.")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1),
              help="Configs to confirm (plus PyTorch's default).")
@click.option("--confirm-jobs", default="auto", show_default=True, metavar="N|auto",
              callback=_population,
              help="Processes that train the confirmation: its rounds, and its runs ahead "
                   "while the search runs (auto: one per CPU core; 1 on a GPU).")
@click.option("--no-race", is_flag=True,
              help="Confirm every config on every seed in one batched round, none dropped "
                   "early: more training, fewer rounds (faster where nobody would leave the "
                   "race, as on noisy targets).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="auto: CUDA when there is a GPU.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**31 - 1),
              help="Seeds the split, the sampler and every trial.")
@click.option("--no-wait", is_flag=True,
              help="If another process is confirming this study, exit instead of waiting.")
@click.option("--no-prescreen", is_flag=True,
              help="Train every config: no step-0 probe stops a collapsed one.")
@click.option("--prescreen-space", is_flag=True,
              help="Also probe the whole space before training and add its collapsed configs "
                   "as trials: fewer trials train (cheaper, measured up to 0.011 less accurate).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@_user_errors
def search(data_path: str, target: str | None, task: str, model: str | None,
           image_size: str | None, trials: int, timeout: float | None,
           epochs: int, lr: float, depth: int | None, width: int | None, inits: str | None,
           activations: str | None,
           storage: str | None, study_name: str | None, jobs: int, population: int | str | None,
           search_rows: int | str | None, seeds: int, top_k: int, confirm_jobs: int | str,
           no_race: bool, device: str, seed: int, no_wait: bool, no_prescreen: bool,
           prescreen_space: bool, as_json: bool) -> None:  # fmt: skip
    """Search initializers x activations for a model on your data.

    The kind of data is detected from PATH: a table (CSV, Parquet), arrays (.npz, .npy) or an
    image folder. The task (classification or regression) is detected from the targets; the
    model is --model, by default an MLP for tables, a small CNN for images and a GRU for
    sequences, deep enough by default that the init decides whether it trains.
    Rerunning the same command resumes the study up to --trials finished trials.
    """
    from autoinit._recommend import confirm_once, confirming_ahead, top_configs
    from autoinit._search import prepare_search
    from autoinit.data import load_data
    from autoinit.models import check_activations, choose_model, is_builtin
    from autoinit.options import SearchOptions
    from autoinit.space import resolve_space
    from autoinit.study import DEFAULT_STORAGE, parse_storage_url
    from autoinit.workers import resolve_device

    # Options fail before the data is read (a large file takes a while).
    prescreen = _prescreen(no_prescreen, prescreen_space)
    resolve_space(_names(inits), _names(activations))
    if model is not None:
        if is_builtin(model):
            check_activations(model, _names(activations))
        else:
            from autoinit.user_model import parse_spec

            parse_spec(model)  # the file is there (it runs once the data is read)
    resolve_device(device)
    storage_url = storage or DEFAULT_STORAGE
    parse_storage_url(storage_url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_data(data_path, target=target, task=task, image_size=image_size, seed=seed)
    choice = choose_model(model, data, depth=depth, width=width)  # a user's model runs a batch
    name = study_name or f"{Path(data_path).stem}-{choice.label}"
    options = SearchOptions(
        n_trials=trials, timeout=timeout, epochs=epochs, lr=lr, inits=_tuple(inits),
        activations=check_activations(choice.name, _names(activations)), task=data.task,
        storage=storage_url, study_name=name, seed=seed, device=device, n_jobs=jobs,
        prescreen=prescreen,
        **_given(population=population, search_rows=None if search_rows == "all" else search_rows,
                 unset=search_rows is None),
    )  # fmt: skip
    run = prepare_search(  # refuses a study made on other data before anything is printed
        choice.model_fn, (data.X_train, data.y_train), (data.X_val, data.y_val), options,
        data_info={"kind": data.kind, **data.fingerprint},
    )  # fmt: skip
    if records.STUDY_DATA_KIND not in run.study.user_attrs:
        run.study.set_user_attr(records.STUDY_DATA_KIND, data.kind)
    _note(f"data: {data.describe()}")
    for line in [*data.notes, f"task: {data.task_reason}"]:
        _note(f"  {line}")
    _note(f"model: {run.study.user_attrs.get(records.STUDY_MODEL, choice.name)}")
    for warning in [*(str(w.message) for w in caught), *choice.warnings]:
        if warning not in data.notes:
            _note(f"warning: {warning}")
    progress = _Progress(trials)
    try:
        with _quiet_interrupt(), _sigterm_as_interrupt(), confirming_ahead(
            run, seeds=seeds, top_k=top_k, race=not no_race, jobs=confirm_jobs
        ) as ahead:  # fmt: skip
            run.optimize(callbacks=[progress, ahead.after_trial])
            progress.finish(run.study)
            found = len(top_configs(run.study, top_k))  # none: NoRecommendation says why
            if found:
                how = f"over {seeds}" if no_race else f"in a race over up to {seeds}"
                _note(f"confirming the top {found} config(s) and PyTorch's default {how} "
                      "seed(s)...")  # fmt: skip
            rec = confirm_once(run, seeds=seeds, top_k=top_k, race=not no_race,
                               jobs=confirm_jobs, ahead=ahead, wait=not no_wait,
                               on_wait=_waiting_note())  # fmt: skip
        _note_confirmer(run.study)
    except NoRecommendation as nothing:  # a result, not an input error: show it, exit 3
        progress.finish()
        _print_result(run.study, nothing.recommendation, storage_url, as_json)
        raise click.exceptions.Exit(NO_RECOMMENDATION) from None
    except KeyboardInterrupt as stop:
        progress.finish()
        terminated = isinstance(stop, Terminated)
        if terminated:  # a scheduler stopping the job: what is done so far, then exit 143
            _print_result(run.study, Recommendation.from_study(run.study), storage_url, as_json)
        _note(f"{'terminated' if terminated else 'interrupted'}: the finished trials are stored "
              f"in {display_url(storage_url)} (study {name!r}); run the same command again to "
              "resume.")  # fmt: skip
        raise click.exceptions.Exit(143 if terminated else 130) from None
    finally:
        progress.finish()
    _print_result(run.study, rec, storage_url, as_json)


def _prescreen(off: bool, space: bool) -> bool | str:
    if off and space:
        raise ConfigError("--no-prescreen and --prescreen-space contradict each other; "
                          "give one of them.")  # fmt: skip
    return "space" if space else not off


def _tuple(names: str | None) -> tuple[str, ...] | None:
    listed = _names(names)
    return None if listed is None else tuple(listed)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds exactly as Ctrl+C does."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Handle SIGTERM (systemd, Kubernetes, batch schedulers) like Ctrl+C while searching.

    Optuna then fails the running trial instead of leaving it RUNNING, and the same command
    resumes. Only the main thread can install signal handlers (CliRunner tests run there too).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signum}")

    before = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


NO_RECOMMENDATION = 3  # exit status: the search ran, but no configuration trained on every seed


class _DropAfterInterrupt(logging.Filter):
    """Optuna logs the trial that Ctrl+C stopped as failed, with a traceback; the CLI says what
    happened in one line instead."""

    interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.interrupted = True
        return not self.interrupted


@contextlib.contextmanager
def _quiet_interrupt() -> Iterator[None]:
    logger = logging.getLogger("optuna.study._optimize")
    drop = _DropAfterInterrupt()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


@main.command()
@storage_option
@click.option("--study-name", default=None, metavar="NAME",
              help="The study to print [default: list the studies].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@click.option("--explain", is_flag=True,
              help="Say why the winner won and why the stopped configs were stopped.")
@_user_errors
def show(storage: str | None, study_name: str | None, as_json: bool, explain: bool) -> None:
    """List the stored studies, or print one study's recommendation. Never retrains.

    \b
    Examples:
      autoinit show
      autoinit show --study-name breast_cancer-8x64 --json
      autoinit show --study-name breast_cancer-8x64 --explain
    """
    from autoinit.study import DEFAULT_STORAGE, load_study, open_storage, study_names

    storage_url = storage or DEFAULT_STORAGE
    opened = open_storage(storage_url, create=False)
    if study_name is None:
        listing = []
        for name in study_names(opened):
            study = optuna.load_study(study_name=name, storage=opened)
            complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            listing.append({
                "study_name": name, "trials": records.trial_counts(study).finished,
                "best_value": min((records.loss_of(t) for t in complete), default=None),
                "task": study.user_attrs.get(records.STUDY_TASK),
            })  # fmt: skip
        if as_json:
            click.echo(json.dumps(listing, indent=2))
        elif not listing:
            click.echo(
                f"no study in {display_url(storage_url)} yet; run `autoinit search --data FILE`."
            )
        else:
            for item in listing:
                best = "-" if item["best_value"] is None else f"{item['best_value']:.4g}"
                click.echo(f"{item['study_name']}  {item['trials']} trials  best val loss {best}"
                           f"  {item['task'] or ''}".rstrip())  # fmt: skip
        return
    study = load_study(opened, study_name)
    rec = Recommendation.from_study(study)
    if as_json:
        result = _result_json(study, rec, storage_url)
        if explain:
            result["explanation"] = rec.explain()
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(_result_text(study, rec, storage_url).lstrip("\n"))
        if explain:
            click.echo("\n" + rec.explain())


@main.command(name="list")
def list_space() -> None:
    """Show the search space: initializers (formulas, aliases) and activations (gains).

    \b
    Example:
      autoinit list
      autoinit search --data FILE --inits he_normal,xavier_uniform --activations relu,tanh
    """
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
              help="Where to write it [default: studies/<study>.html].")
@_user_errors
def report(storage: str | None, study_name: str | None, output: str | None) -> None:
    """Write a self-contained HTML report of a study (works offline).

    \b
    Example:
      autoinit report --study-name breast_cancer-8x64 --output report.html
    """
    from autoinit.report import write_report
    from autoinit.study import load_study, open_storage

    study = load_study(open_storage(storage, create=False), study_name)
    try:
        path = write_report(study, output)
    except OSError as error:
        where = error.filename or output
        raise UserError(f"cannot write the report to {where}: {error.strerror or error}.") from None
    click.echo(f"report written to {path}")


@main.command()
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 shows the studies to the network).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@_user_errors
def dashboard(storage: str | None, host: str, port: int) -> None:
    """Review the studies in optuna-dashboard (pip install 'autoinit[dashboard]').

    \b
    Example:
      autoinit dashboard --port 8081
    """
    from autoinit.dashboard import MISSING, available, run_dashboard
    from autoinit.study import DEFAULT_STORAGE, open_storage

    if not available():
        raise UserError(MISSING)
    storage_url = storage or DEFAULT_STORAGE
    open_storage(storage_url, create=False)  # a bad URL or a missing file fails here, in one line
    try:
        run_dashboard(storage_url, host=host, port=port)  # prints where it listens; Ctrl+C stops
    except OSError as error:  # the port is taken, or the host cannot be bound
        raise UserError(
            f"cannot serve on {host}:{port}: {error.strerror or error}; choose another --port."
        ) from None

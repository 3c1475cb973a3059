"""What the benchmarks share: timing, memory, data, a plain PyTorch loop, fixed-config searches."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import operator
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from autoinit import records
from autoinit import study as studies
from autoinit._search import search
from autoinit.space import Config

SEED = 0
MB = 2**20
OPS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq}


class Seconds(float):
    """Wall-clock seconds, with the CPU seconds of this process and its finished child processes
    over the same span as ``.cpu``.

    CPU time is what other programs on a shared machine disturb least.
    """

    cpu: float

    def __new__(cls, wall: float, cpu: float) -> "Seconds":
        seconds = super().__new__(cls, wall)
        seconds.cpu = cpu
        return seconds


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, Seconds]:
    """``fn``'s result and how long it took."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    result = fn(*args, **kwargs)
    return result, Seconds(time.perf_counter() - wall, _cpu_seconds() - cpu)


def _cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def target(figure: str, value: Any, op: str, bound: Any) -> dict[str, Any]:
    """A target row: the figure, its value, the bound (e.g. ``"<= 1.05"``), whether it is met."""
    met = value is not None and bool(OPS[op](value, bound))
    shown = f"{bound:.3g}" if isinstance(bound, float) else bound
    return {"figure": figure, "value": value, "target": f"{op} {shown}", "met": met}


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far.

    On Linux, ``VmHWM``: ``ru_maxrss`` would start a spawned process at its parent's size,
    which it inherits through fork and exec. Elsewhere ``ru_maxrss`` (bytes on macOS).
    """
    status = Path("/proc/self/status")
    if status.exists():
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a new (spawned) Python process, so that its peak memory is its own.

    ``fn`` must be a module-level function.
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# --- data -------------------------------------------------------------------------------------


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (1797 samples, 64 features, 10 classes, bundled), scaled X/16."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return torch.tensor(bunch.data / 16.0, dtype=torch.float32), torch.tensor(bunch.target)


def blobs(
    rows: int, features: int = 50, classes: int = 3, *, seed: int = SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping Gaussian blobs, float32; built in blocks so that the peak is the data itself."""
    generator = torch.Generator().manual_seed(seed)
    centers = 0.5 * torch.randn(classes, features, generator=generator)
    y = torch.randint(0, classes, (rows,), generator=generator)
    x = torch.randn(rows, features, generator=generator)
    for start in range(0, rows, 1 << 16):
        x[start : start + (1 << 16)] += centers[y[start : start + (1 << 16)]]
    return x, y


# --- a plain PyTorch loop -----------------------------------------------------------------------


@dataclasses.dataclass
class PlainResult:
    value: float  # final validation loss
    accuracy: float
    curve: list[tuple[int, float]]  # (step, validation accuracy) every ``eval_every`` steps


def plain_train(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int,
    seed: int = SEED,
    batch_size: int = 64,
    lr: float = 1e-3,
    eval_every: int | None = None,
) -> PlainResult:
    """A hand-written loop: Adam, cross-entropy, shuffled mini-batches, validation every epoch.

    It draws batches as ``autoinit.train.run`` does (one generator seeded with ``seed``, one
    permutation per epoch) and steps the same Adam (``train.make_optimizer``: fused where PyTorch
    has a kernel, a speed that is not autoinit's own overhead), so the same model, data and seed
    give the same numbers.
    """
    from autoinit.train import Budget, make_optimizer

    x, y = train
    optimizer = make_optimizer(Budget(epochs=epochs, lr=lr), model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(seed)
    curve: list[tuple[int, float]] = []
    step = 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=shuffle)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            loss = loss_fn(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if eval_every and step % eval_every == 0:
                curve.append((step, _evaluate(model, val, loss_fn)[1]))
        value, accuracy = _evaluate(model, val, loss_fn)
    return PlainResult(value, accuracy, curve)


def _evaluate(model: nn.Module, val: tuple[torch.Tensor, ...], loss_fn) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        output = model(val[0])
        value = float(loss_fn(output, val[1]))
        accuracy = int((output.argmax(dim=-1) == val[1]).sum()) / len(val[1])
    model.train()
    return value, accuracy


# --- autoinit's search over fixed configs --------------------------------------------------------


def params_of(config: Config) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if v is not None}


class TrialClock:
    """An Optuna callback that notes when each trial ends."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.ends.append(time.perf_counter())

    def intervals(self) -> list[float]:
        """Seconds between consecutive trial ends (the first trial's setup is left out)."""
        return [b - a for a, b in zip(self.ends, self.ends[1:])]


@dataclasses.dataclass
class SearchRun:
    study: optuna.Study
    seconds: Seconds  # the search() call
    clock: TrialClock

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=studies.COUNTED_STATES)

    def train_seconds(self) -> list[float]:
        return [t.user_attrs.get(records.TRAIN_SECONDS, 0.0) for t in self.trials()]

    def storage_ms(self) -> list[float]:
        """Per trial: its wall time minus its training time (storage, sampler, model build)."""
        trained = self.train_seconds()[1:]
        return [1000 * (wall - t) for wall, t in zip(self.clock.intervals(), trained)]


def search_configs(
    configs: Sequence[Config],
    model_fn: Callable,
    data: Any,
    *,
    storage: str | optuna.storages.BaseStorage,
    study_name: str = "benchmark",
    **options: Any,
) -> SearchRun:
    """Run exactly ``configs``, in order, through autoinit's :func:`search` and time the call.

    The configs are enqueued on a study created beforehand, so the sampler never chooses (and
    every run of the same configs does the same work); the search's own baselines are queued
    after them and never run. ``options`` go to :func:`search`.
    """
    owner = studies.open_storage(storage)
    queue = optuna.create_study(storage=owner, study_name=study_name, direction="minimize")
    for config in configs:
        queue.enqueue_trial(params_of(config))
    if owner is not storage:
        owner.engine.dispose()  # search opens its own connections
    options.setdefault("inits", tuple(dict.fromkeys(c.init for c in configs)))
    options.setdefault("activations", tuple(dict.fromkeys(c.activation for c in configs)))
    clock = TrialClock()
    study, seconds = timed(
        search, model_fn, data, storage=storage, study_name=study_name, n_trials=len(configs),
        seed=SEED, callbacks=[clock], **options,
    )  # fmt: skip
    return SearchRun(study, seconds, clock)

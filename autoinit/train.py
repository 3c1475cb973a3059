"""The short training run of one trial: data in memory, a plain loop, the guard, evaluation.

In-memory data (a ``TensorDataset`` loader or a tuple of tensors) is batched by slicing a shuffled
index on the device, not by per-sample collation (measured 2x faster on tabular data). Any other
``DataLoader`` is iterated as the user built it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, Union

import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset, random_split

from autoinit import records
from autoinit.errors import ConfigError, DataError
from autoinit.monitor import DivergenceGuard, SignalProbe, raise_diverged

DataLike = Union[DataLoader, tuple, list, TensorDataset]
Batch = tuple[torch.Tensor, torch.Tensor]
TASKS = ("classification", "regression")
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
LOSS_BOUND_FACTOR = 100.0  # a classifier's loss starts near ln(classes); 100x that is divergence


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long one trial trains, and how.

    ``epochs`` and ``max_steps`` both stop training when set (whichever comes first);
    ``time_limit`` (seconds) stops a trial early without pruning it.
    """

    epochs: int | None = 10
    max_steps: int | None = None
    time_limit: float | None = None
    batch_size: int | None = None
    optimizer: str = "adam"
    lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.epochs is None and self.max_steps is None and self.time_limit is None:
            raise ConfigError("the budget is unbounded: give epochs, max_steps or a time limit.")
        for name in ("epochs", "max_steps", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer but got {value!r}.")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ConfigError(f"time_limit must be positive but got {self.time_limit!r}.")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}."
            )
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive but got {self.lr!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainingData:
    """Train and validation data ready for the loop, with its task and loss."""

    task: str
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batch_size: int
    device: torch.device
    train: tuple[torch.Tensor, torch.Tensor] | None = None  # in memory, on the device
    val: tuple[torch.Tensor, torch.Tensor] | None = None
    train_loader: DataLoader | None = None  # otherwise, the user's loaders
    val_loader: DataLoader | None = None

    @property
    def in_memory(self) -> bool:
        return self.train is not None

    @property
    def steps_per_epoch(self) -> int:
        if self.in_memory:
            return math.ceil(len(self.train[0]) / self.batch_size)
        return len(self.train_loader)

    def train_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        if not self.in_memory:
            yield from (self._to_device(b) for b in self.train_loader)
            return
        x, y = self.train
        order = torch.randperm(len(x), generator=generator).to(self.device)
        for start in range(0, len(x), self.batch_size):
            index = order[start : start + self.batch_size]
            yield x[index], y[index]

    def val_batches(self) -> Iterator[Batch]:
        if not self.in_memory:
            yield from (self._to_device(b) for b in self.val_loader)
            return
        x, y = self.val
        step = max(self.batch_size, 4096)
        for start in range(0, len(x), step):
            yield x[start : start + step], y[start : start + step]

    def _to_device(self, batch: Any) -> Batch:
        x, y = _as_pair(batch)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def describe(self) -> str:
        source = "in memory" if self.in_memory else "DataLoader"
        n_train = len(self.train[0]) if self.in_memory else len(self.train_loader.dataset)
        return f"{n_train} training samples ({source}), {self.task}, batch {self.batch_size}"


def _as_pair(batch: Any) -> Batch:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise DataError(
        f"each batch must be an (inputs, targets) pair but got a {type(batch).__name__}"
        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        + "; wrap your dataset so that it yields (x, y)."
    )


def _tensors_of(data: DataLike) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (x, y) tensors behind ``data`` when it lives in memory, else None."""
    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, Subset) and isinstance(data.dataset, TensorDataset):
        index = torch.as_tensor(data.indices)
        return tuple(t[index] for t in data.dataset.tensors)[:2]  # type: ignore[return-value]
    if isinstance(data, TensorDataset):
        data = data.tensors
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
        isinstance(t, torch.Tensor) for t in data
    ):
        if len(data[0]) != len(data[1]):
            raise DataError(
                f"inputs and targets differ in length: {len(data[0])} vs {len(data[1])}."
            )
        return data[0], data[1]
    return None


def infer_task(targets: torch.Tensor) -> str:
    """Integer or bool targets mean classification; floating targets mean regression."""
    if targets.is_complex():
        raise DataError(f"cannot infer the task from targets of dtype {targets.dtype}; pass task=.")
    return "regression" if targets.is_floating_point() else "classification"


def default_loss(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()


def prepare_data(
    train: DataLike,
    val: DataLike | None = None,
    *,
    task: str | None = None,
    loss_fn: Callable | None = None,
    batch_size: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> TrainingData:
    """Turn the user's data into :class:`TrainingData`, moving in-memory tensors once.

    Without ``val``, a ``val_fraction`` of the training data is split off with a generator seeded
    by ``seed``, so every trial of a study sees the same split.
    """
    if task is not None and task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)} but got {task!r}.")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1) but got {val_fraction!r}.")
    device = torch.device(device)
    batch_size = batch_size or getattr(train, "batch_size", None) or 64
    train_tensors = _tensors_of(train)
    val_tensors = _tensors_of(val) if val is not None else None
    split = torch.Generator().manual_seed(seed)

    if train_tensors is not None and (val is None or val_tensors is not None):
        x, y = train_tensors
        if len(x) < 2:
            raise DataError(f"the training data has {len(x)} samples; at least 2 are needed.")
        if val_tensors is None:
            order = torch.randperm(len(x), generator=split)
            n_val = max(1, int(round(len(x) * val_fraction)))
            val_tensors = (x[order[:n_val]], y[order[:n_val]])
            x, y = x[order[n_val:]], y[order[n_val:]]
        task = task or infer_task(y)
        return TrainingData(
            task, loss_fn or default_loss(task), batch_size, device,
            train=_to(x, y, device), val=_to(*val_tensors, device),
        )  # fmt: skip

    train_loader = train if isinstance(train, DataLoader) else DataLoader(train, batch_size)
    if val is None:
        n_val = max(1, int(round(len(train_loader.dataset) * val_fraction)))
        parts = random_split(
            train_loader.dataset, [len(train_loader.dataset) - n_val, n_val], generator=split
        )
        train_loader = DataLoader(parts[0], batch_size, shuffle=True, generator=split)
        val_loader = DataLoader(parts[1], batch_size)
    else:
        val_loader = val if isinstance(val, DataLoader) else DataLoader(val, batch_size)
    _, first_targets = _as_pair(next(iter(val_loader)))
    task = task or infer_task(first_targets)
    return TrainingData(
        task, loss_fn or default_loss(task), batch_size, device,
        train_loader=train_loader, val_loader=val_loader,
    )  # fmt: skip


def _to(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
    return x.to(device), y.to(device)


@dataclasses.dataclass
class RunResult:
    """What one training run measured."""

    value: float  # final validation loss
    metric: float  # accuracy or R²
    metric_name: str
    steps: int
    seconds: float
    losses: list[float]  # every step
    grad_steps: list[int]  # the steps whose gradient norm was measured
    grad_norms: list[float]
    probe: dict[str, list]

    def telemetry(self) -> dict[str, Any]:
        """The per-trial user_attrs (curves downsampled, JSON-safe)."""
        keep = records.downsample(self.grad_steps)
        steps = [self.grad_steps[i] for i in keep]
        return {
            records.STEPS: self.steps,
            records.TRAIN_SECONDS: round(self.seconds, 4),
            records.METRIC_NAME: self.metric_name,
            records.METRIC: records.finite_or_none(self.metric),
            records.CURVE_STEPS: steps,
            records.LOSS_CURVE: [records.finite_or_none(self.losses[s]) for s in steps],
            records.GRAD_NORM_CURVE: [records.finite_or_none(self.grad_norms[i]) for i in keep],
            records.PROBE: self.probe,
        }


def _outputs_for(task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Let a regression model output (n, 1) for targets of shape (n,) and vice versa."""
    if task == "regression" and output.shape != target.shape and output.numel() == target.numel():
        return output.view_as(target)
    return output


def evaluate(model: nn.Module, data: TrainingData) -> tuple[float, float]:
    """Mean validation loss and the metric: accuracy, or R² for regression."""
    model.eval()
    total_loss, count, correct = 0.0, 0, 0
    targets, predictions = [], []
    with torch.no_grad():
        for x, y in data.val_batches():
            output = _outputs_for(data.task, model(x), y)
            total_loss += float(data.loss_fn(output, y)) * len(y)
            count += len(y)
            if data.task == "classification":
                correct += int((output.argmax(dim=-1) == y).sum())
            else:
                targets.append(y.float().flatten())
                predictions.append(output.float().flatten())
    model.train()
    if count == 0:
        raise DataError("the validation data is empty; give more samples or a val_loader.")
    if data.task == "classification":
        return total_loss / count, correct / count
    y, p = torch.cat(targets), torch.cat(predictions)
    spread = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - p) ** 2).sum()) / spread if spread > 0 else float("nan")
    return total_loss / count, r2


def run(
    model: nn.Module,
    data: TrainingData,
    budget: Budget,
    *,
    seed: int = 0,
    guard: DivergenceGuard | None = None,
    trial: optuna.Trial | None = None,
) -> RunResult:
    """Train ``model`` for ``budget``, checking ``guard`` every step and reporting to ``trial``.

    Validation runs after every epoch (and at the last step); each result is reported to the
    trial, whose pruner may stop the run. Raises ``optuna.TrialPruned`` (``Diverged`` for the
    guard) when stopped.
    """
    guard = guard or DivergenceGuard(trial=trial)
    probe = SignalProbe(model)
    start = time.perf_counter()
    state = {"step": 0, "value": math.nan, "metric": math.nan, "probe": {}}
    try:
        _loop(model, data, budget, seed, guard, trial, probe, state)
    except optuna.TrialPruned as stopped:
        stopped.partial = _result(data, guard, state, time.perf_counter() - start)
        raise
    finally:
        probe.remove()
    return _result(data, guard, state, time.perf_counter() - start)


def _result(data: TrainingData, guard: DivergenceGuard, state: dict, seconds: float) -> RunResult:
    metric_name = "accuracy" if data.task == "classification" else "r2"
    return RunResult(
        state["value"], state["metric"], metric_name, state["step"], seconds,
        guard.losses, guard.grad_steps, guard.grad_norms, state["probe"],
    )  # fmt: skip


def _loop(model, data, budget, seed, guard, trial, probe, state) -> None:
    """The loop itself; progress goes into ``state`` so a stopped run still has its telemetry."""
    optimizer = OPTIMIZERS[budget.optimizer](model.parameters(), lr=budget.lr)
    shuffle = torch.Generator().manual_seed(seed)
    max_steps = budget.max_steps or math.inf
    epochs = budget.epochs or math.inf
    deadline = time.perf_counter() + (budget.time_limit or math.inf)
    named_params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    step, epoch = 0, 0
    model.train()
    while epoch < epochs and step < max_steps and time.perf_counter() < deadline:
        for x, y in data.train_batches(shuffle):
            output = _outputs_for(data.task, model(x), y)
            if step == 0:
                state["probe"] = probe.remove()
                if guard.max_loss is None and data.task == "classification" and output.dim() > 1:
                    guard.max_loss = LOSS_BOUND_FACTOR * math.log(max(output.shape[-1], 2))
            loss = data.loss_fn(output, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            guard.check(loss, named_params)
            optimizer.step()
            step += 1
            state["step"] = step
            if step >= max_steps or time.perf_counter() >= deadline:
                break
        epoch += 1
        value, metric = evaluate(model, data)
        state.update(value=value, metric=metric)
        if not math.isfinite(value):
            raise_diverged("non-finite", f"non-finite validation loss at step {step}", guard.trial)
        if trial is not None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"pruned by the study's pruner at step {step}: validation loss {value:.4g}"
                )

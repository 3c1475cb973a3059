"""``train_population``: choose the engine, then train the stacked members step by step."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from autoinit.errors import ConfigError
from autoinit.monitor import PRUNER, SignalProbe, Stop
from autoinit.population._batchable import can_batch
from autoinit.population._evaluate import _evaluate_stack
from autoinit.population._guard import _Guard
from autoinit.population._limits import GuardLimits, GuardOption
from autoinit.population._results import MemberResult, OnEval
from autoinit.population._sequential import _train_sequentially
from autoinit.population._stack import _Stack
from autoinit.train import Budget, TrainingData, make_optimizer

ENGINES = ("auto", "bmm", "vmap", "sequential")


def train_population(
    models: Sequence[nn.Module],
    data: TrainingData,
    budget: Budget,
    *,
    seeds: int | Sequence[int] = 0,
    guard: GuardOption = True,
    on_eval: OnEval | None = None,
    engine: str = "auto",
) -> list[MemberResult]:
    """Train ``models`` (same structure, on ``data.device``) together; one result per member.

    Args:
        models: the members, trained in place: each ends with its trained weights, or with the
            weights it had when it was stopped.
        data, budget: as for :func:`autoinit.train.fit`.
        seeds: the shuffle seed: one for all (every member sees the same batches), or one per
            member (each draws the order ``train.fit`` would draw with its seed).
        guard: a :class:`GuardLimits`, or the search's guard option (``True``: the default rules;
            a dict of options; a list of rules); ``False`` or ``None``: only non-finite values
            stop. Rules that cannot be judged in batch (see :meth:`GuardLimits.from_option`)
            make the members train one by one, with one warning.
        on_eval: ``on_eval(member, step, value, metric)`` after each evaluation of each member
            still training; returning True stops that member (kind ``"pruner"``). See
            :func:`trial_reporter` to report to Optuna trials. (In the sequential fallback,
            ``metric`` is ``nan``: ``train.fit`` reports the loss only.)
        engine: ``"auto"`` (``bmm`` or ``vmap`` when :func:`can_batch` says so, else
            ``sequential`` with one warning), or one of them forced (``bmm``/``vmap`` raise
            ``ConfigError`` when the members cannot batch).

    Returns:
        A :class:`MemberResult` per member, in order; ``result.stop`` says why a member stopped
        (``result.raise_if_stopped()`` raises what ``train.run`` would have).
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}.")
    models = list(models)
    if isinstance(seeds, int):
        seeds = [seeds] * len(models)
    seeds = [int(s) for s in seeds]
    if len(seeds) != len(models):
        raise ConfigError(f"seeds must be one int or one per member ({len(models)}) but got "
                          f"{len(seeds)} seeds.")  # fmt: skip
    limits = GuardLimits.from_option(guard)
    if not models:
        return []
    if engine != "sequential":
        verdict = _batchable(models, data) if limits is not None else (
            False, "the guard's rules cannot be judged in batch"
        )  # fmt: skip
        if verdict[0] and engine in ("auto", verdict[1]):
            engine = verdict[1]
        elif verdict[0] and engine == "vmap":
            pass  # vmap also runs what bmm runs
        elif verdict[0]:
            raise ConfigError(f"engine 'bmm' needs a Sequential of Linear layers and activations; "
                              f"{type(models[0]).__name__} can use 'vmap'.")  # fmt: skip
        elif engine == "auto":
            warnings.warn(
                f"the {len(models)} members train one after another, not batched: {verdict[1]}.",
                stacklevel=2,
            )
            engine = "sequential"
        else:
            raise ConfigError(f"engine {engine!r} cannot train these members: {verdict[1]}.")
    if engine == "sequential" or limits is None:  # no limits: the engine is sequential by now
        return _train_sequentially(models, data, budget, seeds, guard, on_eval)
    return _Population(models, data, budget, seeds, limits, on_eval, engine).train()


def _batchable(models: list[nn.Module], data: TrainingData) -> tuple[bool, str]:
    # A validation batch: drawing a training batch would advance a shuffling loader.
    x, y = next(data.val_batches())
    sample = (x[: data.batch_size], y[: data.batch_size])
    return can_batch(models, sample, loss_fn=data.loss_fn, task=data.task)


class _Population:
    """One batched training run; progress is kept per member so a stopped one has its record."""

    def __init__(
        self,
        models: list[nn.Module],
        data: TrainingData,
        budget: Budget,
        seeds: list[int],
        limits: GuardLimits,
        on_eval: OnEval | None,
        engine: str,
    ) -> None:
        self.models, self.data, self.budget, self.on_eval = models, data, budget, on_eval
        self.seeds, self.engine, self.limits = seeds, engine, limits
        self.size = len(models)
        self.device = data.device
        self.stack = _Stack(models, engine)
        self.guard = _Guard(limits, self.size, self.device)
        self.alive = list(range(self.size))  # original indices of the rows of the stack
        self.loss_log: list[tuple[list[int], torch.Tensor]] = []  # (alive, losses) every step
        self.norm_log: list[tuple[int, list[int], torch.Tensor]] = []  # (step, alive, norms)
        self.value = [math.nan] * self.size
        self.metric = [math.nan] * self.size
        self.steps = [0] * self.size
        self.stops: dict[int, Stop] = {}
        self.seconds = [0.0] * self.size
        self.probes: list[dict] = [{} for _ in range(self.size)]
        self.clock = time.perf_counter()
        self.optimizer: torch.optim.Optimizer  # made in train(), remade when members leave
        self.orders: torch.Tensor | None = None  # per-member batch orders, when not shared

    # -- bookkeeping --

    def _charge_time(self) -> None:
        """Split the time since the last charge among the members training."""
        now = time.perf_counter()
        share = (now - self.clock) / max(len(self.alive), 1)
        for index in self.alive:
            self.seconds[index] += share
        self.clock = now

    def _drop(self, stops: dict[int, Stop], step: int) -> None:
        """Record why the rows in ``stops`` stopped, save their weights and remove them."""
        self._charge_time()
        for row, stop in stops.items():
            index = self.alive[row]
            self.stops[index] = stop
            self.steps[index] = step
            self.stack.write_back(row, self.models[index])
        keep = [row for row in range(len(self.alive)) if row not in stops]
        self.alive = [self.alive[row] for row in keep]
        if self.alive:
            rows = torch.tensor(keep, device=self.device)
            self.optimizer = self.stack.keep(rows, self.optimizer)
            self.guard.keep(rows)
            if self.orders is not None:
                self.orders = self.orders[rows]

    # -- the loop --

    def train(self) -> list[MemberResult]:
        budget, data = self.budget, self.data
        self.optimizer = make_optimizer(budget, [p for _, p in self.stack.trainable()])
        shared = len(set(self.seeds)) == 1 or not data.in_memory
        generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.orders = None
        max_steps = budget.max_steps or math.inf
        epochs = budget.epochs or math.inf
        deadline = time.perf_counter() + (budget.time_limit or math.inf)
        step, epoch = 0, 0
        self.stack.set_training(True)
        for model in self.models:
            model.train()
        while self.alive and epoch < epochs and step < max_steps and time.perf_counter() < deadline:
            batches: Iterator[tuple[torch.Tensor, torch.Tensor, bool]]
            if shared:
                batches = ((x, y, True) for x, y in data.train_batches(generators[0]))
            else:
                batches = self._member_batches(generators)
            for x, y, is_shared in batches:
                if step == 0:
                    self._probe(x, is_shared)
                output, loss = self.stack.forward(x, y, data.loss_fn, data.task, shared=is_shared)
                if step == 0:  # a classifier's number of outputs sets the loss bound
                    classification = data.task == "classification" and output.dim() > 2
                    self.guard.start(output.shape[-1] if classification else None)
                self.optimizer.zero_grad(set_to_none=True)
                loss.sum().backward()
                named_grads = [(n, p.grad) for n, p in self.stack.trainable() if p.grad is not None]
                code, stats = self.guard.check(step, loss, named_grads)
                self.loss_log.append((self.alive, stats["loss"]))
                if "total" in stats:
                    self.norm_log.append((step, self.alive, stats["total"]))
                if code is not None:
                    rows = torch.nonzero(code >= 0).flatten().tolist()
                    self._drop({r: self.guard.stop(step, r, int(code[r]), stats) for r in rows},
                               step)  # fmt: skip
                    if not self.alive:
                        break
                self.optimizer.step()
                step += 1
                if step >= max_steps or time.perf_counter() >= deadline:
                    break
            if not self.alive:
                break
            epoch += 1
            self._evaluate(step)
        self._charge_time()
        for row, index in enumerate(self.alive):
            self.steps[index] = step
            self.stack.write_back(row, self.models[index])
        return self._results()

    def _member_batches(
        self, generators: list[torch.Generator]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
        """Each member's own shuffled order, as ``train.fit`` draws it with the member's seed."""
        assert self.data.train is not None  # called only for in-memory data (not shared)
        x, y = self.data.train
        n, size = len(x), self.data.batch_size
        orders = torch.stack([torch.randperm(n, generator=g) for g in generators])
        self.orders = orders.to(self.device)[torch.tensor(self.alive)]
        for start in range(0, n, size):
            index = self.orders[:, start : start + size]
            yield x[index], y[index], False

    def _probe(self, x: torch.Tensor, shared: bool) -> None:
        """Each member's step-0 signal probe, from its own forward pass on its first batch."""
        for row, index in enumerate(self.alive):
            model = self.models[index]
            probe = SignalProbe(model)
            try:
                with torch.no_grad():
                    model(x if shared else x[row])
            finally:
                self.probes[index] = probe.remove()

    def _evaluate(self, step: int) -> None:
        values, metrics = _evaluate_stack(self.stack, self.data)
        stops = {}
        for row, index in enumerate(self.alive):
            value, metric = float(values[row]), float(metrics[row])
            self.value[index], self.metric[index] = value, metric
            if not math.isfinite(value):
                stops[row] = Stop("non-finite", f"non-finite validation loss at step {step}")
            elif self.on_eval is not None and self.on_eval(index, step, value, metric):
                stops[row] = Stop(PRUNER, f"pruned by the study's pruner at step {step}: "
                                          f"validation loss {value:.4g}")  # fmt: skip
        if stops:
            self._drop(stops, step)

    def _results(self) -> list[MemberResult]:
        losses: list[list[float]] = [[] for _ in range(self.size)]
        for alive, values in _segments(self.loss_log):
            for index, column in zip(alive, values):
                losses[index].extend(column)
        grad_steps: list[list[int]] = [[] for _ in range(self.size)]
        grad_norms: list[list[float]] = [[] for _ in range(self.size)]
        for step, alive, norms in self.norm_log:
            for index, norm in zip(alive, norms.tolist()):
                grad_steps[index].append(step)
                grad_norms[index].append(norm)
        return [
            MemberResult(
                self.value[i], self.metric[i], self.data.metric_name, self.steps[i],
                self.seconds[i], losses[i], grad_steps[i], grad_norms[i], self.probes[i],
                self.stops.get(i), index=i, engine=self.engine,
            )
            for i in range(self.size)
        ]  # fmt: skip


def _segments(log: list[tuple[list[int], torch.Tensor]]) -> Iterator[tuple[list[int], list]]:
    """Runs of steps with the same live members: (members, one list of values per member)."""
    start = 0
    while start < len(log):
        alive = log[start][0]
        end = start
        while end < len(log) and log[end][0] is alive:
            end += 1
        yield alive, torch.stack([v for _, v in log[start:end]], dim=1).tolist()
        start = end

"""``probe()``: every config of the space at step 0, as a table with one row per config."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from autoinit._apply import ModelFn, build
from autoinit._probe._rules import ProbeRule, screen
from autoinit._probe._stats import ProbeStats, measure
from autoinit.monitor import Stop
from autoinit.space import LEAKY_SLOPE_RANGE, Config, resolve_space
from autoinit.train import DataLike, TrainingData, prepare_data

PROBE_SLOPES = (0.01, 0.1, 0.3)  # Leaky ReLU's slope is probed on this grid
Batch = tuple[torch.Tensor, torch.Tensor]


def probe_space(
    inits: Sequence[str] | None = None,
    activations: Sequence[str] | None = None,
    *,
    slopes: Sequence[float] = PROBE_SLOPES,
) -> list[Config]:
    """Every init x activation of the space, with Leaky ReLU once per slope of ``slopes``."""
    init_names, act_names = resolve_space(inits, activations)
    low, high = LEAKY_SLOPE_RANGE
    grid = [s for s in slopes if low <= s <= high] or [0.01]
    configs = []
    for init, act in itertools.product(init_names, act_names):
        for slope in grid if act == "leaky_relu" else [None]:
            configs.append(Config(init, act, slope))
    return configs


def health_score(stats: ProbeStats) -> float:
    """How far a config's step-0 signal is from healthy; lower is better (0: perfect).

    The distance, in decades, of the output std ratio and of the gradient ratio from 1, plus
    the worst dead or saturated fraction. Non-finite or unmeasurable probes score ``inf``.
    """
    signal, gradient = stats.signal_log10, stats.gradient_log10
    if stats.nonfinite or signal is None or gradient is None:
        return math.inf
    return abs(signal) + abs(gradient) + stats.worst_dead_or_saturated


@dataclasses.dataclass(frozen=True)
class ProbeRow:
    """One config's probe: its statistics, the pre-screen's verdict and its health score."""

    config: Config
    stats: ProbeStats
    verdict: Stop | None

    @property
    def collapsed(self) -> bool:
        """Whether the pre-screen rules stop this config before training."""
        return self.verdict is not None

    @property
    def score(self) -> float:
        """:func:`health_score`; ``inf`` for a collapsed config."""
        return math.inf if self.collapsed else health_score(self.stats)

    @property
    def signal_log10(self) -> float | None:
        return self.stats.signal_log10

    @property
    def gradient_log10(self) -> float | None:
        return self.stats.gradient_log10

    @property
    def worst_dead_or_saturated(self) -> float:
        return self.stats.worst_dead_or_saturated

    def record(self) -> dict[str, Any]:
        """The JSON-safe record stored on a trial as ``probe``: the statistics and verdict."""
        return probe_record(self.stats, self.verdict)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "label": self.config.label, **self.record()}


def probe_record(stats: ProbeStats, verdict: Stop | None) -> dict[str, Any]:
    """``stats.to_dict()`` with the verdict: ``cause`` (a kind) and ``verdict`` (its sentence)."""
    return {
        **stats.to_dict(),
        "cause": verdict.kind if verdict else None,
        "verdict": verdict.reason if verdict else None,
    }


class ProbeTable(Sequence[ProbeRow]):
    """The probe of many configs: one :class:`ProbeRow` per config, in the order probed.

    ``print(table)`` shows it best-first; :meth:`best` and :attr:`collapsed` pick rows.
    """

    def __init__(self, rows: Sequence[ProbeRow]) -> None:
        self.rows = tuple(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> Any:
        return self.rows[index]

    def __iter__(self) -> Iterator[ProbeRow]:
        return iter(self.rows)

    def row(self, config: Config) -> ProbeRow:
        """The row of ``config`` (a KeyError names it when it was not probed)."""
        for row in self.rows:
            if row.config == config:
                return row
        raise KeyError(f"{config.label} was not probed")

    @property
    def collapsed(self) -> list[ProbeRow]:
        """The rows the pre-screen stops, in probe order."""
        return [row for row in self.rows if row.collapsed]

    @property
    def healthy(self) -> list[ProbeRow]:
        """The rows it lets through, best score first."""
        return sorted((r for r in self.rows if not r.collapsed), key=lambda r: r.score)

    def best(self, k: int) -> list[Config]:
        """The ``k`` configs with the best health score among those not pre-screened."""
        return [row.config for row in self.healthy[:k]]

    def to_dicts(self) -> list[dict[str, Any]]:
        return [row.to_dict() for row in self.rows]

    def __str__(self) -> str:
        head = ("config", "signal", "gradient", "dead/sat", "verdict")
        lines = [head]
        for row in sorted(self.rows, key=lambda r: (r.collapsed, r.score)):
            lines.append((
                row.config.label, _decades(row.signal_log10), _decades(row.gradient_log10),
                f"{row.worst_dead_or_saturated:.0%}",
                row.verdict.reason if row.verdict else f"ok (score {row.score:.2f})",
            ))  # fmt: skip
        widths = [max(len(line[i]) for line in lines) for i in range(4)]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(line[:4], widths)) + "  " + line[4]
            for line in lines
        )

    def __repr__(self) -> str:
        return f"ProbeTable({len(self.rows)} configs, {len(self.collapsed)} collapsed)"


def _decades(log10: float | None) -> str:
    if log10 is None:
        return "?"
    if math.isinf(log10):
        return "+inf" if log10 > 0 else "-inf"
    return f"1e{log10:+.1f}"


def fixed_batch(data: TrainingData, seed: int) -> Batch:
    """The one training batch every probe and data-dependent init of a search uses (CPU).

    In memory: ``batch_size`` rows of the training split drawn with ``seed``. From a
    DataLoader: the first batch of its dataset read in order (the user's loader, and the
    state of its shuffling generator, are left untouched).
    """
    if data.train is not None:
        x, y = data.train
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(x), generator=generator)[: data.batch_size].to(x.device)
        return x[index].cpu(), y[index].cpu()
    from torch.utils.data import DataLoader, IterableDataset

    from autoinit.train import _as_pair

    loader = data.train_loader
    assert loader is not None
    if isinstance(loader.dataset, IterableDataset):
        first = next(iter(loader))
    else:
        plain = DataLoader(loader.dataset, batch_size=data.batch_size, collate_fn=loader.collate_fn)
        first = next(iter(plain))
    x, y = _as_pair(first)
    return x.cpu(), y.cpu()


def probe_model(
    model: torch.nn.Module, batch: Batch, loss_fn: Callable[..., torch.Tensor]
) -> ProbeStats:
    """:func:`measure` with the batch moved to the model's device."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x, y = batch
    return measure(model, x.to(device), y.to(device), loss_fn)


def probe_configs(
    model_fn: ModelFn,
    batch: Batch,
    configs: Sequence[Config],
    loss_fn: Callable[..., torch.Tensor],
    *,
    seed: int = 0,
    rules: Sequence[ProbeRule] | None = None,
    device: torch.device | str = "cpu",
) -> ProbeTable:
    """Build each config's model as a search trial would (same seed, same batch) and probe it."""
    rows = []
    for config in configs:
        with torch.random.fork_rng(devices=[]):
            model = build(model_fn, config, seed=seed, batch=batch[0]).to(device)
        stats = probe_model(model, batch, loss_fn)
        rows.append(ProbeRow(config, stats, screen(stats, rules)))
    return ProbeTable(rows)


def probe(
    model_fn: ModelFn,
    data: DataLike,
    configs: Sequence[Config] | None = None,
    *,
    inits: Sequence[str] | None = None,
    activations: Sequence[str] | None = None,
    batch_size: int | None = None,
    task: str | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    seed: int = 0,
    rules: Sequence[ProbeRule] | None = None,
) -> ProbeTable:
    """Probe every config at step 0: one forward and one backward pass on one training batch.

    Each config's model is built as a search trial builds it (seed ``seed``; the data-dependent
    initializers get the batch), then hooks on every weight layer record its output mean and
    std, the dead and saturated fractions of the activation after it, and its weights'
    gradient RMS. Nothing is trained: a probe costs about one training step.

    Args:
        model_fn: makes a fresh model, as for :func:`autoinit.search`.
        data: the training data (a DataLoader, a TensorDataset or an ``(inputs, targets)``
            tuple); the batch is drawn from its training part as ``search`` draws it.
        configs: the configs to probe; default: the whole space (``inits`` x ``activations``,
            every name by default), with Leaky ReLU at the slopes of :data:`PROBE_SLOPES`.
        batch_size, task, loss_fn, seed: as for :func:`autoinit.search`.
        rules: the pre-screen's rules (default :func:`default_probe_rules`).

    Returns:
        A :class:`ProbeTable`: one row per config with its figures (``signal_log10``: log10 of
        the last layer's output std over the first's; ``gradient_log10``: of the first layer's
        gradient RMS over the last's; ``worst_dead_or_saturated``), the pre-screen's verdict and
        a health score. ``print(table)`` shows it best first.

    Example:
        >>> table = probe(mlp_factory(64, 10, depth=20), (x, y))     # doctest: +SKIP
        >>> print(table)
        >>> table.row(Config("normal", "relu")).verdict.reason
        "at step 0 the last layer's output std was 3e+15 times the first layer's (exploding)"
    """
    prepared = prepare_data(data, task=task, loss_fn=loss_fn, batch_size=batch_size, seed=seed)
    if configs is None:
        configs = probe_space(inits, activations)
    batch = fixed_batch(prepared, seed)
    return probe_configs(model_fn, batch, list(configs), prepared.loss_fn, seed=seed, rules=rules)


def trial_probe(
    model: torch.nn.Module, batch: Batch, loss_fn: Callable[..., torch.Tensor]
) -> tuple[dict[str, Any], Stop | None]:
    """A search trial's probe: its stored record, and a ``prescreen`` Stop if it collapses.

    A collapse that the divergence guard itself stops at step 0 (a non-finite value, symmetry,
    its loss, gradient-norm and depth bounds) is left to the guard, whose kind is the more
    precise; the Stop is for what only the probe sees (signal or gradient ratios, dead or
    saturated units).
    """
    from autoinit import records
    from autoinit._probe._rules import GuardAtStepZero, ProbeNonFinite, ProbeSymmetric
    from autoinit._probe._screen import PREFIX

    stats = probe_model(model, batch, loss_fn)
    verdict = screen(stats)
    guard_kinds = (ProbeNonFinite, ProbeSymmetric, GuardAtStepZero)
    stop = None
    if verdict is not None and not any(rule.check(stats) for rule in
                                       (kind() for kind in guard_kinds)):  # fmt: skip
        stop = Stop(records.PRESCREEN, PREFIX + verdict.reason)
    return probe_record(stats, verdict), stop

"""The live members' tensors stacked on dim 0, and the batched forward pass (``bmm``/``vmap``)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from autoinit.population._loss import _batched_loss
from autoinit.population._optim import _keep_rows
from autoinit.population._rnn import _unroll_rnns


class _CannotBatch(Exception):
    """The members cannot be stacked; the message says why."""


class _Stack:
    """The live members' parameters and buffers stacked on dim 0, and the batched forward pass."""

    def __init__(self, models: Sequence[nn.Module], engine: str) -> None:
        first = models[0]
        self.engine = engine
        # The bmm engine keeps each Linear weight as (in, out) per member: its matrix product
        # needs no transposed view, whose backward cost 15% of a step (K = 12, 8 x 64 MLP).
        self.transposed = {f"{name}.weight" for name, module in first.named_children()
                           if engine == "bmm" and type(module) is nn.Linear}  # fmt: skip
        self.params = {
            name: torch.stack([self._own(name, m.get_parameter(name).detach()) for m in models])
            .requires_grad_(p.requires_grad)
            for name, p in first.named_parameters()
        }  # fmt: skip
        self.buffers = {
            name: torch.stack([m.get_buffer(name).detach() for m in models])
            for name, _ in first.named_buffers()
        }
        if engine == "bmm":  # per position, each member's module: activations may differ
            self.layers = [
                (name, _Elementwise([m.get_submodule(name) for m in models]))
                for name, _ in first.named_children()
            ]
        else:
            try:
                self.base = copy.deepcopy(first).to("meta")
            except Exception as error:  # deepcopy runs user code; any failure means "don't"
                raise _CannotBatch(f"{type(first).__name__} cannot be copied: {error}") from error
            _unroll_rnns(self.base)

    def _own(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """A member's tensor as the stack holds it (see ``transposed``); its own inverse."""
        return tensor.t() if name in self.transposed else tensor

    @property
    def size(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def set_training(self, mode: bool) -> None:
        if self.engine == "vmap":
            self.base.train(mode)

    def trainable(self) -> list[tuple[str, torch.Tensor]]:
        return [(name, p) for name, p in self.params.items() if p.requires_grad]

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: Callable,
        task: str,
        *,
        shared: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs ``(K, ...)`` and the members' losses ``(K,)``.

        ``shared``: ``x`` and ``y`` are one batch for all members, else stacked per member.
        """
        output = self.output(x, shared=shared)
        return output, _batched_loss(loss_fn, task, output, y, shared)

    def output(self, x: torch.Tensor, *, shared: bool) -> torch.Tensor:
        """Outputs ``(K, ...)``; ``shared`` as for :meth:`forward`."""
        if self.engine == "bmm":
            return self._bmm(x, shared)
        dim = None if shared else 0
        run = vmap(self._member_output, in_dims=(0, 0, dim), randomness="different")
        return run(self.params, self.buffers, x)

    def _member_output(
        self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], inputs: Any
    ) -> Any:
        return functional_call(self.base, (params, buffers), (inputs,))

    def _bmm(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        k = self.size
        lead = x.shape[:-1] if shared else x.shape[1:-1]
        h = x.reshape(-1, x.shape[-1]) if shared else x.reshape(k, -1, x.shape[-1])
        for name, layer in self.layers:
            if type(layer.modules[0]) is nn.Linear:
                weight = self.params[f"{name}.weight"]  # (K, in, out): see ``transposed``
                if h.dim() == 2:
                    h = h.expand(k, *h.shape)
                bias = self.params.get(f"{name}.bias")
                h = (
                    torch.bmm(h, weight)
                    if bias is None
                    else torch.baddbmm(bias.unsqueeze(1), h, weight)
                )
            else:
                h = layer(h, k)
        if h.dim() == 2:
            h = h.expand(k, *h.shape)
        return h.reshape(k, *lead, h.shape[-1])

    def keep(self, rows: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Keep only ``rows`` of every stacked tensor, gradients and optimizer state included;
        return the optimizer over the new tensors."""
        size = self.size
        mapping = {}
        for name, old in list(self.params.items()):
            new = old.detach()[rows].requires_grad_(old.requires_grad)
            if old.grad is not None:
                new.grad = old.grad[rows]
            self.params[name] = new
            mapping[old] = new
        for name, old in list(self.buffers.items()):
            self.buffers[name] = old[rows]
        if self.engine == "bmm":
            kept = rows.tolist()
            self.layers = [(name, layer.keep(kept)) for name, layer in self.layers]
        return _keep_rows(optimizer, [p for _, p in self.trainable()], mapping, rows, size)

    def write_back(self, row: int, model: nn.Module) -> None:
        """Copy member ``row``'s tensors into ``model`` (its weights as they are now)."""
        with torch.no_grad():
            for name, p in self.params.items():
                model.get_parameter(name).copy_(self._own(name, p[row]))
            for name, b in self.buffers.items():
                model.get_buffer(name).copy_(b[row])


class _Elementwise:
    """One layer position of the ``bmm`` engine: each member's module, run group by group.

    Members that differ only in their activations (the confirmation's configs, a search round's
    trials) batch as well: each distinct module runs once, on the rows of the members that have
    it. The groups are worked out here, once, not at every step.
    """

    def __init__(self, modules: list[nn.Module]) -> None:
        self.modules = modules
        kinds: dict[str, list[int]] = {}
        for row, module in enumerate(modules):
            kinds.setdefault(repr(module), []).append(row)
        self.groups = [(modules[rows[0]], rows) for rows in kinds.values()]
        # Each group one run of rows (members ordered by activation): one split and one cat
        # instead of gathering and scattering rows (a round of 8 members of 4 activations: 1.3x
        # faster). A split, not a slice per group: each slice's backward zero-fills a gradient
        # the size of the whole batch (15% of a round's time at 12 members).
        self.runs = sorted(self.groups, key=lambda group: group[1][0])
        if any(rows != list(range(rows[0], rows[-1] + 1)) for _, rows in self.groups):
            self.runs = []
        self.sizes = [len(rows) for _, rows in self.runs]

    def keep(self, rows: list[int]) -> _Elementwise:
        return _Elementwise([self.modules[i] for i in rows])

    def __call__(self, h: torch.Tensor, k: int) -> torch.Tensor:
        if len(self.groups) == 1:
            return self.groups[0][0](h)
        if h.dim() == 2:  # still one shared batch: give every member its own copy first
            h = h.expand(k, *h.shape)
        if self.runs:
            parts = torch.split(h, self.sizes)
            return torch.cat([module(part) for (module, _), part in zip(self.runs, parts)])
        out = torch.empty_like(h)
        for module, rows in self.groups:
            out[rows] = module(h[rows])
        return out

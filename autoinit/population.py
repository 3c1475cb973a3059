"""Train several members of one structure as one batched model.

The members' parameters are stacked along a new leading dimension (as
``torch.func.stack_module_state`` does) and the forward pass runs once for all of them:

- ``"bmm"``: a plain ``nn.Sequential`` of ``nn.Linear`` layers and activation modules (autoinit's
  :class:`~autoinit.models.MLP`) runs as batched matrix products (``torch.baddbmm``);
- ``"vmap"``: any other model runs through ``vmap(functional_call)``, PyTorch's model-ensembling
  recipe. ``nn.RNN``/``nn.LSTM``/``nn.GRU`` are unrolled into plain tensor operations inside the
  batched model, since ``aten::gru`` and its kin have no batching rule;
- ``"sequential"``: a model that neither can batch (data-dependent control flow, ``.item()``
  in ``forward``, members of different structures, a model that sets
  ``autoinit_batchable = False``) trains member by member with :func:`autoinit.train.fit`, after
  one warning.

The loss of the group is the sum of the members' losses, so one backward pass gives each member its
own gradient; the optimizer (Adam, AdamW, SGD: all elementwise) steps the stacked tensors, so each
member keeps its own moments. The divergence guard's statistics (loss, global gradient norm, first
and last layer gradient norms) are computed for all members at once from the stacked gradients and
judged by the rules of :func:`autoinit.monitor.default_rules` with the same thresholds
(:class:`GuardLimits`); a member that the guard or the ``on_eval`` callback stops is removed from
the stacked tensors (and from the optimizer state) and the others go on. Its
:class:`~autoinit.monitor.Stop` reads as the sequential guard's would.

Batch order: with one seed, every member sees the same batches, in the order that
``train.fit(model, data, budget, seed=seed)`` draws them (search trials share the study's seed).
With one seed per member, each member draws its own order, as ``train.fit`` would with that seed;
the batches are then gathered per member. Either way the results match sequential training of the
same members within float tolerance (batched matrix products and the fused optimizer round
differently). A ``DataLoader`` that is not backed by tensors is iterated once per epoch for the
whole group.

Members must differ only in their tensors (weights, buffers): the batched model runs the first
member's modules. ``budget.time_limit`` applies to the group: every member trains the same number
of steps. Dropout draws differ from a sequential run (``vmap(randomness="different")``).

Example:
    >>> models = [build(model_fn, config, seed=s) for s in range(4)]        # doctest: +SKIP
    >>> results = train_population(models, data, Budget(epochs=5), seeds=range(4))
    >>> [r.value if r.stop is None else r.stop.kind for r in results]
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Union

import optuna
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from autoinit.activations import activation_types
from autoinit.errors import ConfigError, DataError
from autoinit.monitor import (
    LOSS_BOUND_FACTOR,
    PRUNER,
    DepthRatio,
    DivergenceGuard,
    GradNormBound,
    Growth,
    LossBound,
    NonFinite,
    Rule,
    SignalProbe,
    Stop,
    Vanishing,
)
from autoinit.train import OPTIMIZERS, Budget, RunResult, TrainingData, fit

__all__ = ["ENGINES", "GuardLimits", "MemberResult", "OnEval", "can_batch", "train_population",
           "trial_reporter"]  # fmt: skip

ENGINES = ("auto", "bmm", "vmap", "sequential")
OnEval = Callable[[int, int, float, float], bool]
"""``on_eval(member, step, value, metric) -> stop``: called after each evaluation of a member."""
GuardOption = Union["GuardLimits", bool, Mapping[str, Any], Sequence[Rule], None]


# --- options and results -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GuardLimits:
    """The divergence guard's thresholds, judged for all members at once.

    The fields and defaults are :class:`~autoinit.monitor.DivergenceGuard`'s keyword options, so
    ``GuardLimits(**options)`` takes the search's guard options. Each check, by the rule of
    :func:`~autoinit.monitor.default_rules` it reproduces, in the order they are asked:

    - ``NonFinite``: a non-finite loss (every step) or gradient norm (always on);
    - ``LossBound``: the loss above ``max_loss`` (``None``: ``100 * ln(classes)`` for a
      classifier, none for regression), every step;
    - ``GradNormBound``: the global gradient norm above ``max_grad_norm``;
    - ``DepthRatio``: at step 0, the first layer's RMS gradient over the output layer's above
      ``max_depth_ratio``;
    - ``Growth``: the norm above ``growth_factor`` times its largest value over the first
      ``reference_steps`` steps, while the loss is above its step-0 value;
    - ``Vanishing``: the first layer's gradient norm below ``vanish_floor`` for
      ``vanish_patience`` consecutive checks.

    Gradients are read every step for ``dense_steps`` steps, then every ``check_every``.
    """

    max_grad_norm: float = 1e5
    max_loss: float | None = None
    growth_factor: float = 1e3
    reference_steps: int = 3
    max_depth_ratio: float = 1e3
    vanish_floor: float = 1e-8
    vanish_patience: int = 5
    dense_steps: int = 100
    check_every: int = 25

    def __post_init__(self) -> None:
        for name, low in [("max_grad_norm", 0), ("max_depth_ratio", 1), ("growth_factor", 1)]:
            value = getattr(self, name)
            if not value > low:
                raise ConfigError(f"{name} must be greater than {low} but got {value}.")
        for name in ("reference_steps", "vanish_patience", "check_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer of at least 1 but got {value!r}.")
        if not isinstance(self.dense_steps, int) or self.dense_steps < 0:
            raise ConfigError(f"dense_steps must be an integer >= 0 but got {self.dense_steps!r}.")
        if not self.vanish_floor >= 0:
            raise ConfigError(f"vanish_floor must be at least 0 but got {self.vanish_floor}.")
        if self.max_loss is not None and math.isnan(self.max_loss):
            raise ConfigError(f"max_loss must be a number or None but got {self.max_loss}.")

    @classmethod
    def off(cls) -> GuardLimits:
        """Only non-finite values stop (the search's ``guard=False``)."""
        return cls(
            max_grad_norm=math.inf, max_loss=math.inf, growth_factor=math.inf,
            max_depth_ratio=math.inf, vanish_patience=1 << 62,
        )  # fmt: skip

    @classmethod
    def from_option(cls, option: GuardOption) -> GuardLimits | None:
        """The limits for a guard option as ``search(guard=...)`` takes it, or ``None`` when the
        option holds rules that cannot be judged in batch (the members then train one by one).

        ``True``: the defaults; ``False`` or ``None``: :meth:`off`; a dict: the options (or
        ``rules`` with ``dense_steps``, ``check_every``); a list of rules: those of
        :func:`~autoinit.monitor.default_rules` (exact classes, at most one each, in that order,
        ``NonFinite`` included), the missing ones off.
        """
        if isinstance(option, GuardLimits):
            return option
        if option is True:
            return cls()
        if option is False or option is None:
            return cls.off()
        if isinstance(option, Mapping):
            options = dict(option)
            if "rules" in options:  # DivergenceGuard(rules, dense_steps=..., check_every=...)
                limits = cls._from_rules(list(options.pop("rules")))
                if limits is None or set(options) - {"dense_steps", "check_every"}:
                    return None
                return dataclasses.replace(limits, **options)
            unknown = set(options) - {f.name for f in dataclasses.fields(cls)}
            return None if unknown else cls(**options)
        if isinstance(option, Sequence) and not isinstance(option, (str, bytes)):
            return cls._from_rules(list(option))
        raise ConfigError(
            "guard must be True, False, None, a GuardLimits, a dict of DivergenceGuard options "
            f"or a list of rules but got {option!r}."
        )

    @classmethod
    def _from_rules(cls, rules: list[Any]) -> GuardLimits | None:
        order = [NonFinite, LossBound, GradNormBound, DepthRatio, Growth, Vanishing]
        kinds = [type(rule) for rule in rules]
        if NonFinite not in kinds or not set(kinds) <= set(order) or len(set(kinds)) < len(kinds):
            return None
        if kinds != sorted(kinds, key=order.index):  # another order can give another verdict
            return None
        options = dataclasses.asdict(cls.off())
        for rule in rules:
            if isinstance(rule, LossBound):
                if rule.max_loss is not None:
                    options["max_loss"] = rule.max_loss
                elif rule.classes is not None:
                    options["max_loss"] = rule.factor * math.log(max(rule.classes, 2))
                elif rule.factor == LOSS_BOUND_FACTOR:
                    options["max_loss"] = None  # from the number of classes, at step 0
                else:
                    return None
            elif isinstance(rule, GradNormBound):
                options["max_grad_norm"] = rule.max_norm
            elif isinstance(rule, DepthRatio):
                options["max_depth_ratio"] = rule.max_ratio
            elif isinstance(rule, Growth):
                options.update(growth_factor=rule.factor, reference_steps=rule.reference_steps)
            elif isinstance(rule, Vanishing):
                options.update(vanish_floor=rule.floor, vanish_patience=rule.patience)
        return cls(**options)

    def guard(self) -> DivergenceGuard:
        """The sequential guard with the same limits (for the sequential fallback)."""
        return DivergenceGuard(**dataclasses.asdict(self))


@dataclasses.dataclass
class MemberResult(RunResult):
    """One member's :class:`~autoinit.train.RunResult` (``stop`` says why it stopped, if it did).

    ``seconds`` is the member's share of the group's wall time: each span is split evenly among
    the members that were training during it, so the shares add up to the group's time.
    """

    index: int = 0  # the member's position in ``models``
    engine: str = "vmap"  # "bmm", "vmap" or "sequential"

    @property
    def kind(self) -> str | None:
        """The stop's kind (one of ``records.PRUNE_KINDS``), or None when it ran its budget."""
        return self.stop.kind if self.stop is not None else None

    @property
    def reason(self) -> str | None:
        return self.stop.reason if self.stop is not None else None


def trial_reporter(trials: Sequence[optuna.Trial]) -> OnEval:
    """An ``on_eval`` that reports member ``i`` to ``trials[i]`` and asks its pruner."""

    def on_eval(member: int, step: int, value: float, metric: float) -> bool:
        trials[member].report(value, step)
        return trials[member].should_prune()

    return on_eval


# --- can the members batch? ----------------------------------------------------------------------


def can_batch(
    models: Sequence[nn.Module],
    sample_batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    task: str = "classification",
) -> tuple[bool, str]:
    """Whether ``models`` can train as one batched model, and which engine (or why not).

    Tries one batched forward and backward on ``sample_batch`` (inputs, or an
    ``(inputs, targets)`` pair with ``loss_fn``), then compares the first member's batched output,
    in eval mode, with its own. Nothing is changed in the models.

    Returns:
        ``(True, "bmm" | "vmap")`` or ``(False, reason)``.
    """
    try:
        _check_structure(models)
        stack = _Stack(models[:2], _choose_engine(models[0]))  # two members tell as much as all
    except _CannotBatch as refused:
        return False, str(refused)
    x, y = sample_batch if isinstance(sample_batch, (tuple, list)) else (sample_batch, None)
    name = type(models[0]).__name__
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # Eval mode first, before a training pass changes the stacked running statistics.
            stack.set_training(False)
            with torch.no_grad():
                batched = stack.forward(x, None, None, task, shared=True)[0][0]
            stack.set_training(True)
            output, loss = stack.forward(x, y, loss_fn, task, shared=True)
            total = loss.sum() if loss is not None else output.float().sum()
            if total.requires_grad:
                total.backward()
        slow = [str(w.message) for w in caught if "performance drop" in str(w.message)]
        if slow:
            return False, f"vmap has no batching rule for an operation of {name} ({slow[0][:200]})"
    except Exception as error:  # any failure of the batched pass means "train one by one"
        message = str(error).splitlines()[0][:300] if str(error) else "no message"
        return False, f"vmap cannot run {name}: {type(error).__name__}: {message}"
    own = _own_output(models[0], x)
    if (
        own is None
        or own.shape != batched.shape
        or not torch.allclose(batched.float(), own.float(), rtol=1e-3, atol=1e-4)
    ):
        return False, f"the batched output of {name} differs from its own (eval mode)"
    return True, stack.engine


def _own_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    mode = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(x)
    finally:
        model.train(mode)
    return output if isinstance(output, torch.Tensor) else None


class _CannotBatch(Exception):
    """The members cannot be stacked; the message says why."""


def _check_structure(models: Sequence[nn.Module]) -> None:
    if not models:
        raise _CannotBatch("there are no members")
    first = models[0]
    if getattr(first, "autoinit_batchable", True) is False:
        raise _CannotBatch(f"{type(first).__name__} sets autoinit_batchable = False")

    def layout(model: nn.Module) -> list[tuple]:
        return [
            (kind, name, tuple(t.shape), t.dtype, t.device, t.requires_grad)
            for kind, named in (("parameter", model.named_parameters()),
                                ("buffer", model.named_buffers()))
            for name, t in named
        ]  # fmt: skip

    reference, modules = layout(first), str(first).splitlines()
    for index, model in enumerate(models[1:], 1):
        if type(model) is not type(first):
            raise _CannotBatch(
                f"member {index} is a {type(model).__name__}, member 0 a {type(first).__name__}"
            )
        other_modules = str(model).splitlines()  # module types and options (activations, slopes)
        if other_modules != modules:
            a, b = next((a, b) for a, b in zip(modules + [""], other_modules + [""]) if a != b)
            raise _CannotBatch(
                f"member {index} differs from member 0 in its modules: {b.strip()!r} where "
                f"member 0 has {a.strip()!r}"
            )
        other = layout(model)
        if other != reference:
            diff = next((a, b) for a, b in zip(reference + [None], other + [None]) if a != b)
            raise _CannotBatch(f"member {index} differs from member 0 in its tensors: {diff}")


def _choose_engine(model: nn.Module) -> str:
    """``bmm`` for a Sequential of Linear layers and activations, else ``vmap``."""
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        return "vmap"
    elementwise = activation_types() + (nn.Identity,)
    for module in model.modules():
        if module._forward_hooks or module._forward_pre_hooks:
            return "vmap"
    for layer in model:
        if type(layer) is nn.Linear:
            continue
        if type(layer) not in elementwise or any(True for _ in layer.parameters(recurse=True)):
            return "vmap"
        if any(True for _ in layer.buffers()):
            return "vmap"
    return "bmm" if any(type(layer) is nn.Linear for layer in model) else "vmap"


# --- the stacked members -------------------------------------------------------------------------


class _Stack:
    """The live members' parameters and buffers stacked on dim 0, and the batched forward pass."""

    def __init__(self, models: Sequence[nn.Module], engine: str) -> None:
        first = models[0]
        self.engine = engine
        self.params = {
            name: torch.stack([m.get_parameter(name).detach() for m in models]).requires_grad_(
                p.requires_grad
            )
            for name, p in first.named_parameters()
        }
        self.buffers = {
            name: torch.stack([m.get_buffer(name).detach() for m in models])
            for name, _ in first.named_buffers()
        }
        if engine == "bmm":
            self.layers = [(name, layer) for name, layer in first.named_children()]
        else:
            try:
                self.base = copy.deepcopy(first).to("meta")
            except Exception as error:  # deepcopy runs user code; any failure means "don't"
                raise _CannotBatch(f"{type(first).__name__} cannot be copied: {error}") from error
            _unroll_rnns(self.base)

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
        y: torch.Tensor | None,
        loss_fn: Callable | None,
        task: str,
        *,
        shared: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Outputs ``(K, ...)`` and, given ``y`` and ``loss_fn``, the members' losses ``(K,)``.

        ``shared``: ``x`` and ``y`` are one batch for all members, else stacked per member.
        """
        if self.engine == "bmm":
            output = self._bmm(x, shared)
        else:
            dim = None if shared else 0
            run = vmap(self._member_output, in_dims=(0, 0, dim), randomness="different")
            output = run(self.params, self.buffers, x)
        if y is None or loss_fn is None:
            return output, None
        return output, _batched_loss(loss_fn, task, output, y, shared)

    def _member_output(self, params, buffers, inputs):
        return functional_call(self.base, (params, buffers), (inputs,))

    def _bmm(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        k = self.size
        lead = x.shape[:-1] if shared else x.shape[1:-1]
        h = x.reshape(-1, x.shape[-1]) if shared else x.reshape(k, -1, x.shape[-1])
        for name, layer in self.layers:
            if type(layer) is nn.Linear:
                weight = self.params[f"{name}.weight"].transpose(1, 2)
                if h.dim() == 2:
                    h = h.expand(k, *h.shape)
                bias = self.params.get(f"{name}.bias")
                h = (
                    torch.bmm(h, weight)
                    if bias is None
                    else torch.baddbmm(bias.unsqueeze(1), h, weight)
                )
            else:
                h = layer(h)
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
        replacement = type(optimizer)([p for _, p in self.trainable()], **optimizer.defaults)
        for old, state in optimizer.state.items():
            replacement.state[mapping[old]] = {
                key: value[rows] if _is_stacked(value, size) else value
                for key, value in state.items()
            }
        return replacement

    def write_back(self, row: int, model: nn.Module) -> None:
        """Copy member ``row``'s tensors into ``model`` (its weights as they are now)."""
        with torch.no_grad():
            for name, p in self.params.items():
                model.get_parameter(name).copy_(p[row])
            for name, b in self.buffers.items():
                model.get_buffer(name).copy_(b[row])


def _is_stacked(value: Any, size: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == size


def _fit_output(task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """As ``train`` does: a regression output (n, 1) for targets (n,) and vice versa."""
    if task == "regression" and output.shape != target.shape and output.numel() == target.numel():
        return output.reshape(target.shape)
    return output


def _member_loss(loss_fn: Callable, task: str) -> Callable:
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss_fn(_fit_output(task, output, target), target)

    return loss


def _batched_loss(
    loss_fn: Callable, task: str, output: torch.Tensor, target: torch.Tensor, shared: bool
) -> torch.Tensor:
    """Each member's loss ``(K,)``: what ``loss_fn`` gives on the member's output alone.

    PyTorch's cross-entropy and MSE losses with their default options are computed per sample
    and averaged per member (4x faster than a ``vmap`` of the loss, which decomposes it); any
    other loss runs under ``vmap``.
    """
    k = output.shape[0]
    targets = target.expand(k, *target.shape) if shared else target
    if type(loss_fn) is nn.CrossEntropyLoss and _plain_cross_entropy(loss_fn, output, target):
        per_sample = F.cross_entropy(
            output.movedim(2, 1), targets, reduction="none", ignore_index=loss_fn.ignore_index
        )  # the classes in dim 1, the members as the batch, the samples as a spatial dim
        counted = (targets != loss_fn.ignore_index).flatten(1).sum(1)
        return per_sample.flatten(1).sum(1) / counted
    fitted = _fit_output(task, output[0], targets[0])
    plain_mse = type(loss_fn) is nn.MSELoss and loss_fn.reduction == "mean"
    if plain_mse and fitted.shape == targets[0].shape:
        output = output.reshape(targets.shape)
        return F.mse_loss(output, targets, reduction="none").flatten(1).mean(1)
    return vmap(_member_loss(loss_fn, task), in_dims=(0, None if shared else 0))(output, target)


def _plain_cross_entropy(loss_fn: nn.CrossEntropyLoss, output: torch.Tensor, target) -> bool:
    return (
        loss_fn.weight is None and loss_fn.reduction == "mean" and loss_fn.label_smoothing == 0
        and output.dim() >= 3 and not target.is_floating_point()
    )  # fmt: skip


# --- recurrent layers written with plain operations, so that vmap can batch them ----------------


class _UnrolledRNN(nn.Module):
    """``nn.RNN``/``nn.LSTM``/``nn.GRU``'s forward as a loop over time of plain tensor operations.

    Same parameter names, same equations as PyTorch's documentation; used only inside the batched
    model (on the meta device), since ``aten::gru`` and its kin have no batching rule.
    Packed sequences, unbatched inputs, ``proj_size`` and dropout between layers raise
    ``NotImplementedError`` (the members then train one by one).
    """

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        self.mode = rnn.mode  # "RNN_TANH", "RNN_RELU", "LSTM", "GRU"
        self.num_layers, self.bidirectional = rnn.num_layers, rnn.bidirectional
        self.batch_first, self.bias, self.dropout = rnn.batch_first, rnn.bias, rnn.dropout
        self.proj_size = getattr(rnn, "proj_size", 0)
        for name, param in rnn.named_parameters(recurse=False):
            self.register_parameter(name, nn.Parameter(param.detach(), param.requires_grad))

    def forward(self, x: torch.Tensor, hx: Any = None) -> tuple[torch.Tensor, Any]:
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise NotImplementedError("only batched (3-d) tensor inputs are unrolled")
        if self.proj_size or (self.dropout and self.training and self.num_layers > 1):
            raise NotImplementedError("proj_size and inter-layer dropout are not unrolled")
        lstm = self.mode == "LSTM"
        seq = x.transpose(0, 1) if self.batch_first else x  # (T, B, F)
        directions = 2 if self.bidirectional else 1
        size = self.weight_hh_l0.shape[-1]
        if hx is None:
            zeros = seq.new_zeros(self.num_layers * directions, seq.shape[1], size)
            h0, c0 = zeros, zeros
        else:
            h0, c0 = hx if lstm else (hx, None)
        last_h, last_c = [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                w_ih = getattr(self, "weight_ih" + suffix)
                w_hh = getattr(self, "weight_hh" + suffix)
                b_ih = getattr(self, "bias_ih" + suffix) if self.bias else None
                b_hh = getattr(self, "bias_hh" + suffix) if self.bias else None
                inputs = seq.flip(0) if direction else seq
                projected = F.linear(inputs, w_ih, b_ih)  # every time step at once
                h = h0[layer * directions + direction]
                c = c0[layer * directions + direction] if lstm else None
                states = []
                for t in range(projected.shape[0]):
                    h, c = self._cell(projected[t], F.linear(h, w_hh, b_hh), h, c)
                    states.append(h)
                out = torch.stack(states)
                outputs.append(out.flip(0) if direction else out)
                last_h.append(h)
                last_c.append(c)
            seq = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
        output = seq.transpose(0, 1) if self.batch_first else seq
        h_n = torch.stack(last_h)
        return output, ((h_n, torch.stack(last_c)) if lstm else h_n)

    def _cell(self, gi, gh, h, c):
        if self.mode == "GRU":
            i_r, i_z, i_n = gi.chunk(3, dim=-1)
            h_r, h_z, h_n = gh.chunk(3, dim=-1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            return (1 - z) * n + z * h, None
        if self.mode == "LSTM":
            i, f, g, o = (gi + gh).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        if self.mode == "RNN_RELU":
            return torch.relu(gi + gh), None
        return torch.tanh(gi + gh), None


def _unroll_rnns(model: nn.Module) -> None:
    """Swap PyTorch's own RNN/LSTM/GRU modules (not subclasses) for :class:`_UnrolledRNN`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in (nn.RNN, nn.LSTM, nn.GRU):
                setattr(parent, name, _UnrolledRNN(child))


# --- the vectorised guard -------------------------------------------------------------------------


class _Guard:
    """The default rules on ``(K,)`` statistics: every member at once, no loop over members.

    Each step gives, per member, the index of the first rule that fires (in the order of
    :func:`~autoinit.monitor.default_rules`), or -1.
    """

    RULES = ("NonFinite", "NonFinite", "LossBound", "GradNormBound", "DepthRatio", "Growth",
             "Vanishing")  # fmt: skip
    KINDS = ("non-finite", "non-finite", "exploding", "exploding", "exploding", "exploding",
             "vanishing")  # fmt: skip

    def __init__(self, limits: GuardLimits, size: int, device: torch.device) -> None:
        self.limits = limits
        self.max_loss = limits.max_loss  # set from the classes at step 0 when None
        self.reference = torch.zeros(size, dtype=torch.float64, device=device)
        self.vanished = torch.zeros(size, dtype=torch.long, device=device)
        self.first_loss: torch.Tensor | None = None

    def start(self, classes: int | None) -> None:
        if self.max_loss is None and classes is not None:
            self.max_loss = LOSS_BOUND_FACTOR * math.log(max(classes, 2))

    def due(self, step: int) -> bool:
        return step < self.limits.dense_steps or step % self.limits.check_every == 0

    def check(
        self, step: int, loss: torch.Tensor, named_grads: list[tuple[str, torch.Tensor]]
    ) -> tuple[torch.Tensor | None, dict[str, Any]]:
        """Judge one step: the rule index per member (-1: healthy; ``None`` when all are healthy)
        and the statistics the messages need (``stats["total"]``: the gradient norm per member,
        on the steps whose gradients are read)."""
        limits = self.limits
        loss = loss.detach().double()
        if self.first_loss is None:
            self.first_loss = loss.clone()
        stats: dict[str, Any] = {"loss": loss, "names": [n for n, _ in named_grads]}
        false = torch.zeros_like(loss, dtype=torch.bool)
        bound = self.max_loss if self.max_loss is not None else math.inf
        if not (self.due(step) and named_grads):
            rules = [~torch.isfinite(loss), false, loss > bound] + [false] * 4
        else:
            grads = [g for _, g in named_grads]
            norms = _norms(named_grads)  # (parameters, K)
            first = next((i for i, g in enumerate(grads) if g.dim() >= 3), 0)
            last = max((i for i, g in enumerate(grads) if g.dim() >= 3), default=len(grads) - 1)
            total = torch.linalg.vector_norm(norms, dim=0)
            stats.update(norms=norms, total=total, first=first)
            rules = [~torch.isfinite(loss), ~torch.isfinite(total), loss > bound,
                     total > limits.max_grad_norm]  # fmt: skip
            if step == 0:  # per-element (RMS) norms, so that layer sizes cancel
                ratio = (norms[first] / grads[first][0].numel() ** 0.5) / (
                    norms[last] / grads[last][0].numel() ** 0.5
                )
                stats["ratio"] = ratio
                rules.append((norms[last] > 0) & (ratio > limits.max_depth_ratio))
            else:
                rules.append(false)
            if step < limits.reference_steps:
                self.reference = torch.maximum(self.reference, total.clamp_min(1e-12))
                rules.append(false)
            else:
                grew = (total > limits.growth_factor * self.reference) & (loss > self.first_loss)
                rules.append(grew)
            self.vanished = torch.where(norms[first] < limits.vanish_floor, self.vanished + 1, 0)
            rules.append(self.vanished >= limits.vanish_patience)
        fired = torch.stack(rules)  # (rules, K)
        if not bool(fired.any()):
            return None, stats
        if "norms" not in stats and named_grads:  # the loss fired between gradient reads
            stats["norms"] = _norms(named_grads)
        return torch.where(fired.any(0), fired.int().argmax(0), -1), stats

    def stop(self, step: int, row: int, code: int, stats: dict[str, Any]) -> Stop:
        """Member ``row``'s stop, worded as the sequential rule words it."""
        limits, names = self.limits, stats["names"]
        loss = float(stats["loss"][row])
        norms = stats.get("norms")
        # The first layer with a non-finite norm, else the largest (StepStats.worst_layer).
        worst = "?" if norms is None else names[int(norms[:, row].nan_to_num(math.inf).argmax())]
        kind = self.KINDS[code]
        if code == 0:
            return Stop(kind, f"non-finite loss at step {step}: {loss}")
        if code == 1:
            return Stop(kind, f"non-finite gradient at step {step} (layer {worst})")
        if code == 2:
            return Stop(kind, f"exploding loss at step {step}: {loss:.3g} > {self.max_loss:.3g} "
                              f"(worst layer {worst})")  # fmt: skip
        total = float(stats["total"][row])
        first = names[stats["first"]]
        if code == 3:
            return Stop(kind, f"exploding gradient at step {step}: norm {total:.3g} > "
                              f"{limits.max_grad_norm:.3g} (worst layer {worst})")  # fmt: skip
        if code == 4:
            return Stop(kind, f"exploding gradient across depth at step 0: the first layer's "
                              f"({first}) gradients are {float(stats['ratio'][row]):.3g}x the "
                              f"output layer's")  # fmt: skip
        if code == 5:
            reference = float(self.reference[row])
            return Stop(
                kind,
                f"exploding gradient at step {step}: norm {total:.3g} grew "
                f"{total / reference:.3g}x over the first {limits.reference_steps} "
                f"steps while the loss rose to {loss:.3g} (worst layer {worst})",
            )
        if code == 6:
            first_norm = float(stats["norms"][stats["first"], row])
            return Stop(kind, f"vanishing gradient at step {step}: first layer ({first}) gradient "
                              f"norm {first_norm:.3g} < {limits.vanish_floor:.3g} for "
                              f"{limits.vanish_patience} checks")  # fmt: skip
        raise ValueError(f"unknown guard rule {code}; valid: 0 to {len(self.RULES) - 1}.")

    def keep(self, rows: torch.Tensor) -> None:
        """Keep the state of ``rows`` only."""
        self.reference, self.vanished = self.reference[rows], self.vanished[rows]
        self.first_loss = self.first_loss[rows] if self.first_loss is not None else None


def _norms(named_grads: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
    """Each parameter's gradient norm per member: ``(parameters, K)``, in float64."""
    return torch.stack(
        [torch.linalg.vector_norm(g.flatten(1), dim=1) for _, g in named_grads]
    ).double()


# --- training -------------------------------------------------------------------------------------


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
    if engine == "sequential":
        return _train_sequentially(models, data, budget, seeds, guard, on_eval)
    return _Population(models, data, budget, seeds, limits, on_eval, engine).train()


def _batchable(models: list[nn.Module], data: TrainingData) -> tuple[bool, str]:
    # A validation batch: drawing a training batch would advance a shuffling loader.
    x, y = next(data.val_batches())
    sample = (x[: data.batch_size], y[: data.batch_size])
    return can_batch(models, sample, loss_fn=data.loss_fn, task=data.task)


class _Reporter:
    """The two methods of ``optuna.Trial`` that ``train.fit`` calls, answered by ``on_eval``."""

    def __init__(self, index: int, on_eval: OnEval) -> None:
        self.index, self.on_eval, self.prune = index, on_eval, False

    def report(self, value: float, step: int) -> None:
        self.prune = bool(self.on_eval(self.index, step, value, math.nan))

    def should_prune(self) -> bool:
        return self.prune


def _sequential_guard(option: GuardOption) -> DivergenceGuard:
    if isinstance(option, GuardLimits):
        return option.guard()
    return DivergenceGuard.from_option(False if option is None else option)


def _train_sequentially(models, data, budget, seeds, guard, on_eval) -> list[MemberResult]:
    results = []
    for index, (model, seed) in enumerate(zip(models, seeds)):
        trial = _Reporter(index, on_eval) if on_eval is not None else None
        result = fit(model, data, budget, seed=seed, guard=_sequential_guard(guard), trial=trial)
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(RunResult)}
        results.append(MemberResult(**fields, index=index, engine="sequential"))
    return results


class _Population:
    """One batched training run; progress is kept per member so a stopped one has its record."""

    def __init__(self, models, data, budget, seeds, limits, on_eval, engine) -> None:
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
        self.optimizer = _optimizer(budget, [p for _, p in self.stack.trainable()])
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

    def _member_batches(self, generators) -> Iterator:
        """Each member's own shuffled order, as ``train.fit`` draws it with the member's seed."""
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


def _optimizer(budget: Budget, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """The budget's optimizer over the stacked tensors: each element has its own state, so each
    member has its own moments. The fused implementation where PyTorch has one for the device
    (3x faster than the default for Adam on a CPU; the same update up to rounding)."""
    cls = OPTIMIZERS[budget.optimizer]
    try:
        return cls(params, lr=budget.lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or version
        return cls(params, lr=budget.lr)


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


def _evaluate_stack(stack: _Stack, data: TrainingData) -> tuple[torch.Tensor, torch.Tensor]:
    """Every member's mean validation loss and metric (accuracy, or R²), as ``train.evaluate``."""
    k = stack.size
    stack.set_training(False)
    total = torch.zeros(k, dtype=torch.float64, device=data.device)
    correct = torch.zeros(k, dtype=torch.long, device=data.device)
    count = 0
    targets, predictions = [], []
    try:
        with torch.no_grad():
            for x, y in data.val_batches():
                output, loss = stack.forward(x, y, data.loss_fn, data.task, shared=True)
                total += loss.double() * len(y)
                count += len(y)
                if data.task == "classification":
                    correct += (output.argmax(dim=-1) == y).flatten(1).sum(1)
                else:
                    targets.append(y.float().flatten())
                    predictions.append(output.float().reshape(k, -1))
    finally:
        stack.set_training(True)
    if count == 0:
        raise DataError("the validation data is empty; give more samples or a val_loader.")
    if data.task == "classification":
        return total / count, correct.double() / count
    y, p = torch.cat(targets).double(), torch.cat(predictions, dim=1).double()
    spread = ((y - y.mean()) ** 2).sum()
    residual = ((y - p) ** 2).sum(dim=1)
    r2 = 1.0 - residual / spread if spread > 0 else torch.full_like(residual, math.nan)
    return total / count, r2

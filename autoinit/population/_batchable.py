"""Whether members can train as one batched model, and which engine runs them."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from autoinit.activations import activation_types
from autoinit.population._stack import _CannotBatch, _Stack


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
                batched = stack.output(x, shared=True)[0]
            stack.set_training(True)
            if y is not None and loss_fn is not None:
                total = stack.forward(x, y, loss_fn, task, shared=True)[1].sum()
            else:
                total = stack.output(x, shared=True).float().sum()
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
        if other_modules != modules and not _only_activations_differ(first, model):
            a, b = next((a, b) for a, b in zip(modules + [""], other_modules + [""]) if a != b)
            raise _CannotBatch(
                f"member {index} differs from member 0 in its modules: {b.strip()!r} where "
                f"member 0 has {a.strip()!r}"
            )
        other = layout(model)
        if other != reference:
            diff = next((a, b) for a, b in zip(reference + [None], other + [None]) if a != b)
            raise _CannotBatch(f"member {index} differs from member 0 in its tensors: {diff}")
        attribute = _plain_difference(first, model) if _choose_engine(first) == "vmap" else None
        if attribute is not None:  # vmap runs member 0's modules: the others' would be lost
            raise _CannotBatch(f"member {index} differs from member 0 in {attribute!r}, which "
                               "is not a parameter or buffer")  # fmt: skip


def _plain_difference(first: nn.Module, other: nn.Module) -> str | None:
    """The first attribute, other than a parameter, buffer or submodule, whose value differs
    between the two models (a seed-dependent Python number, a tensor not registered)."""
    theirs = dict(other.named_modules())
    for name, module in first.named_modules():
        peer = vars(theirs[name]) if name in theirs else {}
        for key, value in vars(module).items():
            if not key.startswith("_") and key != "training" and not _same(value, peer.get(key)):
                return f"{name}.{key}" if name else key
    return None


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b))  # fmt: skip
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an == that cannot answer (an array): not the same
        return a is b


def one_bmm_structure(models: Sequence[nn.Module]) -> bool:
    """Whether ``models`` all run on the ``bmm`` engine with their Linear layers at the same
    places, so that they train as one group whatever their activations (a cheap check of the
    modules alone; :func:`can_batch` still runs its batched pass)."""
    return bool(models) and all(_only_activations_differ(models[0], m) for m in models[1:]) and (
        _choose_engine(models[0]) == "bmm"
    )


def _only_activations_differ(first: nn.Module, other: nn.Module) -> bool:
    """Both run on the ``bmm`` engine, with their Linear layers at the same places: then only
    their elementwise activations differ, and the engine runs each on its own members' rows."""
    if _choose_engine(first) != "bmm" or _choose_engine(other) != "bmm":
        return False
    layers = [(name, type(m) is nn.Linear) for name, m in first.named_children()]
    return layers == [(name, type(m) is nn.Linear) for name, m in other.named_children()]


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

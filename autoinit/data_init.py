r"""Data-dependent initialisation: the second half of the ``lsuv`` and ``variance_preserving`` arms.

Both are registered in :mod:`autoinit.initializers` with a ``data`` function: the registry's
per-tensor function draws the starting weights (orthogonal for LSUV, LeCun normal for the
variance-preserving init), then :func:`lsuv_layers` or :func:`variance_preserving_layers`
rescales the weight layers on a real batch of inputs. ``autoinit.apply(model, config,
batch=x)`` runs both halves; without a batch it raises a ``ConfigError`` that says so.

Written here rather than taken from the ``lsuv`` package on PyPI (0.3.0): that package keeps its
state in module globals (not safe with threads or several models at once), prints by default,
draws its orthogonal start from the global RNG instead of the trial's generator, moves the
model to a device, and covers neither RNN layers nor a call order that differs from the
modules' registration order. The algorithm is short; owning it keeps trials reproducible.

Layers are processed in the order the forward pass calls them (found by one pass), so a layer
is rescaled only after everything upstream of it is final. A layer's forward pass is cut short
as soon as the layer has run. Biases are left as ``apply`` set them (zero).

- LSUV (Mishkin & Matas, ICLR 2016): divide each layer's weight by the standard deviation of
  its output on the batch, and repeat until the variance is within ``tolerance`` of 1 (at most
  ``max_iter`` times). With zero biases the output is linear in the weight, so one rescaling
  normally suffices; the loop covers layers whose output is not (weight-normalised ones).
- Variance-preserving (in the spirit of AutoInit, Bingham & Miikkulainen, AAAI 2023): for
  zero-mean weights of variance :math:`\sigma^2`, :math:`\operatorname{Var}[Wx] = n_{in}
  \sigma^2 \mathbb{E}[x^2]` whatever the mean of :math:`x`. Each layer's input second moment
  is measured as the batch flows through (one forward pass, each layer scaled by a pre-hook
  just before it runs), so that each layer's output has unit variance under the statistics
  its activation actually produces: any activation, registered or not, and any module in
  between.

RNN, LSTM and GRU: the input-to-hidden weights of the first layer (``weight_ih_l0``, and its
reverse direction) are scaled from the module's input; deeper layers of a stacked RNN and the
hidden-to-hidden weights keep their start (their inputs are bounded by the cell's own tanh).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from autoinit.errors import ConfigError

LSUV_TOLERANCE = 0.1  # |Var(output) - 1| at which a layer counts as done (Mishkin & Matas: 0.1)
LSUV_MAX_ITER = 10  # rescalings per layer at most

__all__ = [
    "LSUV_MAX_ITER", "LSUV_TOLERANCE", "call_order", "input_tensor", "layer_output",
    "lsuv_layers", "variance_preserving_layers",
]  # fmt: skip


def input_tensor(batch: Any) -> torch.Tensor:
    """The model inputs of ``batch``: a tensor, or the first of an ``(inputs, targets)`` pair."""
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise ConfigError(
            f"batch must be a tensor of model inputs or an (inputs, targets) pair but got "
            f"{type(batch).__name__}."
        )
    if batch.shape[0] < 2:
        raise ConfigError(
            f"batch needs at least 2 samples to measure a variance but has {batch.shape[0]}."
        )
    return batch


class _Reached(Exception):
    """Raised by a hook to end the forward pass once the layer of interest has run."""


def _device_inputs(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    param = next(model.parameters(), None)
    if param is None:
        return inputs
    if inputs.is_floating_point():
        return inputs.to(param.device, param.dtype)
    return inputs.to(param.device)


def _forward(model: nn.Module, inputs: torch.Tensor) -> None:
    """One forward pass without gradients; a :class:`_Reached` from a hook ends it early."""
    with torch.no_grad():
        try:
            model(inputs)
        except _Reached:
            pass


def call_order(
    model: nn.Module, layers: Sequence[nn.Module], inputs: torch.Tensor
) -> list[nn.Module]:
    """``layers`` in the order a forward pass on ``inputs`` first calls them (one pass).

    Layers the pass never calls are left out, with a warning (they cannot be measured).
    """
    seen: list[nn.Module] = []

    def note(module: nn.Module, args: Any) -> None:
        if not any(module is m for m in seen):
            seen.append(module)

    handles = [layer.register_forward_pre_hook(note) for layer in layers]
    try:
        _forward(model, _device_inputs(model, inputs))
    finally:
        for handle in handles:
            handle.remove()
    missed = [type(m).__name__ for m in layers if not any(m is s for s in seen)]
    if missed:
        warnings.warn(
            f"{len(missed)} weight layer(s) ({', '.join(missed[:3])}) were not called by the "
            "forward pass on the batch, so the data-dependent init left them at their start.",
            stacklevel=3,
        )
    return seen


def _rnn_input_weights(layer: nn.RNNBase) -> list[torch.Tensor]:
    """The first layer's input-to-hidden weights (both directions)."""
    names = ("weight_ih_l0", "weight_ih_l0_reverse")
    return [getattr(layer, n) for n in names if hasattr(layer, n)]


def _weights(layer: nn.Module) -> list[torch.Tensor]:
    if isinstance(layer, nn.RNNBase):
        return _rnn_input_weights(layer)
    weight = getattr(layer, "weight", None)
    return [weight] if isinstance(weight, torch.Tensor) else []


def _rnn_projection(layer: nn.RNNBase, x: torch.Tensor) -> torch.Tensor:
    """``x W_ih^T`` of the first layer: the RNN's input weights applied to its input."""
    return torch.cat([x @ w.detach().T for w in _rnn_input_weights(layer)], dim=-1)


def layer_output(model: nn.Module, layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor | None:
    """What the layer's weight produces on ``inputs`` (an RNN: its input projection).

    The forward pass stops as soon as ``layer`` has run. None when the pass never calls it.
    """
    captured: list[torch.Tensor] = []
    if isinstance(layer, nn.RNNBase):

        def grab(module: nn.Module, args: Any) -> None:
            if args and isinstance(args[0], torch.Tensor):
                captured.append(_rnn_projection(layer, args[0]))
            raise _Reached

        handle = layer.register_forward_pre_hook(grab)
    else:

        def grab_out(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                captured.append(output.detach())
            raise _Reached

        handle = layer.register_forward_hook(grab_out)
    try:
        _forward(model, _device_inputs(model, inputs))
    finally:
        handle.remove()
    return captured[0] if captured else None


def _scale(weights: Sequence[torch.Tensor], factor: float) -> None:
    with torch.no_grad():
        for weight in weights:
            weight.mul_(factor)


def lsuv_layers(
    model: nn.Module,
    layers: Sequence[nn.Module],
    inputs: torch.Tensor,
    *,
    tolerance: float = LSUV_TOLERANCE,
    max_iter: int = LSUV_MAX_ITER,
) -> list[float]:
    """Rescale ``layers`` in call order until each one's output variance on ``inputs`` is ~1.

    Returns each processed layer's final output variance (``nan`` for a layer whose output
    was constant or non-finite, which is left as it was). See the module docstring.
    """
    if not tolerance > 0:
        raise ConfigError(f"LSUV's tolerance must be positive but got {tolerance!r}.")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ConfigError(f"LSUV's max_iter must be a positive integer but got {max_iter!r}.")
    inputs = input_tensor(inputs)
    variances = []
    for layer in call_order(model, layers, inputs):
        weights = _weights(layer)
        variance = math.nan
        for _ in range(max_iter + 1):
            output = layer_output(model, layer, inputs)
            variance = math.nan if output is None else float(output.double().var())
            if not (math.isfinite(variance) and variance > 0):
                variance = math.nan
                break
            if abs(variance - 1.0) <= tolerance or not weights:
                break
            _scale(weights, 1.0 / math.sqrt(variance))
        variances.append(variance)
    return variances


def variance_preserving_layers(
    model: nn.Module, layers: Sequence[nn.Module], inputs: torch.Tensor
) -> list[float]:
    """Scale each layer by ``1 / sqrt(E[x²])`` of its own input, in one forward pass.

    The weights must start with variance ``1 / fan_in`` (the registry's start does that).
    Returns the input second moments measured, in call order (``nan`` where unusable).
    """
    inputs = input_tensor(inputs)
    moments: list[float] = []
    done: list[nn.Module] = []

    def hook_for(layer: nn.Module) -> Callable[[nn.Module, Any], None]:
        def scale(module: nn.Module, args: Any) -> None:
            if any(module is m for m in done) or not args:
                return
            done.append(module)
            x = args[0]
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                moments.append(math.nan)
                return
            moment = float(x.detach().double().pow(2).mean())
            moments.append(moment if math.isfinite(moment) else math.nan)
            if math.isfinite(moment) and moment > 0:
                _scale(_weights(module), 1.0 / math.sqrt(moment))

        return scale

    handles = [layer.register_forward_pre_hook(hook_for(layer)) for layer in layers]
    try:
        _forward(model, _device_inputs(model, inputs))
    finally:
        for handle in handles:
            handle.remove()
    return moments

"""The probe's statistics record, :class:`ProbeStats`, and :func:`measure`, which fills it.

One forward and one backward pass on one batch, with hooks on every weight layer (Linear, Conv,
RNN/LSTM/GRU) and on every activation module. Per weight layer: its output's mean and standard
deviation; the fraction of dead units (zero output for the whole batch) and of saturated
outputs (within 1% of a bounded activation's bounds, as tanh and sigmoid have) of the
activation that follows it; and the RMS gradient of its weights. The rules of
:mod:`autoinit._probe._rules` read this record, as the guard's rules read a ``StepStats``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from autoinit import records
from autoinit.activations import activation_types
from autoinit.monitor import StepStats, symmetry_stop

WEIGHT_LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.RNNBase)
SATURATION_MARGIN = 0.01  # "saturated": within 1% of the activation's range from a bound


@dataclasses.dataclass(frozen=True)
class LayerProbe:
    """One weight layer at step 0.

    Attributes:
        name: the module's name in the model (``"3"``, ``"encoder.0"``).
        output_mean, output_std: of the layer's output (an RNN's output sequence).
        dead: the fraction of the following activation's units that output exactly zero for
            the whole batch (a conv unit is a channel); the layer's own output if none follows.
        saturated: the fraction of the following activation's outputs within 1% of its bounds
            (0 for activations unbounded on either side, such as ReLU).
        grad_rms: the RMS of the layer's weight gradients (per element, so sizes cancel).
    """

    name: str
    output_mean: float
    output_std: float
    dead: float
    saturated: float
    grad_rms: float


def _ratio_log10(top: float, bottom: float) -> float | None:
    """log10(top / bottom); +-inf at a zero side, None when both are zero or any is non-finite."""
    if not (math.isfinite(top) and math.isfinite(bottom)):
        return None
    if bottom == 0 and top == 0:
        return None
    if bottom == 0:
        return math.inf
    if top == 0:
        return -math.inf
    return math.log10(top / bottom)


@dataclasses.dataclass(frozen=True)
class ProbeStats:
    """What the probe rules read about one config at step 0.

    Attributes:
        layers: the weight layers in the order the forward pass called them.
        loss: the loss on the batch.
        nonfinite: where a non-finite value appeared (``"loss"``, ``"output of 3"``...), or None.
        symmetric: the symmetry check's reason when the hidden units are identical, or None.
        step: the pass as the divergence guard measures a training step (its ``StepStats``),
            so that the guard's own rules can judge step 0; None when read back from storage.
        classes: a classifier's number of outputs (told to the guard's loss bound), or None.
    """

    layers: tuple[LayerProbe, ...]
    loss: float
    nonfinite: str | None = None
    symmetric: str | None = None
    step: StepStats | None = dataclasses.field(default=None, compare=False, repr=False)
    classes: int | None = None

    @property
    def first(self) -> LayerProbe | None:
        return self.layers[0] if self.layers else None

    @property
    def last(self) -> LayerProbe | None:
        return self.layers[-1] if self.layers else None

    @property
    def signal_log10(self) -> float | None:
        """log10 of the last layer's output std over the first's (0: kept through depth)."""
        if not self.layers:
            return None
        return _ratio_log10(self.layers[-1].output_std, self.layers[0].output_std)

    @property
    def gradient_log10(self) -> float | None:
        """log10 of the first layer's gradient RMS over the last's (negative: vanishing)."""
        if not self.layers:
            return None
        return _ratio_log10(self.layers[0].grad_rms, self.layers[-1].grad_rms)

    def worst(self, field: str) -> tuple[float, str | None]:
        """The largest ``dead`` or ``saturated`` fraction of a hidden layer, and its layer."""
        hidden = self.layers[:-1] if len(self.layers) > 1 else self.layers
        if not hidden:
            return 0.0, None
        layer = max(hidden, key=lambda lp: getattr(lp, field))
        return getattr(layer, field), layer.name

    @property
    def worst_dead_or_saturated(self) -> float:
        """The worst dead or saturated fraction over the hidden layers."""
        return max(self.worst("dead")[0], self.worst("saturated")[0])

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe record stored on a trial as ``probe`` (non-finite values as None).

        ``layers`` and ``output_std`` keep the meaning of the earlier signal probe's record.
        """
        column: Callable[[str], list[float | None]] = lambda f: [  # noqa: E731
            records.finite_or_none(getattr(lp, f)) for lp in self.layers
        ]
        return {
            "layers": [lp.name for lp in self.layers],
            "output_std": column("output_std"),
            "output_mean": column("output_mean"),
            "dead": column("dead"),
            "saturated": column("saturated"),
            "grad_rms": column("grad_rms"),
            "loss": records.finite_or_none(self.loss),
            "signal_log10": _json_log(self.signal_log10),
            "gradient_log10": _json_log(self.gradient_log10),
            "worst_dead": self.worst("dead")[0],
            "worst_saturated": self.worst("saturated")[0],
            "nonfinite": self.nonfinite,
            "symmetric": self.symmetric,
            "grad_norm": None if self.step is None or self.step.grads is None
            else records.finite_or_none(self.step.grads.total_norm),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeStats:
        """Read a stored record back (missing fields tolerated: an older ``probe`` has only
        ``layers`` and ``output_std``)."""
        names = list(data.get("layers") or ())

        def col(key: str, missing: float) -> list[float]:
            values = list(data.get(key) or ())
            values += [None] * (len(names) - len(values))
            return [missing if v is None else float(v) for v in values[: len(names)]]

        std, mean = col("output_std", math.nan), col("output_mean", math.nan)
        dead, sat, grad = col("dead", 0.0), col("saturated", 0.0), col("grad_rms", math.nan)
        layers = tuple(
            LayerProbe(str(n), m, s, d, t, g)
            for n, m, s, d, t, g in zip(names, mean, std, dead, sat, grad)
        )
        loss = data.get("loss")
        return cls(layers, math.nan if loss is None else float(loss), data.get("nonfinite"),
                   data.get("symmetric"))  # fmt: skip


def _json_log(value: float | None) -> float | str | None:
    """A log10 ratio for JSON: ``"inf"``/``"-inf"`` kept as words (they are the verdict)."""
    if value is None or math.isfinite(value):
        return value
    return "inf" if value > 0 else "-inf"


_BOUNDS: dict[str, tuple[float, float] | None] = {}


def _bounds_of(module: nn.Module) -> tuple[float, float] | None:
    probe = torch.tensor([-1e4, -1e3, 1e3, 1e4], dtype=torch.float64)
    try:
        with torch.no_grad():
            # forward(), not __call__: the copy carries the module's hooks (the probe's too)
            values = copy.deepcopy(module).to(torch.float64).forward(probe).tolist()
    except Exception:  # noqa: BLE001 - an activation that cannot take this input: unbounded
        return None
    if not all(math.isfinite(v) for v in values):
        return None
    low, high = values[0], values[3]
    span = high - low
    flat = max(abs(values[0] - values[1]), abs(values[3] - values[2])) <= 1e-6 * abs(span)
    return (low, high) if span > 0 and flat else None


def activation_bounds(module: nn.Module) -> tuple[float, float] | None:
    """``(low, high)`` of an activation bounded on both sides (tanh, sigmoid), else None.

    Read off the module at +-1e3 and +-1e4 (flat there: bounded); cached by class and settings.
    """
    key = f"{type(module).__module__}.{type(module).__qualname__}({module.extra_repr()})"
    if key not in _BOUNDS:
        _BOUNDS[key] = _bounds_of(module)
    return _BOUNDS[key]


def _unit_dim(layer: nn.Module, output: torch.Tensor) -> int:
    """The dimension that indexes units: channels for a conv, the last one otherwise."""
    if isinstance(layer, nn.modules.conv._ConvNd) and output.dim() > 2:
        return 1
    return output.dim() - 1


def _dead_fraction(output: torch.Tensor, dim: int) -> float:
    if output.dim() < 2:
        return 0.0
    others = [d for d in range(output.dim()) if d != dim]
    return float((output.detach().abs().amax(dim=others) == 0).float().mean())


def _saturated_fraction(output: torch.Tensor, bounds: tuple[float, float] | None) -> float:
    if bounds is None:
        return 0.0
    low, high = bounds
    margin = SATURATION_MARGIN * (high - low)
    out = output.detach()
    return float(((out - low <= margin) | (high - out <= margin)).float().mean())


@dataclasses.dataclass
class _Layer:
    module: nn.Module
    name: str
    mean: float = math.nan
    std: float = math.nan
    dead: float | None = None
    saturated: float = 0.0
    own_dead: float = 0.0
    finite: bool = True


def measure(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> ProbeStats:
    """One forward and backward pass of ``model`` on one batch; the model is left unchanged.

    The gradients are cleared afterwards and the random number generators restored, so a
    probe before training does not change the training run.
    """
    layers: list[_Layer] = []
    by_module: dict[int, _Layer] = {}
    acts = activation_types()
    state: dict[str, _Layer | None] = {"last": None}

    def on_layer(module: nn.Module, args: Any, output: Any) -> None:
        out = output[0] if isinstance(output, tuple) else output
        if not isinstance(out, torch.Tensor) or id(module) in by_module:
            state["last"] = by_module.get(id(module))
            return
        entry = by_module[id(module)] = _Layer(module, names[id(module)])
        values = out.detach()
        if values.numel() > 1:  # one pass in the output's own precision, float64 if it overflows
            std, mean = torch.std_mean(values)
            if not math.isfinite(float(std)) and bool(torch.isfinite(values).all()):
                std, mean = torch.std_mean(values.double())
            entry.std, entry.mean = float(std), float(mean)
        else:
            entry.std, entry.mean = 0.0, float(values.float().sum())
        entry.finite = math.isfinite(entry.std) and math.isfinite(entry.mean) and (
            entry.std > 0 or bool(torch.isfinite(values).all()))  # fmt: skip
        entry.own_dead = _dead_fraction(out, _unit_dim(module, out))
        layers.append(entry)
        state["last"] = entry

    def on_activation(module: nn.Module, args: Any, output: Any) -> None:
        entry = state["last"]
        if entry is None or not isinstance(output, torch.Tensor):
            return
        dead = _dead_fraction(output, _unit_dim(entry.module, output))
        entry.dead = dead if entry.dead is None else max(entry.dead, dead)
        saturated = _saturated_fraction(output, activation_bounds(module))
        entry.saturated = max(entry.saturated, saturated)

    names = {id(m): name for name, m in model.named_modules()}
    handles = [
        m.register_forward_hook(on_layer if isinstance(m, WEIGHT_LAYERS) else on_activation)
        for m in model.modules()
        if isinstance(m, WEIGHT_LAYERS) or isinstance(m, acts)
    ]
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        with torch.random.fork_rng(devices=[]):
            output = model(inputs)
            if output.shape != targets.shape and output.numel() == targets.numel():
                if targets.is_floating_point():  # a regressor's (n, 1) against (n,) targets
                    output = output.view_as(targets)
            loss = loss_fn(output, targets)
            if params and loss.requires_grad:
                loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    grads = {id(e.module): _grad_rms(e.module) for e in layers}
    step = StepStats.measure(0, float(loss.detach()), list(model.named_parameters()),
                             first_loss=float(loss.detach()))  # fmt: skip
    classes = output.shape[-1] if not targets.is_floating_point() and output.dim() > 1 else None
    for p in params:
        p.grad = None
    loss_value = float(loss.detach())
    result = tuple(
        LayerProbe(e.name, e.mean, e.std, e.own_dead if e.dead is None else e.dead, e.saturated,
                   grads[id(e.module)])  # fmt: skip
        for e in layers
    )
    stop = symmetry_stop(model)
    return ProbeStats(result, loss_value, _nonfinite(loss_value, layers, result),
                      stop.reason if stop else None, step, classes)  # fmt: skip


def _grad_rms(module: nn.Module) -> float:
    """RMS of the weight gradients; ``inf`` when any is non-finite, ``nan`` when there are none."""
    grads = [p.grad for n, p in module.named_parameters(recurse=False)
             if n.startswith("weight") and p.grad is not None]  # fmt: skip
    if not grads:
        return math.nan
    total = sum(float(g.detach().double().pow(2).sum()) for g in grads)
    if not math.isfinite(total):
        return math.inf
    return math.sqrt(total / sum(g.numel() for g in grads))


def _nonfinite(loss: float, layers: list[_Layer], probes: tuple[LayerProbe, ...]) -> str | None:
    """Where the first non-finite value appeared: an output, the loss, or a gradient."""
    bad = next((e.name for e in layers if not e.finite), None)
    if bad is not None:
        return f"the output of layer {bad}"
    if not math.isfinite(loss):
        return "the loss"
    bad = next((lp.name for lp in probes if math.isinf(lp.grad_rms)), None)
    return None if bad is None else f"the gradient of layer {bad}"

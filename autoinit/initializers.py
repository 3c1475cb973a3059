r"""The registry of weight initializers, by name.

Every initializer is an in-place function ``fn(tensor, *, gain, generator) -> tensor`` that
writes under ``torch.no_grad()``, as ``torch.nn.init`` does. ``gain`` is the activation's gain
(see :mod:`autoinit.activations`) for the initializers that scale by it (He/Kaiming, orthogonal)
and 1 for the others: Glorot and LeCun are defined with gain 1 by their papers, which is what
keeps the families distinct (He et al. 2015 compare exactly Xavier-with-gain-1 against He).

Fans follow ``torch.nn.init``: for a weight of shape ``(out, in, *kernel)``,
:math:`n_{in} = in \cdot \prod kernel` and :math:`n_{out} = out \cdot \prod kernel`.

Keras names are aliases with their Keras meaning: ``glorot_*`` is Xavier, ``he_*`` is Kaiming
(fan-in), ``random_normal`` is N(0, 0.05²), ``random_uniform`` is U(-0.05, 0.05) and
``truncated_normal`` is N(0, 0.05²) cut at two standard deviations. Keras draws its ``*_normal``
variance-scaling initializers from a truncated normal of the same variance; autoinit draws from
a plain normal, as ``torch.nn.init`` does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from autoinit.errors import ConfigError, unknown_name

InitFn = Callable[..., torch.Tensor]
# fn(model, layers, inputs): rescale the weight layers (in the model's order) on a real batch
DataFn = Callable[[nn.Module, Sequence[nn.Module], torch.Tensor], None]


@dataclasses.dataclass(frozen=True)
class Initializer:
    """A registered initializer: its function, whether it scales by the activation's gain.

    A data-dependent initializer also has ``data_fn``: ``fn`` draws each weight (the starting
    point), then ``data_fn(model, layers, inputs)`` rescales the layers on a real batch of
    inputs. Such an initializer :attr:`needs_batch`.
    """

    name: str
    fn: InitFn
    uses_gain: bool
    aliases: tuple[str, ...] = ()
    data_fn: DataFn | None = None

    @property
    def needs_batch(self) -> bool:
        """Whether applying it needs a batch of inputs (LSUV, variance-preserving)."""
        return self.data_fn is not None

    @property
    def formula(self) -> str:
        """The first line of the function's docstring: its formula in plain text."""
        lines = (self.fn.__doc__ or "").strip().splitlines()
        return lines[0] if lines else ""

    def __call__(
        self, tensor: torch.Tensor, *, gain: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        with torch.no_grad():
            return self.fn(tensor, gain=gain if self.uses_gain else 1.0, generator=generator)


_REGISTRY: dict[str, Initializer] = {}
_ALIASES: dict[str, str] = {}


def register_initializer(
    name: str,
    *,
    uses_gain: bool = False,
    aliases: tuple[str, ...] = (),
    data: DataFn | None = None,
) -> Callable[[InitFn], InitFn]:
    """Decorator that adds ``fn(tensor, *, gain, generator)`` to the registry under ``name``.

    ``data``: makes the initializer data-dependent: after ``fn`` has drawn every weight,
    ``data(model, layers, inputs)`` rescales the weight layers on a batch of inputs (see
    :mod:`autoinit.data_init`); ``apply`` and ``build`` then need ``batch=``.

    Example:
        >>> @register_initializer("half_normal_demo")
        ... def half_normal_demo(tensor, *, gain, generator):
        ...     '''N(0, 0.25)'''
        ...     return tensor.normal_(0.0, 0.5, generator=generator)
    """

    def decorator(fn: InitFn) -> InitFn:
        for key in (name, *aliases):
            if key in _REGISTRY or key in _ALIASES:
                raise ConfigError(f"initializer name {key!r} is already registered.")
        _REGISTRY[name] = Initializer(name, fn, uses_gain, tuple(aliases), data)
        _ALIASES.update({alias: name for alias in aliases})
        return fn

    return decorator


def get_initializer(name: str) -> Initializer:
    """The initializer registered under ``name`` or one of its aliases."""
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise unknown_name("initializer", name, [*_REGISTRY, *_ALIASES])
    return _REGISTRY[key]


def canonical_initializer(name: str) -> str:
    """The registry name behind an alias (``'he_normal'`` -> ``'kaiming_normal'``)."""
    return get_initializer(name).name


def list_initializers() -> list[str]:
    """Registered initializer names (aliases excluded), in registration order."""
    return list(_REGISTRY)


def fans(tensor: torch.Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight shaped ``(out, in, *kernel)``, as in ``torch.nn.init``."""
    if tensor.dim() < 2:
        raise ConfigError(f"cannot compute fans of a {tensor.dim()}-d tensor; weights are >= 2-d.")
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


@register_initializer("default")
def default(tensor, *, gain, generator):
    """unchanged: PyTorch's own initialisation (Kaiming-uniform with a=sqrt(5) for Linear/Conv)"""
    return tensor


@register_initializer("zeros")
def zeros(tensor, *, gain, generator):
    """W = 0: every unit computes the same thing, so symmetry is never broken"""
    return tensor.zero_()


@register_initializer("uniform")
def uniform(tensor, *, gain, generator):
    """W ~ U(-1, 1): unscaled, Var = 1/3 whatever the layer size"""
    return tensor.uniform_(-1.0, 1.0, generator=generator)


@register_initializer("normal")
def normal(tensor, *, gain, generator):
    """W ~ N(0, 1): unscaled, Var = 1 whatever the layer size"""
    return tensor.normal_(0.0, 1.0, generator=generator)


@register_initializer("xavier_uniform", aliases=("glorot_uniform",))
def xavier_uniform(tensor, *, gain, generator):
    r"""W ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)): Var = 2 / (fan_in + fan_out)

    Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward neural
    networks". Also known as Glorot uniform.

    .. math:: a = \text{gain} \sqrt{6 / (n_{in} + n_{out})}
    """
    fan_in, fan_out = fans(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return tensor.uniform_(-bound, bound, generator=generator)


@register_initializer("xavier_normal", aliases=("glorot_normal",))
def xavier_normal(tensor, *, gain, generator):
    r"""W ~ N(0, 2 / (fan_in + fan_out))

    Glorot & Bengio (2010). Also known as Glorot normal.

    .. math:: \sigma = \text{gain} \sqrt{2 / (n_{in} + n_{out})}
    """
    fan_in, fan_out = fans(tensor)
    return tensor.normal_(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator=generator)


@register_initializer("kaiming_uniform", uses_gain=True, aliases=("he_uniform",))
def kaiming_uniform(tensor, *, gain, generator):
    r"""W ~ U(-a, a), a = gain * sqrt(3 / fan_in): Var = gain² / fan_in (gain² = 2 for ReLU)

    He et al. (2015), "Delving Deep into Rectifiers". Also known as He uniform.

    .. math:: a = \text{gain} \sqrt{3 / n_{in}}
    """
    fan_in, _ = fans(tensor)
    bound = gain * math.sqrt(3.0 / fan_in)
    return tensor.uniform_(-bound, bound, generator=generator)


@register_initializer("kaiming_normal", uses_gain=True, aliases=("he_normal",))
def kaiming_normal(tensor, *, gain, generator):
    r"""W ~ N(0, gain² / fan_in) (gain² = 2 for ReLU)

    He et al. (2015). Also known as He normal.

    .. math:: \sigma = \text{gain} / \sqrt{n_{in}}
    """
    fan_in, _ = fans(tensor)
    return tensor.normal_(0.0, gain / math.sqrt(fan_in), generator=generator)


@register_initializer("lecun_uniform")
def lecun_uniform(tensor, *, gain, generator):
    r"""W ~ U(-a, a), a = sqrt(3 / fan_in): Var = 1 / fan_in

    LeCun et al. (1998), "Efficient BackProp".

    .. math:: a = \sqrt{3 / n_{in}}
    """
    fan_in, _ = fans(tensor)
    bound = math.sqrt(3.0 / fan_in)
    return tensor.uniform_(-bound, bound, generator=generator)


@register_initializer("lecun_normal")
def lecun_normal(tensor, *, gain, generator):
    r"""W ~ N(0, 1 / fan_in)

    LeCun et al. (1998); with SELU it gives the self-normalising fixed point of Klambauer et al.
    (2017), which is why the gain stays 1 (not ``calculate_gain('selu')`` = 3/4).

    .. math:: \sigma = 1 / \sqrt{n_{in}}
    """
    fan_in, _ = fans(tensor)
    return tensor.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)


@register_initializer("orthogonal", uses_gain=True)
def orthogonal(tensor, *, gain, generator):
    r"""W = gain * Q, Q a random (semi-)orthogonal matrix: Var = gain² / max(rows, columns)

    Saxe et al. (2014), "Exact solutions to the nonlinear dynamics of learning in deep linear
    neural networks". Conv kernels are flattened to ``(out, in * prod(kernel))``, so for them
    Var = gain² / max(out, in * prod(kernel)).
    """
    return torch.nn.init.orthogonal_(tensor, gain=gain, generator=generator)


@register_initializer("trunc_normal")
def trunc_normal(tensor, *, gain, generator):
    r"""W ~ N(0, 0.02²) truncated to [-0.04, 0.04]: the fixed-scale init of BERT and ViT (timm)"""
    return torch.nn.init.trunc_normal_(tensor, 0.0, 0.02, -0.04, 0.04, generator=generator)


@register_initializer("random_normal")
def random_normal(tensor, *, gain, generator):
    """W ~ N(0, 0.05²): Keras' RandomNormal default"""
    return tensor.normal_(0.0, 0.05, generator=generator)


@register_initializer("random_uniform")
def random_uniform(tensor, *, gain, generator):
    """W ~ U(-0.05, 0.05): Keras' RandomUniform default"""
    return tensor.uniform_(-0.05, 0.05, generator=generator)


@register_initializer("truncated_normal")
def truncated_normal(tensor, *, gain, generator):
    """W ~ N(0, 0.05²) truncated to [-0.1, 0.1]: Keras' TruncatedNormal default"""
    return torch.nn.init.trunc_normal_(tensor, 0.0, 0.05, -0.1, 0.1, generator=generator)


def _lsuv_data(model: nn.Module, layers: Sequence[nn.Module], inputs: torch.Tensor) -> None:
    from autoinit.data_init import lsuv_layers

    lsuv_layers(model, layers, inputs)


def _variance_preserving_data(
    model: nn.Module, layers: Sequence[nn.Module], inputs: torch.Tensor
) -> None:
    from autoinit.data_init import variance_preserving_layers

    variance_preserving_layers(model, layers, inputs)


@register_initializer("lsuv", data=_lsuv_data)
def lsuv(tensor, *, gain, generator):
    r"""W = Q (orthogonal), then each layer rescaled in order until Var(output) = 1 on a batch

    Mishkin & Matas (2016), "All you need is a good init" (layer-sequential unit-variance).
    Data-dependent: needs ``batch=``. Starts from a semi-orthogonal matrix with gain 1; then,
    layer by layer in the order the forward pass calls them, the weight is divided by the
    standard deviation of the layer's output on the batch until its variance is within
    :data:`autoinit.data_init.LSUV_TOLERANCE` of 1 (at most
    :data:`autoinit.data_init.LSUV_MAX_ITER` rescalings a layer). Linear, Conv and the
    first-layer input weights of RNN/LSTM/GRU.

    .. math:: W_l \leftarrow W_l / \sqrt{\operatorname{Var}[W_l x_l]}
    """
    return torch.nn.init.orthogonal_(tensor, gain=1.0, generator=generator)


@register_initializer("variance_preserving", data=_variance_preserving_data)
def variance_preserving(tensor, *, gain, generator):
    r"""W ~ N(0, 1 / (fan_in * E[x²])): unit-variance outputs under the layer's input statistics

    In the spirit of AutoInit (Bingham & Miikkulainen, AAAI 2023). Data-dependent: needs
    ``batch=``. For zero-mean weights, Var[W x] = fan_in Var[W] E[x²] whatever the mean of x
    (after ReLU or sigmoid it is not 0), so each layer is scaled from the second moment of its
    own input, measured on the batch in one forward pass: whatever activation came before it
    (any registered one, a user's included) and whatever sits between (pooling, norms).

    .. math:: \sigma_l = 1 / \sqrt{n_{in} \, \mathbb{E}[x_l^2]}
    """
    fan_in, _ = fans(tensor)
    return tensor.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)


# The space searched unless the user narrows it: the list, without the Keras extras,
# and the two data-dependent initializers.
DEFAULT_INITS = (
    "default", "zeros", "uniform", "normal", "xavier_uniform", "xavier_normal",
    "kaiming_uniform", "kaiming_normal", "lecun_uniform", "lecun_normal", "orthogonal",
    "trunc_normal", "lsuv", "variance_preserving",
)  # fmt: skip

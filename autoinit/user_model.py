"""A user's own model factory from the command line: ``--model FILE.py:FACTORY`` or
``--model package.module:FACTORY``.

The factory (a class or a function) is called with the keyword arguments it accepts out of:

============== ==================================================================
``input_shape`` one sample's shape: ``(F,)``, ``(C, H, W)`` or ``(T, F)``
``in_features`` features per sample (tabular), per step (sequences), ``C*H*W`` (images)
``in_channels`` ``C`` (images only)
``num_classes`` the number of classes (1 for regression)
``out_features`` the same number: the size of the last layer
``activation`` the searched activation, a zero-argument factory such as ``nn.ReLU``
============== ==================================================================

so a factory states what it needs. One without ``activation`` has its activation modules
swapped (see :func:`autoinit.apply`). A factory that also takes ``**kwargs`` gets them all.

Loading ``FILE.py`` runs that file, as pytest runs a ``conftest.py``: only a file the user
named with ``--model`` is ever run, and nothing else is imported on its behalf (its own imports
are its own). Worker processes (``--jobs``) load it again, by its path: the ``model_fn`` is a
small picklable value (:class:`UserModel`), never the function itself.

Every problem is a :class:`~autoinit.errors.ConfigError` naming the file and the factory: file
not found, no such attribute, not callable, an argument autoinit cannot give, the file or the
factory raising, the model failing on the first batch, or its output not fitting the targets.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import shlex
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from autoinit.errors import AutoinitError, ConfigError

ARGUMENTS = ("input_shape", "in_features", "in_channels", "num_classes", "out_features")
CHECK_BATCH = 8  # samples run through the model before the search
_MODULES: dict[str, ModuleType] = {}  # loaded once per process


@dataclasses.dataclass(frozen=True)
class FactorySpec:
    """Where a factory lives: a ``.py`` file (by absolute path) or an importable module."""

    text: str  # as the user wrote it
    source: str  # the resolved file path, or the module name
    attribute: str  # the factory's name in it (dotted for a nested one)
    is_file: bool

    @property
    def where(self) -> str:
        """The file (as given) or the module, for messages."""
        return self.text.rpartition(":")[0]


def parse_spec(text: str) -> FactorySpec:
    """``FILE.py:FACTORY`` or ``package.module:FACTORY`` -> :class:`FactorySpec`.

    Raises:
        ConfigError: not of that form (an unknown built-in name), or the file is not there.
    """
    from autoinit.models import MODELS

    source, colon, attribute = text.rpartition(":")
    if not colon:
        nearest = difflib.get_close_matches(text, MODELS, n=1, cutoff=0.5)
        hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
        raise ConfigError(
            f"unknown model {text!r}.{hint} Use one of {', '.join(MODELS)}, or your own factory "
            "as FILE.py:FACTORY or package.module:FACTORY."
        )
    if not source or not all(part.isidentifier() for part in attribute.split(".")):
        raise ConfigError(
            f"--model {text!r} must be FILE.py:FACTORY or package.module:FACTORY, with the "
            "factory's Python name after the last colon."
        )
    is_file = source.endswith(".py") or "/" in source or "\\" in source
    if is_file:
        path = Path(source).expanduser()
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "not found"
            raise ConfigError(f"model file {source} {what} (from --model {text}); check the path.")
        return FactorySpec(text, str(path.resolve()), attribute, True)
    if not all(part.isidentifier() for part in source.split(".")):
        raise ConfigError(
            f"--model {text!r}: {source!r} is neither a .py file nor a module name "
            "(package.module)."
        )
    return FactorySpec(text, source, attribute, False)


def load_factory(spec: FactorySpec) -> Any:
    """The factory named by ``spec``, its file run (or module imported) once per process."""
    obj: Any = _module(spec)
    for depth, part in enumerate(spec.attribute.split(".")):
        if not hasattr(obj, part):
            raise _no_attribute(spec, obj, part, depth)
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(
            f"{spec.where}:{spec.attribute} is a {type(obj).__name__}, not a class or function "
            "that returns a model."
        )
    return obj


def _module(spec: FactorySpec) -> ModuleType:
    if spec.source in _MODULES:
        return _MODULES[spec.source]
    if spec.is_file:
        path = Path(spec.source)
        digest = hashlib.sha256(spec.source.encode()).hexdigest()[:12]
        name = f"_autoinit_user_{digest}_{''.join(c if c.isalnum() else '_' for c in path.stem)}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ConfigError(f"cannot load {spec.where} as Python (from --model {spec.text}).")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module  # so that its classes pickle and dataclasses work
        try:
            loader_spec.loader.exec_module(module)
        except (Exception, SystemExit) as error:  # noqa: BLE001 - the user's code: report it
            del sys.modules[name]
            raise ConfigError(
                f"running {spec.where} failed ({_summary(error)}); fix the file, or run "
                f"`python {shlex.quote(spec.where)}` to see the traceback."
            ) from None
    else:
        try:
            module = importlib.import_module(spec.source)
        except ModuleNotFoundError as error:
            if error.name is None or not spec.source.startswith(error.name):
                raise ConfigError(
                    f"importing {spec.source} failed ({_summary(error)}); fix the module."
                ) from None
            raise ConfigError(
                f"cannot import module {spec.source} (from --model {spec.text}): no module named "
                f"{error.name!r}; install it, or add its folder to PYTHONPATH, or give its file "
                "as path/to/file.py:FACTORY."
            ) from None
        except (Exception, SystemExit) as error:  # noqa: BLE001 - the user's code: report it
            raise ConfigError(
                f"importing {spec.source} failed ({_summary(error)}); run "
                f"`python -c {shlex.quote('import ' + spec.source)}` to see the traceback."
            ) from None
    _MODULES[spec.source] = module
    return module


def _no_attribute(spec: FactorySpec, obj: Any, part: str, depth: int) -> ConfigError:
    names = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None))]
    if isinstance(obj, ModuleType):  # what the file defines, not what it imports
        names = [n for n in names if getattr(getattr(obj, n), "__module__", None) == obj.__name__]
    nearest = difflib.get_close_matches(part, names, n=1, cutoff=0.5)
    hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
    where = spec.where
    if depth:
        where += ":" + ".".join(spec.attribute.split(".")[:depth])
    defined = f" It defines: {', '.join(sorted(names)[:20])}." if names else ""
    return ConfigError(f"{where} has no attribute {part!r}.{hint}{defined}")


@dataclasses.dataclass(frozen=True)
class UserModel:
    """A picklable ``model_fn`` for the user's factory, without an ``activation`` argument
    (its activation modules are swapped). Each call loads the factory (once per process)
    and calls it with ``kwargs``."""

    spec: FactorySpec
    kwargs: tuple[tuple[str, Any], ...]

    def __call__(self) -> nn.Module:
        return self.build()

    def build(self, **extra: Any) -> nn.Module:
        factory = load_factory(self.spec)
        model = factory(**dict(self.kwargs), **extra)
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"{self.spec.where}:{self.spec.attribute}({self.arguments()}) returned a "
                f"{type(model).__name__}, not a torch.nn.Module."
            )
        return model

    def arguments(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs)


@dataclasses.dataclass(frozen=True)
class UserModelWithActivation(UserModel):
    """:class:`UserModel` for a factory that takes ``activation``: it is passed on."""

    def __call__(self, activation: Any) -> nn.Module:  # type: ignore[override]
        return self.build(activation=activation)


def user_model_fn(
    spec: FactorySpec, kind: str, input_shape: tuple[int, ...], out_features: int
) -> UserModel:
    """Load the factory and decide which of :data:`ARGUMENTS` (and ``activation``) it gets.

    Raises:
        ConfigError: it cannot be loaded, or it requires an argument autoinit does not give.
    """
    factory = load_factory(spec)
    given: dict[str, Any] = {
        "input_shape": tuple(input_shape),
        "in_features": math.prod(input_shape) if kind == "images" else input_shape[-1],
        "num_classes": out_features,
        "out_features": out_features,
    }
    if kind == "images":
        given["in_channels"] = input_shape[0]
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        raise ConfigError(
            f"cannot read the arguments of {spec.where}:{spec.attribute}; make it a class or a "
            "Python function."
        ) from None
    everything = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = {n for n, p in parameters.items() if p.kind in keyword}
    kwargs = {k: v for k, v in given.items() if everything or k in named}
    takes_activation = everything or "activation" in named
    missing = [
        n for n, p in parameters.items()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and n not in kwargs and not (n == "activation" and takes_activation)
    ]  # fmt: skip
    if missing:
        unavailable = [n for n in missing if n in ARGUMENTS]
        why = (f"; {', '.join(unavailable)} is given for images only" if unavailable else "")
        raise ConfigError(
            f"{spec.where}:{spec.attribute} requires {', '.join(map(repr, missing))}, which "
            f"autoinit cannot give{why}. It passes, by keyword, the ones the factory accepts of: "
            f"{', '.join(ARGUMENTS)}, activation; give the others defaults."
        )
    cls = UserModelWithActivation if takes_activation else UserModel
    return cls(spec, tuple(kwargs.items()))


def check_model(model_fn: UserModel, data: Any, spec: FactorySpec) -> tuple[str, ...]:
    """Build the model with PyTorch's defaults and run a first batch through it (nothing
    trained, the RNG state restored); its output must fit the targets.

    Returns:
        The warnings raised on the way (e.g. no activation module to swap), as lines.

    Raises:
        ConfigError: the factory or the model's forward pass raises (its message on one line,
            with a command to run the factory by hand), or the output has the wrong shape.
    """
    from autoinit._apply import build
    from autoinit.space import PYTORCH_DEFAULT

    x = data.X_train[:CHECK_BATCH]
    n = len(x)
    label = f"{spec.where}:{spec.attribute}"
    with warnings.catch_warnings(record=True) as caught, torch.random.fork_rng():
        warnings.simplefilter("always")
        try:
            model = build(model_fn, PYTORCH_DEFAULT)
        except AutoinitError:
            raise
        except Exception as error:  # noqa: BLE001 - the user's code: report it
            raise ConfigError(
                f"{label}({model_fn.arguments()}) raised {_summary(error)}; run the factory by "
                f"hand to see the traceback: {by_hand(model_fn, tuple(x.shape))}"
            ) from None
        try:
            with torch.no_grad():
                output = model(x)
        except Exception as error:  # noqa: BLE001 - the user's code: report it
            raise ConfigError(
                f"the model from {label} failed on the first batch, of shape {tuple(x.shape)}: "
                f"{_summary(error)}; run the factory by hand to see the traceback: "
                f"{by_hand(model_fn, tuple(x.shape))}"
            ) from None
    if not isinstance(output, torch.Tensor):
        raise ConfigError(
            f"the model from {label} returned a {type(output).__name__} for a batch of {n}; it "
            "must return one tensor of outputs (logits for classification)."
        )
    shape = tuple(output.shape)
    if data.task == "classification":
        fits, expected = shape == (n, data.n_classes), f"({n}, {data.n_classes})"
        what = f"the data has {data.n_classes} classes"
    else:
        fits, expected = shape in ((n, 1), (n,)), f"({n}, 1)"
        what = "the task is regression (one value per sample)"
    if not fits:
        raise ConfigError(
            f"the model from {label} outputs shape {shape} for a batch of {n} samples, but "
            f"{what}: it must output {expected}; size its last layer with num_classes or "
            "out_features."
        )
    if not torch.isfinite(output).all():
        raise ConfigError(
            f"the model from {label} outputs non-finite values (NaN or inf) on the first batch "
            "with PyTorch's default initialisation; check its forward pass."
        )
    return tuple(str(w.message) for w in caught)


def by_hand(model_fn: UserModel, batch: tuple[int, ...]) -> str:
    """A one-line shell command that calls the factory as autoinit does, on a zero batch."""
    spec = model_fn.spec
    if spec.is_file:
        get = f"f = runpy.run_path({json.dumps(spec.where)})"
        get += "".join(f"[{json.dumps(p)}]" for p in spec.attribute.split(".")[:1])
        get += "".join(f".{p}" for p in spec.attribute.split(".")[1:])
        imports = "import runpy, torch"
    else:
        get = f"from {spec.source} import {spec.attribute.split('.')[0]} as f"
        get += "".join(f"; f = f.{p}" for p in spec.attribute.split(".")[1:])
        imports = "import torch"
    code = (f"{imports}; {get}; m = f({model_fn.arguments()}); "
            f"print(m(torch.zeros{batch}).shape)")  # fmt: skip
    return f"python -c {shlex.quote(code)}"


def _summary(error: BaseException) -> str:
    """``Type: message`` on one line, shortened."""
    text = " ".join(str(error).split())
    summary = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return summary if len(summary) <= 300 else summary[:297] + "..."

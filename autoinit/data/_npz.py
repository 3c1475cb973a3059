"""``.npz`` and ``.npy`` files -> :class:`~._arraydata.ArrayData`.

An ``.npz`` holds the inputs as ``x`` (or ``X``) and the targets as ``y``. The shape of ``x``
says what the samples are:

- ``(N, F)``: tabular rows of F features;
- ``(N, C, H, W)``: images; ``(N, H, W)`` of dtype uint8 too (one channel);
- ``(N, T, F)``: sequences of T steps of F features; ``(N, T)`` only when the file says so.

A 3-D float array could be either images or sequences, and a 2-D one either rows or sequences
of one feature: an optional string entry ``kind`` (``"tabular"``, ``"images"`` or
``"sequences"``, e.g. ``numpy.savez(path, x=x, y=y, kind="images")``) decides. Integer,
boolean or text ``y`` means classification, float ``y`` regression, unless the task is given.

An ``.npy`` file holds one 2-D numeric array: the features, then the target as its last column
(tabular data only; an integer array means classification, a float one regression). Anything
else, an ``.npz`` with ``x`` and ``y`` says it better.

Files are always read with ``allow_pickle=False``: loading a pickle runs code, and a data file
must never do that. Object arrays are refused with a message that says how to save them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from autoinit.data._arraydata import KINDS, ArrayData
from autoinit.data._files import file_sha256, first_line
from autoinit.data._normalize import (
    channel_stats,
    check_task_option,
    encode_targets,
    standardized,
    target_tensors,
)
from autoinit.data._notes import Notes, listing
from autoinit.data._split import check_rows, split
from autoinit.errors import DataError

_HOW = "save them with numpy.savez(path, x=x, y=y)"


def load_arrays(
    path: str | Path, *, task: str = "auto", val_fraction: float = 0.2, seed: int = 0
) -> ArrayData:
    """Read an ``.npz`` (``x`` and ``y``) or ``.npy`` (last column = target) file and turn it
    into normalised train/validation tensors.

    Features are standardized with the training samples' mean and standard deviation: per
    column for tabular data, per channel for images, per feature for sequences.

    Raises:
        DataError: the file or an option cannot be used; the message says what to change.
    """
    check_task_option(task)
    path = Path(path)
    name = path.name
    if not path.exists():
        raise DataError(f"file not found: {str(path)!r}; check the path.")
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a directory, not an .npz or .npy file.")
    notes = Notes()
    if path.suffix.lower() == ".npy":
        x, y, declared = _read_npy(path, name)
        notes.add(f"{name}: features are the first {x.shape[1]} columns, the target the last")
    else:
        x, y, declared = _read_npz(path, name, notes)
    kind, x = _kind_of(x, declared, name, notes)
    n = len(x)
    if len(y) != n:
        raise DataError(
            f"x in {name} has {n} samples but y has {len(y)}; they must have the same length."
        )
    check_rows(n, val_fraction, name)
    targets = encode_targets(y, task, "array 'y'", name)
    del y
    train_idx, val_idx = split(targets.values, targets.task, val_fraction, seed, notes)
    axis = {"tabular": 1, "images": 1, "sequences": 2}[kind]
    mean, std = channel_stats(x, train_idx, axis, "array 'x'", name)
    X_train = standardized(x, train_idx, axis, mean, std, "array 'x'", name)
    X_val = standardized(x, val_idx, axis, mean, std, "array 'x'", name)
    per = {"tabular": "feature", "images": "channel", "sequences": "feature"}[kind]
    notes.add(f"inputs standardized per {per} with the training samples' mean and std")
    y_train, y_val, mean_y, scale_y = target_tensors(
        targets, train_idx, val_idx, "array 'y'", name
    )
    notes.emit_warnings(stacklevel=3)
    return ArrayData(
        kind=kind,
        X_train=X_train,
        y_train=y_train,
        X_val=X_val,
        y_val=y_val,
        task=targets.task,
        task_reason=targets.reason,
        target="y",
        feature_names=[f"x{i}" for i in range(x.shape[1])] if kind == "tabular" else [],
        classes=targets.classes,
        target_mean=mean_y,
        target_scale=scale_y,
        notes=list(notes),
        fingerprint={
            "kind": kind,
            "file": name,
            "format": path.suffix.lower().lstrip("."),
            "sha256": file_sha256(path),
            "samples": n,
            "shape": list(X_train.shape[1:]),
            "task": targets.task,
        },
    )


def _read_npz(path: Path, name: str, notes: Notes) -> tuple[np.ndarray, np.ndarray, str | None]:
    """``x``, ``y`` and the declared kind (or None) of an ``.npz`` file."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {name} as an .npz archive ({first_line(error)}).") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):  # an .npy file named .npz
        raise DataError(f"{name} holds a single array, not an .npz archive; {_HOW}.")
    with archive:
        files = list(archive.files)
        x_key = _key(files, ("x", "X"), name, "the inputs")
        y_key = _key(files, ("y", "Y"), name, "the targets")
        x, y = _member(archive, x_key, name), _member(archive, y_key, name)
        declared: str | None = None
        if "kind" in files:
            stored = _member(archive, "kind", name)
            if stored.shape != () or stored.dtype.kind not in "US" or (
                str(stored) not in KINDS
            ):  # fmt: skip
                raise DataError(
                    f"'kind' in {name} must be one of {listing(KINDS)} (a string) but is "
                    f"{str(stored)[:40]!r}."
                )
            declared = str(stored)
        extra = [f for f in files if f not in (x_key, y_key, "kind")]
        if extra:
            notes.add(f"{name}: arrays {listing(extra)} are not used (only x, y and kind)")
    notes.add(f"{name}: inputs {x_key!r} {x.shape} {x.dtype}, targets {y_key!r} {y.shape}")
    return x, y, declared


def _key(files: list[str], names: tuple[str, ...], name: str, what: str) -> str:
    present = [k for k in names if k in files]
    if len(present) > 1:
        raise DataError(
            f"{name} holds both {present[0]!r} and {present[1]!r}; keep one array of {what}."
        )
    if not present:
        held = listing(files) if files else "no arrays"
        raise DataError(
            f"{name} has no array {names[0]!r} ({what}); it holds {held}. Save the inputs as x "
            f"and the targets as y: {_HOW.removeprefix('save them with ')}."
        )
    return present[0]


def _member(archive: np.lib.npyio.NpzFile, key: str, name: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as error:
        if _is_object_error(error):
            raise _object_array(name, key) from None
        raise DataError(f"cannot read array {key!r} of {name} ({first_line(error)}).") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise DataError(f"cannot read array {key!r} of {name} ({first_line(error)}).") from None


def _is_object_error(error: ValueError) -> bool:
    """NumPy's refusals to load an object array without pickle (or to memory-map one)."""
    return any(text in str(error) for text in ("allow_pickle", "Object arrays", "Python objects"))


def _object_array(name: str, key: str) -> DataError:
    return DataError(
        f"array {key!r} in {name} holds Python objects, which autoinit never loads (unpickling "
        "can run code); save numeric arrays, e.g. numpy.asarray(values, dtype=numpy.float32)."
    )


def _read_npy(path: Path, name: str) -> tuple[np.ndarray, np.ndarray, str | None]:
    """The features and the target column of a 2-D ``.npy`` array (memory-mapped)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        if _is_object_error(error):
            raise _object_array(name, "the array") from None
        raise DataError(f"cannot read {name} as an .npy array ({first_line(error)}).") from None
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read {name} as an .npy array ({first_line(error)}).") from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{name} is an .npz archive; name it .npz.")
    if array.ndim != 2 or array.shape[1] < 2 or array.dtype.kind not in "biuf":
        raise DataError(
            f"{name} holds an array of shape {array.shape} and dtype {array.dtype}; an .npy file "
            "must be a 2-D numeric array whose last column is the target. For images or "
            f"sequences, or separate targets, {_HOW} in an .npz file."
        )
    return array[:, :-1], array[:, -1], "tabular"


def _kind_of(
    x: np.ndarray, declared: str | None, name: str, notes: Notes
) -> tuple[str, np.ndarray]:
    """The kind of data, from the declared kind or the shape and dtype of ``x``, and ``x`` as
    ``(N, F)``, ``(N, C, H, W)`` or ``(N, T, F)`` (a view)."""
    if x.dtype.kind not in "biuf":
        if x.dtype.kind == "O":
            raise _object_array(name, "x")
        raise DataError(
            f"array 'x' in {name} has dtype {x.dtype}; the inputs must be numbers (float or "
            "integer)."
        )
    shapes = {2: "tabular", 3: "images" if x.dtype == np.uint8 else "sequences", 4: "images"}
    if x.ndim not in shapes:
        raise DataError(
            f"array 'x' in {name} has shape {x.shape}; expected (N, F) rows, (N, C, H, W) or "
            "(N, H, W) images, or (N, T, F) sequences."
        )
    kind = declared or shapes[x.ndim]
    allowed = {"tabular": (2,), "images": (3, 4), "sequences": (2, 3)}[kind]
    if x.ndim not in allowed:
        raise DataError(
            f"array 'x' in {name} has shape {x.shape}, which cannot be {kind} (declared by its "
            f"'kind'); {kind} need {' or '.join(f'{d}-D' for d in allowed)} arrays."
        )
    if 0 in x.shape[1:]:
        raise DataError(f"array 'x' in {name} has shape {x.shape}: a sample has no values.")
    if kind == "images" and x.ndim == 3:
        x = x[:, None]
    elif kind == "sequences" and x.ndim == 2:
        x = x[:, :, None]
    shape = x.shape[1:]
    if kind == "images":
        notes.add(f"x read as images: {shape[0]} channel(s) of {shape[1]}x{shape[2]}")
    elif kind == "sequences":
        notes.add(
            f"x read as sequences of {shape[0]} steps x {shape[1]} feature(s)"
            + ("" if declared else "; save kind='images' in the .npz to read it as images")
        )
    return kind, x

"""``load_data``: pick the reader from what the path is, and check the options it can take.

- a folder: images, one subfolder per class (:func:`~._images.load_image_folder`);
- ``.npz`` / ``.npy``: arrays (:func:`~._npz.load_arrays`);
- ``.parquet`` / ``.pq``: a table read with pyarrow (:func:`~._parquet.load_parquet`);
- anything else: CSV or TSV text (:func:`~._load.load_csv`), as before.

Every reader returns an object with the same interface: ``kind`` (``"tabular"``,
``"images"`` or ``"sequences"``), the tensors ``X_train``/``y_train``/``X_val``/``y_val``,
``task``, ``task_reason``, ``n_classes``, ``notes``, ``fingerprint`` and ``describe()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from autoinit.data._arraydata import ArrayData
from autoinit.data._images import load_image_folder
from autoinit.data._load import load_csv
from autoinit.data._npz import load_arrays
from autoinit.data._parquet import load_parquet
from autoinit.data._tabular import TabularData
from autoinit.errors import DataError

Data = Union[TabularData, ArrayData]

FORMATS = {".npz": "arrays", ".npy": "arrays", ".parquet": "parquet", ".pq": "parquet"}


def data_format(path: str | Path) -> str:
    """``"images"`` (a folder), ``"arrays"``, ``"parquet"`` or ``"csv"``, from the path alone."""
    path = Path(path)
    if path.is_dir():
        return "images"
    return FORMATS.get(path.suffix.lower(), "csv")


def load_data(
    path: str | Path,
    *,
    target: str | None = None,
    task: str = "auto",
    image_size: str | int | tuple[int, int] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Data:
    """Read any supported data into train/validation tensors (see the module docstring).

    Args:
        path: a CSV/TSV file, a Parquet file, an ``.npz``/``.npy`` file or an image folder.
        target: the column to predict (CSV and Parquet only).
        task: ``"auto"``, ``"classification"`` or ``"regression"``.
        image_size: ``N`` or ``"WxH"`` (image folders only).
        val_fraction: the share held out for validation.
        seed: seeds the split.

    Raises:
        DataError: the data or an option cannot be used; the message says what to change.
    """
    kind = data_format(path)
    name = Path(path).name or str(path)
    if target is not None and kind in ("images", "arrays"):
        what = "an image folder" if kind == "images" else "an array file"
        raise DataError(
            f"--target names a column of a CSV or Parquet file, but {name} is {what} "
            f"({'its class folders are the target' if kind == 'images' else 'y is the target'})."
        )
    if image_size is not None and kind != "images":
        raise DataError(
            f"--image-size applies to image folders, but {name} is not a folder; resize the "
            "images before saving them."
        )
    if kind == "images":
        return load_image_folder(
            path, image_size=image_size, task=task, val_fraction=val_fraction, seed=seed
        )
    if kind == "arrays":
        return load_arrays(path, task=task, val_fraction=val_fraction, seed=seed)
    if kind == "parquet":
        return load_parquet(path, target=target, task=task, val_fraction=val_fraction, seed=seed)
    return load_csv(path, target=target, task=task, val_fraction=val_fraction, seed=seed)

"""``load_parquet``: a Parquet file -> :class:`~._tabular.TabularData`, by the CSV path's steps.

The file is read one row group batch at a time with pyarrow (the optional extra
``autoinit[parquet]``), each batch as a pandas frame, and goes through the same
:func:`~._frame.split_frame` and :class:`~._frame.Assembler` as a CSV file's pieces: numeric
columns straight into one float32 block, the others kept as pandas columns. From there the
column typing, target, task detection, preprocessing and split are the CSV reader's own.

Parquet stores each column's type, so nothing is sniffed: integer and float columns are
numbers, booleans, text, categories and decimals are typed by the CSV path's rules, and
other types (dates, times, binary, nested lists) are dropped with a note. The steps after
reading are the CSV reader's :func:`~._load.tabular_data`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from autoinit.data._files import file_sha256, first_line
from autoinit.data._frame import Assembler, split_frame
from autoinit.data._layout import Layout
from autoinit.data._load import _check_options, tabular_data
from autoinit.data._notes import Notes, listing
from autoinit.data._tabular import TabularData
from autoinit.data._target import choose_target
from autoinit.errors import DataError

BATCH_ROWS = 65_536  # rows converted to pandas at a time
MISSING = "reading Parquet files needs pyarrow: pip install 'autoinit[parquet]' (or pyarrow)."


def pyarrow_modules() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, or a DataError that says how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DataError(MISSING) from None
    return pyarrow, pyarrow.parquet


def load_parquet(
    path: str | Path,
    *,
    target: str | None = None,
    task: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
) -> TabularData:
    """Read a Parquet file and turn it into train/validation tensors, as :func:`load_csv` does
    for a CSV file (same arguments, same notes and errors).

    Raises:
        DataError: pyarrow is missing, or the file or an option cannot be used.
    """
    _check_options(task, val_fraction)
    pa, pq = pyarrow_modules()
    path = Path(path)
    name = path.name
    if not path.exists():
        raise DataError(f"file not found: {str(path)!r}; check the path.")
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a directory; pass a Parquet file.")
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DataError(f"cannot read {name} as a Parquet file ({first_line(error)}).") from None
    notes = Notes()
    names = list(schema.names)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{name} has duplicate column names: {listing(duplicates)}; rename them.")
    target = choose_target(names, target, name, notes)
    kinds = {field.name: _kind(pa, field.type) for field in schema}
    if kinds[target] is None:
        raise DataError(
            f"target {target!r} in {name} has type {schema.field(target).type}, which cannot be "
            "a target; choose another column with --target."
        )
    dropped = [n for n in names if kinds[n] is None]
    for col in dropped:
        notes.add(f"column {col!r} has type {schema.field(col).type}, not read -> dropped")
    kept = [n for n in names if kinds[n] is not None]
    numeric = [n for n in kept if n != target and kinds[n] == "number"]
    layout = Layout(
        options={}, names=kept, unnamed=[], numeric=numeric,
        others=[n for n in kept if n not in numeric], features=[n for n in kept if n != target],
        fields=len(kept),
    )  # fmt: skip
    assembler = Assembler(layout, max(parquet.metadata.num_rows, 1))
    try:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=kept):
            frame = _plain(batch.to_pandas())
            assembler.add(split_frame(frame, layout), len(frame))
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DataError(f"cannot read {name} as a Parquet file ({first_line(error)}).") from None
    if not assembler.others:
        raise DataError(f"{name} has columns but no rows; add rows.")
    table = assembler.finish(file_sha256(path))
    del assembler
    if table.rows == 0:
        raise DataError(f"{name} has columns but no rows; add rows.")
    fingerprint = {
        "kind": "tabular",
        "file": name,
        "format": "parquet",
        "sha256": table.sha256,
        "rows": table.rows,
        "columns": len(names),
        "target": target,
    }
    data = tabular_data(
        table, layout.features, fingerprint, notes, task=task, val_fraction=val_fraction, seed=seed
    )
    notes.emit_warnings(stacklevel=2)
    return data


def _kind(pa: Any, dtype: Any) -> str | None:
    """``"number"`` for integer and float columns (the float32 block); ``"other"`` for those the
    CSV path types from pandas (booleans, text, categories, decimals, all-null); None for the
    rest, which are dropped."""
    t = pa.types
    if t.is_integer(dtype) or t.is_floating(dtype):
        return "number"
    if t.is_dictionary(dtype):
        return _kind(pa, dtype.value_type) and "other"
    if (t.is_boolean(dtype) or t.is_string(dtype) or t.is_large_string(dtype)
            or t.is_decimal(dtype) or t.is_null(dtype)):  # fmt: skip
        return "other"
    return None


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns (Parquet dictionaries) as their values, as a CSV reader sees them."""
    categorical = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
    if not categorical:
        return frame
    return frame.assign(**{c: frame[c].astype(object) for c in categorical})

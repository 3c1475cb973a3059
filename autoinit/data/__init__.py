"""Data files -> tensors ready to train on.

Readers: :func:`load_csv` (CSV -> :class:`TabularData`), :func:`load_parquet`,
:func:`load_arrays` (.npz/.npy), :func:`load_image_folder`, and :func:`load_data`, which picks
one from the path; each result says its ``kind``. Every problem with the input raises
:class:`~autoinit.errors.DataError` with one line that names the file or column and says what
to do; anything a reader decided on its own (the delimiter, the target, dropped columns and
rows, junk treated as missing) is in ``notes``.

The CSV reader, one job per module:

- ``_sniff``: is the file UTF-8 text; its delimiter and header (the ``csv`` module).
- ``_layout``: which columns are numeric, from a sample of the first rows.
- ``_reading``: the file in pieces, in parallel threads, or whole when it cannot be cut;
  ``_frame`` is the step both share (parsed rows -> a float32 block and other columns),
  ``_read_csv`` turns pandas' parser errors into DataErrors.
- ``_columns``: feature types, junk, IDs. ``_target``: task detection and encoding.
- ``_split``: the stratified split. ``_preprocess``: the scikit-learn transformer.
- ``_load``: ``load_csv``, the steps in order; ``tabular_data``, the steps after reading, for
  any tabular reader. ``_notes``: the notes collector. ``_tabular``: :class:`TabularData`.
- ``_limits``: every size and limit, read when used (tests patch them there).

Large files are parsed ``READ_BLOCK_BYTES`` at a time in parallel threads, hashed on the way;
the numeric columns go straight into one row-major float32 block. The preprocessing is fitted
on at most ``FIT_ROWS`` training rows, then applied ``BLOCK_ROWS`` rows at a time straight into
the arrays that become the tensors. For 1M rows x 50 columns the peak is about 2.4x the float32
data (the block and the tensors); see ``benchmarks/README.md``.
"""

from autoinit.data._arraydata import KINDS, ArrayData
from autoinit.data._dispatch import Data, data_format, load_data
from autoinit.data._images import load_image_folder
from autoinit.data._limits import (
    FIT_ROWS,
    MAX_CATEGORIES,
    MAX_CLASSES,
    MIN_NUMERIC_FRACTION,
    MIN_ROWS,
    OUTLIER_CLIP,
)
from autoinit.data._load import load_csv
from autoinit.data._npz import load_arrays
from autoinit.data._parquet import load_parquet
from autoinit.data._sniff import DELIMITERS
from autoinit.data._tabular import TabularData
from autoinit.data._target import TASKS, detect_task

__all__ = [
    "KINDS",
    "ArrayData",
    "Data",
    "data_format",
    "load_arrays",
    "load_data",
    "load_image_folder",
    "load_parquet",
    "DELIMITERS",
    "FIT_ROWS",
    "MAX_CATEGORIES",
    "MAX_CLASSES",
    "MIN_NUMERIC_FRACTION",
    "MIN_ROWS",
    "OUTLIER_CLIP",
    "TASKS",
    "TabularData",
    "detect_task",
    "load_csv",
]

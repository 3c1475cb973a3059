"""Data files -> tensors ready to train on.

Today one reader: :func:`load_csv` turns a CSV file into :class:`TabularData` (validated,
preprocessed, split, float32 tensors). Every problem with the input raises
:class:`~autoinit.errors.DataError` with one line that names the file or column and says what
to do; anything the loader decided on its own (the delimiter, the target, dropped columns and
rows, junk treated as missing) is in ``notes``.

One job per module:

- ``_sniff``: is the file UTF-8 text; its delimiter and header (the ``csv`` module).
- ``_layout``: which columns are numeric, from a sample of the first rows.
- ``_reading``: the file in pieces, in parallel threads, or whole when it cannot be cut;
  ``_frame`` is the step both share (parsed rows -> a float32 block and other columns).
- ``_columns``: feature types, junk, IDs. ``_target``: task detection and encoding.
- ``_split``: the stratified split. ``_preprocess``: the scikit-learn transformer.
- ``_load``: ``load_csv``, the steps in order. ``_notes``: the notes collector.
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

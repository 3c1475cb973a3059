"""CSV file -> :class:`TabularData`: validated, preprocessed, split and ready as float32 tensors.

Every problem with the input raises :class:`~autoinit.errors.DataError` with one line that names
the file or column and says what to do; anything the loader decided on its own (the delimiter,
the target, dropped columns and rows, junk treated as missing) is written to ``notes``.

Large files are parsed :data:`READ_BLOCK_BYTES` at a time in parallel threads, hashed on the
way; the numeric columns (a sample of the first rows says which) go straight into one row-major
float32 block. The preprocessing is fitted on at most :data:`FIT_ROWS` training rows, then
applied :data:`BLOCK_ROWS` rows at a time straight into the arrays that become the tensors. For
1M rows x 50 columns the peak is about 2.4x the float32 data (the block and the tensors); see
``benchmarks/README.md``.
"""

from __future__ import annotations

import codecs
import collections
import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import itertools
import math
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, RobustScaler
from sklearn.utils.extmath import _approximate_mode  # the split must match train_test_split's

from autoinit.errors import DataError

__all__ = ["TabularData", "detect_task", "load_csv"]

TASKS = ("classification", "regression")
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
MAX_CLASSES = 20  # a target with more distinct values than this is not read as class labels
MAX_CATEGORIES = 50  # text columns with more distinct values are IDs or free text: dropped
MIN_NUMERIC_FRACTION = 0.9  # a text column this numeric is numbers with some junk in it
MIN_ROWS = 10  # fewer rows cannot train anything worth comparing
OUTLIER_CLIP = 10.0  # scaled features are clipped to +-this many robust standard deviations
FIT_ROWS = 20_000  # medians, quartiles and categories are estimated from this many rows at most
BLOCK_ROWS = 65_536  # rows transformed at a time
SAMPLE_BYTES = 1 << 20  # read to sniff the delimiter, encoding and header
SAMPLE_ROWS = 1000  # parsed to learn which columns are numeric
READ_BLOCK_BYTES = 8 << 20  # the file is parsed this many bytes at a time at most, in parallel
MIN_PIECE_BYTES = 1 << 20  # ...and at least (unless READ_BLOCK_BYTES is smaller)
MAX_READ_THREADS = 4  # parsing threads at most (and no more than the CPUs this process may use)
_SNIFF_RECORDS = 50
_MAX_LISTED = 20
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass(frozen=True, eq=False)
class TabularData:
    """A CSV file split into preprocessed train and validation tensors.

    ``y`` holds int64 class indices of shape (n,) for classification and standardized float32
    values of shape (n, 1) for regression (``y * target_scale + target_mean`` undoes it).
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    task: str
    task_reason: str
    target: str
    feature_names: list[str]
    classes: list[str] | None
    target_mean: float | None
    target_scale: float | None
    notes: list[str]
    fingerprint: dict

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def describe(self) -> str:
        """One line, e.g. ``iris.csv: 150 rows, 4 features, target 'species' (classification, 3
        classes)``."""
        rows = len(self.X_train) + len(self.X_val)
        kind = f"{self.task}, {self.n_classes} classes" if self.classes is not None else self.task
        return (
            f"{self.fingerprint['file']}: {rows} rows, {self.n_features} features, "
            f"target {self.target!r} ({kind})"
        )


def load_csv(
    path: str | Path,
    *,
    target: str | None = None,
    task: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
) -> TabularData:
    """Read a CSV file and turn it into train/validation tensors.

    Args:
        path: a comma-, semicolon- or tab-separated UTF-8 file with a header row.
        target: the column to predict; the last column by default.
        task: ``"auto"`` (see :func:`detect_task`), ``"classification"`` or ``"regression"``.
        val_fraction: the share of rows held out for validation, in (0, 1).
        seed: seeds the train/validation split.

    Raises:
        DataError: the file or an option cannot be used; the message says what to change.
    """
    if task != "auto" and task not in TASKS:
        raise DataError(f"task must be 'auto', 'classification' or 'regression' but got {task!r}.")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not (
        0 < val_fraction < 1
    ):
        raise DataError(
            f"val_fraction must be a number strictly between 0 and 1 but got {val_fraction!r}."
        )
    path = Path(path)
    name = path.name
    text, truncated = _read_sample(path)
    delimiter = _detect_delimiter(text, truncated)
    header = _header(text, delimiter)
    _check_unique(header, name)
    notes = [f"delimiter: {DELIMITERS[delimiter]} ({delimiter!r})"]
    target = _choose_target(header, target, name, notes)
    layout = _layout(path, delimiter, header, target, name, notes)
    table = _read_table(path, name, layout)
    if table.rows == 0:
        raise DataError(f"{name} has a header but no data rows; add rows below the header.")
    fingerprint = {
        "file": name,
        "sha256": table.sha256,
        "rows": table.rows,
        "columns": len(header),
        "target": target,
    }

    y = _clean_target(table.others[target], name, notes)
    kept = None if len(y) == table.rows else y.index.to_numpy()
    if task == "auto":
        task, reason = detect_task(y)
    else:
        reason = f"task {task!r} was requested"
    fingerprint["task"] = task
    _check_rows(len(y), val_fraction, name)
    features = _feature_table(table, layout.features, kept, notes)
    del table
    if not features.numeric and not features.categorical:
        raise DataError(
            f"{name} has no usable feature columns besides the target {target!r}; "
            "add feature columns (the notes say why others were dropped)."
        )
    if task == "classification":
        values, classes = _encode_classes(y)
    else:
        values, classes = _regression_values(y, target, name), None
    del y
    train_idx, val_idx = _split(values, task, val_fraction, seed, notes)
    X_train, X_val, feature_names = _preprocess(features, train_idx, val_idx)
    if task == "classification":
        target_mean = target_scale = None
        y_train, y_val = torch.from_numpy(values[train_idx]), torch.from_numpy(values[val_idx])
    else:
        target_mean, target_scale = _standardize_stats(values[train_idx], target, name)
        y_train = _standardized(values[train_idx], target_mean, target_scale)
        y_val = _standardized(values[val_idx], target_mean, target_scale)
    return TabularData(
        X_train=X_train,
        y_train=y_train,
        X_val=X_val,
        y_val=y_val,
        task=task,
        task_reason=reason,
        target=target,
        feature_names=feature_names,
        classes=classes,
        target_mean=target_mean,
        target_scale=target_scale,
        notes=notes,
        fingerprint=fingerprint,
    )


def detect_task(y: pd.Series) -> tuple[str, str]:
    """Guess whether a target column holds class labels or quantities, and say why.

    Booleans, and integers or text with few distinct values (at most :data:`MAX_CLASSES` and
    fewer than half the rows), are class labels; so is anything numeric with exactly two values.
    Whole-number floats (``1.0, 2.0``) count as integers, since a missing value turns an integer
    column into floats. Other numbers are quantities. Text with many distinct values is returned
    as regression, which then fails unless it is numeric: the caller can force classification.

    Returns:
        ``(task, reason)``, e.g. ``("classification", "target 'species' is text with 3 distinct
        values -> classification")``.
    """
    y = y.dropna()
    label = f"target {y.name!r}" if y.name is not None else "the target"
    k = int(y.nunique())
    few = k <= MAX_CLASSES and k < len(y) / 2
    if pd.api.types.is_bool_dtype(y):
        return "classification", f"{label} is boolean -> classification"
    if pd.api.types.is_numeric_dtype(y):  # bool is numeric too, hence checked first
        if pd.api.types.is_integer_dtype(y):
            kind = "integer"
        elif _is_whole(y):
            kind = "whole-number float"
        else:
            if k == 2:
                return "classification", (
                    f"{label} is a float with exactly 2 distinct values -> classification"
                )
            return "regression", f"{label} is a float with {k} distinct values -> regression"
        if k == 2 or few:
            return "classification", f"{label} is {kind} with {k} distinct values -> classification"
        return "regression", (
            f"{label} is {kind} with {k} distinct values "
            f"(more than {MAX_CLASSES} or half the rows) -> regression"
        )
    if few:
        return "classification", f"{label} is text with {k} distinct values -> classification"
    return "regression", (
        f"{label} is text with {k} distinct values, too many to be class labels -> regression"
    )


# --- reading -----------------------------------------------------------------------------------


def _read_sample(path: Path) -> tuple[str, bool]:
    """Check that ``path`` is a readable UTF-8 text file; return its decoded start and whether
    the file goes on past it."""
    if not path.exists():
        raise DataError(f"file not found: {str(path)!r}; check the path.")
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a directory; pass a CSV file inside it.")
    try:
        with path.open("rb") as f:
            raw = f.read(SAMPLE_BYTES + 1)
    except OSError as err:
        raise DataError(f"cannot read {str(path)!r}: {err.strerror}.") from None
    name = path.name
    if not raw.strip():
        raise DataError(f"{name} is empty; it needs a header row and data rows.")
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(f"{name} is UTF-16 text; re-save it as UTF-8 CSV.")
    if b"\x00" in raw:
        raise DataError(
            f"{name} looks binary (it contains NUL bytes), not CSV text; pass a CSV file."
        )
    truncated = len(raw) > SAMPLE_BYTES
    decoder = codecs.getincrementaldecoder("utf-8-sig")()  # tolerates a character cut in two
    try:
        text = decoder.decode(raw[:SAMPLE_BYTES], final=not truncated)
    except UnicodeDecodeError as err:
        raise _not_utf8(name, err) from None
    return text, truncated


def _not_utf8(name: str, err: UnicodeDecodeError) -> DataError:
    byte = err.object[err.start : err.start + 1].hex()
    return DataError(
        f"{name} is not UTF-8 text (it has the byte 0x{byte}; perhaps it is Latin-1 or "
        "Windows-1252); re-save it as UTF-8."
    )


def _records(text: str, delimiter: str, truncated: bool) -> list[list[str]]:
    """The first complete records of the sample, split the way ``csv`` (and pandas) would;
    blank lines are skipped, as pandas does."""
    rows = []
    lines = io.StringIO(text, newline="")  # keep "\r", "\n" and "\r\n" for csv to split on
    reader = csv.reader(lines, delimiter=delimiter, skipinitialspace=True)
    try:
        rows.extend(itertools.islice(filter(None, reader), _SNIFF_RECORDS + 1))
    except csv.Error:  # a cell past the csv module's field size limit: keep what was read
        pass
    if truncated and len(rows) > 1:
        rows.pop()  # the sample may end inside the last record
    return rows[:_SNIFF_RECORDS]


def _detect_delimiter(text: str, truncated: bool) -> str:
    """The candidate that splits the header into the most fields, consistently across rows.

    Counting is done by the ``csv`` reader, so delimiters inside quoted cells do not count.
    """

    def score(delimiter: str) -> tuple[bool, float, int]:
        widths = [len(r) for r in _records(text, delimiter, truncated)]
        if not widths:
            return False, 0.0, 0
        consistent = sum(w == widths[0] for w in widths) / len(widths)
        return widths[0] > 1, consistent, widths[0]

    return max(DELIMITERS, key=score)


def _header(text: str, delimiter: str) -> list[str]:
    records = _records(text, delimiter, truncated=False)
    return records[0] if records else []


def _check_unique(header: list[str], name: str) -> None:
    """Refuse duplicate names, which pandas would silently rename to ``a.1``."""
    counts = collections.Counter(h for h in header if h.strip())
    dupes = [h for h, count in counts.items() if count > 1]
    if dupes:
        raise DataError(
            f"{name} has duplicate column names: {_listing(dupes)}; rename them so that "
            "each column has its own name."
        )


@dataclasses.dataclass
class _Layout:
    """How to read the file, and where each of its columns goes."""

    options: dict  # read_csv options for every piece of the file
    names: list[str]  # the columns, named as pandas names them
    unnamed: list[str]  # columns without a header name: dropped
    numeric: list[str]  # feature columns numeric in the sample: parsed into the float32 block
    others: list[str]  # the target and every other kept column: kept as pandas columns
    features: list[str]  # the feature columns in file order


def _layout(
    path: Path, delimiter: str, header: list[str], target: str, name: str, notes: list[str]
) -> _Layout:
    """Read a sample of the first rows: which columns are numeric, and for semicolon files
    whether numbers are written with a decimal comma (``1,5``)."""
    # index_col=False: a delimiter at the end of every row must not shift the columns
    options = dict(sep=delimiter, engine="c", index_col=False)
    # skipinitialspace: "a, b" names the column "b", as the header check reads it
    first = dict(encoding="utf-8-sig", skipinitialspace=True, nrows=SAMPLE_ROWS)
    sample = _pandas_read(path, name, **first, **options)
    if delimiter == ";":
        comma = _pandas_read(path, name, decimal=",", **first, **options)
        if _count_numeric(comma) > _count_numeric(sample):
            options["decimal"], sample = ",", comma
            notes.append("decimal separator: comma (1,5 means 1.5)")
    names = list(sample.columns)
    unnamed = _unnamed(names, header, notes)
    numeric = [
        col
        for col, dtype in sample.dtypes.items()
        if col != target and col not in unnamed and _is_number(dtype)
        and not pd.api.types.is_bool_dtype(dtype)
    ]  # fmt: skip
    return _Layout(
        options=options,
        names=names,
        unnamed=unnamed,
        numeric=numeric,
        others=[c for c in names if c not in numeric and c not in unnamed],
        features=[c for c in names if c != target and c not in unnamed],
    )


@dataclasses.dataclass
class _Table:
    """The file's columns: the sample's numeric features as one row-major float32 block
    (infinite values as NaN), every other column as a pandas frame.

    Per block column: ``finite`` counts the numbers, ``junk_rows``/``junk_values`` are the cells
    that were text (now NaN) and ``inf_rows``/``inf_cols`` where infinite values (or ones beyond
    float32) were. That is enough to write each column's notes, for any subset of rows.
    """

    rows: int
    sha256: str
    numeric: list[str]
    block: np.ndarray
    others: pd.DataFrame
    finite: np.ndarray
    junk_rows: list[np.ndarray]
    junk_values: list[list]
    inf_rows: np.ndarray
    inf_cols: np.ndarray


class _Unsplittable(Exception):
    """The file cannot be read piece by piece; read it whole (which also reports its errors
    with the right line numbers)."""


def _read_table(path: Path, name: str, layout: _Layout) -> _Table:
    try:
        return _read_pieces(path, layout)
    except _Unsplittable:
        return _read_whole(path, name, layout)


def _read_pieces(path: Path, layout: _Layout) -> _Table:
    """Parse the file up to :data:`READ_BLOCK_BYTES` at a time, in parallel threads (pandas'
    parser releases the GIL), hashing each piece as it is read.

    Numeric columns go straight into one float32 block: no float64 frame, no mapped file, no
    full-size copies. Behaviour is that of one ``read_csv`` call (:func:`_read_whole`), which
    the tests check piece by piece; pandas infers types per chunk in both.
    """
    size = path.stat().st_size
    threads = _read_threads() if size > READ_BLOCK_BYTES else 1
    piece_bytes = READ_BLOCK_BYTES
    if threads > 1:  # smaller pieces for smaller files: each thread gets several
        piece_bytes = min(READ_BLOCK_BYTES, max(MIN_PIECE_BYTES, size // (4 * threads)))
    digest = hashlib.sha256()
    table = _Assembler(layout, size)
    with path.open("rb") as f, warnings.catch_warnings():
        # per-chunk type inference mixes types in a column (handled later): don't warn of it
        warnings.simplefilter("ignore", pd.errors.DtypeWarning)
        pieces = _pieces(f, digest, piece_bytes)
        if threads == 1:
            for index, data in enumerate(pieces):
                table.add(_parse_piece(data, index == 0, layout), len(data))
        else:
            with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                pending: collections.deque = collections.deque()
                try:
                    for index, data in enumerate(pieces):
                        future = pool.submit(_parse_piece, data, index == 0, layout)
                        pending.append((future, len(data)))
                        while len(pending) > threads:  # at most threads + 1 pieces held
                            future, n = pending.popleft()
                            table.add(future.result(), n)
                    while pending:
                        future, n = pending.popleft()
                        table.add(future.result(), n)
                finally:
                    for future, _ in pending:
                        future.cancel()
    return table.finish(digest.hexdigest())


def _read_threads() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, MAX_READ_THREADS))


def _pieces(f, digest, size: int) -> Iterator[bytes]:
    """The file in pieces of about ``size`` bytes that end at a line end (a piece that cuts a
    quoted cell in two fails to parse, and the file is then read whole)."""
    while data := f.read(size):
        end = len(data)
        if len(data) == size:  # more may follow: end at the last line end
            end = data.rfind(b"\n") + 1
            while not end:  # a very long line, or "\r" line ends only: read on
                more = f.read(size)
                data += more
                end = len(data) if len(more) < size else data.rfind(b"\n") + 1
            if end < len(data):
                f.seek(end - len(data), io.SEEK_CUR)
                data = data[:end]
        digest.update(data)
        yield data


@dataclasses.dataclass
class _Piece:
    """One parsed piece of the file, in the layout of :class:`_Table` (rows counted from 0)."""

    rows: int
    values: np.ndarray
    others: pd.DataFrame
    finite: np.ndarray
    junk: dict[int, tuple[np.ndarray, list]]
    inf_rows: np.ndarray
    inf_cols: np.ndarray


def _parse_piece(data: bytes, first: bool, layout: _Layout) -> _Piece:
    """Parse one piece (in a worker thread); raise :class:`_Unsplittable` on any problem."""
    # skipinitialspace costs ~10% of the parse: only where a cell can start with a space
    spaces = b" " in data or (layout.options["sep"] != "\t" and b"\t" in data)
    options = dict(layout.options, skipinitialspace=spaces)
    try:
        with np.errstate(over="ignore"):  # thread-local; beyond float32 -> inf -> missing
            if first:
                frame = pd.read_csv(io.BytesIO(data), header=0, encoding="utf-8-sig", **options)
                if list(frame.columns) != layout.names:
                    raise _Unsplittable("the columns differ from the sample's")
            else:
                frame = pd.read_csv(
                    io.BytesIO(data), header=None, names=layout.names, encoding="utf-8", **options
                )
            return _piece(frame, layout)
    except (ValueError, OverflowError) as err:  # parser errors, bad UTF-8, a misparsed piece
        raise _Unsplittable(str(err)) from None


def _piece(frame: pd.DataFrame, layout: _Layout) -> _Piece:
    dtypes = frame.dtypes
    junk: dict[int, tuple[np.ndarray, list]] = {}
    if all(_is_float_or_int(dtypes[col]) for col in layout.numeric):
        values = frame[layout.numeric].to_numpy(dtype=np.float32)
    else:  # text in a column that the sample found numeric: junk, or (later) not numeric
        arrays = []
        for j, col in enumerate(layout.numeric):
            series = frame[col]
            if not _is_float_or_int(series.dtype):
                if not _is_text(series):
                    raise _Unsplittable(f"column {col!r} is {series.dtype}")  # e.g. booleans
                numbers = pd.to_numeric(series, errors="coerce")
                bad = (series.notna() & numbers.isna()).to_numpy()
                if bad.any():
                    junk[j] = (np.flatnonzero(bad), series[bad].tolist())
                series = numbers
            arrays.append(np.asarray(series, dtype=np.float32))
        values = _row_major(arrays, len(frame))
    values = values.reshape(len(frame), len(layout.numeric))
    unfinite = ~np.isfinite(values)
    counts = np.count_nonzero(unfinite, axis=0)  # missing or infinite
    inf_rows = inf_cols = _NO_ROWS
    if counts.any():
        infinite = np.isinf(values)
        if infinite.any():
            inf_rows, inf_cols = np.nonzero(infinite)
            values[infinite] = np.nan
    return _Piece(
        rows=len(frame),
        values=values,
        others=frame[layout.others],
        finite=len(frame) - counts,
        junk=junk,
        inf_rows=inf_rows,
        inf_cols=inf_cols,
    )


def _is_text(series: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)


def _is_float_or_int(dtype) -> bool:
    return pd.api.types.is_float_dtype(dtype) or (
        pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    )


_NO_ROWS = np.empty(0, dtype=np.int64)


class _Assembler:
    """Gathers parsed pieces, in file order, into one :class:`_Table`.

    The block is allocated once, for the rows that the file's size and the first piece
    predict (pages never written cost no memory); should it fill up, it is reallocated.
    """

    def __init__(self, layout: _Layout, file_bytes: int) -> None:
        k = len(layout.numeric)
        self.layout = layout
        self.file_bytes = file_bytes
        self.read_bytes = 0
        self.rows = 0
        self.block = np.empty((0, k), dtype=np.float32)
        self.finite = np.zeros(k, dtype=np.int64)
        self.junk_rows: list[list[np.ndarray]] = [[] for _ in range(k)]
        self.junk_values: list[list] = [[] for _ in range(k)]
        self.inf_rows: list[np.ndarray] = []
        self.inf_cols: list[np.ndarray] = []
        self.others: list[pd.DataFrame] = []

    def add(self, piece: _Piece, n_bytes: int) -> None:
        self.read_bytes += n_bytes
        start, end = self.rows, self.rows + piece.rows
        if end > len(self.block):
            rows = math.ceil(1.05 * end * self.file_bytes / max(self.read_bytes, 1)) + 1024
            grown = _empty_float32(max(rows, end), self.block.shape[1])
            grown[:start] = self.block[:start]
            self.block = grown
        self.block[start:end] = piece.values
        self.finite += piece.finite
        for j, (rows, values) in piece.junk.items():
            self.junk_rows[j].append(rows + start)
            self.junk_values[j].extend(values)
        if len(piece.inf_rows):
            self.inf_rows.append(piece.inf_rows + start)
            self.inf_cols.append(piece.inf_cols)
        self.others.append(piece.others)
        self.rows = end

    def finish(self, sha256: str) -> _Table:
        if not self.others:
            raise _Unsplittable("no piece was read")
        junk_rows = [np.concatenate(r) if r else _NO_ROWS for r in self.junk_rows]
        inf_cols = np.concatenate(self.inf_cols) if self.inf_cols else _NO_ROWS
        infinite = np.bincount(inf_cols, minlength=len(junk_rows))
        for j, rows in enumerate(junk_rows):
            present = self.finite[j] + len(rows) + infinite[j]
            if len(rows) and (present - len(rows)) / present < MIN_NUMERIC_FRACTION:
                # mostly text after all: decided on the whole column, as a whole read does
                raise _Unsplittable(f"column {self.layout.numeric[j]!r} is mostly text")
        others = pd.concat(self.others, ignore_index=True) if len(self.others) > 1 else (
            self.others[0].reset_index(drop=True)
        )  # fmt: skip
        return _Table(
            rows=self.rows,
            sha256=sha256,
            numeric=list(self.layout.numeric),
            block=self.block[: self.rows],
            others=others,
            finite=self.finite,
            junk_rows=junk_rows,
            junk_values=self.junk_values,
            inf_rows=np.concatenate(self.inf_rows) if self.inf_rows else _NO_ROWS,
            inf_cols=inf_cols,
        )


def _read_whole(path: Path, name: str, layout: _Layout) -> _Table:
    """The whole file in one ``read_csv`` call (numeric columns as float32, every column a
    pandas column): for files with quoted line breaks across pieces, or text in a column that
    the sample found numeric; its errors name the right line."""
    options = dict(layout.options, encoding="utf-8-sig", skipinitialspace=True)
    options["dtype"] = dict.fromkeys(layout.numeric, np.float32)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        sha256 = pool.submit(_sha256, path)  # hashing releases the GIL: overlap it with parsing
        frame = _read_frame(path, name, options)
    frame = frame.drop(columns=[c for c in layout.unnamed if c in frame.columns])
    return _Table(
        rows=len(frame),
        sha256=sha256.result(),
        numeric=[],
        block=np.empty((len(frame), 0), dtype=np.float32),
        others=frame.reset_index(drop=True),
        finite=np.zeros(0, dtype=np.int64),
        junk_rows=[],
        junk_values=[],
        inf_rows=_NO_ROWS,
        inf_cols=_NO_ROWS,
    )


def _read_frame(path: Path, name: str, options: dict) -> pd.DataFrame:
    """The whole file; read again without the float32 shortcut if a later row holds text in a
    column that the sample found numeric."""
    try:
        with np.errstate(over="ignore"):  # beyond float32 range -> inf, treated as missing later
            return _pandas_read(path, name, **options)
    except ValueError as err:
        if isinstance(err, pd.errors.ParserError) or not options["dtype"]:
            raise
    return _pandas_read(path, name, **{**options, "dtype": None})


def _count_numeric(frame: pd.DataFrame) -> int:
    return sum(_is_number(dtype) for dtype in frame.dtypes)


def _pandas_read(path: Path, name: str, **options) -> pd.DataFrame:
    """``pandas.read_csv`` with its errors about the file turned into one-line DataErrors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            return pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise DataError(f"{name} is empty; it needs a header row and data rows.") from None
    except UnicodeDecodeError as err:
        raise _not_utf8(name, err) from None
    except pd.errors.ParserError as err:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if found:
            expected, line, saw = found.groups()
            raise DataError(
                f"{name}: line {line} has {saw} fields but the header has {expected}; fix that row "
                "(a stray delimiter, or a value that needs quotes)."
            ) from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{name} cannot be parsed as CSV ({first}); check its format.") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- columns -----------------------------------------------------------------------------------


def _unnamed(names: list[str], header: list[str], notes: list[str]) -> list[str]:
    """Columns without a header name, to drop: usually a row index saved along with the data."""
    if len(header) != len(names):
        return []
    unnamed = [col for col, raw in zip(names, header) if not raw.strip()]
    for col in unnamed:
        position = names.index(col) + 1
        notes.append(f"column {position} has no name (often a saved row index) -> dropped")
    return unnamed


def _choose_target(header: list[str], target: str | None, name: str, notes: list[str]) -> str:
    """The requested target, or by default the last named column; there must be others."""
    named = [h for h in header if h.strip()]
    if not named:
        raise DataError(f"{name} has no column names in its first row; add a header row.")
    if target is None:
        target = named[-1]
        notes.append(f"target: {target!r} (the last column; choose another with --target)")
    elif target in named:
        notes.append(f"target: {target!r} (as requested)")
    else:
        raise DataError(
            f"target column {target!r} is not in {name}; available columns: {_listing(named)}."
        )
    if len(named) < 2:
        raise DataError(
            f"{name} has only the column {target!r}, so there are no features; "
            "check the delimiter (comma, semicolon or tab) or add feature columns."
        )
    return target


@dataclasses.dataclass
class _Features:
    """The usable feature columns of the kept rows (those with a target).

    A numeric column is a column of the table's block (rows ``block_rows``, or all) or its own
    float32 array; categorical columns are text.
    """

    numeric: list[str]
    categorical: list[str]
    sources: list[int | np.ndarray]  # per numeric column: a block column, or the values
    block: np.ndarray
    block_rows: np.ndarray | None
    texts: pd.DataFrame

    def numbers(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The numeric columns of ``rows``, as one C-ordered float32 array (``out`` if given)."""
        block_rows = rows if self.block_rows is None else self.block_rows[rows]
        if self._whole_block():
            # mode="clip" (the rows are valid) writes to ``out`` without a buffer
            return np.take(self.block, block_rows, axis=0, out=out, mode="clip")
        if out is None:
            out = np.empty((len(rows), len(self.sources)), dtype=np.float32)
        gathered = self.block[block_rows] if self.block.shape[1] else None
        for j, source in enumerate(self.sources):
            out[:, j] = gathered[:, source] if isinstance(source, int) else source[rows]
        return out

    def _whole_block(self) -> bool:
        """Whether the numeric columns are exactly the block's, in order."""
        in_order = list(range(self.block.shape[1]))
        return all(isinstance(j, int) for j in self.sources) and self.sources == in_order

    def frame(self, rows: np.ndarray) -> pd.DataFrame:
        """``rows`` as a frame: the numeric columns, then the categorical ones."""
        frame = pd.DataFrame(self.numbers(rows), columns=self.numeric, copy=False)
        for col in self.categorical:
            frame[col] = self.texts[col].to_numpy()[rows]
        return frame


def _feature_table(
    table: _Table, columns: list[str], kept: np.ndarray | None, notes: list[str]
) -> _Features:
    """Sort the feature columns into numeric and categorical ones, for the kept rows.

    Numeric columns are float32 with inf and junk as NaN. Columns that are entirely missing,
    and text columns with too many distinct values, are dropped. Each decision gets a note.
    """
    others = table.others if kept is None else table.others.iloc[kept].reset_index(drop=True)
    in_block = {col: j for j, col in enumerate(table.numeric)}
    stats = _block_stats(table, kept)
    numeric, sources, texts = [], [], {}
    for col in columns:
        if col in in_block:
            j = in_block[col]
            present, junk, examples, infinite = stats[j]
            if not present:
                notes.append(f"column {col!r} is entirely missing -> dropped")
                continue
            if junk:
                notes.append(_junk_note(col, junk, examples))
            if infinite:
                notes.append(_infinite_note(col, infinite))
            numeric.append(col)
            sources.append(j)
            continue
        series = others[col]
        if series.isna().all():
            notes.append(f"column {col!r} is entirely missing -> dropped")
        elif _is_number(series.dtype):
            numeric.append(col)
            sources.append(_float32(series, notes))
        elif (converted := _mostly_numeric(series, notes)) is not None:
            numeric.append(col)
            sources.append(_float32(converted, notes))
        elif (k := series.nunique()) <= MAX_CATEGORIES:
            # as text: pandas infers types per chunk of a big file, which can mix True and "x"
            texts[col] = series.astype(str)
        else:
            notes.append(
                f"column {col!r} is text with {k} distinct values (more than {MAX_CATEGORIES}; "
                "an ID or free text) -> dropped"
            )
    return _Features(
        numeric=numeric,
        categorical=list(texts),
        sources=sources,
        block=table.block,
        block_rows=kept,
        texts=pd.DataFrame(texts),
    )


def _block_stats(table: _Table, kept: np.ndarray | None) -> list[tuple[int, int, list, int]]:
    """Per block column, over the kept rows: values present (numbers, junk or infinite), junk
    values, the first three distinct junk values, and infinite values."""
    k = len(table.numeric)
    finite = table.finite
    inf_mask = np.ones(len(table.inf_rows), dtype=bool)
    junk_masks = [np.ones(len(rows), dtype=bool) for rows in table.junk_rows]
    if kept is not None:
        keep = np.zeros(table.rows, dtype=bool)
        keep[kept] = True
        dropped = np.flatnonzero(~keep)
        finite = finite - (len(dropped) - np.count_nonzero(np.isnan(table.block[dropped]), axis=0))
        inf_mask = keep[table.inf_rows]
        junk_masks = [keep[rows] for rows in table.junk_rows]
    infinite = np.bincount(table.inf_cols[inf_mask], minlength=k)
    stats = []
    for j in range(k):
        values = [v for v, m in zip(table.junk_values[j], junk_masks[j]) if m]
        present = int(finite[j]) + len(values) + int(infinite[j])
        stats.append((present, len(values), list(dict.fromkeys(values))[:3], int(infinite[j])))
    return stats


def _junk_note(col: str, count: int, examples: list) -> str:
    shown = ", ".join(repr(v) for v in examples)
    return f"column {col!r}: {count} non-numeric values ({shown}) treated as missing"


def _infinite_note(col: str, count: int) -> str:
    return (
        f"column {col!r}: {count} infinite values (or beyond +-{_FLOAT32_MAX:.1e}) treated as "
        "missing"
    )


def _row_major(columns: list[np.ndarray], n: int) -> np.ndarray:
    """Columns side by side in one C-ordered float32 array, written a few thousand rows at a
    time: column by column, every write would miss the cache (several times slower)."""
    block = np.empty((n, len(columns)), dtype=np.float32)
    for start in range(0, n, 4096):
        rows = slice(start, start + 4096)
        for j, values in enumerate(columns):
            block[rows, j] = values[rows]
    return block


def _mostly_numeric(series: pd.Series, notes: list[str]) -> pd.Series | None:
    """Numbers with some junk (``?``, ``#REF!``): the numbers, with the junk as NaN; else None."""
    head = series.head(SAMPLE_ROWS)
    if head.notna().any() and _numeric_share(head) < MIN_NUMERIC_FRACTION:
        return None  # plainly text: skip converting the whole column
    values = pd.to_numeric(series, errors="coerce")
    if _numeric_share(series, values) < MIN_NUMERIC_FRACTION:
        return None
    junk = series.notna() & values.isna()
    if junk.any():
        notes.append(_junk_note(series.name, int(junk.sum()), list(series[junk].unique()[:3])))
    return values


def _numeric_share(series: pd.Series, values: pd.Series | None = None) -> float:
    """The share of the present values that read as numbers."""
    if values is None:
        values = pd.to_numeric(series, errors="coerce")
    present = int(series.notna().sum())
    return int(values.notna().sum()) / present if present else 0.0


def _is_number(dtype) -> bool:
    """Numbers or booleans (pandas counts bool as numeric), not text."""
    return pd.api.types.is_numeric_dtype(dtype)


def _float32(series: pd.Series, notes: list[str]) -> np.ndarray:
    """The column as float32 (no copy if it already is), with inf and values beyond float32
    range as NaN."""
    with np.errstate(over="ignore"):
        values = np.asarray(series, dtype=np.float32)
    infinite = np.isinf(values)
    if infinite.any():
        values = np.where(infinite, np.float32(np.nan), values)
        notes.append(_infinite_note(series.name, int(infinite.sum())))
    return values


# --- target ------------------------------------------------------------------------------------


def _clean_target(y: pd.Series, name: str, notes: list[str]) -> pd.Series:
    """The target without missing values; a column of numbers with some junk becomes numeric.

    Text with few distinct values stays text: those are class labels, even when most of them
    look like numbers (``0, 1, "other"``), so no class is dropped as junk.
    """
    if not _is_number(y.dtype) and y.notna().any() and y.nunique() > MAX_CLASSES:
        converted = _mostly_numeric(y, notes)
        y = y if converted is None else converted
    infinite = int(np.isinf(y).sum()) if pd.api.types.is_float_dtype(y) else 0
    if infinite:
        notes.append(f"target {y.name!r}: {infinite} infinite values treated as missing")
        y = y.where(np.isfinite(y))
    missing = int(y.isna().sum())
    if missing == len(y):
        raise DataError(
            f"target {y.name!r} in {name} has no values (all {missing} rows are missing); "
            "choose another column with --target."
        )
    if missing:
        notes.append(f"dropped {missing} rows with a missing target {y.name!r}")
        y = y.dropna()
    if y.nunique() < 2:
        raise DataError(
            f"target {y.name!r} in {name} has a single value ({y.iloc[0]!r}), so there is "
            "nothing to predict; choose another column with --target."
        )
    return y


def _is_whole(y: pd.Series) -> bool:
    values = y.to_numpy()
    return bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))


def _encode_classes(y: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Class indices 0..k-1 in sorted label order, and the labels as strings."""
    if pd.api.types.is_float_dtype(y) and _is_whole(y):
        y = y.astype(np.int64)  # labels "1", not "1.0"
    elif not _is_number(y.dtype):
        y = y.astype(str)  # True and "x" can share a column: see _feature_table
    codes, labels = pd.factorize(y, sort=True)
    return codes.astype(np.int64, copy=False), [str(label) for label in labels]


def _regression_values(y: pd.Series, target: str, name: str) -> np.ndarray:
    if _is_number(y.dtype):
        return y.to_numpy(dtype=np.float64)
    example = y[pd.to_numeric(y, errors="coerce").isna()].iloc[0]
    raise DataError(
        f"target {target!r} in {name} must be numeric for regression but holds text such as "
        f"{example!r}; clean the column, or use task 'classification' if it holds class labels."
    )


def _standardize_stats(y: np.ndarray, target: str, name: str) -> tuple[float, float]:
    with np.errstate(over="ignore", invalid="ignore"):
        mean, scale = float(np.mean(y)), float(np.std(y))
    if not (math.isfinite(mean) and math.isfinite(scale)):
        raise DataError(
            f"target {target!r} in {name} has values too large to standardize "
            f"(up to {np.max(np.abs(y)):.3g}); rescale the column."
        )
    return mean, scale if scale > 0 else 1.0


def _standardized(y: np.ndarray, mean: float, scale: float) -> torch.Tensor:
    return torch.from_numpy(((y - mean) / scale).astype(np.float32).reshape(-1, 1))


# --- split and preprocessing -------------------------------------------------------------------


def _check_rows(n: int, val_fraction: float, name: str) -> None:
    """Enough rows for at least one in each split (as train_test_split rounds), and MIN_ROWS."""
    needed = max(MIN_ROWS, math.ceil(1 / (1 - val_fraction)))
    while math.floor((1 - val_fraction) * needed) < 1:
        needed += 1
    if n < needed:
        raise DataError(
            f"{name} has only {n} usable rows; at least {needed} are needed to train and hold "
            f"out {val_fraction:.0%} for validation."
        )


def _split(
    codes: np.ndarray, task: str, val_fraction: float, seed: int, notes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the train and validation sets; stratified by class when possible."""
    n = len(codes)
    if task == "classification":
        counts = np.bincount(codes)
        n_val, n_train = math.ceil(val_fraction * n), math.floor((1 - val_fraction) * n)
        if counts.min() < 2 or min(n_val, n_train) < len(counts):
            message = (
                f"the rarest class has {counts.min()} rows, too few to stratify the split over "
                f"{len(counts)} classes; using a plain random split"
            )
            warnings.warn(message, UserWarning, stacklevel=3)
            notes.append(message)
        else:
            notes.append("train/validation split stratified by class")
            return _stratified_split(codes, counts, math.ceil(val_fraction * n), seed)
    return train_test_split(np.arange(n), test_size=val_fraction, random_state=seed)


def _stratified_split(
    codes: np.ndarray, counts: np.ndarray, n_val: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``train_test_split(np.arange(n), test_size=n_val, random_state=seed, stratify=codes)``:
    the same draws from the same generator (scikit-learn's ``StratifiedShuffleSplit``), with
    arrays where it builds Python lists: 0.05 s instead of 0.2 s at 1M rows. Tests check that
    the two agree. ``codes`` are ``0..k-1``, ``counts`` their counts.
    """
    rng = np.random.RandomState(seed)
    class_rows = np.split(np.argsort(codes, kind="stable"), np.cumsum(counts)[:-1])
    n_train = _approximate_mode(counts, len(codes) - n_val, rng)
    n_test = _approximate_mode(counts - n_train, n_val, rng)
    train, val = [], []
    for rows, n_i, t_i in zip(class_rows, n_train, n_test):
        shuffled = rows.take(rng.permutation(len(rows)), mode="clip")
        train.append(shuffled[:n_i])
        val.append(shuffled[n_i : n_i + t_i])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def _preprocessor(numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    """Impute, then scale numbers robustly and one-hot encode categories (all float32).

    RobustScaler (median and IQR) is not thrown off by a few huge values, and the clip after it
    keeps any that remain from dominating the network's input.
    """
    numbers = make_pipeline(
        SimpleImputer(strategy="median", copy=False),
        RobustScaler(copy=False, unit_variance=True),
        FunctionTransformer(_clip_outliers, feature_names_out="one-to-one"),
    )
    categories = make_pipeline(
        SimpleImputer(strategy="most_frequent"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32),
    )
    parts = [("numeric", numbers, numeric), ("categorical", categories, categorical)]
    return ColumnTransformer([p for p in parts if p[2]], sparse_threshold=0.0)


def _clip_outliers(X: np.ndarray) -> np.ndarray:
    return np.clip(X, -OUTLIER_CLIP, OUTLIER_CLIP, out=X)


def _preprocess(
    features: _Features, train_idx: np.ndarray, val_idx: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Fit on training rows only, then transform both splits into float32 tensors.

    ``train_idx`` is already shuffled, so its first :data:`FIT_ROWS` rows are a random sample
    to fit on; for most files that is all of them.
    """
    transformer = _preprocessor(features.numeric, features.categorical)
    with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
        # sklearn warns of categories unseen in the fit rows (encoded as zeros, as intended) and
        # of columns empty there (left out)
        warnings.simplefilter("ignore", UserWarning)
        transformer.fit(features.frame(train_idx[:FIT_ROWS]))
        names = [
            str(out)
            for label, step, cols in transformer.transformers_
            if label != "remainder"
            for out in step.get_feature_names_out(cols)
        ]
        X_train = _transform(transformer, features, train_idx, len(names))
        X_val = _transform(transformer, features, val_idx, len(names))
    return X_train, X_val, names


def _transform(
    transformer: ColumnTransformer, features: _Features, rows: np.ndarray, width: int
) -> torch.Tensor:
    """Transform ``rows`` block by block into one float32 array: no full-size copies on the way.

    The numeric columns are gathered and transformed in place with the fitted imputer, scaler
    and clip, the same operations as ``transformer.transform`` (tested to give equal values) at
    a fraction of its cost; the categorical ones go through the fitted encoder. Blocks are
    transformed in parallel threads (NumPy releases the GIL).
    """
    steps = transformer.named_transformers_
    numeric, categorical = steps.get("numeric"), steps.get("categorical")
    used = ~np.isnan(numeric[0].statistics_) if numeric is not None else np.zeros(0, bool)
    n_numeric = int(used.sum())  # SimpleImputer leaves out columns that were empty when fit
    out = _empty_float32(len(rows), width)

    def transform_block(start: int) -> None:
        block = rows[start : start + BLOCK_ROWS]
        part = out[start : start + len(block)]
        if n_numeric:
            direct = used.all() and n_numeric == width  # write straight into the output
            X = features.numbers(block, out=part if direct else None)
            X = X if used.all() else X[:, used]
            _impute_and_scale(X, numeric[0].statistics_[used], numeric[1])
            if not direct:
                part[:, :n_numeric] = X
        if categorical is not None:
            part[:, n_numeric:] = categorical.transform(features.texts.iloc[block])

    starts = range(0, len(rows), BLOCK_ROWS)
    threads = min(_read_threads(), len(starts))
    if threads > 1:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(transform_block, starts))
    else:
        for start in starts:
            transform_block(start)
    return torch.from_numpy(out)


def _empty_float32(rows: int, columns: int) -> np.ndarray:
    """A large uninitialised float32 array, allocated by torch.

    NumPy asks the kernel for transparent huge pages on large arrays; on virtual machines whose
    kernel then compacts memory on the first write, that write took 0.03-0.46 s for 190 MB
    (measured on the 2-core benchmark VM) against a steady 0.08 s with torch's plain pages.
    """
    return torch.empty((rows, columns), dtype=torch.float32).numpy()


def _impute_and_scale(X: np.ndarray, medians: np.ndarray, scaler: RobustScaler) -> None:
    """In place, what the numeric pipeline's ``transform`` does: missing values to the
    medians, robust scaling, clipping (the same operations on the same dtypes)."""
    np.copyto(X, medians, where=np.isnan(X), casting="same_kind")
    if scaler.with_centering:
        X -= scaler.center_
    if scaler.with_scaling:
        X /= scaler.scale_
    _clip_outliers(X)


def _listing(names) -> str:
    names = [repr(str(n)) for n in names]
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more

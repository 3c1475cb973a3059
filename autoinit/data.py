"""CSV file -> :class:`TabularData`: validated, preprocessed, split and ready as float32 tensors.

Every problem with the input raises :class:`~autoinit.errors.DataError` with one line that names
the file or column and says what to do; anything the loader decided on its own (the delimiter,
the target, dropped columns and rows, junk treated as missing) is written to ``notes``.

Large files: numeric columns are parsed straight to float32 (a sample of the first rows says
which columns are numeric) and gathered into one row-major block; the preprocessing is fitted on
at most :data:`FIT_ROWS` training rows, then applied :data:`BLOCK_ROWS` rows at a time straight
into the arrays that become the tensors. For 1M rows x 50 columns, allocations peak at about
2.5x the float32 data; pandas' parallel reader also maps the file, which counts in the resident
size but is page cache, not an allocation.
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
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, RobustScaler

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
    options = _read_options(path, delimiter, target, name, notes)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        sha256 = pool.submit(_sha256, path)  # hashing releases the GIL: overlap it with parsing
        frame = _drop_unnamed(_read_frame(path, name, options), header, notes)
    if frame.empty:
        raise DataError(f"{name} has a header but no data rows; add rows below the header.")
    fingerprint = {
        "file": name,
        "sha256": sha256.result(),
        "rows": len(frame),
        "columns": len(header),
        "target": target,
    }

    y = _clean_target(frame[target], name, notes)
    features = frame.drop(columns=[target])
    del frame
    if len(y) < len(features):
        features = features.loc[y.index]
    if task == "auto":
        task, reason = detect_task(y)
    else:
        reason = f"task {task!r} was requested"
    fingerprint["task"] = task
    _check_rows(len(y), val_fraction, name)
    features, numeric, categorical = _feature_table(features, notes)
    if not numeric and not categorical:
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
    X_train, X_val, feature_names = _preprocess(features, numeric, categorical, train_idx, val_idx)
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


def _read_options(path: Path, delimiter: str, target: str, name: str, notes: list[str]) -> dict:
    """``read_csv`` options, with numeric feature columns read straight to float32.

    A sample of the first rows says which columns are numeric, and for semicolon files whether
    numbers are written with a decimal comma (``1,5``).
    """
    # index_col=False: a delimiter at the end of every row must not shift the columns;
    # skipinitialspace: "a, b" names the column "b", as the header check reads it
    options = dict(
        sep=delimiter, encoding="utf-8-sig", engine="c", index_col=False, skipinitialspace=True
    )
    sample = _pandas_read(path, name, nrows=SAMPLE_ROWS, **options)
    if delimiter == ";":
        comma = _pandas_read(path, name, nrows=SAMPLE_ROWS, decimal=",", **options)
        if _count_numeric(comma) > _count_numeric(sample):
            options["decimal"], sample = ",", comma
            notes.append("decimal separator: comma (1,5 means 1.5)")
    options["dtype"] = {
        col: np.float32
        for col, dtype in sample.dtypes.items()
        if col != target and _is_number(dtype) and not pd.api.types.is_bool_dtype(dtype)
    }
    return options


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


def _drop_unnamed(frame: pd.DataFrame, header: list[str], notes: list[str]) -> pd.DataFrame:
    """Drop columns without a header name: usually a row index saved along with the data."""
    if len(header) != frame.shape[1]:
        return frame
    unnamed = [col for col, raw in zip(frame.columns, header) if not raw.strip()]
    for col in unnamed:
        position = frame.columns.get_loc(col) + 1
        notes.append(f"column {position} has no name (often a saved row index) -> dropped")
    return frame.drop(columns=unnamed) if unnamed else frame


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


def _feature_table(
    features: pd.DataFrame, notes: list[str]
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Sort feature columns into numeric and categorical ones; return them as a new frame.

    Numeric columns become float32 with inf and junk as NaN, stored together as one row-major
    block so that gathering rows for a split is fast. Columns that are entirely missing, and
    text columns with too many distinct values, are dropped. Each decision gets a note.
    """
    numbers, texts = {}, {}
    for col in features.columns:
        series = features[col]
        if series.isna().all():
            notes.append(f"column {col!r} is entirely missing -> dropped")
        elif _is_number(series.dtype):
            numbers[col] = _float32(series, notes)
        elif (converted := _mostly_numeric(series, notes)) is not None:
            numbers[col] = _float32(converted, notes)
        elif (k := series.nunique()) <= MAX_CATEGORIES:
            # as text: pandas infers types per chunk of a big file, which can mix True and "x"
            texts[col] = series.astype(str)
        else:
            notes.append(
                f"column {col!r} is text with {k} distinct values (more than {MAX_CATEGORIES}; "
                "an ID or free text) -> dropped"
            )
    block = _row_major(list(numbers.values()), len(features))
    table = pd.DataFrame(block, columns=list(numbers), index=features.index, copy=False)
    table = pd.concat([table, pd.DataFrame(texts)], axis=1) if texts else table
    return table, list(numbers), list(texts)


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
        examples = ", ".join(repr(v) for v in series[junk].unique()[:3])
        notes.append(
            f"column {series.name!r}: {int(junk.sum())} non-numeric values ({examples}) "
            "treated as missing"
        )
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
        notes.append(
            f"column {series.name!r}: {int(infinite.sum())} infinite values (or beyond "
            f"+-{_FLOAT32_MAX:.1e}) treated as missing"
        )
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
    stratify = None
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
            stratify = codes
            notes.append("train/validation split stratified by class")
    return train_test_split(
        np.arange(n), test_size=val_fraction, random_state=seed, stratify=stratify
    )


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
    features: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Fit on training rows only, then transform both splits into float32 tensors.

    ``train_idx`` is already shuffled, so its first :data:`FIT_ROWS` rows are a random sample
    to fit on; for most files that is all of them.
    """
    transformer = _preprocessor(numeric, categorical)
    with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
        # sklearn warns of categories unseen in the fit rows (encoded as zeros, as intended) and
        # of columns empty there (left out)
        warnings.simplefilter("ignore", UserWarning)
        transformer.fit(features.iloc[train_idx[:FIT_ROWS]])
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
    transformer: ColumnTransformer, features: pd.DataFrame, rows: np.ndarray, width: int
) -> torch.Tensor:
    """Transform ``rows`` block by block into one float32 array: no full-size copies on the way."""
    out = np.empty((len(rows), width), dtype=np.float32)
    for start in range(0, len(rows), BLOCK_ROWS):
        block = rows[start : start + BLOCK_ROWS]
        out[start : start + len(block)] = transformer.transform(features.iloc[block])
    return torch.from_numpy(out)


def _listing(names) -> str:
    names = [repr(str(n)) for n in names]
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more

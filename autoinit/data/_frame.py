"""Parsed rows -> the float32 block and the other columns: the one step both readers share.

The piece reader passes each piece of the file through :func:`split_frame`, the whole-file
reader passes the whole file once, and :class:`Assembler` joins the results into a
:class:`Table`. What counts as a number, as junk or as an infinite value is decided here only,
so the two readers cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from autoinit.data import _limits
from autoinit.data._arrays import NO_ROWS, empty_float32, row_major
from autoinit.data._dtypes import is_float_or_int, is_text
from autoinit.data._layout import Layout


class NotNumeric(ValueError):
    """A block column holds something that is neither numbers nor text (e.g. booleans)."""


@dataclasses.dataclass
class Table:
    """The file's columns: the layout's numeric features as one row-major float32 block
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


@dataclasses.dataclass
class Piece:
    """Consecutive rows of the file, in the layout of :class:`Table` (rows counted from 0)."""

    rows: int
    values: np.ndarray
    others: pd.DataFrame
    kinds: dict[str, str]  # per column of ``others``: see column_kind
    finite: np.ndarray
    junk: dict[int, tuple[np.ndarray, list]]
    inf_rows: np.ndarray
    inf_cols: np.ndarray


def can_be_numeric(series: pd.Series) -> bool:
    """Whether :func:`split_frame` takes the column into the block: numbers, or text (whose
    junk :meth:`Assembler.mostly_text` judges once every row is in)."""
    return is_float_or_int(series.dtype) or is_text(series)


def split_frame(frame: pd.DataFrame, layout: Layout) -> Piece:
    """The layout's numeric columns of ``frame`` as float32 (text in them as NaN, noted as
    junk), and its other columns as they are.

    Raises:
        NotNumeric: a numeric column of the layout cannot be (see :func:`can_be_numeric`).
    """
    frame = _tidied(frame)
    junk: dict[int, tuple[np.ndarray, list]] = {}
    with np.errstate(over="ignore"):  # thread-local; beyond float32 -> inf -> missing
        if all(is_float_or_int(frame[col].dtype) for col in layout.numeric):
            values = frame[layout.numeric].to_numpy(dtype=np.float32)
            if not values.flags.writeable:  # a view of float32 columns (the whole-file read)
                values = row_major([frame[col].to_numpy() for col in layout.numeric], len(frame))
        else:
            arrays = []
            for j, col in enumerate(layout.numeric):
                series = frame[col]
                if not can_be_numeric(series):
                    raise NotNumeric(f"column {col!r} is {series.dtype}")
                if not is_float_or_int(series.dtype):
                    numbers = pd.to_numeric(series, errors="coerce")
                    bad = (series.notna() & numbers.isna()).to_numpy()
                    if bad.any():
                        junk[j] = (np.flatnonzero(bad), series[bad].tolist())
                    series = numbers
                arrays.append(np.asarray(series, dtype=np.float32))
            values = row_major(arrays, len(frame))
    values = values.reshape(len(frame), len(layout.numeric))
    unfinite = ~np.isfinite(values)
    counts = np.count_nonzero(unfinite, axis=0)  # missing or infinite
    inf_rows = inf_cols = NO_ROWS
    if counts.any():
        infinite = np.isinf(values)
        if infinite.any():
            inf_rows, inf_cols = np.nonzero(infinite)
            values[infinite] = np.nan
    others = frame[layout.others]
    return Piece(
        rows=len(frame),
        values=values,
        others=others,
        kinds={col: column_kind(others[col]) for col in layout.others},
        finite=len(frame) - counts,
        junk=junk,
        inf_rows=inf_rows,
        inf_cols=inf_cols,
    )


def _tidied(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with :func:`tidy` applied to its text columns (unchanged if none change)."""
    tidied = {col: tidy(frame[col]) for col in frame.columns if is_text(frame[col])}
    changed = {col: series for col, series in tidied.items() if series is not frame[col]}
    return frame.assign(**changed) if changed else frame


# read_csv's default na_values (its documentation lists them)
NA_STRINGS = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)  # fmt: skip


def tidy(series: pd.Series) -> pd.Series:
    """A text column as ``read_csv`` reads it when nothing goes wrong.

    An integer past 64 bits makes pandas read its whole column as text (or as Python ints),
    with missing cells as written (``""``, ``"NA"``): in some pieces of a file and not in
    others. Here they become missing, and a column of numbers becomes numbers again.
    """
    if not is_text(series):
        return series
    missing = series.isin(NA_STRINGS)
    if missing.any():
        series = series.mask(missing)
    kind = "string" if not pd.api.types.is_object_dtype(series) else (
        pd.api.types.infer_dtype(series, skipna=True)
    )  # fmt: skip
    if kind in ("string", "integer", "floating", "mixed-integer-float"):
        try:
            numbers = pd.to_numeric(series)  # raises at the first word: cheap for real text
        except (ValueError, TypeError):
            return series
        return numbers.astype(np.float64) if numbers.dtype == object else numbers  # big ints
    return series


def column_kind(series: pd.Series) -> str:
    """What pandas made of a column: ``"empty"``, ``"bool"``, ``"number"``, ``"text"``, or
    ``"mixed"`` (types inferred chunk by chunk, e.g. numbers and then text)."""
    if series.isna().all():
        return "empty"
    if pd.api.types.is_bool_dtype(series.dtype):
        return "bool"
    if is_float_or_int(series.dtype):
        return "number"
    if pd.api.types.is_string_dtype(series.dtype) and not pd.api.types.is_object_dtype(series):
        return "text"
    inferred = pd.api.types.infer_dtype(series, skipna=True)
    return {"string": "text", "boolean": "bool"}.get(inferred, "mixed")


class Assembler:
    """Gathers pieces, in file order, into one :class:`Table`.

    The block is allocated once, for the rows that the file's size and the first piece
    predict (pages never written cost no memory); should it fill up, it is reallocated.
    """

    def __init__(self, layout: Layout, file_bytes: int) -> None:
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
        self.kinds: dict[str, set[str]] = {col: set() for col in layout.others}
        self.text_dtypes: dict[str, object] = {}

    def add(self, piece: Piece, n_bytes: int) -> None:
        """Append ``piece``, which held ``n_bytes`` of the file."""
        self.read_bytes += n_bytes
        start, end = self.rows, self.rows + piece.rows
        if start == 0 and piece.values.flags.c_contiguous:
            self.block = piece.values  # the first piece: no copy (the whole file, if read whole)
        elif end > len(self.block):
            expected = math.ceil(1.05 * end * self.file_bytes / max(self.read_bytes, 1)) + 1024
            grown = empty_float32(max(expected, end), self.block.shape[1])
            grown[:start] = self.block[:start]
            self.block = grown
        if self.block is not piece.values:
            self.block[start:end] = piece.values
        self.finite += piece.finite
        for j, (rows, values) in piece.junk.items():
            self.junk_rows[j].append(rows + start)
            self.junk_values[j].extend(values)
        if len(piece.inf_rows):
            self.inf_rows.append(piece.inf_rows + start)
            self.inf_cols.append(piece.inf_cols)
        self.others.append(piece.others)
        for col, kind in piece.kinds.items():
            self.kinds[col].add(kind)
            if kind == "text":
                self.text_dtypes[col] = piece.others[col].dtype
        self.rows = end

    def mixed(self) -> list[str]:
        """The other columns whose type pandas inferred differently in different rows (numbers
        here, text or booleans there): one ``read_csv`` call over every row would have read
        them as text, which only the file itself still holds."""
        kinds = self.kinds.items()
        return [col for col, seen in kinds if len(seen - {"empty"}) > 1 or "mixed" in seen]

    def mostly_text(self) -> list[str]:
        """The block columns whose present values are mostly junk: text columns after all,
        decided over every row added."""
        infinite = np.bincount(self._inf_cols(), minlength=len(self.finite))
        text = []
        for j, col in enumerate(self.layout.numeric):
            junk = sum(len(rows) for rows in self.junk_rows[j])
            present = self.finite[j] + junk + infinite[j]
            if junk and (present - junk) / present < _limits.MIN_NUMERIC_FRACTION:
                text.append(col)
        return text

    def finish(self, sha256: str) -> Table:
        # a piece of no rows (the header alone) has text columns: it must not make others text
        parts = [part for part in self.others if len(part)] or self.others[:1]
        if len(parts) > 1:
            others = pd.concat(parts, ignore_index=True)
            for col, dtype in self.text_dtypes.items():  # text and empty pieces: text
                if others[col].dtype != dtype and self.kinds[col] <= {"text", "empty"}:
                    others[col] = others[col].astype(dtype)
        else:
            others = parts[0].reset_index(drop=True)
        return Table(
            rows=self.rows,
            sha256=sha256,
            numeric=list(self.layout.numeric),
            block=self.block[: self.rows],
            others=others,
            finite=self.finite,
            junk_rows=[np.concatenate(r) if r else NO_ROWS for r in self.junk_rows],
            junk_values=self.junk_values,
            inf_rows=np.concatenate(self.inf_rows) if self.inf_rows else NO_ROWS,
            inf_cols=self._inf_cols(),
        )

    def _inf_cols(self) -> np.ndarray:
        return np.concatenate(self.inf_cols) if self.inf_cols else NO_ROWS

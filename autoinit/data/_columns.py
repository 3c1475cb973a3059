"""The feature columns: numbers, categories, or dropped (empty, IDs, free text).

Numeric columns are float32 with infinite values and junk (``?``, ``#REF!``) as NaN; text with
few distinct values is a category. Each decision is noted.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from autoinit.data import _limits
from autoinit.data._dtypes import is_number
from autoinit.data._frame import Table
from autoinit.data._notes import Notes


@dataclasses.dataclass
class Features:
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
        gathered = self.block[block_rows] if self.block.shape[1] else self.block
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


def feature_table(
    table: Table, columns: list[str], kept: np.ndarray | None, notes: Notes
) -> Features:
    """Sort the feature columns into numeric and categorical ones, for the ``kept`` rows (all
    if None).

    Columns that are entirely missing, and text columns with too many distinct values, are
    dropped. Each decision gets a note.
    """
    others = table.others if kept is None else table.others.iloc[kept].reset_index(drop=True)
    in_block = {col: j for j, col in enumerate(table.numeric)}
    stats = _block_stats(table, kept)
    numeric: list[str] = []
    sources: list[int | np.ndarray] = []
    texts: dict[str, pd.Series] = {}
    for col in columns:
        if col in in_block:
            j = in_block[col]
            present, junk, examples, infinite = stats[j]
            if not present:
                notes.add(f"column {col!r} is entirely missing -> dropped")
                continue
            if junk:
                notes.add(junk_note(col, junk, examples))
            if infinite:
                notes.add(_infinite_note(col, infinite))
            numeric.append(col)
            sources.append(j)
            continue
        series = others[col]
        if series.isna().all():
            notes.add(f"column {col!r} is entirely missing -> dropped")
        elif is_number(series.dtype):
            numeric.append(col)
            sources.append(_float32(series, notes))
        elif (converted := mostly_numeric(series, notes)) is not None:
            numeric.append(col)
            sources.append(_float32(converted, notes))
        elif (k := series.nunique()) <= _limits.MAX_CATEGORIES:
            # as text: pandas infers types per chunk of a big file, which can mix True and "x"
            texts[col] = series.astype(str)
        else:
            notes.add(
                f"column {col!r} is text with {k} distinct values (more than "
                f"{_limits.MAX_CATEGORIES}; an ID or free text) -> dropped"
            )
    return Features(
        numeric=numeric,
        categorical=list(texts),
        sources=sources,
        block=table.block,
        block_rows=kept,
        texts=pd.DataFrame(texts),
    )


def mostly_numeric(series: pd.Series, notes: Notes) -> pd.Series | None:
    """Numbers with some junk (``?``, ``#REF!``): the numbers, with the junk as NaN and noted;
    else None."""
    head = series.head(_limits.SAMPLE_ROWS)
    if head.notna().any() and _numeric_share(head) < _limits.MIN_NUMERIC_FRACTION:
        return None  # plainly text: skip converting the whole column
    values = pd.to_numeric(series, errors="coerce")
    if _numeric_share(series, values) < _limits.MIN_NUMERIC_FRACTION:
        return None
    junk = series.notna() & values.isna()
    if junk.any():
        notes.add(junk_note(series.name, int(junk.sum()), list(series[junk].unique()[:3])))
    return values


def junk_note(col: str, count: int, examples: list) -> str:
    shown = ", ".join(repr(v) for v in examples)
    return f"column {col!r}: {count} non-numeric values ({shown}) treated as missing"


def _infinite_note(col: str, count: int) -> str:
    return (
        f"column {col!r}: {count} infinite values (or beyond +-{_limits.FLOAT32_MAX:.1e}) "
        "treated as missing"
    )


def _block_stats(table: Table, kept: np.ndarray | None) -> list[tuple[int, int, list, int]]:
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


def _numeric_share(series: pd.Series, values: pd.Series | None = None) -> float:
    """The share of the present values that read as numbers."""
    if values is None:
        values = pd.to_numeric(series, errors="coerce")
    present = int(series.notna().sum())
    return int(values.notna().sum()) / present if present else 0.0


def _float32(series: pd.Series, notes: Notes) -> np.ndarray:
    """The column as float32 (no copy if it already is), with inf and values beyond float32
    range as NaN (noted)."""
    with np.errstate(over="ignore"):
        values = np.asarray(series, dtype=np.float32)
    infinite = np.isinf(values)
    if infinite.any():
        values = np.where(infinite, np.float32(np.nan), values)
        notes.add(_infinite_note(series.name, int(infinite.sum())))
    return values

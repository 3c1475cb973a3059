"""How to read the file and where each column goes, decided on its first rows.

A sample of :data:`~._limits.SAMPLE_ROWS` rows says which feature columns are numeric (those
are parsed straight into one float32 block) and, for semicolon files, whether numbers are
written with a decimal comma (``1,5``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from pathlib import Path

import pandas as pd

from autoinit.data import _limits
from autoinit.data._dtypes import is_number
from autoinit.data._notes import Notes, listing
from autoinit.data._read_csv import read_csv
from autoinit.errors import DataError


@dataclasses.dataclass(frozen=True)
class Layout:
    """How to read the file, and where each of its columns goes."""

    options: dict  # read_csv options for every piece of the file
    names: list[str]  # the columns, named as pandas names them
    unnamed: list[str]  # columns without a header name: dropped
    numeric: list[str]  # feature columns numeric in the sample: parsed into the float32 block
    others: list[str]  # the target and every other kept column: kept as pandas columns
    features: list[str]  # the feature columns in file order
    fields: int  # fields a row may have: more than the names if the first data row has more

    def without(self, numeric: Collection[str]) -> Layout:
        """This layout with the ``numeric`` columns kept as pandas columns instead."""
        kept = [c for c in self.numeric if c not in numeric]
        others = [c for c in self.names if c not in kept and c not in self.unnamed]
        return dataclasses.replace(self, numeric=kept, others=others)


def read_layout(
    path: Path, delimiter: str, header: list[str], target: str, name: str, notes: Notes
) -> Layout:
    """Read a sample of the first rows and decide the layout; note a decimal comma and the
    columns dropped for having no name."""
    # index_col=False: a delimiter at the end of every row must not shift the columns
    options = dict(sep=delimiter, engine="c", index_col=False)
    # skipinitialspace: "a, b" names the column "b", as the header check reads it
    first = dict(encoding="utf-8-sig", skipinitialspace=True, nrows=_limits.SAMPLE_ROWS)
    sample = read_csv(path, name, **first, **options)
    if delimiter == ";":
        comma = read_csv(path, name, decimal=",", **first, **options)
        if _count_numeric(comma) > _count_numeric(sample):
            options["decimal"], sample = ",", comma
            notes.add("decimal separator: comma (1,5 means 1.5)")
    names = list(sample.columns)
    if target not in names:  # the csv module and pandas read the header differently
        raise DataError(
            f"{name}: pandas reads the header as {listing(names)}, without the target "
            f"{target!r}; check the header row's quotes and delimiters."
        )
    unnamed = _unnamed(names, header)
    for col in unnamed:
        position = names.index(col) + 1
        notes.add(f"column {position} has no name (often a saved row index) -> dropped")
    numeric = [
        col
        for col, dtype in sample.dtypes.items()
        if col != target and col not in unnamed and is_number(dtype)
        and not pd.api.types.is_bool_dtype(dtype)
    ]  # fmt: skip
    return Layout(
        options=options,
        names=names,
        unnamed=unnamed,
        numeric=numeric,
        others=[c for c in names if c not in numeric and c not in unnamed],
        features=[c for c in names if c != target and c not in unnamed],
        fields=len(names) + _extra_fields(path, name, {**options, **first}),
    )


def _extra_fields(path: Path, name: str, options: dict) -> int:
    """How many fields the first data row has past the header's.

    pandas' parser takes that row's width as the width of every later row (a trailing
    delimiter on every row, say), and drops the extra fields if they are empty. Read with
    ``index_col=None``, the extra fields become the index.
    """
    frame = read_csv(path, name, **{**options, "index_col": None, "nrows": 1})
    return 0 if isinstance(frame.index, pd.RangeIndex) else frame.index.nlevels


def _unnamed(names: list[str], header: list[str]) -> list[str]:
    """Columns without a header name, to drop: usually a row index saved along with the data."""
    if len(header) != len(names):
        return []
    return [col for col, raw in zip(names, header) if not raw.strip()]


def _count_numeric(frame: pd.DataFrame) -> int:
    return sum(is_number(dtype) for dtype in frame.dtypes)

"""``pandas.read_csv``, with its errors about the file turned into one-line DataErrors."""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path

import pandas as pd

from autoinit.errors import DataError

# pandas' warning that it dropped fields past the header's ("1,2,3" under "a,b"): data lost
EXTRA_FIELDS = "Length of header or names does not match length of data"


def read_csv(path: Path, name: str, **options) -> pd.DataFrame:
    """``pandas.read_csv(path, **options)``; a file it cannot parse raises a DataError that
    names ``name`` and, where it can, the line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            warnings.filterwarnings("error", EXTRA_FIELDS, pd.errors.ParserWarning)
            return pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise DataError(f"{name} is empty; it needs a header row and data rows.") from None
    except UnicodeDecodeError as err:
        raise not_utf8(name, err) from None
    except pd.errors.ParserError as err:
        raise parser_error(name, err) from None
    except pd.errors.ParserWarning:
        raise _extra_fields(path, name, options) from None


def parser_error(name: str, err: pd.errors.ParserError) -> DataError:
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
    if found:
        expected, line, saw = found.groups()
        return DataError(
            f"{name}: line {line} has {saw} fields but the header has {expected}; fix that row "
            "(a stray delimiter, or a value that needs quotes)."
        )
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return DataError(f"{name} cannot be parsed as CSV ({first}); check its format.")


def not_utf8(name: str, err: UnicodeDecodeError) -> DataError:
    byte = err.object[err.start : err.start + 1].hex()
    return DataError(
        f"{name} is not UTF-8 text (it has the byte 0x{byte}; perhaps it is Latin-1 or "
        "Windows-1252); re-save it as UTF-8."
    )


def _extra_fields(path: Path, name: str, options: dict) -> DataError:
    """The error for a row with fields past the header's, naming the first such line that the
    ``csv`` module finds."""
    fix = "fix that row (a stray delimiter, or a value that needs quotes)."
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter=options["sep"], skipinitialspace=True)
        try:
            header = next(filter(None, reader), [])
            for row in reader:
                extra = row[len(header) :]
                if len(extra) > 1 or any(cell.strip() for cell in extra):
                    return DataError(
                        f"{name}: line {reader.line_num} has {len(row)} fields but the header "
                        f"has {len(header)}; {fix}"
                    )
        except csv.Error:  # a cell past the csv module's field size limit
            pass
    return DataError(f"{name}: a row has more fields than the header; {fix}")

"""``pandas.read_csv``, with its errors about the file turned into one-line DataErrors."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd

from autoinit.errors import DataError


def read_csv(path: Path, name: str, **options) -> pd.DataFrame:
    """``pandas.read_csv(path, **options)``; a file it cannot parse raises a DataError that
    names ``name`` and, where pandas says, the line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            return pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise DataError(f"{name} is empty; it needs a header row and data rows.") from None
    except UnicodeDecodeError as err:
        raise not_utf8(name, err) from None
    except pd.errors.ParserError as err:
        raise parser_error(name, err) from None


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

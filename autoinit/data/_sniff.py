"""The start of the file, read with the ``csv`` module: is it UTF-8 text, which delimiter does
it use, what is its header.

Only the first :data:`~._limits.SAMPLE_BYTES` are read here; pandas reads the rest.
"""

from __future__ import annotations

import codecs
import collections
import csv
import dataclasses
import io
import itertools
from pathlib import Path

from autoinit.data import _limits
from autoinit.data._notes import listing
from autoinit.data._read_csv import not_utf8
from autoinit.errors import DataError

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
_SNIFF_RECORDS = 50


@dataclasses.dataclass(frozen=True)
class Sniffed:
    """What the start of a CSV file says about all of it."""

    delimiter: str
    header: list[str]  # the first record, as the csv module splits it

    @property
    def note(self) -> str:
        return f"delimiter: {DELIMITERS[self.delimiter]} ({self.delimiter!r})"


def sniff(path: Path) -> Sniffed:
    """Check that ``path`` is UTF-8 CSV text with a header of distinct names; find its delimiter.

    Raises:
        DataError: the file is missing, binary, UTF-16, not UTF-8, empty or has duplicate names.
    """
    text, truncated = _read_sample(path)
    delimiter = _detect_delimiter(text, truncated)
    records = _records(text, delimiter, truncated=False)
    header = records[0] if records else []
    _check_unique(header, path.name)
    return Sniffed(delimiter, header)


def _read_sample(path: Path) -> tuple[str, bool]:
    """The decoded start of the file, and whether the file goes on past it."""
    if not path.exists():
        raise DataError(f"file not found: {str(path)!r}; check the path.")
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a directory; pass a CSV file inside it.")
    try:
        with path.open("rb") as f:
            raw = f.read(_limits.SAMPLE_BYTES + 1)
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
    truncated = len(raw) > _limits.SAMPLE_BYTES
    decoder = codecs.getincrementaldecoder("utf-8-sig")()  # tolerates a character cut in two
    try:
        text = decoder.decode(raw[: _limits.SAMPLE_BYTES], final=not truncated)
    except UnicodeDecodeError as err:
        raise not_utf8(name, err) from None
    # pandas' parser skips a BOM at the start of what it is given: one more after the codec's
    return text.removeprefix("\ufeff"), truncated


def _records(text: str, delimiter: str, truncated: bool) -> list[list[str]]:
    """The first complete records of the sample, split the way ``csv`` (and pandas) would;
    blank lines are skipped, as pandas does."""
    rows: list[list[str]] = []
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


def _check_unique(header: list[str], name: str) -> None:
    """Refuse duplicate names, which pandas would silently rename to ``a.1``."""
    counts = collections.Counter(h for h in header if h.strip())
    dupes = [h for h, count in counts.items() if count > 1]
    if dupes:
        raise DataError(
            f"{name} has duplicate column names: {listing(dupes)}; rename them so that "
            "each column has its own name."
        )


"""What the loader decided on its own (the delimiter, the target, dropped columns and rows),
collected by one object for the user to read."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator

_MAX_LISTED = 20


class Notes:
    """Lines for the user, in the order they were added, each kept once.

    Some lines are also warnings (:meth:`warn`); :meth:`emit_warnings` raises them at the
    caller of ``load_csv``, however deep in the loader they were found.
    """

    def __init__(self) -> None:
        self._lines: dict[str, None] = {}  # a dict keeps the order and drops repeats
        self._warnings: list[str] = []

    def add(self, line: str) -> None:
        self._lines.setdefault(line)

    def warn(self, line: str) -> None:
        """Add ``line``, and raise it as a ``UserWarning`` in :meth:`emit_warnings`."""
        if line not in self._lines:
            self._warnings.append(line)
        self.add(line)

    def emit_warnings(self, stacklevel: int = 1) -> None:
        """Raise each warning. ``stacklevel`` is counted from the caller of this method: 1 is that
        caller, 2 its caller (``load_csv`` passes 2, to point at the line that called it)."""
        for line in self._warnings:
            warnings.warn(line, UserWarning, stacklevel=stacklevel + 1)

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def __contains__(self, line: object) -> bool:
        return line in self._lines


def listing(names: Iterable[object]) -> str:
    """Names for a message, quoted: ``'a', 'b'``; past :data:`_MAX_LISTED`, ``and N more``."""
    quoted = [repr(str(n)) for n in names]
    more = f" and {len(quoted) - _MAX_LISTED} more" if len(quoted) > _MAX_LISTED else ""
    return ", ".join(quoted[:_MAX_LISTED]) + more

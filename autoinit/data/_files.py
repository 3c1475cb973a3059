"""What every reader does with a file: hash it, and quote a library's error in one line."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB blocks (it identifies the data a study was made on)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def first_line(error: BaseException) -> str:
    """A library error's first line (or its type), short enough for a one-line DataError."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]

"""The file -> one :class:`~._frame.Table`: parsed in pieces in parallel threads, or whole when
it cannot be cut.

Both ways end in :func:`~._frame.split_frame` and :class:`~._frame.Assembler`; they differ only
in how the bytes reach ``pandas.read_csv``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from autoinit.data import _limits
from autoinit.data._files import file_sha256
from autoinit.data._frame import Assembler, Table, can_be_numeric, split_frame, tidy
from autoinit.data._layout import Layout
from autoinit.data._read_csv import EXTRA_FIELDS, read_csv
from autoinit.errors import DataError


class _Unsplittable(Exception):
    """The file cannot be read piece by piece; read it whole (which also reports its errors
    with the right line numbers)."""


def read_table(path: Path, name: str, layout: Layout) -> Table:
    """Every row of the file, in the layout's columns.

    Raises:
        DataError: the file cannot be parsed as CSV (the message names the line if pandas does).
    """
    try:
        table, sha256 = _read_pieces(path, layout)
    except _Unsplittable:
        table, sha256 = _read_whole(path, name, layout)
    result = table.finish(sha256)
    if mixed := table.mixed():
        options = dict(layout.options, encoding="utf-8-sig", skipinitialspace=True)
        texts = read_csv(path, name, usecols=mixed, dtype=str, **options)
        for col in mixed:
            result.others[col] = tidy(texts[col]).to_numpy()
    return result


def _read_pieces(path: Path, layout: Layout) -> tuple[Assembler, str]:
    """Parse the file up to :data:`~._limits.READ_BLOCK_BYTES` at a time, in parallel threads
    (pandas' parser releases the GIL), hashing each piece as it is read.

    Numeric columns go straight into one float32 block: no float64 frame, no mapped file, no
    full-size copies. pandas infers types per chunk here as in one ``read_csv`` call; the tests
    check piece by piece that both readers agree.
    """
    size = path.stat().st_size
    threads = _limits.worker_threads() if size > _limits.READ_BLOCK_BYTES else 1
    piece_bytes = _limits.READ_BLOCK_BYTES
    if threads > 1:  # smaller pieces for smaller files: each thread gets several
        piece_bytes = min(piece_bytes, max(_limits.MIN_PIECE_BYTES, size // (4 * threads)))
    digest = hashlib.sha256()
    table = Assembler(layout, size)
    with path.open("rb") as f, warnings.catch_warnings():
        # per-chunk type inference mixes types in a column (handled later): don't warn of it
        warnings.simplefilter("ignore", pd.errors.DtypeWarning)
        warnings.filterwarnings("error", EXTRA_FIELDS, pd.errors.ParserWarning)  # data lost
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
    if not table.others:
        raise _Unsplittable("no piece was read")
    if text := table.mostly_text():
        # decided on the whole column, as a whole read does
        raise _Unsplittable(f"columns {text} are mostly text")
    return table, digest.hexdigest()


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


def _parse_piece(data: bytes, first: bool, layout: Layout):
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
                frame = pd.read_csv(io.BytesIO(data), header=None, encoding="utf-8", **options)
                frame = _named(frame, layout)
            return split_frame(frame, layout)
    # parser errors, bad UTF-8, a misparsed piece, fields past the header's
    except (ValueError, OverflowError, pd.errors.ParserWarning) as err:
        raise _Unsplittable(str(err)) from None


def _named(frame: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """A later piece, parsed without names, named as the file's columns.

    pandas takes the width of a piece's first row as the width of the rest, as it takes the
    first data row's for the whole file; pieces that start wider or narrower than that (a
    stray delimiter, a short row) are left to the whole-file read, which judges them in place.
    """
    names, width = layout.names, frame.shape[1]
    if width != len(names):
        extra = frame.iloc[:, len(names) :]
        if width > layout.fields or width < len(names) or extra.notna().any().any():
            raise _Unsplittable(f"a piece starts with a row of {width} fields")
        frame = frame.iloc[:, : len(names)]
    return frame.set_axis(names, axis=1)


def _read_whole(path: Path, name: str, layout: Layout) -> tuple[Assembler, str]:
    """The whole file in one ``read_csv`` call: for files with quoted line breaks across
    pieces, or text in a column that the sample found numeric; its errors name the right line.

    Numeric columns that turn out not to be (booleans, or mostly text over the whole file) are
    kept as pandas columns instead.
    """
    options = dict(layout.options, encoding="utf-8-sig", skipinitialspace=True)
    options["dtype"] = dict.fromkeys(layout.numeric, np.float32)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        sha256 = pool.submit(file_sha256, path)  # hashing releases the GIL: overlap it with parsing
        frame = _read_frame(path, name, options)
    layout = layout.without([c for c in layout.numeric if not can_be_numeric(frame[c])])
    table = Assembler(layout, 0)
    table.add(split_frame(frame, layout), 0)
    if text := table.mostly_text():
        table = Assembler(layout.without(text), 0)
        table.add(split_frame(frame, table.layout), 0)
    return table, sha256.result()


def _read_frame(path: Path, name: str, options: dict) -> pd.DataFrame:
    """The whole file; read again without the float32 shortcut if a later row holds text in a
    column that the sample found numeric."""
    try:
        with np.errstate(over="ignore"):  # beyond float32 range -> inf, treated as missing later
            return read_csv(path, name, **options)
    except DataError:
        raise
    except ValueError:  # text that cannot be read as float32
        if not options["dtype"]:
            raise
    return read_csv(path, name, **{**options, "dtype": None})

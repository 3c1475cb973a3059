"""Fuzzing ``load_csv``: any CSV file gives finite float32 tensors or a one-line DataError.

Files are generated with random column types, gaps, NaN and infinite values, junk, unicode,
names that look alike, quotes, the three delimiters, both line ends, BOMs and very long cells.
Each file is read whole and in pieces of a few lines: the two readers must agree exactly.
Examples the fuzzer once found are kept with ``@example``.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from autoinit.data import TabularData, _limits, _reading, load_csv
from autoinit.errors import DataError

FUZZ = settings(
    # Fewer under mutation testing (benchmarks/mutation.py sets it): a mutant of the row
    # handling breaks most inputs, and each mutant runs these tests again.
    max_examples=int(os.environ.get("AUTOINIT_FUZZ_EXAMPLES", "100")),
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TOKENS = ["", "NA", "nan", "NaN", "null", "inf", "-inf", "Infinity", "?", "#REF!", "n/a",
          "True", "False", "1e400", "-1e300", "3.4e39", "0x1F", "1,5", " 7", "\u00a0", "é",
          "日本"]  # fmt: skip
ALPHABET = st.sampled_from(list('ab,;\t "\'\r\nxé日\u00a0\ufeff0123456789.-e'))
LONG = ["w" * 1000, "z" * 140_000]  # the second is past the csv module's field size limit


def _numbers(kind: str) -> st.SearchStrategy[str]:
    if kind == "int":
        return st.integers(-(10**6), 10**6).map(str) | st.sampled_from(["0", "-0", str(2**70)])
    return st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.floats(
        -1e6, 1e6, allow_nan=False
    ).map(lambda v: f"{v:.4g}")


def _column(kind: str) -> st.SearchStrategy[str]:
    """One cell of a column of ``kind``; every kind has gaps and a little junk."""
    cells = {
        "int": _numbers("int"),
        "float": _numbers("float"),
        "category": st.sampled_from(["red", "green", "blue", "é", "日本", "a b", "1", "True"]),
        "bool": st.sampled_from(["True", "False", "true", "0", "1"]),
        "label": st.sampled_from(["0", "1", "2"]),
        "text": st.text(ALPHABET, max_size=12),
        "long": st.sampled_from(LONG) | st.text(ALPHABET, max_size=5),
    }[kind]
    return st.one_of(*[cells] * 6, st.sampled_from(TOKENS))


NAMES = st.sampled_from(
    ["a", "a ", " a", "A", "a.1", "Unnamed: 0", "", "x", "y", "label", "é", "日本", "a,b", 'q"q',
     "line\nbreak", "tab\tname", "\ufeffbom", "1", "nan", "True"]
) | st.text(ALPHABET, min_size=1, max_size=6)  # fmt: skip
KINDS = st.sampled_from(["int", "float", "category", "bool", "label", "text", "long"])


def _quote(cell: str, delimiter: str, always: bool) -> str:
    special = any(c in cell for c in (delimiter, '"', "\n", "\r")) or cell != cell.strip()
    if always or special:
        return '"' + cell.replace('"', '""') + '"'
    return cell


@st.composite
def csv_files(draw) -> tuple[bytes, dict]:
    """A CSV file's bytes, and the options to load it with."""
    kinds = draw(st.lists(KINDS, min_size=2, max_size=6))
    names = draw(st.lists(NAMES, min_size=len(kinds), max_size=len(kinds), unique=True))
    if len(names) > 1 and draw(st.integers(0, 9)) == 0:
        names[-1] = names[0]  # a duplicate name
    n_rows = draw(st.integers(0, 12) | st.integers(12, 80) | st.integers(12, 80))
    columns = [draw(st.lists(_column(k), min_size=n_rows, max_size=n_rows)) for k in kinds]
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    quote_all = draw(st.booleans())
    trailing = delimiter if draw(st.integers(0, 5)) == 0 else ""  # at the end of every row
    lines = [delimiter.join(_quote(n, delimiter, quote_all) for n in names)]
    for row in zip(*columns):
        lines.append(delimiter.join(_quote(c, delimiter, quote_all) for c in row) + trailing)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2])) if lines[1:] else 0):
        # a blank line, a field too many (empty or not), a row cut short, a quote left open
        at = draw(st.integers(1, len(lines) - 1))
        row = lines[at]
        odd = [row + delimiter + "1", row + delimiter, row.rpartition(delimiter)[0], '"' + row]
        lines.insert(at, draw(st.sampled_from(["", *odd])))
    text = newline.join(lines) + draw(st.sampled_from([newline, ""]))
    bom = draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))
    options = {
        "target": draw(st.none() | st.sampled_from(names)),
        "task": draw(st.sampled_from(["auto"] * 8 + ["classification", "regression"])),
        "val_fraction": draw(st.sampled_from([0.2, 0.2, 0.3, 0.5, 0.9])),
        "seed": draw(st.integers(0, 3)),
    }
    return bom + text.encode("utf-8"), options


def _load(path: Path, options: dict) -> TabularData | str:
    """``load_csv``'s result, or its DataError's message; any other error or warning fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "the rarest class", UserWarning)
        try:
            return load_csv(path, **options)
        except DataError as err:
            message = str(err)
            assert message and "\n" not in message and message.strip() == message, message
            return message


def _check(data: TabularData) -> None:
    """Finite float32 features and targets, rows matching, shapes as documented."""
    width = len(data.feature_names)
    for X, y in ((data.X_train, data.y_train), (data.X_val, data.y_val)):
        assert X.dtype == torch.float32 and X.dim() == 2 and X.shape[1] == width >= 1
        assert len(X) == len(y) >= 1
        assert torch.isfinite(X).all()
        if data.task == "classification":
            assert y.dtype == torch.int64 and y.dim() == 1
            assert ((y >= 0) & (y < data.n_classes)).all()
        else:
            assert y.dtype == torch.float32 and y.shape == (len(X), 1)
            assert torch.isfinite(y).all()
    assert data.n_features == width


def _same(a: TabularData | str, b: TabularData | str) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, str):
        assert a == b
        return
    for field in ("X_train", "X_val", "y_train", "y_val"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    for field in ("task", "target", "feature_names", "classes", "notes", "fingerprint"):
        assert getattr(a, field) == getattr(b, field), field
    assert np.allclose(
        [a.target_mean or 0.0, a.target_scale or 0.0], [b.target_mean or 0.0, b.target_scale or 0.0]
    )


def _examples(found: list[tuple[bytes, dict]]):
    """``@example`` for each file in ``found``."""

    def decorate(test):
        for file in reversed(found):
            test = example(file)(test)
        return test

    return decorate


def _rows(*rows: bytes, times: int = 1) -> bytes:
    return b"".join(rows) * times


# What the fuzzer found, each fixed in the loader. (bytes, options)
FOUND = [
    # a first data row with a field past the header's: pandas dropped it with a warning
    (b'a,"a "," a",A,a.1\n0,0,0,0,0,1\n0,0,0,0,0\n', {}),
    # a row starting a later piece with an extra (empty) field: read, where the whole read fails
    (b"a,b,label\n" + _rows(b"1,2,0\n", times=8) + b"1,2,1,\n" + _rows(b"3,4,1\n", times=30),
     {}),
    # (found mid-refactor) float32 columns read whole were read-only: inf could not be set NaN
    (b"a,b,c\n" + _rows(b"0,red,0,\n", times=15) + b"0,red,inf,\n", {"target": "a"}),
    # numbers in one piece, text in another: "-0" was the class "0" in pieces, "-0" whole
    (b"a,b,c\n" + _rows(b"0,0,0,\n", times=6) + b"0,0,?,\n0,0,0,\n0,0,0,\n0,0,-0,\n", {}),
    # an integer past 64 bits: pandas reads the column as text, with "" and "NA" as values
    (b"a,b\n" + _rows(b"0,0,\n", times=8) + b"0,1180591620717411303424,\n0,NA,\n0,inf,\n", {}),
    (b"a,b,c\n" + _rows(b"0,0,0,\n", times=9) + b"0,1,0,\n0,-1,0,\n0,2,0,\n0,-2,0,\n0,3,0,\n"
     b"0,-3,0,\n0,1180591620717411303424,0,\n", {"target": "b"}),
    # a second BOM, which pandas strips and the csv module kept in the first name
    (b"\xef\xbb\xbf\xef\xbb\xbfbom,a\n" + _rows(b"0,0,\n", times=31), {"target": "\ufeffbom"}),
    # a validation target 1e39 standard deviations out: inf in float32
    (b"a,b,c\n" + b"".join(f"0,0,{i * 0.01:.2f}\n".encode() for i in range(39)) + b"0,0,1e38\n",
     {"seed": 1}),
    # a first piece of the header alone made every other column text ("inf" a class)
    (b'a,"a ",Unnamed: 0,0,",",00\n0,0,1180591620717411303424,0.0,0.0,0,\n'
     + _rows(b"0,0,0,0.0,0.0,0,\n", times=10) + b"0,0,0,0.0,0.0,inf,\n", {}),
    # the only feature has no value in the training rows: scikit-learn's ValueError
    (b"a,b\n" + _rows(b"0,\n", times=49) + b"1,0\n", {"target": "a", "seed": 6}),
]  # fmt: skip


@FUZZ
@given(csv_files())
@_examples(FOUND)
def test_load_csv_gives_finite_tensors_or_a_data_error(file):
    content, options = file
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        path = Path(folder) / "fuzz.csv"
        path.write_bytes(content)
        patch.setattr(_limits, "SAMPLE_ROWS", 7)  # junk and text beyond the type sample
        whole = _load(path, options)
        if not isinstance(whole, str):
            _check(whole)
        patch.setattr(_limits, "READ_BLOCK_BYTES", 64)  # pieces of a line or two
        patch.setattr(_limits, "MIN_PIECE_BYTES", 64)
        patch.setattr(_limits, "worker_threads", lambda: 2)
        _same(_load(path, options), whole)
        patch.setattr(_reading, "_read_pieces", _unsplittable)  # the whole-file reader
        _same(_load(path, options), whole)


def _unsplittable(*args):
    raise _reading._Unsplittable("read it whole")

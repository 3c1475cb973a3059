"""Tests for autoinit.data: reading, task detection, preprocessing, splitting, bad input."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.model_selection import train_test_split

from autoinit.data import (
    TabularData,
    _columns,
    _frame,
    _layout,
    _limits,
    _preprocess,
    _reading,
    _split,
    detect_task,
    load_csv,
)
from autoinit.data._arrays import NO_ROWS
from autoinit.data._notes import Notes
from autoinit.errors import DataError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# The loader reports through notes; a stray warning (numpy overflow on 1e300, sklearn about
# unseen categories) would reach the user as noise, so any warning not expected fails a test.
pytestmark = pytest.mark.filterwarnings("error")


def write(tmp_path: Path, text: str | bytes, name: str = "data.csv") -> Path:
    """Write ``text`` byte for byte (no newline translation) and return the path."""
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def table(rows: int = 40, sep: str = ",", newline: str = "\n") -> str:
    """A small clean classification table: two numeric features, one category, a label."""
    colours = ["red", "green", "blue"]
    lines = [sep.join(["x", "size", "colour", "label"])]
    for i in range(rows):
        lines.append(sep.join([f"{i * 0.5}", str(i % 7), colours[i % 3], "ab"[i % 2]]))
    return newline.join(lines) + newline


def error_message(path_or_text, tmp_path: Path, **kwargs) -> str:
    """Load and return the DataError's message, checking that it is a single line."""
    path = path_or_text if isinstance(path_or_text, Path) else write(tmp_path, path_or_text)
    with pytest.raises(DataError) as excinfo:
        load_csv(path, **kwargs)
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message and message
    return message


# --- reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("sep", "word"), [(",", "comma"), (";", "semicolon"), ("\t", "tab")])
def test_delimiter_is_detected_and_noted(tmp_path, sep, word):
    data = load_csv(write(tmp_path, table(sep=sep)))
    assert data.notes[0] == f"delimiter: {word} ({sep!r})"
    assert data.feature_names == ["x", "size", "colour_blue", "colour_green", "colour_red"]
    assert data.classes == ["a", "b"]


def test_decimal_comma_in_semicolon_files(tmp_path):
    rows = "".join(f"{i},5;{i % 3};{'ab'[i % 2]}\n" for i in range(30))
    data = load_csv(write(tmp_path, "price;count;label\n" + rows))
    assert "decimal separator: comma (1,5 means 1.5)" in data.notes
    assert data.feature_names == ["price", "count"]
    assert load_csv(write(tmp_path, table(sep=";"))).notes[1].startswith("target")


def test_delimiter_inside_quotes_does_not_count(tmp_path):
    rows = "".join(f'{i},"note; with; semicolons",{i % 2}\n' for i in range(30))
    data = load_csv(write(tmp_path, "a,text,label\n" + rows))
    assert "comma" in data.notes[0]
    assert data.feature_names == ["a", "text_note; with; semicolons"]


def test_bom_and_crlf_line_endings(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbf" + table(newline="\r\n").encode())
    data = load_csv(path)
    assert data.feature_names[0] == "x"  # no BOM glued to the first name
    assert data.target == "label"  # no "\r" glued to the last one
    assert data.classes == ["a", "b"]
    assert len(data.X_train) + len(data.X_val) == 40


def test_cr_line_endings_spaces_after_delimiters_and_leading_blank_lines(tmp_path):
    rows = "".join(f"{i}, {['red', 'blue'][i % 2]}, {i % 2}\r" for i in range(30))
    data = load_csv(write(tmp_path, "\r\r" + "a, colour, label\r" + rows))
    assert data.target == "label"
    assert data.feature_names == ["a", "colour_blue", "colour_red"]


def test_quoted_newlines_and_a_very_long_cell(tmp_path):
    long_cell = "z" * 300_000  # beyond the csv module's default field size limit
    rows = [f'{i},"line one\nline two {i % 2}",{i % 2}' for i in range(30)]
    rows[3] = f'3,"{long_cell}",1'
    data = load_csv(write(tmp_path, "a,text,label\n" + "\n".join(rows) + "\n"))
    assert len(data.X_train) + len(data.X_val) == 30
    assert any(name.startswith("text_line one\nline two") for name in data.feature_names)


def test_numeric_junk_after_the_sample_rows_is_still_found(tmp_path, monkeypatch):
    monkeypatch.setattr(_limits, "SAMPLE_ROWS", 5)  # "?" lies beyond the dtype sample
    rows = "".join(f"{'?' if i == 30 else i},{i % 2}\n" for i in range(40))
    data = load_csv(write(tmp_path, "a,label\n" + rows))
    assert data.feature_names == ["a"]
    assert any("'a'" in note and "'?'" in note for note in data.notes)


def test_types_mixed_by_chunked_parsing_are_read_as_text(tmp_path):
    # pandas infers types per chunk of ~260k rows: past it, these columns turn to text, leaving
    # True next to "maybe" and 1 next to "yes" in one column
    # (a space after each delimiter: the columns read again as text skip it too)
    n, switch = 330_000, 280_000
    rows = (
        f"{i % 7}, {'maybe' if i >= switch else bool(i % 2)}, {'yes' if i >= switch else i % 2}\n"
        for i in range(n)
    )
    data = load_csv(write(tmp_path, "a,flag,label\n" + "".join(rows)))
    assert data.feature_names == ["a", "flag_False", "flag_True", "flag_maybe"]
    assert data.classes == ["0", "1", "yes"]


def test_target_note_says_where_the_target_came_from(tmp_path):
    path = write(tmp_path, table())
    assert "'label' (the last column" in load_csv(path).notes[1]
    chosen = load_csv(path, target="size")
    assert chosen.target == "size" and "as requested" in chosen.notes[1]
    assert "label_a" in chosen.feature_names


def test_row_index_column_without_a_name_is_dropped(tmp_path):
    frame = pd.read_csv(write(tmp_path, table()))
    frame.to_csv(tmp_path / "indexed.csv")  # pandas writes an unnamed index column first
    data = load_csv(tmp_path / "indexed.csv")
    assert data.feature_names[0] == "x"
    assert any("column 1 has no name" in note for note in data.notes)


def test_trailing_delimiter_does_not_shift_columns(tmp_path):
    rows = "".join(f"{i},{i % 2},\n" for i in range(30))
    data = load_csv(write(tmp_path, "a,label\n" + rows))
    assert data.target == "label" and data.classes == ["0", "1"] and data.feature_names == ["a"]


def test_rows_with_missing_target_are_dropped_with_a_count(tmp_path):
    rows = "".join(f"{i},{'' if i < 3 else i % 2}\n" for i in range(40))
    data = load_csv(write(tmp_path, "a,label\n" + rows))
    assert len(data.X_train) + len(data.X_val) == 37
    assert "dropped 3 rows with a missing target 'label'" in data.notes


def test_infinite_regression_targets_are_dropped(tmp_path):
    rows = "".join(f"{i},{'inf' if i == 7 else i * 1.5}\n" for i in range(40))
    data = load_csv(write(tmp_path, "a,price\n" + rows))
    assert "target 'price': 1 infinite values treated as missing" in data.notes
    assert len(data.X_train) + len(data.X_val) == 39
    assert torch.isfinite(data.y_train).all()


# --- task detection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "task", "reason"),
    [
        ([0, 1, 2] * 10, "classification", "integer with 3 distinct values"),
        (["setosa", "virginica", "versicolor"] * 10, "classification", "text with 3 distinct"),
        ([True, False] * 10, "classification", "boolean"),
        ([0.25, 1.5] * 10, "classification", "exactly 2 distinct values"),
        ([1.0, 2.0, 3.0, np.nan] * 10, "classification", "whole-number float with 3 distinct"),
        (list(np.linspace(0, 1, 30)), "regression", "float with 30 distinct values"),
        (list(range(100)), "regression", "integer with 100 distinct values"),
        (list(range(25)) * 4, "regression", "more than 20"),
        ([0, 1, 2, 3, 4, 5], "regression", "half the rows"),
        ([f"{w}kg" for w in range(30)], "regression", "text with 30 distinct values"),
    ],
)
def test_detect_task(values, task, reason):
    found, why = detect_task(pd.Series(values, name="y"))
    assert found == task
    assert reason in why and why.startswith("target 'y' is") and why.endswith(f"-> {task}")


def test_task_can_be_forced(tmp_path):
    path = write(tmp_path, table())
    forced = load_csv(path, target="size", task="regression")
    assert forced.task == "regression" and forced.classes is None
    assert forced.y_train.dtype == torch.float32 and forced.y_train.shape[1] == 1
    assert "requested" in forced.task_reason
    assert load_csv(path, target="size").task == "classification"


# --- preprocessing -----------------------------------------------------------------------------


@pytest.fixture
def messy(tmp_path) -> TabularData:
    """Gaps, junk, huge values, a category, an ID column and an empty column, all at once."""
    rows = []
    for i in range(100):
        gap = "" if i % 10 == 0 else str(i)
        junk = {5: "?", 6: "#REF!", 7: "n/a"}.get(i, str(i))
        huge = {0: "1e300", 1: "-1e300", 2: "inf", 3: "1e30"}.get(i, str(i))
        colour = "" if i == 4 else ["red", "green"][i % 2]
        rows.append(f"{gap},{junk},{huge},{colour},id-{i},,{i % 2}")
    header = "gappy,junky,huge,colour,name,empty,label\n"
    return load_csv(write(tmp_path, header + "\n".join(rows) + "\n"))


def test_preprocessing_features_and_notes(messy):
    assert messy.feature_names == ["gappy", "junky", "huge", "colour_green", "colour_red"]
    notes = " | ".join(messy.notes)
    assert "column 'empty' is entirely missing -> dropped" in notes
    assert "column 'name' is text with 100 distinct values" in notes and "dropped" in notes
    assert "column 'junky': 2 non-numeric values ('?', '#REF!') treated as missing" in notes
    assert "column 'huge': 3 infinite values" in notes


def test_preprocessed_values_are_finite_float32(messy):
    for X in (messy.X_train, messy.X_val):
        assert X.dtype == torch.float32 and X.is_contiguous()
        assert torch.isfinite(X).all()
        assert X.abs().max() <= _limits.OUTLIER_CLIP
    huge = torch.cat([messy.X_train, messy.X_val])[:, 2]
    assert huge.max() == _limits.OUTLIER_CLIP  # 1e30 is clipped, not lost


def test_one_hot_columns_hold_zeros_and_ones(messy):
    one_hot = torch.cat([messy.X_train, messy.X_val])[:, 3:]
    assert set(one_hot.unique().tolist()) == {0.0, 1.0}
    assert (one_hot.sum(dim=1) == 1).all()  # the missing colour was imputed, not left blank


def test_missing_numbers_become_the_training_median(tmp_path):
    rows = "".join(f"{'' if i % 4 == 0 else i},{i % 2}\n" for i in range(40))
    data = load_csv(write(tmp_path, "a,label\n" + rows))
    X = torch.cat([data.X_train, data.X_val])[:, 0]
    # the median maps to 0 under robust scaling; ten rows were missing
    assert (X == 0).sum() >= 10


def test_preprocessing_is_fitted_on_training_rows_only(tmp_path):
    rows = "".join(f"{i},{i % 2}\n" for i in range(100))
    data = load_csv(write(tmp_path, "a,label\n" + rows))
    train = data.X_train[:, 0].double().numpy()
    # robust scaling with the training median and IQR (unit variance for normal data)
    assert np.median(train) == pytest.approx(0.0, abs=1e-6)
    q1, q3 = np.percentile(train, [25, 75])
    assert q3 - q1 == pytest.approx(1.3489795, abs=1e-5)
    assert np.median(data.X_val[:, 0].numpy()) != pytest.approx(0.0, abs=1e-6)


# --- split and target --------------------------------------------------------------------------


def test_stratified_split_keeps_class_proportions(tmp_path):
    rows = "".join(f"{i},{'yes' if i % 10 < 3 else 'no'}\n" for i in range(200))
    data = load_csv(write(tmp_path, "a,label\n" + rows), val_fraction=0.2)
    assert len(data.y_val) == 40
    assert data.classes == ["no", "yes"]
    assert int(data.y_val.sum()) == 12 and int(data.y_train.sum()) == 48
    assert data.y_train.dtype == torch.int64 and data.y_train.dim() == 1


def test_split_is_deterministic_for_a_seed(tmp_path):
    path = write(tmp_path, table(rows=60))
    first, again, other = load_csv(path), load_csv(path), load_csv(path, seed=1)
    assert torch.equal(first.X_val, again.X_val) and torch.equal(first.y_val, again.y_val)
    assert not torch.equal(first.X_val, other.X_val)


def test_rare_class_warns_and_splits_plainly(tmp_path):
    rows = "".join(f"{i},{'rare' if i == 0 else ['a', 'b'][i % 2]}\n" for i in range(40))
    with pytest.warns(UserWarning, match="plain random split") as record:
        data = load_csv(write(tmp_path, "a,label\n" + rows))
    assert record[0].filename == __file__  # points at the caller of load_csv
    assert any("rarest class has 1 rows" in note for note in data.notes)
    assert data.n_classes == 3


def test_regression_target_is_standardized(tmp_path):
    rows = "".join(f"{i},{i * 0.1:.3f},{10 + 3.5 * i}\n" for i in range(50))
    data = load_csv(write(tmp_path, "a,b,price\n" + rows))
    assert data.task == "regression" and data.n_classes is None and data.classes is None
    assert data.y_train.dtype == torch.float32 and data.y_train.shape == (40, 1)
    assert abs(float(data.y_train.mean())) < 1e-5
    assert float(data.y_train.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    original = data.y_val[:, 0].double() * data.target_scale + data.target_mean
    assert set(np.round(original.numpy(), 3)) <= {10 + 3.5 * i for i in range(50)}


def test_notes_keep_their_order_drop_repeats_and_warn_at_the_caller():
    notes = Notes()
    for line in ("b", "a", "b"):
        notes.add(line)
    notes.warn("w")
    notes.warn("w")
    assert list(notes) == ["b", "a", "w"] and "a" in notes and len(notes) == 3
    with pytest.warns(UserWarning, match="^w$") as record:
        notes.emit_warnings()
    assert len(record) == 1 and record[0].filename == __file__


def test_tabular_data_says_what_kind_it_is(tmp_path):
    assert load_csv(write(tmp_path, table())).kind == TabularData.kind == "tabular"


def test_describe_and_fingerprint(tmp_path):
    path = write(tmp_path, table())
    data = load_csv(path)
    assert data.describe() == (
        "data.csv: 40 rows, 5 features, target 'label' (classification, 2 classes)"
    )
    assert data.fingerprint["rows"] == 40 and data.fingerprint["columns"] == 4
    assert data.fingerprint["task"] == "classification" and data.fingerprint["target"] == "label"
    assert load_csv(path).fingerprint == data.fingerprint
    write(tmp_path, table().replace("0.5,", "0.25,", 1))
    changed = load_csv(path).fingerprint
    assert changed["sha256"] != data.fingerprint["sha256"]
    assert {k: v for k, v in changed.items() if k != "sha256"} == {
        k: v for k, v in data.fingerprint.items() if k != "sha256"
    }


@pytest.mark.parametrize(
    ("name", "task", "rows", "features", "classes"),
    [
        ("breast_cancer.csv", "classification", 569, 30, ["benign", "malignant"]),
        ("diabetes.csv", "regression", 442, 10, None),
    ],
)
def test_bundled_examples_load(name, task, rows, features, classes):
    data = load_csv(EXAMPLES / name)
    assert data.task == task and data.classes == classes
    assert len(data.X_train) + len(data.X_val) == rows and data.n_features == features
    assert torch.isfinite(data.X_train).all() and torch.isfinite(data.y_train.float()).all()


def test_bundled_examples_match_their_export_script(tmp_path):
    path = EXAMPLES / "export_datasets.py"
    spec = importlib.util.spec_from_file_location("export_datasets", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.export_breast_cancer(tmp_path / "breast_cancer.csv")
    script.export_diabetes(tmp_path / "diabetes.csv")
    for name in ("breast_cancer.csv", "diabetes.csv"):
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), name


# --- bad input ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    message = error_message(tmp_path / "nope.csv", tmp_path)
    assert message.startswith("file not found:") and "nope.csv" in message


def test_directory(tmp_path):
    assert "is a directory" in error_message(tmp_path, tmp_path)


BAD_FILES = {
    "empty": (b"", "data.csv is empty"),
    "blank lines": (b"  \n\n", "data.csv is empty"),
    "png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "data.csv looks binary"),
    "utf-16": ("a,b\n1,2\n".encode("utf-16"), "data.csv is UTF-16"),
    "latin-1": ("name,label\ncaf\u00e9,1\n".encode("latin-1"), "data.csv is not UTF-8"),
    "header only": (b"a,label\n", "data.csv has a header but no data rows"),
    "no names": (b",,\n1,2,3\n", "data.csv has no column names in its first row"),
    "too few rows": (table(rows=5).encode(), "data.csv has only 5 usable rows; at least 10"),
    "extra field": (
        b"a,b,label\n1,2,0\n3,4,1\n5,6,7,0\n" + b"1,2,1\n" * 20,
        "data.csv: line 4 has 4 fields but the header has 3",
    ),
    "extra field in the first row": (  # pandas dropped it with a warning
        b"a,b,label\n1,2,0,9\n" + b"1,2,1\n" * 20,
        "data.csv: line 2 has 4 fields but the header has 3",
    ),
    "open quote": (b'a,label\n1,0\n"2,1\n' + b"3,0\n" * 20, "data.csv cannot be parsed as CSV"),
    "duplicate names": (b"a,a,label\n" + b"1,2,0\n" * 20, "duplicate column names: 'a'"),
    "one column": (b"label\n" + b"1\n" * 20, "only the column 'label'"),
    "no usable features": (
        b"a,b,label\n" + b",,1\n,,0\n" * 10,
        "no usable feature columns besides the target 'label'",
    ),
    "one class": (b"a,label\n" + b"1,same\n" * 20, "target 'label' in data.csv has a single value"),
    "target all missing": (b"a,label\n" + b"1,\n" * 20, "target 'label' in data.csv has no values"),
}


@pytest.mark.parametrize(("content", "expected"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_files_raise_one_line_data_errors(tmp_path, content, expected):
    assert expected in error_message(write(tmp_path, content), tmp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # one row has a single target value too, but the row count is what to fix
        (b"a,label\n1,0\n", "data.csv has only 1 usable row; at least 10 are needed"),
        (b"a,label\n" + b"1,same\n" * 4, "data.csv has only 4 usable rows; at least 10"),
        # enough rows in the file, too few with a target: the count after dropping them
        (b"a,label\n" + b"1,\n" * 10 + b"2,x\n3,x\n", "data.csv has only 2 usable rows"),
    ],
)
def test_too_few_rows_is_reported_before_the_target(tmp_path, content, expected):
    message = error_message(write(tmp_path, content), tmp_path)
    assert message.startswith(expected) and "for validation" in message


def test_too_few_rows_names_the_minimum_for_the_validation_share(tmp_path):
    content = b"a,label\n" + b"".join(f"{i},{i % 2}\n".encode() for i in range(12))
    message = error_message(write(tmp_path, content), tmp_path, val_fraction=0.95)
    assert message == (
        "data.csv has only 12 usable rows; at least 20 are needed to train and hold out 95% "
        "for validation."
    )


def test_regression_target_must_be_numeric(tmp_path):
    path = write(tmp_path, b"a,weight\n" + b"1,12.5kg\n2,3kg\n" * 10)
    message = error_message(path, tmp_path, task="regression")
    assert "target 'weight' in data.csv must be numeric for regression" in message
    assert "'12.5kg'" in message


def test_non_utf8_byte_beyond_the_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(_limits, "SAMPLE_BYTES", 64)
    content = table().encode() + "caf\u00e9,1,red,a\n".encode("latin-1")
    message = error_message(write(tmp_path, content), tmp_path)
    assert "data.csv is not UTF-8" in message and "re-save it as UTF-8" in message


def test_unknown_target_lists_the_columns(tmp_path):
    message = error_message(write(tmp_path, table()), tmp_path, target="price")
    assert message == (
        "target column 'price' is not in data.csv; "
        "available columns: 'x', 'size', 'colour', 'label'."
    )


def test_text_target_with_many_values_suggests_classification(tmp_path):
    rows = "".join(f"{i},{i}.5kg\n" for i in range(30))
    message = error_message(write(tmp_path, "a,weight\n" + rows), tmp_path)
    assert "target 'weight'" in message and "'classification'" in message


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, math.nan, "0.2", True])
def test_val_fraction_must_be_inside_zero_one(tmp_path, fraction):
    message = error_message(write(tmp_path, table()), tmp_path, val_fraction=fraction)
    assert message.startswith("val_fraction must be a number strictly between 0 and 1")


def test_unknown_task(tmp_path):
    message = error_message(write(tmp_path, table()), tmp_path, task="clustering")
    assert "'clustering'" in message and "'classification'" in message


def test_a_text_label_among_numeric_labels_is_a_class_not_junk(tmp_path):
    rows = [f"{i},{i % 2}" for i in range(60)] + ["60,other", "61,other"]
    path = tmp_path / "labels.csv"
    path.write_text("x,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    data = load_csv(path)
    assert data.task == "classification"
    assert sorted(data.classes) == ["0", "1", "other"]
    assert len(data.X_train) + len(data.X_val) == 62


# --- reading in pieces -------------------------------------------------------------------------


def _messy_rows(n: int = 120) -> str:
    """Gaps, junk, huge values and a category; text and infinities appear only after row 10."""
    rows = []
    for i in range(n):
        gap = "" if i % 10 == 0 else str(i)
        junk = {25: "?", 26: "#REF!", 27: "n/a", 60: "?"}.get(i, str(i))
        huge = {30: "1e300", 31: "-1e300", 32: "inf", 33: "1e30"}.get(i, f"{i * 0.5}")
        colour = "" if i == 4 else ["red", "green"][i % 2]
        label = "" if i in (26, 30, 40) else str(i % 3)
        rows.append(f"{gap},{junk},{huge},{colour},id-{i},,{label}")
    return "gappy,junky,huge,colour,name,empty,label\n" + "\n".join(rows) + "\n"


PIECES = {
    "plain": table(rows=300),
    "messy, junk after the sample": _messy_rows(),
    "bom, crlf": "\ufeff" + table(rows=200, newline="\r\n"),
    "spaces after delimiters": table(rows=200).replace(",", ", "),
    "decimal comma": "price;count;label\n"
    + "".join(f"{i},5;{i % 3};{'ab'[i % 2]}\n" for i in range(200)),
    "blank lines": table(rows=200).replace("\n1", "\n\n\n1"),
    "trailing delimiter": "a,label\n" + "".join(f"{i},{i % 2},\n" for i in range(200)),
    "quoted line breaks": "a,text,label\n"
    + "".join(f'{i},"line one\nline two {i % 2}",{i % 2}\n' for i in range(200)),
    "mostly text after the sample": "a,b,label\n"
    + "".join(f"{i},{i if i < 20 else f'w{i % 7}'},{i % 2}\n" for i in range(200)),
    "mixed types": "a,flag,label\n"
    + "".join(
        f"{i % 7},{'maybe' if i > 150 else bool(i % 2)},{'yes' if i > 150 else i % 2}\n"
        for i in range(200)
    ),
    "regression": "a,b,price\n" + "".join(f"{i},{i % 9},{10 + 3.5 * i}\n" for i in range(200)),
}  # fmt: skip


def _assert_same(a: TabularData, b: TabularData) -> None:
    for field in ("X_train", "X_val", "y_train", "y_val"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    for field in ("task", "target", "feature_names", "classes", "notes", "fingerprint"):
        assert getattr(a, field) == getattr(b, field), field
    assert (a.target_mean, a.target_scale) == (b.target_mean, b.target_scale)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("content", PIECES.values(), ids=PIECES.keys())
def test_reading_in_pieces_gives_the_same_result(tmp_path, monkeypatch, content, threads):
    monkeypatch.setattr(_limits, "SAMPLE_ROWS", 10)  # junk and text beyond the sample
    path = write(tmp_path, content)
    with monkeypatch.context() as whole_file:  # one read_csv call for the whole file
        whole_file.setattr(_reading, "_read_pieces", _unsplittable)
        whole = load_csv(path)
    read_whole, wholes = _reading._read_whole, []  # a spy: the pieces must not fall back
    monkeypatch.setattr(_reading, "_read_whole", lambda *a: wholes.append(a) or read_whole(*a))
    _assert_same(load_csv(path), whole)  # one piece: the file is smaller than READ_BLOCK_BYTES
    monkeypatch.setattr(_limits, "READ_BLOCK_BYTES", 97)  # pieces of a few lines
    monkeypatch.setattr(_limits, "worker_threads", lambda: threads)
    _assert_same(load_csv(path), whole)
    # Only a quoted line break cut in two (pieces only) and text in a column the sample found
    # numeric (both reads) fall back to one read_csv call; everything else is read in pieces.
    fallbacks = {PIECES["quoted line breaks"]: 1, PIECES["mostly text after the sample"]: 2}
    assert len(wholes) == fallbacks.get(content, 0)
    if content == PIECES["mostly text after the sample"]:  # a category, not a number with junk
        assert "b" not in whole.feature_names and "b_w0" in whole.feature_names


def _unsplittable(*args):
    raise _reading._Unsplittable("read it whole")


def test_pieces_are_cut_at_line_ends_and_hashed_whole(tmp_path):
    content = table(rows=50).encode() + b"1.5,2,red,a"  # no line end at the end
    digest = hashlib.sha256()
    with write(tmp_path, content).open("rb") as f:
        pieces = list(_reading._pieces(f, digest, 16))
    assert b"".join(pieces) == content and digest.hexdigest() == hashlib.sha256(content).hexdigest()
    assert all(p.endswith(b"\n") for p in pieces[:-1]) and len(pieces) > 20


ALIGNED_ROWS, UNLABELLED = 300, {0: "", 1: "inf", 2: "-inf", 3: "nan"}  # by row % 9
DROPPED = sum(i % 9 in UNLABELLED for i in range(ALIGNED_ROWS))  # 135


def _feature_equals_target(task: str) -> str:
    """A feature column equal to the target on every row that has one; rows whose target is
    missing or infinite have a feature far away from every kept value."""
    rows = []
    for i in range(ALIGNED_ROWS):
        value = f"{i % 3}" if task == "classification" else f"{i * 0.5}"
        colour = "red" if i % 2 else "blue"
        if i % 9 in UNLABELLED:
            rows.append(f"{-1000 - i},{colour},{UNLABELLED[i % 9]}")
        else:
            rows.append(f"{value},{colour},{value}")
    return "x,colour,y\n" + "\n".join(rows) + "\n"


def _assert_aligned(data: TabularData) -> None:
    x = torch.cat([data.X_train, data.X_val])[:, 0].double().numpy()
    y = torch.cat([data.y_train, data.y_val]).double().numpy().reshape(-1)
    assert len(x) == len(y) == ALIGNED_ROWS - DROPPED
    if data.task == "classification":  # each class has one feature value, a different one
        values = [set(np.round(x[y == c], 5)) for c in range(data.n_classes)]
        assert all(len(v) == 1 for v in values) and len(set.union(*values)) == data.n_classes
    else:  # both standardized: the feature is an exact affine function of the target
        slope, intercept = np.polyfit(y, x, 1)
        assert slope > 0 and np.abs(x - (slope * y + intercept)).max() < 1e-4


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("threads", [1, 3])
def test_features_stay_aligned_with_targets_when_rows_are_dropped(
    tmp_path, monkeypatch, task, threads
):
    path = write(tmp_path, _feature_equals_target(task))
    with monkeypatch.context() as whole_file:
        whole_file.setattr(_reading, "_read_pieces", _unsplittable)
        whole = load_csv(path)
    assert f"dropped {DROPPED} rows with a missing target 'y'" in whole.notes
    _assert_aligned(whole)
    monkeypatch.setattr(_limits, "READ_BLOCK_BYTES", 97)  # pieces of a few lines
    monkeypatch.setattr(_limits, "MIN_PIECE_BYTES", 97)
    monkeypatch.setattr(_limits, "worker_threads", lambda: threads)
    pieces = load_csv(path)
    _assert_aligned(pieces)
    _assert_same(pieces, whole)


def test_errors_in_later_pieces_name_the_right_line(tmp_path, monkeypatch):
    monkeypatch.setattr(_limits, "READ_BLOCK_BYTES", 64)
    content = "a,b,label\n" + "1,2,0\n" * 40 + "5,6,7,0\n" + "1,2,1\n" * 20
    message = error_message(write(tmp_path, content), tmp_path)
    assert "data.csv: line 42 has 4 fields but the header has 3" in message


def test_the_numeric_fast_path_equals_the_fitted_transformer(tmp_path):
    header = ["a", "mostly_empty", "c", "colour", "label"]
    rows = "".join(
        f"{'' if i % 7 == 0 else i * 0.37},{'' if i < 60 else -i},{1e30 if i == 3 else i % 5},"
        f"{'ab'[i % 2]},{i % 2}\n"
        for i in range(200)
    )
    path = write(tmp_path, ",".join(header) + "\n" + rows)
    layout = _layout.read_layout(path, ",", header, "label", path.name, Notes())
    table = _reading.read_table(path, path.name, layout)
    features = _columns.feature_table(table, header[:-1], None, Notes())
    transformer = _preprocess.preprocessor(features.numeric, features.categorical)
    every = np.arange(200)
    with warnings.catch_warnings():  # "mostly_empty" is empty in the fit rows: left out
        warnings.simplefilter("ignore", UserWarning)
        transformer.fit(features.frame(np.arange(0, 60)))
        expected = transformer.transform(features.frame(every))
    width = len(transformer.get_feature_names_out())
    fast = _preprocess.transform(transformer, features, every, width).numpy()
    assert fast.shape == (200, 4)
    assert np.array_equal(fast, expected)


@pytest.mark.parametrize(("n", "classes", "fraction", "seed"), [(40, 2, 0.2, 0), (997, 7, 0.33, 2)])
def test_stratified_split_is_scikit_learns(n, classes, fraction, seed):
    codes = np.random.default_rng(seed).integers(0, classes, n)
    ours = _split.split(codes, "classification", fraction, seed, Notes())
    theirs = train_test_split(np.arange(n), test_size=fraction, random_state=seed, stratify=codes)
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))


@pytest.mark.parametrize(
    ("fraction", "counts", "stratified"),
    [
        (0.25, [4, 4, 4], True),  # 3 validation rows for 3 classes: one of each fits exactly
        (0.2, [4, 3, 3], False),  # 2 validation rows for 3 classes
        (0.8, [4, 3, 3], False),  # 2 training rows for 3 classes: a plain split, not a crash
    ],
)
def test_the_split_stratifies_exactly_when_each_side_can_hold_every_class(
    fraction, counts, stratified
):
    codes = np.repeat(np.arange(len(counts)), counts)
    notes = Notes()
    train, val = _split.split(codes, "classification", fraction, 0, notes)
    assert sorted([*train, *val]) == list(range(len(codes)))
    assert len(val) == math.ceil(fraction * len(codes))
    if stratified:
        assert list(notes) == ["train/validation split stratified by class"]
        assert sorted(codes[val].tolist()) == list(range(len(counts)))
    else:
        assert len(list(notes)) == 1 and "too few to stratify" in next(iter(notes))


# --- the readers' shared steps, one at a time --------------------------------------------------


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (["1", "NA", "3"], pd.Series([1.0, np.nan, 3.0])),  # a missing cell as written
        (["1", "3"], pd.Series([1, 3])),  # integers stay integers, as read_csv reads them
        (["99999999999999999999", ""], pd.Series([1e20, np.nan])),  # past 64 bits: a float
        ([2**70], pd.Series([float(2**70)])),  # a Python int past 64 bits: float64, not object
        ([1.5, None], pd.Series([1.5, np.nan])),
        ([1, 2.5, None], pd.Series([1.0, 2.5, np.nan])),  # mixed integers and floats
        (["red", "NA"], pd.Series(["red", np.nan], dtype=object)),  # real text stays text
        ([True, False], pd.Series([True, False], dtype=object)),  # booleans are not numbers
    ],
)
def test_tidy_gives_a_text_column_as_read_csv_reads_numbers(cells, expected):
    """A column that a piece's type inference left as text (an integer past 64 bits, a missing
    cell as written) becomes what ``read_csv`` makes of numbers; anything else stays."""
    from autoinit.data._frame import tidy

    pd.testing.assert_series_equal(tidy(pd.Series(cells, dtype=object)), expected)


def test_tidy_reads_pandas_string_columns_too_and_leaves_numbers_alone():
    from autoinit.data._frame import tidy

    strings = tidy(pd.Series(["1", "2", "NA"], dtype="string"))
    assert strings.isna().tolist() == [False, False, True] and strings[:2].tolist() == [1, 2]
    numbers = pd.Series([1.0, 2.0])
    assert tidy(numbers) is numbers


def _read_layout(tmp_path: Path, content: str) -> _layout.Layout:
    path = write(tmp_path, content)
    header = content.splitlines()[0].split(",")
    return _layout.read_layout(path, ",", header, "label", "data.csv", Notes())


def test_a_later_piece_is_named_as_the_files_columns_or_left_to_the_whole_read(tmp_path):
    """``_named``: a piece as wide as the header, or with the empty trailing field the first
    row has, is named; one that starts wider or narrower is read whole instead."""
    trailing = _read_layout(tmp_path, "a,b,label\n1,2,0,\n3,4,1,\n")  # a delimiter ends every row
    assert trailing.names == ["a", "b", "label"] and trailing.fields == 4
    piece = pd.DataFrame([[5, 6, 1, np.nan], [7, 8, 0, np.nan]])
    named = _reading._named(piece, trailing)
    assert list(named.columns) == ["a", "b", "label"] and named["b"].tolist() == [6, 8]
    assert list(named.index) == [0, 1]  # the columns are named, not the rows
    same = _reading._named(pd.DataFrame([[5, 6, 1]]), trailing)
    assert list(same.columns) == ["a", "b", "label"]
    for width in (2, 5):  # narrower than the header, wider than the first row
        with pytest.raises(_reading._Unsplittable, match=f"a row of {width} fields"):
            _reading._named(pd.DataFrame([list(range(width))]), trailing)
    with pytest.raises(_reading._Unsplittable, match="a row of 4 fields"):  # a value past it
        _reading._named(pd.DataFrame([[5, 6, 1, 9]]), trailing)
    plain = _read_layout(tmp_path, "a,b,label\n1,2,0\n")
    with pytest.raises(_reading._Unsplittable, match="a row of 4 fields"):
        _reading._named(pd.DataFrame([[5, 6, 1, np.nan]]), plain)


@pytest.mark.parametrize("whole", [False, True])
def test_a_bad_row_past_the_sample_names_the_file_and_the_line(tmp_path, monkeypatch, whole):
    monkeypatch.setattr(_limits, "SAMPLE_ROWS", 10)
    monkeypatch.setattr(_limits, "READ_BLOCK_BYTES", 64)
    if whole:
        monkeypatch.setattr(_reading, "_read_pieces", _unsplittable)
    content = "a,b,label\n" + "1,2,0\n" * 40 + "5,6,7,0\n" + "1,2,1\n" * 20
    message = error_message(write(tmp_path, content, "wide.csv"), tmp_path)
    assert message.startswith("wide.csv: line 42 has 4 fields but the header has 3")


@pytest.mark.parametrize(
    ("values", "dtype", "kind"),
    [
        ([np.nan, np.nan], "float64", "empty"),
        ([None, None], object, "empty"),
        ([True, False], bool, "bool"),
        ([True, None, False], object, "bool"),  # booleans with a gap
        ([1, 2], "int64", "number"),
        ([1.5, np.nan], "float64", "number"),
        (["a", "b"], "string", "text"),  # pandas' string dtype
        (["a", None, "b"], object, "text"),
        ([1, "a"], object, "mixed"),  # one chunk's numbers next to another chunk's text
        ([True, "maybe"], object, "mixed"),
    ],
)
def test_column_kind_says_what_pandas_made_of_a_column(values, dtype, kind):
    """Pieces parsed apart may see one column as numbers and another as text: the kinds are
    how the assembler finds such a column (see test_types_mixed_by_chunked_parsing...)."""
    from autoinit.data._frame import column_kind

    assert column_kind(pd.Series(values, dtype=dtype)) == kind


@pytest.mark.parametrize(
    ("rows", "block", "threads", "expected"),
    [
        (60, 100_000, 3, lambda size: (1, 100_000)),  # under one block: one thread, one piece
        (60, "size", 3, lambda size: (1, size)),  # exactly one block, too
        (400, 2_000, 1, lambda size: (1, 2_000)),  # one CPU: blocks read in turn
        # 3 threads: pieces of a twelfth of the file, so that each thread gets several...
        (400, 4_000, 3, lambda size: (3, size // 12)),
        (400, 4_000, 2, lambda size: (2, size // 8)),
        (400, 300, 3, lambda size: (3, 300)),  # ...but never more than a block
        (60, 800, 3, lambda size: (3, 100)),  # ...nor less than MIN_PIECE_BYTES
    ],
)
def test_a_large_file_is_parsed_by_the_worker_threads_in_pieces_sized_for_them(
    tmp_path, monkeypatch, rows, block, threads, expected
):
    path = write(tmp_path, table(rows=rows))
    size = path.stat().st_size
    block = size if block == "size" else block
    assert size > block or expected(size)[0] == 1
    monkeypatch.setattr(_limits, "READ_BLOCK_BYTES", block)
    monkeypatch.setattr(_limits, "MIN_PIECE_BYTES", 100)
    monkeypatch.setattr(_limits, "worker_threads", lambda: threads)
    pools, sizes = [], []
    pool, pieces = _reading.concurrent.futures.ThreadPoolExecutor, _reading._pieces

    def counted_pool(workers):
        pools.append(workers)
        return pool(workers)

    monkeypatch.setattr(_reading.concurrent.futures, "ThreadPoolExecutor", counted_pool)
    monkeypatch.setattr(_reading, "_pieces", lambda f, d, n: sizes.append(n) or pieces(f, d, n))
    reference = load_csv(path)
    assert ((pools or [1])[0], sizes[0]) == expected(size) and len(sizes) == 1
    monkeypatch.setattr(_limits, "READ_BLOCK_BYTES", 10**9)
    _assert_same(load_csv(path), reference)


@pytest.mark.parametrize(
    ("fraction", "needed"),
    [(0.2, 10), (0.5, 10), (0.9, 10), (0.91, 12), (0.92, 13), (0.95, 20), (0.99, 100)],
)
def test_exactly_the_rows_needed_are_enough(fraction, needed):
    _split.check_rows(needed, fraction, "data.csv")  # no error at the boundary
    with pytest.raises(DataError, match=f"only {needed - 1} usable rows; at least {needed} are"):
        _split.check_rows(needed - 1, fraction, "data.csv")


def _numbers_piece(rows: int, first: int) -> _frame.Piece:
    values = np.arange(first, first + 2 * rows, dtype=np.float32).reshape(rows, 2)
    return _frame.Piece(rows, values, pd.DataFrame(index=range(rows)), {},
                        np.full(2, rows), {}, NO_ROWS, NO_ROWS)  # fmt: skip


def test_the_block_is_allocated_once_for_the_rows_the_file_predicts():
    """100 pieces of 50 rows and 1,000 bytes from a 100,000-byte file: the block is grown once,
    at the second piece, for the 5,000 rows the bytes read so far predict (plus 5% and 1,024
    rows), not once per piece, and not for many more rows than the file holds."""
    layout = _layout.Layout(options={}, names=["a", "b"], unnamed=[], numeric=["a", "b"],
                            others=[], features=["a", "b"], fields=2)  # fmt: skip
    table = _frame.Assembler(layout, file_bytes=100 * 1000)
    pieces = [_numbers_piece(50, 100 * i) for i in range(100)]
    blocks = []
    for piece in pieces:
        table.add(piece, 1000)
        blocks.append(table.block)
    assert blocks[0] is pieces[0].values  # the first piece is not copied
    assert all(block is blocks[1] for block in blocks[1:])  # one allocation for the rest
    assert 5000 <= len(table.block) <= 1.05 * 5000 + 1024
    result = table.finish("sha")
    assert result.rows == 5000 and result.finite.tolist() == [5000, 5000]
    assert np.array_equal(result.block, np.concatenate([p.values for p in pieces]))


@pytest.mark.parametrize("piece_bytes", [None, 64], ids=["whole", "pieces"])
@pytest.mark.parametrize(("words", "numeric"), [(2, True), (3, False)])
def test_a_column_at_least_90_percent_numbers_counting_infinities_stays_numeric(
    tmp_path, monkeypatch, piece_bytes, words, numeric
):
    # 20 cells: two infinities are numbers too, so 2 words leave exactly 90% numbers (numeric,
    # the words as missing) and 3 words 85% (a category). The sample (10 rows) sees numbers
    # only: the verdict is made over every row read.
    cells = [str(i) for i in range(18 - words)] + ["inf", "-inf"] + ["word"] * words
    path = write(tmp_path, "x,label\n" + "".join(f"{c},{i % 2}\n" for i, c in enumerate(cells)))
    monkeypatch.setattr(_limits, "SAMPLE_ROWS", 10)
    if piece_bytes:
        monkeypatch.setattr(_limits, "READ_BLOCK_BYTES", piece_bytes)
    whole, read_whole = [], _reading._read_whole
    monkeypatch.setattr(_reading, "_read_whole", lambda *a: whole.append(1) or read_whole(*a))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_csv(path)
    assert (data.feature_names == ["x"]) is numeric, data.feature_names
    # Judged while reading: numbers stay in the float32 block, read once; a text column is
    # read again whole, as text.
    assert len(whole) == (0 if numeric else 1)

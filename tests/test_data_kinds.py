"""The readers beyond CSV: image folders, .npz/.npy arrays, Parquet, and ``load_data``'s choice
between them. Every reader gives finite float32 tensors of the right shape, or a one-line
DataError that names the file or folder; property tests generate tiny folders and archives."""

from __future__ import annotations

import io
import sys
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from autoinit.data import (
    ArrayData,
    TabularData,
    _limits,
    data_format,
    load_arrays,
    load_csv,
    load_data,
    load_image_folder,
    load_parquet,
)
from autoinit.data._images import parse_image_size
from autoinit.errors import DataError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DIGITS = EXAMPLES / "digits"
WAVES = EXAMPLES / "waves.npz"
BREAST_CANCER = EXAMPLES / "breast_cancer.csv"


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


def save_image(path: Path, array: np.ndarray, mode: str | None = None, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path, **options)
    return path


def image_folder(root: Path, classes: int = 2, per_class: int = 8, size=(6, 5), *,
                 mode: str = "L", fmt: str = "png", seed: int = 0) -> Path:  # fmt: skip
    """Class c's images are brighter for larger c (learnable), with noise."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        for i in range(per_class):
            base = 40 + 150 * c / max(classes - 1, 1)
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            array = np.clip(base + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)
            save_image(root / f"class{c}" / f"{i:03d}.{fmt}", array)
    return root


# --- image folders -----------------------------------------------------------------------------


def test_the_examples_are_what_make_examples_makes(tmp_path: Path) -> None:
    """Compared as pixels and arrays: PNG bytes may differ between Pillow builds."""
    import subprocess

    done = subprocess.run([sys.executable, str(EXAMPLES / "make_examples.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    made = sorted(p.relative_to(tmp_path) for p in (tmp_path / "digits").rglob("*.png"))
    assert made == sorted(p.relative_to(EXAMPLES) for p in DIGITS.rglob("*.png"))
    assert len(made) == 500
    for path in made:
        assert np.array_equal(np.asarray(Image.open(tmp_path / path)),
                              np.asarray(Image.open(EXAMPLES / path))), path  # fmt: skip
    with np.load(tmp_path / "waves.npz") as new, np.load(WAVES) as kept:
        assert sorted(new.files) == sorted(kept.files) == ["x", "y"]
        assert np.array_equal(new["x"], kept["x"]) and np.array_equal(new["y"], kept["y"])
    import zipfile

    with zipfile.ZipFile(WAVES) as archive:  # a fixed date: rewriting it changes no byte
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}



def test_the_example_digits_folder() -> None:
    data = load_image_folder(DIGITS)
    assert isinstance(data, ArrayData) and data.kind == "images"
    assert data.X_train.shape == (400, 1, 16, 16) and data.X_val.shape == (100, 1, 16, 16)
    assert data.X_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.classes == [str(d) for d in range(10)] and data.task == "classification"
    assert torch.bincount(data.y_val).tolist() == [10] * 10  # stratified
    assert abs(float(data.X_train.mean())) < 1e-4 and abs(float(data.X_train.std()) - 1) < 1e-3
    assert data.fingerprint["image_size"] == "16x16" and data.fingerprint["mode"] == "L"
    assert data.describe() == (
        "digits: 500 images 1x16x16 (L), target 'class folder' (classification, 10 classes)"
    )
    assert data.input_shape == (1, 16, 16) and data.n_features == 256


def test_pixels_are_scaled_then_normalised_with_training_statistics(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "f", classes=2, per_class=10, size=(3, 2), mode="RGB")
    data = load_image_folder(root, seed=3)
    raw = {}
    for c in range(2):
        for file in sorted((root / f"class{c}").iterdir()):
            raw[file] = np.asarray(Image.open(file), dtype=np.float64).transpose(2, 0, 1) / 255
    stack = np.stack(list(raw.values()))
    x = torch.cat([data.X_train, data.X_val]).double().numpy()
    assert x.shape == stack.shape
    for c in range(3):  # per channel: mean 0 and std 1 over the training images only
        channel = data.X_train[:, c].double()
        assert abs(float(channel.mean())) < 1e-5
        assert abs(float(channel.std(unbiased=False)) - 1) < 1e-4
    # an affine map of the [0, 1] pixels, the same one for train and validation
    flat_raw, flat = np.sort(stack[:, 0].ravel()), np.sort(x[:, 0].ravel())
    slope = (flat[-1] - flat[0]) / (flat_raw[-1] - flat_raw[0])
    assert np.allclose(flat, flat[0] + slope * (flat_raw - flat_raw[0]), atol=1e-4)


def test_image_size_option_and_default_cap(tmp_path: Path) -> None:
    big = image_folder(tmp_path / "big", per_class=6, size=(100, 50))
    data = load_image_folder(big)
    assert data.input_shape == (1, 32, 64)  # the longer side capped at 64, shape kept
    assert any("scaled down to at most 64" in n for n in data.notes)
    assert load_image_folder(big, image_size=10).input_shape == (1, 10, 10)
    assert load_image_folder(big, image_size="12x7").input_shape == (1, 7, 12)
    assert data.fingerprint["sha256"] != load_image_folder(big, image_size=10).fingerprint["sha256"]
    for bad in ("0", "axb", "2x3x4", "5000", -1):
        with pytest.raises(DataError, match="image size must be N or WIDTHxHEIGHT"):
            load_image_folder(big, image_size=bad)
    assert parse_image_size("16") == (16, 16) and parse_image_size(None) is None


def test_the_most_common_size_wins_and_others_are_resized(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "f", per_class=6, size=(8, 8))
    save_image(root / "class0" / "odd.png", np.zeros((20, 30), np.uint8))
    data = load_image_folder(root)
    assert data.input_shape == (1, 8, 8) and len(data.X_train) + len(data.X_val) == 13


def test_mixed_modes_are_converted_to_rgb_with_a_note(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "f", per_class=6, size=(4, 4))
    save_image(root / "class1" / "colour.png", np.full((4, 4, 3), (200, 10, 10), np.uint8))
    save_image(root / "class0" / "palette.gif", np.full((4, 4, 3), (0, 90, 200), np.uint8), "P")
    data = load_image_folder(root)
    assert data.input_shape == (3, 4, 4) and data.fingerprint["mode"] == "RGB"
    assert "converted 12 grey image(s) to RGB, as the others have colour" in data.notes


def test_16_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    root = tmp_path / "f"
    levels = [1000, 5000, 20000, 40000, 60000, 65535]
    for i, level in enumerate(levels * 2):
        save_image(root / f"c{i % 2}" / f"{i}.png", np.full((3, 3), level, np.uint16))
    data = load_image_folder(root)
    assert data.fingerprint["mode"] == "L"
    x = torch.cat([data.X_train, data.X_val])
    means = sorted(set(np.round(x.mean(dim=(1, 2, 3)).numpy(), 4)))
    assert len(means) == len(levels)  # clipped at 255, every level above it would be one value


def test_grey_palettes_stay_grey(tmp_path: Path) -> None:
    root = tmp_path / "f"
    for i in range(12):
        save_image(root / f"c{i % 2}" / f"{i}.bmp", np.full((3, 3), 20 * i, np.uint8), "P")
    data = load_image_folder(root)
    assert data.fingerprint["mode"] == "L" and data.input_shape == (1, 3, 3)


@pytest.mark.parametrize("fmt, options", [("jpg", {"quality": 95}), ("bmp", {}), ("gif", {}),
                                          ("jpeg", {})])  # fmt: skip
def test_every_format_is_read(tmp_path: Path, fmt, options) -> None:
    root = tmp_path / "f"
    rng = np.random.default_rng(1)
    for c in range(2):
        for i in range(6):
            array = np.clip(60 + 120 * c + rng.normal(0, 5, (9, 9, 3)), 0, 255).astype(np.uint8)
            save_image(root / f"c{c}" / f"{i}.{fmt.upper() if i % 2 else fmt}", array, **options)
    data = load_image_folder(root)
    assert data.input_shape == (3, 9, 9) and len(data.y_train) + len(data.y_val) == 12
    brightness = torch.cat([data.X_train, data.X_val]).mean(dim=(1, 2, 3))
    labels = torch.cat([data.y_train, data.y_val])
    assert brightness[labels == 1].min() > brightness[labels == 0].max()  # labels kept in order


def test_unreadable_images_are_skipped_and_counted(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "f", per_class=8)
    (root / "class0" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    good = (root / "class1" / "000.png").read_bytes()
    (root / "class1" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "class1" / "notes.txt").write_text("not an image")
    (root / "class1" / ".hidden.png").write_bytes(b"junk")
    (root / ".cache").mkdir()
    (root / "README.md").write_text("loose file")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\) of 18"):
        data = load_image_folder(root)
    assert len(data.y_train) + len(data.y_val) == 16
    assert any("ignored 1 file(s) that are not PNG, JPEG, BMP or GIF (e.g. 'class1/notes.txt')"
               in n for n in data.notes)  # fmt: skip
    assert any("ignored 1 file(s) directly in f" in n for n in data.notes)
    assert data.classes == ["class0", "class1"]


def test_a_class_with_no_readable_image_is_dropped(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "f", classes=3, per_class=6)
    for file in (root / "class2").iterdir():
        file.write_bytes(b"not an image at all")
    (root / "empty").mkdir()
    data = quiet(load_image_folder, root)
    assert data.classes == ["class0", "class1"] and int(data.y_train.max()) == 1
    assert any("'class2' have no readable image -> dropped" in n for n in data.notes)
    assert any("'empty' hold no image file -> not a class" in n for n in data.notes)


@pytest.mark.parametrize("case, words", [
    ("missing", ["folder not found", "nothere"]),
    ("empty", ["f is an empty directory", "one subfolder of images per class"]),
    ("loose images", ["f is a directory without class subfolders"]),
    ("one class", ["f has only one class folder with images ('only')", "nothing to predict"]),
    ("no images", ["f has no PNG, JPEG, BMP or GIF images in its subfolders"]),
    ("all corrupt", ["none of the 12 image files in f could be read", "a/0.png"]),
    ("one readable class", ["f has readable images in only one class folder ('b')"]),
    ("too few", ["f has only 4 usable rows"]),
    ("regression", ["the task is classification"]),
])  # fmt: skip
def test_bad_image_folders(tmp_path: Path, case, words) -> None:
    root = tmp_path / "f"
    options = {}
    if case == "missing":
        root = tmp_path / "nothere"
    elif case == "empty":
        root.mkdir()
    elif case == "loose images":
        save_image(root / "x.png", np.zeros((2, 2), np.uint8))
    elif case == "one class":
        image_folder(root, classes=1, per_class=12)
        (root / "class0").rename(root / "only")
    elif case == "no images":
        (root / "a").mkdir(parents=True)
        (root / "a" / "x.txt").write_text("x")
    elif case in ("all corrupt", "one readable class"):
        for c in "ab":
            for i in range(6):
                save_image(root / c / f"{i}.png", np.full((3, 3), 9 * i, np.uint8))
        for file in (root / "a").iterdir():
            file.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
        if case == "all corrupt":
            for file in (root / "b").iterdir():
                file.write_bytes(b"GIF89a")
    elif case == "too few":
        image_folder(root, per_class=2)
    elif case == "regression":
        image_folder(root)
        options = {"task": "regression"}
    with pytest.raises(DataError) as raised:
        quiet(load_image_folder, root, **options)
    message = str(raised.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_threads_do_not_change_the_result(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "f", classes=3, per_class=40, size=(5, 5), mode="RGB")
    with mock.patch.object(_limits, "MAX_READ_THREADS", 1):
        one = load_image_folder(root)
    with mock.patch.object(_limits, "MAX_READ_THREADS", 4), \
            mock.patch("autoinit.data._images._CHUNK", 3):  # fmt: skip
        many = load_image_folder(root)
    assert torch.equal(one.X_train, many.X_train) and torch.equal(one.y_val, many.y_val)
    assert one.fingerprint == many.fingerprint


def test_the_fingerprint_follows_the_bytes_and_the_labels(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "f")
    before = load_image_folder(root).fingerprint["sha256"]
    assert load_image_folder(root).fingerprint["sha256"] == before
    (root / "class0" / "000.png").rename(root / "class1" / "moved.png")
    assert load_image_folder(root).fingerprint["sha256"] != before


def test_missing_pillow_says_how_to_install(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "f")
    with mock.patch.dict(sys.modules, {"PIL": None, "PIL.Image": None}):
        with pytest.raises(DataError, match="needs Pillow.*: pip install pillow"):
            load_image_folder(root)


# --- .npz and .npy -------------------------------------------------------------------------------


def save_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_the_example_waves() -> None:
    data = load_arrays(WAVES)
    assert data.kind == "sequences" and data.X_train.shape == (1600, 32, 1)
    assert data.task == "classification" and data.classes == ["0", "1", "2"]
    assert data.task_reason == "array 'y' is integer -> classification"
    assert data.describe().startswith("waves.npz: 2000 sequences of 32 steps x 1 feature")


@pytest.mark.parametrize("shape, dtype, kind, declared, out", [
    ((30, 4), np.float64, "tabular", None, (4,)),
    ((30, 6, 2), np.float32, "sequences", None, (6, 2)),
    ((30, 5, 5), np.uint8, "images", None, (1, 5, 5)),
    ((30, 3, 4, 4), np.float16, "images", None, (3, 4, 4)),
    ((30, 7), np.int32, "sequences", "sequences", (7, 1)),
    ((30, 5, 5), np.float32, "images", "images", (1, 5, 5)),
    ((30, 5), np.bool_, "tabular", "tabular", (5,)),
])  # fmt: skip
def test_the_shape_of_x_says_the_kind(tmp_path, shape, dtype, kind, declared, out) -> None:
    rng = np.random.default_rng(0)
    x = (rng.random(shape) * 10).astype(dtype)
    extra = {"kind": np.array(declared)} if declared else {}
    data = load_arrays(save_npz(tmp_path / "d.npz", x=x, y=np.arange(30) % 3, **extra))
    assert data.kind == kind and data.input_shape == out
    assert data.X_train.dtype == torch.float32 and torch.isfinite(data.X_train).all()
    axes = {"tabular": (0,), "images": (0, 2, 3), "sequences": (0, 1)}[kind]
    assert torch.allclose(data.X_train.double().mean(dim=axes), torch.zeros(out[0 if kind ==
                          "images" else -1]).double(), atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("y, task, expected, classes", [
    (np.arange(40) % 4, "auto", "classification", ["0", "1", "2", "3"]),
    (np.arange(40) % 2 == 0, "auto", "classification", ["False", "True"]),
    (np.array(["cat", "dog"] * 20), "auto", "classification", ["cat", "dog"]),
    (np.linspace(0, 1, 40), "auto", "regression", None),
    (np.arange(40) % 4 * 1.0, "classification", "classification", ["0", "1", "2", "3"]),
    (np.arange(40) % 4, "regression", "regression", None),
])  # fmt: skip
def test_the_task_follows_the_dtype_of_y(tmp_path, y, task, expected, classes) -> None:
    x = np.random.default_rng(0).normal(size=(40, 3))
    data = load_data(save_npz(tmp_path / "d.npz", x=x, y=y), task=task)
    assert data.task == expected and data.classes == classes
    if expected == "regression":
        assert data.y_train.shape == (32, 1) and data.y_train.dtype == torch.float32
        restored = data.y_train * data.target_scale + data.target_mean
        gaps = np.abs(restored.numpy().ravel()[:, None] - y.astype(float)[None, :]).min(axis=1)
        assert gaps.max() < 1e-5  # y * scale + mean gives the values back
    else:
        assert data.y_train.dtype == torch.int64


def test_only_training_rows_set_the_statistics(tmp_path: Path) -> None:
    x = np.zeros((50, 2))
    x[:, 0] = np.arange(50)
    data = load_arrays(save_npz(tmp_path / "d.npz", x=x, y=np.arange(50) % 2), seed=4)
    assert abs(float(data.X_train[:, 0].mean())) < 1e-5
    assert abs(float(data.X_val[:, 0].mean())) > 1e-3  # not re-centred on validation rows
    assert torch.all(data.X_train[:, 1] == 0)  # a constant feature: std 1, not a division by 0


def test_an_npy_file_has_the_target_as_its_last_column(tmp_path: Path) -> None:
    table = np.c_[np.random.default_rng(0).normal(size=(30, 3)), np.arange(30) % 3]
    np.save(tmp_path / "t.npy", table.astype(np.int64))
    data = load_data(tmp_path / "t.npy")
    assert data.kind == "tabular" and data.input_shape == (3,) and data.task == "classification"
    np.save(tmp_path / "f.npy", table)
    assert load_data(tmp_path / "f.npy").task == "regression"
    assert load_data(tmp_path / "f.npy", task="classification").classes == ["0", "1", "2"]


class Payload:
    """Unpickling this would create a file: the readers must never do it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("case, words", [
    ("missing", ["file not found", "nothere.npz"]),
    ("no y", ["d.npz has no array 'y' (the targets)", "it holds 'x', 'labels'",
              "numpy.savez(path, x=x, y=y)"]),
    ("no x", ["d.npz has no array 'x' (the inputs)"]),
    ("x and X", ["d.npz holds both 'x' and 'X'"]),
    ("lengths", ["x in d.npz has 30 samples but y has 29"]),
    ("object x", ["array 'x' in d.npz holds Python objects", "never loads"]),
    ("object y", ["array 'y' in d.npz holds Python objects"]),
    ("not a zip", ["cannot read d.npz as an .npz archive"]),
    ("npy renamed", ["d.npz holds a single array, not an .npz archive"]),
    ("1-D x", ["array 'x' in d.npz has shape (30,)", "expected (N, F) rows"]),
    ("5-D x", ["has shape (30, 1, 1, 1, 1)"]),
    ("text x", ["array 'x' in d.npz has dtype <U1", "must be numbers"]),
    ("complex x", ["dtype complex128"]),
    ("NaN in x", ["array 'x' in d.npz holds missing or infinite values"]),
    ("inf in x", ["array 'x' in d.npz holds missing or infinite values"]),
    ("huge x", ["has a value too far from the training mean"]),
    ("NaN in y", ["array 'y' in d.npz holds 1 missing or infinite values"]),
    ("2-D y", ["must hold one target per sample, shape (N,), but has shape (30, 2)"]),
    ("one value", ["array 'y' in d.npz has a single value"]),
    ("text regression", ["holds text such as 'a', which cannot be regressed"]),
    ("bad kind", ["'kind' in d.npz must be one of 'tabular', 'images', 'sequences'"]),
    ("kind mismatch", ["has shape (30, 4), which cannot be images"]),
    ("empty sample", ["has shape (30, 0): a sample has no values"]),
    ("too few", ["d.npz has only 3 usable rows"]),
])  # fmt: skip
def test_bad_npz_files(tmp_path: Path, monkeypatch, case, words) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), np.arange(30) % 3
    task = "auto"
    arrays = {
        "no y": dict(x=x, labels=y), "no x": dict(y=y), "x and X": dict(x=x, X=x, y=y),
        "lengths": dict(x=x, y=y[:-1]), "1-D x": dict(x=x[:, 0], y=y),
        "5-D x": dict(x=np.zeros((30, 1, 1, 1, 1)), y=y),
        "text x": dict(x=np.array(["a"] * 30)[:, None], y=y),
        "complex x": dict(x=x * 1j, y=y), "2-D y": dict(x=x, y=np.c_[y, y]),
        "NaN in x": dict(x=np.where(x > 1.5, np.nan, x), y=y),
        "inf in x": dict(x=np.where(x > 1.5, np.inf, x), y=y),
        "huge x": dict(x=np.r_[np.zeros((29, 4)), np.full((1, 4), 1e300)], y=y),
        "NaN in y": dict(x=x, y=np.r_[np.nan, np.arange(29.0)]),
        "one value": dict(x=x, y=np.zeros(30, int)),
        "text regression": dict(x=x, y=np.array(["a", "b"] * 15)),
        "bad kind": dict(x=x, y=y, kind=np.array("pictures")),
        "kind mismatch": dict(x=x, y=y, kind=np.array("images")),
        "empty sample": dict(x=np.zeros((30, 0)), y=y), "too few": dict(x=x[:3], y=y[:3]),
    }
    if case == "missing":
        path = tmp_path / "nothere.npz"
    elif case in ("object x", "object y"):
        objects = np.array([Payload(str(tmp_path / "pwned"))] * 30, dtype=object)
        if case == "object x":
            np.savez(path, x=objects, y=y)
        else:
            np.savez(path, x=x, y=objects)
    elif case == "not a zip":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    elif case == "npy renamed":
        with path.open("wb") as f:
            np.save(f, x)
    else:
        np.savez(path, **arrays[case])
        task = "regression" if case == "text regression" else "auto"
    with pytest.raises(DataError) as raised:
        load_arrays(path, task=task)
    message = str(raised.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("array, words", [
    (np.zeros((10, 3, 4)), ["t.npy holds an array of shape (10, 3, 4)", "in an .npz file"]),
    (np.zeros((10, 1)), ["shape (10, 1)", "last column is the target"]),
    (np.array([[Payload("x"), 1]] * 10, dtype=object), ["holds Python objects"]),
])  # fmt: skip
def test_bad_npy_files(tmp_path: Path, array, words) -> None:
    np.save(tmp_path / "t.npy", array, allow_pickle=True)
    with pytest.raises(DataError) as raised:
        load_arrays(tmp_path / "t.npy")
    for word in words:
        assert word in str(raised.value), (word, str(raised.value))


# --- Parquet -------------------------------------------------------------------------------------


def test_parquet_reads_as_the_csv_path_reads_the_same_table(tmp_path: Path) -> None:
    frame = pd.read_csv(BREAST_CANCER)
    frame.to_parquet(tmp_path / "bc.parquet", index=False)
    from_csv = load_csv(BREAST_CANCER, seed=2)
    from_parquet = load_parquet(tmp_path / "bc.parquet", seed=2)
    assert isinstance(from_parquet, TabularData) and from_parquet.kind == "tabular"
    assert from_parquet.feature_names == from_csv.feature_names
    assert torch.allclose(from_parquet.X_train, from_csv.X_train, atol=1e-5)
    assert torch.equal(from_parquet.y_val, from_csv.y_val)
    assert from_parquet.classes == from_csv.classes == ["benign", "malignant"]
    assert from_parquet.fingerprint["format"] == "parquet"


def test_parquet_column_types(tmp_path: Path) -> None:
    n = 60
    frame = pd.DataFrame({
        "size": np.arange(n, dtype=np.int64), "ratio": np.linspace(0, 1, n),
        "colour": pd.Categorical(["red", "green", "blue"] * 20),
        "flag": [True, False] * 30, "when": pd.date_range("2024-01-01", periods=n),
        "gappy": [None if i % 5 == 0 else i * 0.5 for i in range(n)],
        "price": np.linspace(1, 100, n),
    })  # fmt: skip
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    data = load_data(tmp_path / "t.parquet")
    assert data.task == "regression" and data.target == "price"
    assert any(n.startswith("column 'when' has type timestamp[") and n.endswith(
        "not read -> dropped") for n in data.notes)  # fmt: skip
    assert "colour_red" in data.feature_names and "size" in data.feature_names
    assert torch.isfinite(data.X_train).all()
    by_target = load_data(tmp_path / "t.parquet", target="colour")
    assert by_target.task == "classification" and by_target.classes == ["blue", "green", "red"]


@pytest.mark.parametrize("case, words", [
    ("corrupt", ["cannot read t.parquet as a Parquet file"]),
    ("no rows", ["t.parquet has columns but no rows"]),
    ("target missing", ["target column 'nope' is not in t.parquet"]),
    ("date target", ["target 'when' in t.parquet has type timestamp"]),
])  # fmt: skip
def test_bad_parquet_files(tmp_path: Path, case, words) -> None:
    path = tmp_path / "t.parquet"
    frame = pd.DataFrame({"a": np.arange(30.0), "when": pd.date_range("2024", periods=30),
                          "y": np.arange(30) % 2})  # fmt: skip
    target = {"target missing": "nope", "date target": "when"}.get(case)
    if case == "corrupt":
        path.write_bytes(b"PAR1 this is not parquet PAR1")
    else:
        (frame.iloc[:0] if case == "no rows" else frame).to_parquet(path, index=False)
    with pytest.raises(DataError) as raised:
        load_parquet(path, target=target)
    for word in words:
        assert word in str(raised.value), (word, str(raised.value))


def test_missing_pyarrow_says_how_to_install(tmp_path: Path) -> None:
    pd.DataFrame({"a": np.arange(20.0), "y": np.arange(20) % 2}).to_parquet(tmp_path / "t.pq")
    with mock.patch.dict(sys.modules, {"pyarrow": None, "pyarrow.parquet": None}):
        with pytest.raises(DataError, match=r"needs pyarrow: pip install 'autoinit\[parquet\]'"):
            load_data(tmp_path / "t.pq")


# --- load_data ---------------------------------------------------------------------------------


def test_load_data_picks_the_reader(tmp_path: Path) -> None:
    assert data_format(DIGITS) == "images" and data_format(WAVES) == "arrays"
    assert data_format("x.NPY") == "arrays" and data_format("t.parquet") == "parquet"
    assert data_format("t.pq") == "parquet" and data_format("t.tsv") == "csv"
    assert load_data(BREAST_CANCER).kind == "tabular"
    assert load_data(DIGITS, image_size=8).input_shape == (1, 8, 8)
    with pytest.raises(DataError, match="--target names a column of a CSV or Parquet file, but "
                                        "digits is an image folder"):  # fmt: skip
        load_data(DIGITS, target="label")
    with pytest.raises(DataError, match="waves.npz is an array file"):
        load_data(WAVES, target="y")
    with pytest.raises(DataError, match="--image-size applies to image folders"):
        load_data(WAVES, image_size=8)


# --- property tests ------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MODES = ["L", "RGB", "RGBA", "P", "1", "LA", "I;16"]
FORMATS = {"png": "PNG", "bmp": "BMP", "gif": "GIF", "jpg": "JPEG"}
CAN_SAVE = {"PNG": MODES, "BMP": ["L", "RGB", "P", "1"], "GIF": ["L", "P", "1"],
            "JPEG": ["L", "RGB"]}  # fmt: skip


@st.composite
def image_file(draw) -> tuple[str, bytes]:
    """A tiny image file of some mode and format, or junk bytes, or a truncated image."""
    ext = draw(st.sampled_from(list(FORMATS)))
    fmt = FORMATS[ext]
    mode = draw(st.sampled_from(CAN_SAVE[fmt]))
    width, height = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA")
    if mode == "I;16":
        image = Image.fromarray((pixels[..., 0].astype(np.uint16) * 257))
    elif mode != "RGBA":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "junk", "empty"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    elif damage == "junk":
        data = draw(st.binary(max_size=30))
    elif damage == "empty":
        data = b""
    return ext, data


folders = st.lists(  # classes -> files
    st.lists(image_file(), max_size=5), max_size=4
)


@FUZZ
@given(classes=folders, size=st.none() | st.integers(1, 6), loose=st.booleans())
def test_any_image_folder_gives_tensors_or_a_data_error(classes, size, loose) -> None:
    with tempfile.TemporaryDirectory() as folder, mock.patch.object(_limits, "MIN_ROWS", 2):
        root = Path(folder)
        for c, files in enumerate(classes):
            (root / f"c{c}").mkdir()
            for i, (ext, data) in enumerate(files):
                (root / f"c{c}" / f"{i}.{ext}").write_bytes(data)
        if loose:
            (root / "stray.png").write_bytes(b"x")
        try:
            data = quiet(load_image_folder, root, image_size=size)
        except DataError as error:
            assert "\n" not in str(error)
            event("DataError")
            return
    event("loaded")
    x = torch.cat([data.X_train, data.X_val])
    assert x.dtype == torch.float32 and x.ndim == 4 and x.shape[1] in (1, 3)
    assert torch.isfinite(x).all()
    if size is not None:
        assert x.shape[2:] == (size, size)
    assert data.y_train.dtype == torch.int64 and len(x) == len(data.y_train) + len(data.y_val)
    assert 0 <= int(torch.cat([data.y_train, data.y_val]).max()) < len(data.classes)


DTYPES = [np.float32, np.float64, np.int64, np.uint8, np.float16, np.int8, np.bool_]
ODD_DTYPES = [np.complex64, np.str_]


def _rarely(draw) -> bool:
    """True one time in ten (Hypothesis leans to a list's first element, so it comes last)."""
    return draw(st.sampled_from([False] * 9 + [True]))


def _dtype(draw) -> type:
    return draw(st.sampled_from(ODD_DTYPES)) if _rarely(draw) else draw(st.sampled_from(DTYPES))


def _elements(draw, dtype: type):
    """Mostly finite values; sometimes NaN, infinities and extremes as well."""
    if np.dtype(dtype).kind != "f":
        return None
    width = np.dtype(dtype).itemsize * 8
    if _rarely(draw):
        return st.floats(allow_nan=True, allow_infinity=True, width=width)
    return st.floats(-1e4, 1e4, width=width)


@st.composite
def npz_content(draw) -> dict:
    """Arrays x and y, mostly usable; sometimes of other lengths, shapes, dtypes or names,
    with a declared kind, or an object array."""
    n = draw(st.integers(0, 3)) if _rarely(draw) else draw(st.integers(4, 14))
    ndim = draw(st.sampled_from([2, 3, 4, 2, 3, 4, 1, 5]))
    sides = st.integers(0, 3) if _rarely(draw) else st.integers(1, 3)
    shape = (n, *draw(st.lists(sides, min_size=ndim - 1, max_size=ndim - 1)))
    dtype = _dtype(draw)
    x = draw(hnp.arrays(dtype, shape, elements=_elements(draw, dtype)))
    ny = draw(st.sampled_from([max(n - 1, 0), n + 1])) if _rarely(draw) else n
    y_dtype = _dtype(draw)
    y_shape = (ny,) + (draw(st.sampled_from([(1,), (2,)])) if _rarely(draw) else ())
    y = draw(hnp.arrays(y_dtype, y_shape, elements=_elements(draw, y_dtype), fill=st.nothing()))
    names = draw(st.sampled_from([("X", "y"), ("x", "Y"), ("inputs", "y"), ("x", "target")]))
    content = {names[0]: x, names[1]: y} if _rarely(draw) else {"x": x, "y": y}
    if _rarely(draw) or _rarely(draw):
        content["kind"] = np.array(draw(st.sampled_from(["tabular", "images", "sequences", "?"])))
    if _rarely(draw):
        content[draw(st.sampled_from(list(content)))] = np.array([None] * max(n, 1), dtype=object)
    return content


@FUZZ
@given(content=npz_content(), task=st.sampled_from(["auto", "classification", "regression"]))
def test_any_npz_gives_tensors_or_a_data_error(content, task) -> None:
    with tempfile.TemporaryDirectory() as folder, mock.patch.object(_limits, "MIN_ROWS", 2):
        path = Path(folder) / "d.npz"
        np.savez(path, **content, allow_pickle=True)  # object arrays too: they must be refused
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                data = load_arrays(path, task=task)
        except DataError as error:
            assert "\n" not in str(error)
            event("DataError")
            return
    event(f"loaded {data.kind}")
    shapes = {"tabular": 2, "images": 4, "sequences": 3}
    for x in (data.X_train, data.X_val):
        assert x.dtype == torch.float32 and x.ndim == shapes[data.kind]
        assert torch.isfinite(x).all()
    if data.task == "classification":
        assert data.y_train.dtype == torch.int64 and data.y_train.ndim == 1
    else:
        assert data.y_train.dtype == torch.float32 and data.y_train.shape[1:] == (1,)
        assert torch.isfinite(data.y_train).all()

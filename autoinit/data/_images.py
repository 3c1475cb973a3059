"""A folder of images, one subfolder per class (the ImageFolder layout) -> :class:`ArrayData`.

PNG, JPEG, BMP and GIF files are read with Pillow (a dependency of autoinit), in two passes
over the files, in parallel threads (Pillow decodes without the GIL):

1. headers only: each image's size and whether it has colour. The size to use is
   ``image_size`` or the most common one, scaled down so that no side exceeds
   :data:`MAX_DEFAULT_SIDE`; the mode is ``L`` when every image is grey, else ``RGB``
   (grey images are then converted, and the notes count them).
2. every image decoded, converted and resized straight into one uint8 array
   ``(N, C, H, W)``: a quarter of the size of the float32 tensors it becomes.

Pixels are scaled to [0, 1] and normalised per channel with the training images' mean and
standard deviation, computed exactly from per-channel histograms of the uint8 pixels, then
written into the train and validation tensors through a 256-entry lookup table per channel,
~1M pixels at a time. The peak is the uint8 array plus the tensors (1.25 times the tensors), a
few hundred bytes per file, and blocks of a few MB (1.54 times the tensors measured for 50,000
28x28 images, ``benchmarks/scaling.py``).

Unreadable images (corrupt, truncated, not an image) are skipped and counted in the notes; if
none can be read, that is an error naming the folder. Hidden files and folders are ignored.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import io
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoinit.data import _limits
from autoinit.data._arraydata import ArrayData
from autoinit.data._normalize import check_task_option
from autoinit.data._notes import Notes, listing
from autoinit.data._split import check_rows, split
from autoinit.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# Pillow tries only these parsers, whatever a file holds (never, say, EPS, which runs Ghostscript)
FORMATS = ("PNG", "JPEG", "BMP", "GIF")
MAX_DEFAULT_SIDE = 64  # the default size is the most common one, scaled down to this at most
MAX_SIDE = 1024  # --image-size larger than this is refused (the tensors would not fit)
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_CHUNK = 64  # images per task handed to a thread


def pillow() -> Any:
    """``PIL.Image``, or a DataError that says how to install Pillow."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError(
            "reading image folders needs Pillow, which autoinit depends on but this environment "
            "lacks: pip install pillow."
        ) from None
    return Image


def parse_image_size(value: str | int | Sequence[int] | None) -> tuple[int, int] | None:
    """``32`` or ``"32"`` -> (32, 32); ``"48x32"`` -> (48, 32) as (width, height); None stays.

    Raises:
        DataError: not one or two positive integers up to :data:`MAX_SIDE`.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        parts: list[Any] = [value, value]
    elif isinstance(value, str):
        parts = value.lower().replace("×", "x").split("x")
        parts = parts * 2 if len(parts) == 1 else parts
    elif isinstance(value, bool):
        raise DataError(f"bad image size {value!r}: give one or two positive integers.")
    else:
        parts = list(value)
    try:
        width, height = (int(str(p).strip()) for p in parts)
    except ValueError:
        width = height = 0
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise DataError(
            f"image size must be N or WIDTHxHEIGHT, with sides from 1 to {MAX_SIDE}, but got "
            f"{value!r}."
        )
    return width, height


@dataclasses.dataclass
class _Files:
    """The image files found, with their class codes, and what was left out."""

    paths: list[Path]
    codes: np.ndarray
    classes: list[str]
    ignored: list[str]  # files that are not images of a supported type
    empty: list[str]  # class folders without image files
    loose: list[str]  # images directly in the folder, outside any class folder


def load_image_folder(
    path: str | Path,
    *,
    image_size: str | int | Sequence[int] | None = None,
    task: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
) -> ArrayData:
    """Read a folder of class subfolders of images into normalised train/validation tensors.

    Args:
        path: the folder; each subfolder is a class, its images (searched recursively) the
            samples.
        image_size: ``N`` or ``"WxH"``; by default the most common size, scaled down so that
            no side exceeds 64.
        task: ``"auto"`` or ``"classification"`` (an image folder has class labels).
        val_fraction: the share of images held out for validation, stratified by class.
        seed: seeds the split.

    Raises:
        DataError: the folder or an option cannot be used; the message says what to change.
    """
    check_task_option(task)
    if task == "regression":
        raise DataError(
            "an image folder is labelled by its class subfolders, so the task is classification; "
            "for regression on images, save x and y in an .npz file."
        )
    size_option = parse_image_size(image_size)
    folder = Path(path)
    name = folder.name or str(folder)
    Image = pillow()
    notes = Notes()
    files = _find_files(folder, name)
    for line in _found_notes(files, name):
        notes.add(line)

    with _pool() as pool, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's warnings on odd files; failures are counted
        headers = _in_chunks(pool, lambda p: _header(Image, p), files.paths)
        readable = [i for i, h in enumerate(headers) if not isinstance(h, str)]
        failed = {i: h for i, h in enumerate(headers) if isinstance(h, str)}
        if not readable:
            raise _none_readable(files, failed, name)
        size = size_option or _default_size([headers[i][0] for i in readable], notes)
        colour = [headers[i][1] for i in readable]
        mode = "RGB" if any(colour) else "L"
        if mode == "RGB" and not all(colour):
            notes.add(f"converted {colour.count(False)} grey image(s) to RGB, as the others "
                      "have colour")  # fmt: skip
        notes.add(f"image mode: {mode} ({'colour' if mode == 'RGB' else 'grey'})")
        channels = len(mode)
        pixels = np.empty((len(readable), channels, size[1], size[0]), dtype=np.uint8)

        def decode(k: int) -> tuple[str | None, bytes]:
            return _decode(Image, files.paths[readable[k]], mode, size, pixels[k])

        results = _in_chunks(pool, decode, range(len(readable)))
    for k, (error, _) in enumerate(results):
        if error is not None:
            failed[readable[k]] = error
    ok = np.array([error is None for error, _ in results], dtype=bool)
    rows = np.flatnonzero(ok)
    if not len(rows):
        raise _none_readable(files, failed, name)
    if failed:
        first = min(failed)
        notes.warn(
            f"skipped {len(failed)} unreadable image(s) of {len(files.paths)} (e.g. "
            f"{_relative(files.paths[first], folder)!r}: {failed[first]})"
        )
    digest = hashlib.sha256(repr((size, mode)).encode())
    for k, i in enumerate(readable):
        digest.update(f"{_relative(files.paths[i], folder)}\0{files.codes[i]}\0".encode())
        digest.update(results[k][1])
    codes = files.codes[readable][rows]
    del headers, results  # a few hundred bytes per image: not needed past here
    present = np.unique(codes)
    if len(present) < 2:
        raise DataError(
            f"{name} has readable images in only one class folder "
            f"({files.classes[int(present[0])]!r}), so there is nothing to predict; add a "
            "subfolder of images for each other class."
        )
    classes = files.classes
    if len(present) < len(classes):  # a class whose every image was unreadable
        lost = [classes[c] for c in range(len(classes)) if c not in set(present.tolist())]
        notes.warn(f"class folder(s) {listing(lost)} have no readable image -> dropped")
        remap = np.full(len(classes), -1, dtype=np.int64)
        remap[present] = np.arange(len(present))
        codes = remap[codes]
        classes = [classes[c] for c in present]
    check_rows(len(rows), val_fraction, name)
    train_idx, val_idx = split(codes, "classification", val_fraction, seed, notes)
    luts = _lookup_tables(pixels, rows[train_idx])
    notes.add("pixels scaled to [0, 1], then normalised per channel with the training images' "
              "mean and std")  # fmt: skip
    X_train = _fill(pixels, rows[train_idx], luts)
    X_val = _fill(pixels, rows[val_idx], luts)
    notes.emit_warnings(stacklevel=3)
    return ArrayData(
        kind="images",
        X_train=X_train,
        y_train=torch.from_numpy(codes[train_idx]),
        X_val=X_val,
        y_val=torch.from_numpy(codes[val_idx]),
        task="classification",
        task_reason=f"{len(classes)} class folders -> classification",
        target="class folder",
        feature_names=[],
        classes=classes,
        target_mean=None,
        target_scale=None,
        notes=list(notes),
        fingerprint={
            "kind": "images",
            "file": name,
            "format": "image folder",
            "sha256": digest.hexdigest(),
            "images": int(len(rows)),
            "classes": len(classes),
            "image_size": f"{size[0]}x{size[1]}",
            "mode": mode,
            "task": "classification",
        },
    )


# --- finding the files ---------------------------------------------------------------------


def _find_files(folder: Path, name: str) -> _Files:
    if not folder.exists():
        raise DataError(f"folder not found: {str(folder)!r}; check the path.")
    if not folder.is_dir():
        raise DataError(f"{str(folder)!r} is not a directory of class folders.")
    try:
        entries = sorted(
            (e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name
        )
    except OSError as error:
        raise DataError(f"cannot list {str(folder)!r}: {error.strerror or error}.") from None
    class_dirs = [e for e in entries if e.is_dir()]
    loose = [e.name for e in entries if not e.is_dir()]
    if not class_dirs:
        what = "an empty directory" if not entries else "a directory without class subfolders"
        raise DataError(
            f"{name} is {what}; an image folder needs one subfolder of images per class, e.g. "
            f"{name}/cat/1.png and {name}/dog/1.png."
        )
    paths: list[Path] = []
    codes: list[int] = []
    classes: list[str] = []
    ignored: list[str] = []
    empty: list[str] = []
    for entry in class_dirs:
        found = []
        for file in _walk(Path(entry.path)):
            if file.suffix.lower() in EXTENSIONS:
                found.append(file)
            else:
                ignored.append(_relative(file, folder))
        if not found:
            empty.append(entry.name)
            continue
        classes.append(entry.name)
        paths += found
        codes += [len(classes) - 1] * len(found)
    if len(classes) < 2:
        if not classes:
            raise DataError(
                f"{name} has no PNG, JPEG, BMP or GIF images in its subfolders "
                f"({listing(e.name for e in class_dirs)})."
            )
        raise DataError(
            f"{name} has only one class folder with images ({classes[0]!r}), so there is "
            "nothing to predict; put each class's images in its own subfolder."
        )
    return _Files(paths, np.array(codes, dtype=np.int64), classes, ignored, empty, loose)


def _walk(folder: Path) -> Iterator[Path]:
    """The files under ``folder``, sorted, hidden ones and symlinked folders left out."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in sorted(files):
            if not file.startswith("."):
                yield Path(root) / file


def _found_notes(files: _Files, name: str) -> list[str]:
    lines = [f"{len(files.paths)} image files in {len(files.classes)} class folders: "
             f"{listing(files.classes)}"]  # fmt: skip
    if files.empty:
        lines.append(f"folder(s) {listing(files.empty)} hold no image file -> not a class")
    if files.ignored:
        lines.append(f"ignored {len(files.ignored)} file(s) that are not PNG, JPEG, BMP or GIF "
                     f"(e.g. {files.ignored[0]!r})")  # fmt: skip
    if files.loose:
        lines.append(f"ignored {len(files.loose)} file(s) directly in {name}, outside the class "
                     "folders")  # fmt: skip
    return lines


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


# --- reading the images --------------------------------------------------------------------


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(_limits.worker_threads())


def _in_chunks(
    pool: concurrent.futures.ThreadPoolExecutor, fn: Callable[[Any], Any], items: Sequence[Any]
) -> list[Any]:
    """``[fn(item) for item in items]``, chunks of :data:`_CHUNK` items per thread task."""
    chunks = [items[start : start + _CHUNK] for start in range(0, len(items), _CHUNK)]
    results: list[Any] = []
    for part in pool.map(lambda chunk: [fn(item) for item in chunk], chunks):
        results += part
    return results


def _header(Image: Any, path: Path) -> tuple[tuple[int, int], bool] | str:
    """``((width, height), has_colour)`` of an image file, or why it cannot be read. Only the
    header is parsed here (a corrupt body is found when decoding)."""
    try:
        with Image.open(path, formats=FORMATS) as image:
            return image.size, _has_colour(image)
    except Exception as error:  # noqa: BLE001 - any failure of Pillow's parsers: skip the file
        return _reason(error)


def _has_colour(image: Any) -> bool:
    if image.mode in _GREY_MODES:
        return False
    if image.mode in ("P", "PA"):
        palette = image.getpalette() or []
        rgb = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
        return bool((rgb != rgb[:, :1]).any())
    return True


def _decode(
    Image: Any, path: Path, mode: str, size: tuple[int, int], out: np.ndarray
) -> tuple[str | None, bytes]:
    """Decode ``path``, convert it to ``mode``, resize it to ``size`` and write it into
    ``out`` (C, H, W). Returns why it failed (None if it did not) and the file's SHA-256."""
    digest = b""
    try:
        data = path.read_bytes()
        digest = hashlib.sha256(data).digest()
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            if image.format == "JPEG":
                image.draft(mode, size)  # let the decoder shrink large JPEGs by 1/2 to 1/8
            image.load()
            image = _converted(Image, image, mode)
            if image.size != size:
                image = image.resize(size, Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
        out[...] = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return None, digest
    except Exception as error:  # noqa: BLE001 - corrupt or truncated data: skip the file
        return _reason(error), digest


def _converted(Image: Any, image: Any, mode: str) -> Any:
    """``image`` in ``mode`` (``L`` or ``RGB``). 16- and 32-bit grey is scaled down to 8 bits
    (Pillow's ``convert`` would clip it at 255)."""
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if image.mode == "F" else 65535.0
        grey = np.clip(np.nan_to_num(values) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(grey)  # uint8, 2-D: mode L
    if image.mode == mode:
        return image
    if image.mode in ("P", "PA") and mode == "RGB":
        return image.convert("RGBA").convert("RGB")  # a transparent palette entry, too
    return image.convert(mode)


def _reason(error: BaseException) -> str:
    """Why Pillow failed, in a few words (without the file object it names)."""
    if type(error).__name__ == "UnidentifiedImageError":
        return "not an image that Pillow can identify"
    text = " ".join(str(error).split()) or type(error).__name__
    return re.sub(r"<_io\.\w+ object at 0x[0-9a-f]+>", "the file", text)[:120]


def _none_readable(files: _Files, failed: dict[int, str], name: str) -> DataError:
    first = min(failed)
    example = f"{files.paths[first].parent.name}/{files.paths[first].name}"
    return DataError(
        f"none of the {len(files.paths)} image files in {name} could be read (e.g. {example!r}: "
        f"{failed[first]}); check that they are PNG, JPEG, BMP or GIF images."
    )


def _default_size(sizes: list[tuple[int, int]], notes: Notes) -> tuple[int, int]:
    """The most common size, scaled down (keeping its shape) so that no side exceeds
    :data:`MAX_DEFAULT_SIDE`."""
    counts = collections.Counter(sizes)
    (width, height), count = counts.most_common(1)[0]
    scale = min(1.0, MAX_DEFAULT_SIDE / max(width, height))
    size = (max(1, math.floor(width * scale + 0.5)), max(1, math.floor(height * scale + 0.5)))
    how = f"the most common size, {width}x{height}, of {count} of {len(sizes)} images"
    if size != (width, height):
        how += f", scaled down to at most {MAX_DEFAULT_SIDE} pixels a side"
    notes.add(f"image size: {size[0]}x{size[1]} ({how}; choose another with --image-size)")
    return size


# --- normalising ---------------------------------------------------------------------------


def _lookup_tables(pixels: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    """Per channel, the normalised float32 value of each of the 256 pixel values: exact
    training mean and std from histograms, over ``[0, 1]`` pixels."""
    channels = pixels.shape[1]
    counts = np.zeros((channels, 256), dtype=np.int64)
    step = _block_images(pixels)  # bincount makes an int64 copy of what it counts
    for start in range(0, len(train_rows), step):
        block = pixels[np.sort(train_rows[start : start + step])]
        for c in range(channels):
            counts[c] += np.bincount(block[:, c].reshape(-1), minlength=256)
    levels = np.arange(256) / 255.0
    total = counts.sum(axis=1)
    mean = (counts * levels).sum(axis=1) / total
    var = (counts * (levels - mean[:, None]) ** 2).sum(axis=1) / total
    std = np.sqrt(var)
    std[~(std > 0)] = 1.0
    return ((levels - mean[:, None]) / std[:, None]).astype(np.float32)


def _block_images(pixels: np.ndarray) -> int:
    """Images per block: about 1M pixel values (8 MB as the int64 that bincount counts)."""
    return max(1, (_limits.BLOCK_ROWS * 16) // max(1, pixels[0].size))


def _fill(pixels: np.ndarray, rows: np.ndarray, luts: np.ndarray) -> torch.Tensor:
    """The images ``rows`` as one normalised float32 tensor, written block by block."""
    out = torch.empty((len(rows), *pixels.shape[1:]), dtype=torch.float32)
    view = out.numpy()
    step = _block_images(pixels)
    for start in range(0, len(rows), step):
        block = pixels[rows[start : start + step]]
        for c in range(pixels.shape[1]):  # written in place: no float32 temporary
            np.take(luts[c], block[:, c], out=view[start : start + len(block), c], mode="clip")
    return out

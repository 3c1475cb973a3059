"""4. Scaling: time per epoch and peak memory as rows and depth grow; loading a CSV file and an
image folder.

Each measurement runs in a fresh process, so its peak resident memory (``VmHWM`` on Linux, over
what the process held after its imports) is its own. Data: 50 float32 feature columns, 3 classes.
The peak counts every resident page: allocations, and file pages mapped into the process
(pandas' parallel ``read_csv`` maps the CSV file; ``load_csv`` reads it into buffers instead).

- Epoch: ``autoinit.train.run`` for one epoch (batch 64, Adam, the guard on, validation
  included) of the default 8 x 64 MLP, after ``prepare_data`` splits the tensors.
- CSV: the same rows written as text; ``autoinit.data.load_csv`` (parse, preprocess, split,
  tensors) against ``pandas.read_csv`` alone, on the same file. To keep writing the file cheap,
  a 10,000-row block is repeated: parsing costs the same for repeated rows.
- Images: a folder of 50,000 (``--quick``: 5,000) 28x28 grey PNGs in 10 class folders, read by
  ``autoinit.data.load_image_folder`` (headers, decode, normalise, split, tensors) against a
  bare single-threaded Pillow loop that decodes the same files into one uint8 array (the least
  any reader must do). 1,000 distinct images are written, then repeated: decoding costs the
  same. Figures: time per image, the ratio to the bare loop, and the peak memory over the final
  float32 tensors (the uint8 pixels held on the way are 0.25 of them).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.common import MB, SEED, blobs, in_fresh_process, peak_rss_bytes, target, timed

FEATURES, CLASSES, DEPTH = 50, 3, 8
BLOCK_ROWS = 10_000
IMAGE_SIDE, IMAGE_CLASSES, DISTINCT_IMAGES = 28, 10, 1000


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    sizes = [10_000, 50_000] if quick else [10_000, 100_000, 1_000_000]
    depths = [2, 8] if quick else [2, 8, 32]
    depth_rows = 10_000 if quick else 100_000
    csv_sizes = sizes[-1:] if quick else sizes
    points = [(rows, DEPTH) for rows in sizes] + [(depth_rows, depth) for depth in depths]
    epochs = {point: in_fresh_process(epoch, *point) for point in dict.fromkeys(points)}
    by_rows = [epochs[rows, DEPTH] for rows in sizes]
    by_depth = [epochs[depth_rows, depth] for depth in depths]
    warmup = write_csv(workdir / "warmup.csv", 1000)
    csv = []
    for rows in csv_sizes:
        path = write_csv(workdir / f"rows-{rows}.csv", rows)
        pandas, autoinit = (
            in_fresh_process(read_csv, str(path), how, str(warmup))
            for how in ("pandas", "autoinit")
        )
        csv.append(
            {
                "rows": rows,
                "megabytes": path.stat().st_size / MB,
                "read_csv_s": pandas["seconds"],
                "load_csv_s": autoinit["seconds"],
                "time_ratio": autoinit["seconds"] / pandas["seconds"],
                "cpu_ratio": autoinit["cpu_seconds"] / pandas["cpu_seconds"],
                "read_csv_peak_over_data": pandas["peak_over_data"],
                "load_csv_peak_over_data": autoinit["peak_over_data"],
                # pandas' parallel reader maps the file: its pages count in read_csv's peak
                "file_over_data": path.stat().st_size / _data_bytes(rows),
            }
        )
        path.unlink()
    images = image_folder_case(workdir, 5_000 if quick else 50_000)
    largest = csv[-1]
    figures = {
        "epoch_by_rows": by_rows,
        "epoch_by_depth": by_depth,
        "csv": csv,
        # time ~ rows ** exponent between the smallest and largest size (1.0: linear)
        "rows_exponent": _exponent(by_rows, "rows"),
        "depth_exponent": _exponent(by_depth, "depth"),
        "train_peak_over_data": by_rows[-1]["peak_over_data"],
        "csv_rows": largest["rows"],
        "csv_time_ratio": largest["time_ratio"],
        "csv_cpu_ratio": largest["cpu_ratio"],
        "csv_peak_over_data": largest["load_csv_peak_over_data"],
        "images": images,
        "images_count": images["images"],
        "images_us_per_image": images["us_per_image"],
        "images_time_ratio": images["time_ratio"],
        "images_peak_over_tensors": images["peak_over_tensors"],
    }
    return {
        "figures": figures,
        "targets": [
            target("load_csv / read_csv time (largest file)", figures["csv_time_ratio"], "<=", 2.0),
            target("load_csv peak memory / float32 data", figures["csv_peak_over_data"], "<=", 3.0),
            target("image folder: load_image_folder / bare Pillow loop time",
                   figures["images_time_ratio"], "<=", 2.0),  # fmt: skip
            target("image folder: peak memory / float32 tensors",
                   figures["images_peak_over_tensors"], "<=", 2.0),  # fmt: skip
        ],
    }


def _exponent(points: list[dict[str, Any]], key: str) -> float:
    first, last = points[0], points[-1]
    return math.log(last["epoch_s"] / first["epoch_s"]) / math.log(last[key] / first[key])


def _data_bytes(rows: int) -> int:
    return rows * FEATURES * 4


def epoch(rows: int, depth: int) -> dict[str, Any]:
    """In a fresh process: one training epoch's time and the peak memory of data + training."""
    import torch

    from autoinit._apply import build
    from autoinit.models import mlp_factory
    from autoinit.space import Config
    from autoinit.train import Budget, RunResult, prepare_data
    from autoinit.train import run as train

    def one_epoch(rows: int) -> RunResult:
        data = prepare_data(blobs(rows, FEATURES, CLASSES), seed=SEED)
        model = build(mlp_factory(FEATURES, CLASSES, depth=depth), Config("kaiming_normal", "relu"))
        return train(model, data, Budget(epochs=1), seed=SEED)

    torch.set_num_threads(1)
    one_epoch(256)  # warm-up: the first step loads parts of torch lazily
    before = peak_rss_bytes()
    result = one_epoch(rows)
    return {
        "rows": rows,
        "depth": depth,
        "epoch_s": result.seconds,
        "peak_mb": (peak_rss_bytes() - before) / MB,
        "peak_over_data": (peak_rss_bytes() - before) / _data_bytes(rows),
    }


def write_csv(path: Path, rows: int) -> Path:
    """``rows`` rows of 50 features and a class target, as repeats of one 10,000-row block."""
    import pandas as pd

    x, y = blobs(BLOCK_ROWS, FEATURES, CLASSES)
    frame = pd.DataFrame(x.numpy(), columns=[f"x{i}" for i in range(FEATURES)])
    frame["target"] = y.numpy()
    block = frame.to_csv(index=False, header=False, float_format="%.6g")
    with path.open("w") as out:
        out.write(",".join(frame.columns) + "\n")
        for start in range(0, rows, BLOCK_ROWS):
            count = min(BLOCK_ROWS, rows - start)
            out.write(block if count == BLOCK_ROWS else "".join(block.splitlines(True)[:count]))
    return path


def read_csv(path: str, how: str, warmup: str) -> dict[str, Any]:
    """In a fresh process: the time and peak memory of reading ``path`` with pandas or autoinit.

    ``warmup`` (a small file) is read first, so that lazy imports are not counted.
    """
    import pandas as pd

    from autoinit.data import load_csv

    readers = {"pandas": pd.read_csv, "autoinit": load_csv}
    readers[how](warmup)
    before = peak_rss_bytes()
    frame, seconds = timed(readers[how], path)
    rows = len(frame) if how == "pandas" else len(frame.X_train) + len(frame.X_val)
    return {
        "seconds": float(seconds),
        "cpu_seconds": seconds.cpu,
        "peak_over_data": (peak_rss_bytes() - before) / _data_bytes(rows),
    }


# --- image folders ------------------------------------------------------------------------------


def image_folder_case(workdir: Path, count: int) -> dict[str, Any]:
    """Write ``count`` images, load them both ways in fresh processes, remove them."""
    import shutil

    folder = write_images(workdir / f"images-{count}", count)
    warmup = write_images(workdir / "images-warmup", 40)
    try:
        bare = in_fresh_process(read_images, str(folder), "bare", str(warmup))
        autoinit = in_fresh_process(read_images, str(folder), "autoinit", str(warmup))
        megabytes = sum(p.stat().st_size for p in folder.rglob("*.png")) / MB
    finally:
        shutil.rmtree(folder)
        shutil.rmtree(warmup)
    return {
        "images": count,
        "side": IMAGE_SIDE,
        "megabytes": megabytes,
        "bare_s": bare["seconds"],
        "load_s": autoinit["seconds"],
        "us_per_image": 1e6 * autoinit["seconds"] / count,
        "bare_us_per_image": 1e6 * bare["seconds"] / count,
        "time_ratio": autoinit["seconds"] / bare["seconds"],
        "cpu_ratio": autoinit["cpu_seconds"] / bare["cpu_seconds"],
        "peak_over_tensors": autoinit["peak_over_tensors"],
        "bare_peak_over_tensors": bare["peak_over_tensors"],
    }


def write_images(folder: Path, count: int) -> Path:
    """``count`` grey PNGs in :data:`IMAGE_CLASSES` class folders: blobs whose position says the
    class, :data:`DISTINCT_IMAGES` distinct ones written again and again."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(SEED)
    encoded = []
    grid = np.arange(IMAGE_SIDE)
    for index in range(min(count, DISTINCT_IMAGES)):
        label = index % IMAGE_CLASSES
        cy, cx = 6 + 2 * label, 8 + rng.integers(0, 12)
        blob = np.exp(-((grid[:, None] - cy) ** 2 + (grid[None, :] - cx) ** 2) / 18.0)
        pixels = np.clip(255 * blob + rng.normal(0, 20, blob.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    for label in range(IMAGE_CLASSES):
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        label = index % IMAGE_CLASSES
        (folder / f"class{label}" / f"{index:06d}.png").write_bytes(
            encoded[index % len(encoded)]
        )
    return folder


def read_images(folder: str, how: str, warmup: str) -> dict[str, Any]:
    """In a fresh process: the time and peak memory of reading the folder with autoinit or with
    a bare Pillow loop (one thread, decode into a preallocated uint8 array, nothing else)."""
    import warnings

    import numpy as np
    from PIL import Image

    from autoinit.data import load_image_folder

    def bare(path: str) -> np.ndarray:
        files = sorted(Path(path).rglob("*.png"))
        out = np.empty((len(files), 1, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
        for index, file in enumerate(files):
            with Image.open(file) as image:
                out[index, 0] = np.asarray(image.convert("L"))
        return out

    def autoinit(path: str) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return load_image_folder(path)

    readers = {"bare": bare, "autoinit": autoinit}
    readers[how](warmup)
    before = peak_rss_bytes()
    result, seconds = timed(readers[how], folder)
    count = len(result) if how == "bare" else len(result.X_train) + len(result.X_val)
    tensor_bytes = count * IMAGE_SIDE * IMAGE_SIDE * 4  # the final float32 tensors
    return {
        "seconds": float(seconds),
        "cpu_seconds": seconds.cpu,
        "peak_over_tensors": (peak_rss_bytes() - before) / tensor_bytes,
    }

"""4. Scaling: time per epoch and peak memory as rows and depth grow; loading a CSV file.

Each measurement runs in a fresh process, so its peak resident memory (``VmHWM`` on Linux, over
what the process held after its imports) is its own. Data: 50 float32 feature columns, 3 classes.
The peak counts every resident page: allocations, and file pages mapped into the process
(pandas' parallel ``read_csv`` maps the CSV file; ``load_csv`` reads it into buffers instead).

- Epoch: ``autoinit.train.run`` for one epoch (batch 64, Adam, the guard on, validation
  included) of the default 8 x 64 MLP, after ``prepare_data`` splits the tensors.
- CSV: the same rows written as text; ``autoinit.data.load_csv`` (parse, preprocess, split,
  tensors) against ``pandas.read_csv`` alone, on the same file. To keep writing the file cheap,
  a 10,000-row block is repeated: parsing costs the same for repeated rows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.common import MB, SEED, blobs, in_fresh_process, peak_rss_bytes, target, timed

FEATURES, CLASSES, DEPTH = 50, 3, 8
BLOCK_ROWS = 10_000


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
    }
    return {
        "figures": figures,
        "targets": [
            target("load_csv / read_csv time (largest file)", figures["csv_time_ratio"], "<=", 2.0),
            target("load_csv peak memory / float32 data", figures["csv_peak_over_data"], "<=", 3.0),
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

"""The loader's sizes and limits, in one place.

The other modules read them as ``_limits.NAME`` when they run, not at import, so one
``monkeypatch.setattr(_limits, "READ_BLOCK_BYTES", 97)`` reaches every reader.
"""

from __future__ import annotations

import os

import numpy as np

MAX_CLASSES = 20  # a target with more distinct values than this is not read as class labels
MAX_CATEGORIES = 50  # text columns with more distinct values are IDs or free text: dropped
MIN_NUMERIC_FRACTION = 0.9  # a text column this numeric is numbers with some junk in it
MIN_ROWS = 10  # fewer rows cannot train anything worth comparing
OUTLIER_CLIP = 10.0  # scaled features are clipped to +-this many robust standard deviations
FIT_ROWS = 20_000  # medians, quartiles and categories are estimated from this many rows at most
BLOCK_ROWS = 65_536  # rows transformed at a time
SAMPLE_BYTES = 1 << 20  # read to sniff the delimiter, encoding and header
SAMPLE_ROWS = 1000  # parsed to learn which columns are numeric
READ_BLOCK_BYTES = 8 << 20  # the file is parsed this many bytes at a time at most, in parallel
MIN_PIECE_BYTES = 1 << 20  # ...and at least (unless READ_BLOCK_BYTES is smaller)
MAX_READ_THREADS = 4  # threads at most (and no more than the CPUs this process may use)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def worker_threads() -> int:
    """Threads for parsing and transforming: the CPUs this process may use, at most
    :data:`MAX_READ_THREADS`."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, MAX_READ_THREADS))

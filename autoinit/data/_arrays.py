"""Large float32 arrays, allocated and filled the way that is fast on the machines we measured."""

from __future__ import annotations

import numpy as np
import torch

NO_ROWS = np.empty(0, dtype=np.int64)


def empty_float32(rows: int, columns: int) -> np.ndarray:
    """A large uninitialised float32 array, allocated by torch.

    NumPy asks the kernel for transparent huge pages on large arrays; on virtual machines whose
    kernel then compacts memory on the first write, that write took 0.03-0.46 s for 190 MB
    (measured on the 2-core benchmark VM) against a steady 0.08 s with torch's plain pages.
    """
    return torch.empty((rows, columns), dtype=torch.float32).numpy()


def row_major(columns: list[np.ndarray], n: int) -> np.ndarray:
    """Columns side by side in one C-ordered float32 array, written a few thousand rows at a
    time: column by column, every write would miss the cache (several times slower)."""
    block = empty_float32(n, len(columns))
    for start in range(0, n, 4096):
        rows = slice(start, start + 4096)
        for j, values in enumerate(columns):
            block[rows, j] = values[rows]
    return block

"""Which pandas columns count as numbers, and which as text."""

from __future__ import annotations

import numpy as np
import pandas as pd


def is_number(dtype) -> bool:
    """Numbers or booleans (pandas counts bool as numeric), not text."""
    return pd.api.types.is_numeric_dtype(dtype)


def is_float_or_int(dtype) -> bool:
    """Numbers that go into the float32 block as they are (booleans do not)."""
    return pd.api.types.is_float_dtype(dtype) or (
        pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    )


def is_text(series: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)


def is_whole(y: pd.Series) -> bool:
    """Finite whole numbers only (``1.0, 2.0``): what a missing value makes of integers."""
    values = y.to_numpy()
    return bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))

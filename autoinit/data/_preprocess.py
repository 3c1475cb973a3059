"""Features -> float32 tensors: impute, scale robustly, clip, one-hot encode.

The scikit-learn transformer is fitted on at most :data:`~._limits.FIT_ROWS` training rows,
then applied :data:`~._limits.BLOCK_ROWS` rows at a time straight into the arrays that become
the tensors.
"""

from __future__ import annotations

import concurrent.futures
import warnings

import numpy as np
import torch
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, RobustScaler

from autoinit.data import _limits
from autoinit.data._arrays import empty_float32
from autoinit.data._columns import Features
from autoinit.data._notes import listing
from autoinit.errors import DataError


def preprocessor(numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    """Impute, then scale numbers robustly and one-hot encode categories (all float32).

    RobustScaler (median and IQR) is not thrown off by a few huge values, and the clip after it
    keeps any that remain from dominating the network's input.
    """
    numbers = make_pipeline(
        SimpleImputer(strategy="median", copy=False),
        RobustScaler(copy=False, unit_variance=True),
        FunctionTransformer(clip_outliers, feature_names_out="one-to-one"),
    )
    categories = make_pipeline(
        SimpleImputer(strategy="most_frequent"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32),
    )
    parts = [("numeric", numbers, numeric), ("categorical", categories, categorical)]
    return ColumnTransformer([p for p in parts if p[2]], sparse_threshold=0.0)


def clip_outliers(X: np.ndarray) -> np.ndarray:
    return np.clip(X, -_limits.OUTLIER_CLIP, _limits.OUTLIER_CLIP, out=X)


def preprocess(
    features: Features, train_idx: np.ndarray, val_idx: np.ndarray, name: str
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Fit on training rows only, then transform both splits into float32 tensors.

    ``train_idx`` is already shuffled, so its first :data:`~._limits.FIT_ROWS` rows are a
    random sample to fit on; for most files that is all of them. Columns without a value in
    those rows are left out: nothing can be learnt of them.

    Returns:
        ``(X_train, X_val, feature_names)``.

    Raises:
        DataError: no feature column has a value in the rows fitted on.
    """
    fit_rows = features.frame(train_idx[: _limits.FIT_ROWS])
    observed = set(fit_rows.columns[fit_rows.notna().any().to_numpy()])
    numeric = [c for c in features.numeric if c in observed]
    categorical = [c for c in features.categorical if c in observed]
    if not numeric and not categorical:
        raise DataError(
            f"{name}: no training row has a value in the feature columns "
            f"({listing(features.numeric + features.categorical)}); add rows with values."
        )
    transformer = preprocessor(numeric, categorical)
    with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
        # sklearn warns of categories unseen in the fit rows: encoded as zeros, as intended
        warnings.simplefilter("ignore", UserWarning)
        transformer.fit(fit_rows)
        names = [
            str(out)
            for label, step, cols in transformer.transformers_
            if label != "remainder"
            for out in step.get_feature_names_out(cols)
        ]
        X_train = transform(transformer, features, train_idx, len(names))
        X_val = transform(transformer, features, val_idx, len(names))
    return X_train, X_val, names


def transform(
    transformer: ColumnTransformer, features: Features, rows: np.ndarray, width: int
) -> torch.Tensor:
    """Transform ``rows`` block by block into one float32 array: no full-size copies on the way.

    The numeric columns are gathered and transformed in place with the fitted imputer, scaler
    and clip, the same operations as ``transformer.transform`` (tested to give equal values) at
    a fraction of its cost; the categorical ones go through the fitted encoder. Blocks are
    transformed in parallel threads (NumPy releases the GIL).
    """
    steps = transformer.named_transformers_
    numeric, categorical = steps.get("numeric"), steps.get("categorical")
    columns = {label: list(cols) for label, _, cols in transformer.transformers_}
    medians = numeric[0].statistics_ if numeric is not None else np.zeros(0)
    # the columns fitted: SimpleImputer also leaves out those that were empty when fit
    fitted = {col for col, m in zip(columns.get("numeric", []), medians) if not np.isnan(m)}
    used = np.array([col in fitted for col in features.numeric], dtype=bool)
    medians = medians[~np.isnan(medians)]
    n_numeric = int(used.sum())
    texts = features.texts[columns["categorical"]] if categorical is not None else None
    out = empty_float32(len(rows), width)
    block_rows = _limits.BLOCK_ROWS

    def transform_block(start: int) -> None:
        block = rows[start : start + block_rows]
        part = out[start : start + len(block)]
        if n_numeric:
            direct = used.all() and n_numeric == width  # write straight into the output
            X = features.numbers(block, out=part if direct else None)
            X = X if used.all() else X[:, used]
            _impute_and_scale(X, medians, numeric[1])
            if not direct:
                part[:, :n_numeric] = X
        if texts is not None:
            part[:, n_numeric:] = categorical.transform(texts.iloc[block])

    starts = range(0, len(rows), block_rows)
    threads = min(_limits.worker_threads(), len(starts))
    if threads > 1:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(transform_block, starts))
    else:
        for start in starts:
            transform_block(start)
    return torch.from_numpy(out)


def _impute_and_scale(X: np.ndarray, medians: np.ndarray, scaler: RobustScaler) -> None:
    """In place, what the numeric pipeline's ``transform`` does: missing values to the
    medians, robust scaling, clipping (the same operations on the same dtypes)."""
    np.copyto(X, medians, where=np.isnan(X), casting="same_kind")
    if scaler.with_centering:
        X -= scaler.center_
    if scaler.with_scaling:
        X /= scaler.scale_
    clip_outliers(X)

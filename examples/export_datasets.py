"""Write the bundled example CSVs from scikit-learn's own copies of the data sets.

Run from anywhere: ``python examples/export_datasets.py``. The output is deterministic (no
randomness, fixed number formatting and line endings), so re-running it changes no bytes.
See DATA_LICENSE.md for where the data come from.
"""

from __future__ import annotations

from pathlib import Path

from sklearn.datasets import load_breast_cancer, load_diabetes

HERE = Path(__file__).resolve().parent
FLOAT_FORMAT = "%.6g"  # the source values have at most 6 significant digits


def export_breast_cancer(path: Path) -> None:
    """30 numeric features and the ``diagnosis`` label ("malignant" / "benign"), last."""
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns=["target"])
    frame["diagnosis"] = data.target_names[data.target.to_numpy()]
    frame.to_csv(path, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def export_diabetes(path: Path) -> None:
    """The 10 baseline variables in their original units (``scaled=False``) and the disease
    ``progression`` one year later, last."""
    data = load_diabetes(as_frame=True, scaled=False)
    frame = data.frame.rename(columns={"target": "progression"})
    frame.to_csv(path, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


if __name__ == "__main__":
    export_breast_cancer(HERE / "breast_cancer.csv")
    export_diabetes(HERE / "diabetes.csv")

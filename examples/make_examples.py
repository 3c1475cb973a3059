"""Write the example image folder and sequence file that ``autoinit search`` reads as they are.

- ``examples/digits/``: 500 PNG images of handwritten digits, 50 per class, one subfolder per
  class (``0`` to ``9``): the first 50 images of each class in scikit-learn's bundled 8x8
  digits, scaled from 0-16 to 0-255 and enlarged to 16x16 (bilinear), greyscale.
- ``examples/waves.npz``: 2000 noisy sequences of 32 steps x 1 feature (``x``, float32) and
  which wave each one is (``y``, int64): 0 sine, 1 square, 2 triangle, with a random number
  of periods, phase and amplitude. Generated here from a fixed seed.

Run from anywhere: ``python examples/make_examples.py [FOLDER]`` (default: this folder). The
output is deterministic: the
same Pillow and NumPy versions write the same bytes (the .npz's zip entries carry a fixed
date, not the time of writing).

Try them with::

    autoinit search --data examples/digits          # a small CNN (4 x 16)
    autoinit search --data examples/waves.npz       # a GRU (2 x 32)
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PER_CLASS = 50
IMAGE_SIDE = 16
SEQUENCES, LENGTH = 2000, 32


def write_digits(folder: Path) -> int:
    """The image folder; returns the number of images written."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    count = 0
    for label in range(10):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        indices = np.flatnonzero(digits.target == label)[:PER_CLASS]
        for index in indices:
            pixels = np.round(digits.images[index] * (255 / 16)).astype(np.uint8)
            image = Image.fromarray(pixels).resize((IMAGE_SIDE, IMAGE_SIDE), Image.BILINEAR)
            image.save(folder / str(label) / f"{index:04d}.png", optimize=False)
            count += 1
    return count


def make_waves(n: int = SEQUENCES, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (n, LENGTH, 1) float32 and ``y`` (n,) int64, as in ``gru_sequence.py``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    t = np.arange(LENGTH)
    cycles = 1.0 + 3.0 * rng.random((n, 1))
    angle = 2 * np.pi * cycles * t / LENGTH + 2 * np.pi * rng.random((n, 1))
    sine = np.sin(angle)
    waves = np.stack([sine, np.sign(sine), 2 / np.pi * np.arcsin(sine)], axis=1)[np.arange(n), y]
    x = (0.5 + rng.random((n, 1))) * waves + 0.3 * rng.standard_normal((n, LENGTH))
    return x[:, :, None].astype(np.float32), y.astype(np.int64)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like ``numpy.savez``, with a fixed date on every zip entry (so the bytes never change)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0]) if argv else HERE
    images = write_digits(folder / "digits")
    x, y = make_waves()
    write_npz(folder / "waves.npz", x=x, y=y)
    size = sum(p.stat().st_size for p in (folder / "digits").rglob("*.png"))
    print(f"wrote {images} images ({size / 1024:.0f} KiB) to {folder / 'digits'}")
    print(f"wrote {len(x)} sequences to {folder / 'waves.npz'} "
          f"({(folder / 'waves.npz').stat().st_size / 1024:.0f} KiB)")  # fmt: skip


if __name__ == "__main__":
    main()

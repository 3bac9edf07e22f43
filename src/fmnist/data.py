"""Fashion-MNIST: its classes and files, the IDX format, loading and splitting.

``load_data()`` returns the four verified files as uint8 arrays, like Keras; where the
files come from (a directory, the cache, Debian's package, the mirrors) is fmnist.sources.
NumPy only: no torch here.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, DataError

CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Mean and standard deviation of the training pixels scaled to [0, 1].
MEAN, STD = 0.2860, 0.3530


@dataclass(frozen=True)
class FileSpec:
    """One of the four dataset files: its name, checksum and expected IDX shape."""

    name: str
    sha256: str  # of the decompressed bytes: the .gz files differ between mirrors
    shape: tuple[int, ...]  # (items,) for labels, (items, 28, 28) for images


FILES: dict[str, FileSpec] = {
    spec.name: spec
    for spec in (
        FileSpec(
            "train-images-idx3-ubyte",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            (60000, 28, 28),
        ),
        FileSpec(
            "train-labels-idx1-ubyte",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            (60000,),
        ),
        FileSpec(
            "t10k-images-idx3-ubyte",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            (10000, 28, 28),
        ),
        FileSpec(
            "t10k-labels-idx1-ubyte",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            (10000,),
        ),
    )
}

_IDX_UBYTE = 0x08  # the only element type Fashion-MNIST uses


def parse_idx(raw: bytes, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Parse IDX bytes of unsigned bytes into an array, checking magic, dims and length."""
    if len(raw) < 4:
        raise DataError(f"IDX data too short: expected a 4-byte header, found {len(raw)} bytes.")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != _IDX_UBYTE or ndim == 0:
        raise DataError(
            f"Bad IDX magic number 0x{raw[:4].hex()}: expected 0x00000801 (labels) or "
            "0x00000803 (images), unsigned bytes. The file is not a Fashion-MNIST IDX file."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"IDX header truncated: {ndim} dimensions need {header} header bytes, found {len(raw)}."
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if expected_shape is not None and tuple(shape) != tuple(expected_shape):
        raise DataError(f"IDX dimensions {shape}: expected {tuple(expected_shape)}.")
    # The product is computed in Python integers, so a header claiming 10**12 items is
    # refused here by the length check before anything is allocated.
    count = 1
    for d in shape:
        count *= d
    if count == 0:  # numpy cannot even shape (0, 3735617536, ...): refuse it here
        raise DataError(f"IDX header {shape} describes no data: a dimension is 0.")
    if len(raw) - header != count:
        what = "truncated" if len(raw) - header < count else "has trailing bytes"
        raise DataError(
            f"IDX data {what}: header {shape} needs {count} data bytes, found {len(raw) - header}."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_data(
    data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Return ``((x_train, y_train), (x_test, y_test))`` as uint8 arrays, like Keras."""
    from .sources import locate_all

    f = locate_all(data_dir, download_ok=download)
    return (
        (f["train-images-idx3-ubyte"].array, f["train-labels-idx1-ubyte"].array),
        (f["t10k-images-idx3-ubyte"].array, f["t10k-labels-idx1-ubyte"].array),
    )


def split_indices(n: int, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, seeded (train, validation) index arrays over range(n); empty ones refused."""
    n_val = round(n * min(max(val_split, 0.0), 1.0))
    if n_val >= n or (val_split and not n_val):  # an empty split's loss is NaN, not an error
        raise ConfigError(f"A validation split of {val_split} of {n} images leaves {n_val} "
                          f"for validation and {n - n_val} for training; both need 1 or more: "
                          "change --val-split or --limit-train.")  # fmt: skip
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def class_counts(labels: np.ndarray) -> np.ndarray:
    """Return the number of samples per class (length 10)."""
    return np.bincount(labels, minlength=len(CLASSES))

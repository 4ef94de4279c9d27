"""Fashion-MNIST read from its IDX files: 70,000 grayscale 28×28 images of clothing in 10 classes.

The files come from Debian's package ``dataset-fashion-mnist`` (MIT licence, as the package states),
which installs them under ``/usr/share/datasets/fashion-mnist/``; ``RANKTUNE_FASHION_MNIST_DIR``
points at another folder holding the same four files (gzipped or not). Nothing is downloaded.

Pools, fixed once and for all by ``SPLIT_SEED`` (the same on every machine):

- ``train`` / ``val``: 12,000 / 2,000 images of the 60,000-image training file, disjoint;
- ``test``: 6,000 images of the 10,000-image test file (``load_fashion_test_file``: all of them).
"""

from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from ranktune.trainer.builtin.mnist import DigitImages
from ranktune.trainer.errors import TaskError

DIR_ENV = "RANKTUNE_FASHION_MNIST_DIR"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
Pool = Literal["train", "val", "test"]
SPLIT_SEED = 20_261_204
POOL_SIZES: dict[Pool, int] = {"train": 12_000, "val": 2_000, "test": 6_000}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


def data_dir() -> Path:
    configured = os.environ.get(DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else DEFAULT_DIR


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise TaskError(
        f"task: Fashion-MNIST's {stem}(.gz) is not in {folder}: apt-get install dataset-fashion-mnist, "
        f"or set {DIR_ENV} to a folder holding its IDX files"
    )


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (big-endian header: magic, one count per dimension; then unsigned bytes)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as e:
        raise TaskError(f"task: cannot read {path} ({e})") from e
    ndim = magic - 0x800
    header = 4 * (1 + ndim)
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise TaskError(f"task: {path} is not an IDX file of {ndim} dimension(s) (magic {magic} expected)")
    shape = tuple(int.from_bytes(data[4 * (i + 1) : 4 * (i + 2)], "big") for i in range(ndim))
    values = np.frombuffer(data, dtype=np.uint8, offset=header)
    if values.size != int(np.prod(shape)):
        raise TaskError(f"task: {path} holds {values.size} values, its header says {shape}")
    return values.reshape(shape)


@lru_cache(maxsize=4)
def read_file_pair(which: Literal["train", "test"], folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images as float32 (N, 1, 28, 28) in [0, 1], labels) of one of the two files, read-only."""
    image_stem, label_stem = FILES[which]
    raw = read_idx(_find(folder, image_stem), IMAGE_MAGIC)
    labels = read_idx(_find(folder, label_stem), LABEL_MAGIC).astype(np.int64)
    if raw.shape[1:] != (28, 28) or len(raw) != len(labels):
        raise TaskError(
            f"task: Fashion-MNIST {which} files in {folder}: {raw.shape} images, {len(labels)} labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise TaskError(f"task: Fashion-MNIST {which} labels in {folder} fall outside 0-9")
    images = (raw.astype(np.float32) / 255.0).reshape(len(raw), 1, 28, 28)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def pool_indices(pool: Pool, available: int) -> np.ndarray:
    """Rows of the pool's file that make up the pool, sorted (fixed by ``SPLIT_SEED``).

    ``train`` and ``val`` share the training file: a permutation's first 12,000 rows, then the next
    2,000; a shorter file (a test's) is cut in the same 6:1 proportion. ``test`` takes the first 6,000
    rows of a permutation of the test file, or all of a shorter one."""
    order = np.random.default_rng((SPLIT_SEED, 0 if pool == "test" else 1)).permutation(available)
    if pool == "test":
        return np.sort(order[: POOL_SIZES["test"]])
    both = POOL_SIZES["train"] + POOL_SIZES["val"]
    train = POOL_SIZES["train"] if available >= both else available * POOL_SIZES["train"] // both
    val_end = train + POOL_SIZES["val"] if available >= both else available
    return np.sort(order[:train] if pool == "train" else order[train:val_end])


def load_fashion(pool: Pool, folder: Path | None = None) -> DigitImages:
    images, labels = read_file_pair("test" if pool == "test" else "train", folder or data_dir())
    indices = pool_indices(pool, len(labels))
    return DigitImages(images=images[indices], labels=labels[indices], indices=indices)


def load_fashion_test_file(folder: Path | None = None) -> DigitImages:
    """Every image of the test file (10,000), in file order: no image of it is in ``train`` or ``val``."""
    images, labels = read_file_pair("test", folder or data_dir())
    return DigitImages(images=images, labels=labels, indices=np.arange(len(labels)))

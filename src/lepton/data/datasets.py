"""Bundled datasets: real data shipped inside installed packages, or generated with a seed.

Nothing here downloads anything. Each dataset comes with default feature columns and tasks, so
a config may name just ``data: {dataset: penguins}`` and its tasks. ``lepton datasets`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lepton.errors import ConfigError


@dataclass(frozen=True)
class DatasetInfo:
    """A bundled dataset: how to load it and what it is for."""

    name: str
    description: str
    loader: Callable[[], pd.DataFrame]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    tasks: dict[str, dict[str, Any]]
    source: str = ""
    stratify: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def load(self) -> pd.DataFrame:
        """The whole table, with a fresh 0-based index (its row numbers)."""
        return self.loader().reset_index(drop=True)


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a dataset to the registry (name must be new)."""
    if info.name in _REGISTRY:
        raise ValueError(f"dataset '{info.name}' is already registered")
    _REGISTRY[info.name] = info
    return info


def available_datasets() -> list[str]:
    """Names of the bundled datasets."""
    return sorted(_REGISTRY)


def get_dataset(name: str) -> DatasetInfo:
    """A bundled dataset by name; a clear error listing the names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"data.dataset: unknown dataset '{name}'; bundled: {', '.join(available_datasets())}"
        ) from None


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    df = load_penguins()
    # plain object columns, so every pandas version treats missing values alike
    for col in ("species", "island", "sex"):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    return df


register_dataset(
    DatasetInfo(
        name="penguins",
        description="Palmer penguins (344 birds): measurements -> species, sex, body mass",
        loader=_penguins,
        numeric=("bill_length_mm", "bill_depth_mm", "flipper_length_mm"),
        categorical=("island",),
        tasks={
            "species": {"kind": "multiclass"},
            "sex": {"kind": "binary"},
            "body_mass_g": {"kind": "regression"},
        },
        source="Horst, Hill & Gorman (2020), package `palmerpenguins`; sex is missing for 11 birds",
        stratify="species",
    )
)


def make_synthetic(n: int = 2000, seed: int = 0, missing: float = 0.1) -> pd.DataFrame:
    """Tabular data with one task of every kind sharing a latent structure.

    Ten numeric features ``x0..x9`` and one categorical ``group`` (five levels) drive a
    four-dimensional latent ``h``; the tasks read different views of it:
    ``flag`` (binary), ``segment`` (multiclass, 3 classes), ``tag_a/tag_b/tag_c`` (multilabel),
    ``score`` (regression). A fraction ``missing`` of each task's labels is blanked at random.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10))
    group = rng.integers(0, 5, size=n)
    group_effect = rng.normal(size=(5, 4))[group]
    w = rng.normal(size=(10, 4)) / np.sqrt(10)
    h = np.tanh(x @ w + 0.5 * group_effect)
    noise = lambda scale: scale * rng.normal(size=n)  # noqa: E731
    flag = (h[:, 0] + h[:, 1] + noise(0.3) > 0).astype(float)
    seg_logits = np.stack([h[:, 0], h[:, 2], -h[:, 0] - h[:, 2]], axis=1) * 3
    segment = np.array(["low", "mid", "high"])[seg_logits.argmax(axis=1)]
    tags = (h[:, 1:4] + 0.3 * rng.normal(size=(n, 3)) > 0).astype(float)
    score = 10 + 4 * h[:, 0] - 3 * h[:, 3] + 2 * h[:, 1] * h[:, 2] + noise(0.5)
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(10)])
    df["group"] = np.array(list("abcde"))[group]
    df["flag"] = flag
    df["segment"] = segment.astype(object)
    for j, name in enumerate(("tag_a", "tag_b", "tag_c")):
        df[name] = tags[:, j]
    df["score"] = score
    for col in ("flag", "segment", "tag_a", "tag_b", "tag_c", "score"):
        blank = rng.random(n) < missing
        df.loc[blank, col] = None if df[col].dtype == object else np.nan
    return df


register_dataset(
    DatasetInfo(
        name="synthetic",
        description="generated (2,000 rows): one task of each kind over a shared latent",
        loader=make_synthetic,
        numeric=tuple(f"x{i}" for i in range(10)),
        categorical=("group",),
        tasks={
            "flag": {"kind": "binary"},
            "segment": {"kind": "multiclass"},
            "tags": {"kind": "multilabel", "target": ["tag_a", "tag_b", "tag_c"]},
            "score": {"kind": "regression"},
        },
        source="lepton.data.make_synthetic(n=2000, seed=0, missing=0.1); 10% of labels missing",
        stratify="segment",
    )
)

"""From the ``data`` section of a config to fitted, split, tensor-ready data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lepton.config import DataConfig, FeaturesConfig
from lepton.data.datasets import get_dataset
from lepton.data.io import read_table
from lepton.data.preprocess import Preprocessor, category_key, require_columns
from lepton.data.tensors import TensorData
from lepton.errors import ConfigError, DataError
from lepton.tasks import Task


@dataclass
class Frames:
    """Raw train/val/test tables (val/test may be absent) and where they came from."""

    train: pd.DataFrame
    val: pd.DataFrame | None
    test: pd.DataFrame | None
    sources: dict[str, str] = field(default_factory=dict)


@dataclass
class PreparedData:
    """Fitted preprocessor, tasks with resolved classes, and the splits as tensors."""

    preprocessor: Preprocessor
    tasks: list[Task]
    train: TensorData
    val: TensorData | None
    test: TensorData | None
    frames: Frames


def resolve_features(cfg: DataConfig) -> FeaturesConfig:
    """The declared features, or a bundled dataset's defaults."""
    if cfg.features is not None:
        return cfg.features
    if cfg.dataset:
        numeric, categorical = get_dataset(cfg.dataset).features(**cfg.options)
        return FeaturesConfig(numeric=numeric, categorical=categorical)
    raise ConfigError("data.features: declare the numeric and/or categorical feature columns")


def split_frame(
    df: pd.DataFrame,
    val: float,
    test: float,
    seed: int,
    stratify: pd.Series | None = None,
    source: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
    """Random split by fraction, reproducible from ``seed``, optionally stratified."""
    from sklearn.model_selection import train_test_split

    n = len(df)
    n_test = round(n * test)
    n_val = round(n * val)
    if n - n_test - n_val < 2:
        raise DataError(f"{source or 'data'}: {n} rows are too few for this split")
    strata = None
    if stratify is not None:
        strata = np.array([category_key(v) or "__missing__" for v in stratify.tolist()])
    idx = np.arange(n)

    def cut(pool: np.ndarray, size: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
        if size == 0:
            return pool, pool[:0]
        labels = None if strata is None else strata[pool]
        try:
            keep, taken = train_test_split(
                pool, test_size=size, random_state=seed + salt, stratify=labels
            )
        except ValueError as e:
            raise DataError(f"{source or 'data'}: cannot stratify the split: {e}") from None
        return np.sort(keep), np.sort(taken)

    rest, test_idx = cut(idx, n_test, 0)
    train_idx, val_idx = cut(rest, n_val, 1)
    return (
        df.iloc[train_idx],
        df.iloc[val_idx] if n_val else None,
        df.iloc[test_idx] if n_test else None,
    )


def load_frames(
    cfg: DataConfig, tasks: Sequence[Task], frame: pd.DataFrame | None = None, name: str = ""
) -> Frames:
    """Read the configured source (or take ``frame``) and split it, or read the split files."""
    if cfg.train:
        sources = {"train": cfg.train}
        train = read_table(cfg.train)
        val = test = None
        if cfg.val:
            val, sources["val"] = read_table(cfg.val), cfg.val
        if cfg.test:
            test, sources["test"] = read_table(cfg.test), cfg.test
        return Frames(train, val, test, sources)
    if frame is not None:
        df, source = frame, name
    elif cfg.dataset:
        info = get_dataset(cfg.dataset)
        df, source = info.load(**cfg.options), f"dataset '{cfg.dataset}'"
        if info.split_column:
            return predefined_split(df, info.split_column, source)
    else:
        assert cfg.path is not None
        df, source = read_table(cfg.path).reset_index(drop=True), cfg.path
    stratify = None
    if cfg.split.stratify:
        by_name = {t.name: t for t in tasks}
        task = by_name.get(cfg.split.stratify)
        if task is None:
            raise ConfigError(
                f"data.split.stratify: unknown task '{cfg.split.stratify}' "
                f"(tasks: {', '.join(by_name)})"
            )
        if task.kind not in ("binary", "multiclass"):
            raise ConfigError(
                f"data.split.stratify: task '{task.name}' is {task.kind}; "
                "only binary and multiclass tasks can stratify a split"
            )
        require_columns(df, task.target, source, "target")
        stratify = df[task.target[0]]
    train, val, test = split_frame(
        df, cfg.split.val, cfg.split.test, cfg.split.seed, stratify, source
    )
    return Frames(train, val, test, {"train": source, "val": source, "test": source})


def predefined_split(df: pd.DataFrame, column: str, source: str) -> Frames:
    """Split a table by a column whose values are ``train``, ``val`` or ``test``."""
    require_columns(df, [column], source, "split")
    values = df[column].astype(str)
    bad = sorted(set(values) - {"train", "val", "test"})
    if bad:
        raise DataError(f"{source}: column '{column}' must hold train/val/test, found {bad}")
    parts = {s: df[values == s] for s in ("train", "val", "test")}
    if parts["train"].empty:
        raise DataError(f"{source}: no row has {column} = train")
    return Frames(
        parts["train"],
        parts["val"] if len(parts["val"]) else None,
        parts["test"] if len(parts["test"]) else None,
        {"train": source, "val": source, "test": source},
    )


def prepare_data(cfg: DataConfig, tasks: Sequence[Task]) -> PreparedData:
    """Load, split, fit the preprocessor on the training split, and encode every split.

    Image data (``data.images``, or a bundled image dataset) goes to
    :func:`lepton.data.images.prepare_image_data`.
    """
    if cfg.images is not None or (cfg.dataset and get_dataset(cfg.dataset).images is not None):
        from lepton.data.images import prepare_image_data

        return prepare_image_data(cfg, tasks)
    return _prepare(cfg, tasks)


def _prepare(
    cfg: DataConfig, tasks: Sequence[Task], frame: pd.DataFrame | None = None, name: str = ""
) -> PreparedData:
    if cfg.augment.image_active:
        raise ConfigError(
            "data.augment: shift, crop_scale, hflip and vflip apply to images; this data is "
            "tabular (use noise_std / feature_dropout)"
        )
    features = resolve_features(cfg)
    frames = load_frames(cfg, tasks, frame, name)
    pre = Preprocessor.fit(
        frames.train, features.numeric, features.categorical, tasks, frames.sources.get("train")
    )

    def encode(name: str) -> TensorData | None:
        df = getattr(frames, name)
        return None if df is None else TensorData.from_frame(df, pre, frames.sources.get(name))

    return PreparedData(pre, pre.tasks, encode("train"), encode("val"), encode("test"), frames)


def from_frame(
    df: pd.DataFrame,
    tasks: Sequence[Task],
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    stratify: str | None = None,
) -> PreparedData:
    """Split a DataFrame you already hold, fit the preprocessor, encode every split.

    Examples
    --------
    >>> from lepton import Task
    >>> from lepton.data import make_synthetic
    >>> data = from_frame(make_synthetic(300), [Task("score", "regression")],
    ...                   numeric=[f"x{i}" for i in range(10)], categorical=["group"])
    >>> len(data.train) + len(data.val) + len(data.test)
    300
    """
    from lepton.config import SplitConfig

    cfg = DataConfig.model_construct(
        dataset=None,
        path=None,
        train=None,
        val=None,
        test=None,
        features=FeaturesConfig(numeric=list(numeric), categorical=list(categorical)),
        split=SplitConfig(val=val, test=test, seed=seed, stratify=stratify),
    )
    return _prepare(cfg, tasks, df.reset_index(drop=True), "DataFrame")

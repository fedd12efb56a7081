"""Image data: arrays in ``.npy``/``.npz`` files plus label columns.

An image array holds one image per row of its label table, as ``(N, H, W)`` (one channel),
``(N, C, H, W)`` or ``(N, H, W, C)`` with ``C`` in 1, 3, 4; any numeric dtype (raw pixel values,
e.g. ``uint8``). Labels come from a CSV/Parquet table with as many rows, or — without a table —
from the 1-D arrays stored beside the images in an ``.npz`` file (each one a column).

The model standardises pixels per channel with the training images' mean and std (inside the
model, so a bundle takes raw pixel values); :class:`ImageAugment` perturbs training batches.
Files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from lepton.config import DataConfig, SplitConfig
from lepton.data.datasets import get_dataset
from lepton.data.io import read_table
from lepton.data.prepare import Frames, PreparedData, load_frames, predefined_split
from lepton.data.preprocess import Preprocessor
from lepton.data.tensors import TensorData
from lepton.errors import ConfigError, DataError
from lepton.tasks import Task

if TYPE_CHECKING:
    from lepton.bundle import Bundle

IMAGE_SUFFIXES = (".npy", ".npz")
SPLITS = ("train", "val", "test")


def is_image_file(path: str | Path) -> bool:
    """True for ``.npy``/``.npz`` files."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def to_nchw(array: np.ndarray, source: str = "images") -> np.ndarray:
    """An image array as ``float32 (N, C, H, W)``; a :class:`DataError` naming ``source`` for
    anything else (wrong rank, unknown channel axis, non-numeric or non-finite values)."""
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{source}: images must be numbers, got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[:, None, :, :]
    elif arr.ndim == 4:
        if arr.shape[1] not in (1, 3, 4):
            if arr.shape[3] not in (1, 3, 4):
                raise DataError(
                    f"{source}: cannot tell the channel axis of shape {arr.shape}; "
                    "use (N, C, H, W) or (N, H, W, C) with C in 1, 3, 4"
                )
            arr = arr.transpose(0, 3, 1, 2)
    else:
        raise DataError(
            f"{source}: expected images as (N, H, W), (N, C, H, W) or (N, H, W, C), "
            f"got an array of shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise DataError(f"{source}: the array holds no image")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        i = int(np.argwhere(~np.isfinite(out).reshape(len(out), -1).all(axis=1))[0, 0])
        raise DataError(f"{source}: image {i} (row {i + 1}) holds a NaN or infinite value")
    return out


def check_image_shape(images: np.ndarray, shape: Sequence[int] | None, source: str) -> None:
    """A :class:`DataError` naming ``source`` unless ``(N, C, H, W)`` images are of ``shape``."""
    if shape is not None and tuple(images.shape[1:]) != tuple(shape):
        raise DataError(
            f"{source}: images of shape {tuple(images.shape[1:])} (C, H, W), but the model "
            f"takes {tuple(shape)}"
        )


def record_image(value: object, shape: Sequence[int]) -> np.ndarray:
    """One image given as nested lists (or an array) → ``float32 (C, H, W)`` of ``shape``.

    Takes ``(C, H, W)``, or ``(H, W)`` when the model has one channel; raw pixel values (numbers,
    not booleans or texts), all finite. A :class:`DataError` says what is wrong (the caller
    names the record).
    """
    c, h, w = (int(s) for s in shape)
    expected = f"({c}, {h}, {w}) (channels, height, width)" + (f" or ({h}, {w})" if c == 1 else "")
    if value is None or isinstance(value, str | bool | int | float | dict):
        got = {str: "a text", bool: "a boolean", dict: "an object"}.get(type(value), "a number")
        got = "null" if value is None else got
        raise DataError(f"expected the image as nested lists of numbers {expected}, got {got}")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise DataError(
            f"the nested lists are ragged (rows of different lengths); expected {expected}"
        ) from None
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        what = "booleans" if arr.dtype == bool else "values other than numbers (texts, nulls, ...)"
        raise DataError(f"the image holds {what}; expected raw pixel values (numbers)")
    if c == 1 and arr.shape == (h, w):
        arr = arr[None]
    if arr.shape != (c, h, w):
        raise DataError(f"the image has shape {tuple(arr.shape)}, the model takes {expected}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        channel, y, x = (int(i) for i in np.argwhere(~np.isfinite(out))[0])
        raise DataError(
            f"pixel [{channel}][{y}][{x}] is NaN, infinite or too large for float32 "
            f"({float(arr[channel, y, x])!r})"
        )
    return out


def sample_images(
    shape: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    rows: int = 16,
    seed: int = 0,
) -> np.ndarray:
    """Raw images ``float32 (rows, C, H, W)`` for checking a model: per channel, pixels drawn
    around the training mean and std, clipped to ``mean ± 4·std``; the first image is constant
    (the mean), the second takes the extremes in a checkerboard."""
    rng = np.random.default_rng(seed)
    rows = max(int(rows), 2)
    c, h, w = (int(s) for s in shape)
    m = np.asarray(mean, dtype=np.float64).reshape(1, c, 1, 1)
    s = np.asarray(std, dtype=np.float64).reshape(1, c, 1, 1)
    images = np.clip(m + s * rng.normal(size=(rows, c, h, w)), m - 4 * s, m + 4 * s)
    images[0] = m[0]
    board = (np.add.outer(np.arange(h), np.arange(w)) % 2 * 2 - 1).astype(np.float64)
    images[1] = m[0] + 3 * s[0] * board
    return np.ascontiguousarray(images, dtype=np.float32)


def read_image_file(path: str | Path, key: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Images ``float32 (N, C, H, W)`` and a table of the 1-D arrays stored beside them.

    ``.npy``: the array itself (the table has no columns). ``.npz``: the array named ``key``, or
    else ``images``/``image``/``x``, or else the only array of three or more dimensions; every
    1-D array of length ``N`` becomes a column of the table.
    """
    p = Path(path)
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{p}: image arrays must be .npy or .npz files")
    if not p.is_file():
        raise DataError(f"image file not found: {p}")
    try:
        loaded = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{p}: cannot be read as a NumPy array file ({e})") from None
    if isinstance(loaded, np.ndarray):
        if key is not None:
            raise DataError(f"{p}: a .npy file holds one array; `key` is for .npz files")
        images = to_nchw(loaded, str(p))
        return images, pd.DataFrame(index=pd.RangeIndex(len(images)))
    with loaded as npz:
        try:
            arrays = {name: npz[name] for name in npz.files}
        except ValueError as e:
            raise DataError(f"{p}: {e}") from None
    if key is not None:
        if key not in arrays:
            raise DataError(f"{p}: no array named '{key}'; the file has {', '.join(arrays)}")
        name = key
    else:
        named = [n for n in ("images", "image", "x") if n in arrays]
        big = [n for n, a in arrays.items() if a.ndim >= 3]
        if named:
            name = named[0]
        elif len(big) == 1:
            name = big[0]
        else:
            raise DataError(
                f"{p}: cannot tell which array holds the images ({', '.join(arrays) or 'none'}); "
                "name it `images` or set data.images.key"
            )
    images = to_nchw(arrays[name], f"{p} [{name}]")
    columns = {
        n: a for n, a in arrays.items() if n != name and a.ndim == 1 and len(a) == len(images)
    }
    return images, pd.DataFrame(columns)


def channel_stats(images: torch.Tensor | np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of ``(N, C, H, W)`` images (std 1 if constant)."""
    x = torch.as_tensor(images, dtype=torch.float64).transpose(0, 1).reshape(images.shape[1], -1)
    mean = x.mean(dim=1)
    std = x.std(dim=1, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return mean.tolist(), std.tolist()


def _check_rows(images: np.ndarray, table: pd.DataFrame, image_src: str, table_src: str) -> None:
    if len(images) != len(table):
        raise DataError(
            f"{image_src} holds {len(images)} images but {table_src} has {len(table)} rows; "
            "row i of the table labels image i"
        )


def _check_augment(cfg: DataConfig) -> None:
    a = cfg.augment
    if a.tabular_active:
        raise ConfigError(
            "data.augment: noise_std and feature_dropout apply to tabular features; "
            "image data takes shift, crop_scale, hflip and vflip"
        )


def prepare_image_data(cfg: DataConfig, tasks: Sequence[Task]) -> PreparedData:
    """Load image arrays and their labels as the config says, split them, fit the label encoding
    on the training split, and return tensors ``{"image": float32 (N, C, H, W)}``."""
    _check_augment(cfg)
    arrays: dict[str, np.ndarray] = {}
    if cfg.dataset:
        info = get_dataset(cfg.dataset)
        source = f"dataset '{cfg.dataset}'"
        for flip in ("hflip", "vflip"):
            if getattr(cfg.augment, flip) and not info.flips:
                raise ConfigError(
                    f"data.augment.{flip}: a flipped image of dataset '{cfg.dataset}' no longer "
                    "matches its labels; leave flips off (shift and crop_scale are safe)"
                )
        table = info.load(**cfg.options)
        images = info.load_images(**cfg.options)
        if info.split_column:
            frames = predefined_split(table, info.split_column, source)
        else:
            frames = load_frames(_fraction_only(cfg), tasks, table, source)
        for split in SPLITS:
            df = getattr(frames, split)
            if df is not None:
                arrays[split] = images[df.index.to_numpy()]
        return _assemble(frames, arrays, tasks)
    img = cfg.images
    assert img is not None
    if img.file:
        images, inner = read_image_file(img.file, img.key)
        table = read_table(cfg.path) if cfg.path else inner
        table_src = cfg.path or img.file
        _check_rows(images, table, img.file, table_src)
        frames = load_frames(_fraction_only(cfg), tasks, table.reset_index(drop=True), table_src)
        for split in SPLITS:
            df = getattr(frames, split)
            if df is not None:
                arrays[split] = images[df.index.to_numpy()]
        return _assemble(frames, arrays, tasks)
    tables: dict[str, pd.DataFrame | None] = dict.fromkeys(SPLITS)
    sources: dict[str, str] = {}
    for split in SPLITS:
        file = getattr(img, split)
        if not file:
            continue
        images, inner = read_image_file(file, img.key)
        table_path = getattr(cfg, split)
        table = read_table(table_path) if table_path else inner
        _check_rows(images, table, file, table_path or file)
        tables[split], arrays[split] = table.reset_index(drop=True), images
        sources[split] = table_path or file
    assert tables["train"] is not None
    return _assemble(Frames(tables["train"], tables["val"], tables["test"], sources), arrays, tasks)


def _fraction_only(cfg: DataConfig) -> DataConfig:
    """The config's split settings, for splitting a table that is already loaded."""
    return DataConfig.model_construct(
        dataset=None, path="(images)", train=None, val=None, test=None, features=None,
        images=None, options={}, split=cfg.split, augment=cfg.augment,
    )  # fmt: skip


def _assemble(frames: Frames, arrays: dict[str, np.ndarray], tasks: Sequence[Task]) -> PreparedData:
    shapes = {s: tuple(a.shape[1:]) for s, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"the splits hold images of different shapes: {shapes}")
    pre = Preprocessor.fit(
        frames.train, [], [], tasks, frames.sources.get("train"), require_features=False
    )

    def encode(split: str) -> TensorData | None:
        df = getattr(frames, split)
        if df is None:
            return None
        labels = pre.encode_targets(df, source=frames.sources.get(split))
        return TensorData({"image": torch.from_numpy(np.ascontiguousarray(arrays[split]))}, labels)

    return PreparedData(pre, pre.tasks, encode("train"), encode("val"), encode("test"), frames)


def from_arrays(
    images: np.ndarray,
    labels: pd.DataFrame,
    tasks: Sequence[Task],
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    stratify: str | None = None,
) -> PreparedData:
    """Split images you already hold (row ``i`` of ``labels`` labels image ``i``), fit the label
    encoding on the training split, and return tensors ready for a model.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from lepton import Task
    >>> imgs = np.zeros((40, 8, 8), dtype=np.uint8)
    >>> labels = pd.DataFrame({"y": [0, 1] * 20})
    >>> data = from_arrays(imgs, labels, [Task("y", "binary")], val=0.25, test=0.25)
    >>> tuple(data.train.inputs["image"].shape)
    (20, 1, 8, 8)
    """
    arr = to_nchw(images, "images")
    _check_rows(arr, labels, "images", "the label table")
    cfg = DataConfig.model_construct(
        dataset=None, path="(images)", train=None, val=None, test=None, features=None,
        images=None, options={}, split=SplitConfig(val=val, test=test, seed=seed,
        stratify=stratify),
    )  # fmt: skip
    frames = load_frames(cfg, tasks, labels.reset_index(drop=True), "DataFrame")
    arrays = {
        s: arr[getattr(frames, s).index.to_numpy()]
        for s in SPLITS
        if getattr(frames, s) is not None
    }
    return _assemble(frames, arrays, tasks)


def labelled_images(
    data: str | Path, images: str | Path | None = None, key: str | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """A label table and its images for evaluation: ``data`` is an ``.npz`` holding both, or a
    CSV/Parquet table whose rows label the images of ``images``."""
    if images is None:
        if not is_image_file(data):
            raise DataError(
                f"{data}: this model takes images; give them with --images, or pass an .npz "
                "file that holds the images and the label arrays"
            )
        arr, table = read_image_file(data, key)
        return table, arr
    arr, _ = read_image_file(images, key)
    table = read_table(data)
    _check_rows(arr, table, str(images), str(data))
    return table.reset_index(drop=True), arr


def image_tensor_data(
    bundle: Bundle, data: str | Path, images: str | Path | None = None
) -> tuple[pd.DataFrame, TensorData]:
    """The labelled images of ``data`` (see :func:`labelled_images`) as model tensors for an
    image bundle; a :class:`DataError` if their shape is not the model's."""
    table, arr = labelled_images(data, images)
    check_image_shape(arr, bundle.model.image_shape, str(images or data))
    labels = bundle.preprocessor.encode_targets(table, source=str(data))
    return table, TensorData({"image": torch.from_numpy(arr)}, labels)

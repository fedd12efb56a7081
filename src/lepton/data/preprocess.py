"""The fitted preprocessor: from a raw table to tensors, and back from outputs to predictions.

Fitted on the training split only, saved with the model (as JSON, see :meth:`Preprocessor.to_dict`)
so that a non-Python consumer can apply it too:

* numeric features: ``(x - mean) / std``; a missing value becomes the training mean (0);
* categorical features: an index into the training vocabulary; index 0 is the *unknown* bucket
  (a value never seen in training), index 1 the *missing* bucket, vocabulary entries start at 2.
  Values are compared as text (``2007``, ``2007.0`` and ``"2007"`` are the same category);
* targets: class labels in output order (binary, multiclass), label columns (multilabel), and
  ``mean``/``std`` of each regression target (the model predicts standardised values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from lepton.errors import DataError
from lepton.tasks import Task

UNKNOWN_INDEX = 0
MISSING_INDEX = 1
RESERVED = 2
#: Standardised values beyond this do not fit the model's float32 inputs.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def category_key(value: Any) -> str | None:
    """Canonical text of a category value; ``None`` for a missing one."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if bool(value) else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        f = float(value)
        if math.isnan(f):
            return None
        return str(int(f)) if f.is_integer() else repr(f)
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    text = str(value)
    return text if text.strip() else None


def category_indices(series: pd.Series, lookup: Mapping[str, int]) -> np.ndarray:
    """Each value's index: ``lookup[category_key(value)]``, :data:`MISSING_INDEX` for a missing
    value, :data:`UNKNOWN_INDEX` for a value not in ``lookup``.

    Typed columns (numbers, text, booleans) are keyed once per distinct value; a column of mixed
    Python objects value by value (a hash table would merge ``True`` and ``1``).

    Examples
    --------
    >>> category_indices(pd.Series([2007.0, None, 2008.0, 1999.0]), {"2007": 2, "2008": 3})
    array([2, 1, 3, 0])
    """

    def index(value: Any) -> int:
        key = category_key(value)
        return MISSING_INDEX if key is None else lookup.get(key, UNKNOWN_INDEX)

    if series.dtype == object:
        return np.fromiter(map(index, series.tolist()), dtype=np.int64, count=len(series))
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    if len(uniques) == 0:
        return np.full(len(series), MISSING_INDEX, dtype=np.int64)
    table = np.fromiter(map(index, uniques), dtype=np.int64, count=len(uniques))
    return np.where(codes < 0, MISSING_INDEX, table[codes]).astype(np.int64)


def python_value(value: Any) -> Any:
    """A numpy/pandas scalar as a plain JSON-ready Python value."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


def require_columns(
    df: pd.DataFrame, columns: Sequence[str], source: str | None, what: str
) -> None:
    """Raise a :class:`DataError` naming every absent column and listing those that exist."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        have = ", ".join(map(str, df.columns))
        names = ", ".join(f"'{c}'" for c in missing)
        raise DataError(
            f"{_where(source)}{what} column{'s' if len(missing) > 1 else ''} {names} not found; "
            f"the data has: {have}"
        )


def _numeric_values(series: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, not_numeric, infinite)``: float64 values (NaN where missing or bad) and the
    masks of the rows holding a non-numeric text or an infinite number."""
    no = np.zeros(len(series), dtype=bool)
    if pd.api.types.is_bool_dtype(series):
        return series.astype("float64").to_numpy(), no, no
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_complex_dtype(series):
        out = series.to_numpy(dtype="float64", na_value=np.nan)  # already numbers: no parsing
        return out, no, np.isinf(out)
    coerced = pd.to_numeric(series, errors="coerce")
    bad = (coerced.isna() & series.notna() & (series.astype(str).str.strip() != "")).to_numpy()
    out = coerced.to_numpy(dtype="float64", na_value=np.nan)
    return out, bad, np.isinf(out)


def numeric_column(series: pd.Series, source: str | None, what: str = "numeric") -> np.ndarray:
    """A column as float64, NaN where missing; an error naming the row for a non-numeric value."""
    out, bad, inf = _numeric_values(series)
    if bad.any():
        idx = bad.nonzero()[0][0]
        row = series.index[idx]
        raise DataError(
            f"{_where(source)}column '{series.name}' must be {what}, but row "
            f"{_row_number(row)} holds {series.iloc[idx]!r}"
        )
    if inf.any():
        idx = inf.nonzero()[0][0]
        raise DataError(
            f"{_where(source)}column '{series.name}' holds an infinite value at row "
            f"{_row_number(series.index[idx])}"
        )
    return out


def _row_number(index_label: Any) -> str:
    if isinstance(index_label, int | np.integer):
        return str(int(index_label) + 1)
    return repr(index_label)


@dataclass
class TargetInfo:
    """What the preprocessor knows about one task's target."""

    kind: str
    columns: list[str]
    classes: list[Any] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.classes is not None:
            self._index = {category_key(c): i for i, c in enumerate(self.classes)}  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "columns": list(self.columns)}
        if self.classes is not None:
            d["classes"] = list(self.classes)
        if self.mean is not None:
            d["mean"] = list(self.mean)
            d["std"] = list(self.std or [])
        return d


class Preprocessor:
    """Feature scaling, category vocabularies and target encodings, fitted on training data.

    Build one with :meth:`fit`; ``transform`` turns a table into model inputs, ``encode_targets``
    turns its label columns into targets and masks.

    Examples
    --------
    >>> import pandas as pd
    >>> from lepton import Task
    >>> df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"], "y": ["n", "p", None]})
    >>> pre = Preprocessor.fit(df, numeric=["x"], categorical=["c"], tasks=[Task("y", "binary")])
    >>> pre.tasks[0].classes
    ('n', 'p')
    >>> pre.transform(df)["categorical"].tolist()
    [[2], [3], [2]]
    """

    def __init__(
        self,
        numeric: Sequence[str],
        categorical: Sequence[str],
        means: Sequence[float],
        stds: Sequence[float],
        vocabularies: Mapping[str, Sequence[str]],
        tasks: Sequence[Task],
        targets: Mapping[str, TargetInfo],
    ) -> None:
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.means = np.asarray(means, dtype="float64")
        self.stds = np.asarray(stds, dtype="float64")
        self.vocabularies = {c: list(v) for c, v in vocabularies.items()}
        self._lookup = {
            c: {k: i + RESERVED for i, k in enumerate(v)} for c, v in vocabularies.items()
        }
        self.tasks = list(tasks)
        self.targets = dict(targets)

    # ----------------------------------------------------------------------------- fit
    @classmethod
    def fit(
        cls,
        df: pd.DataFrame,
        numeric: Sequence[str],
        categorical: Sequence[str],
        tasks: Sequence[Task],
        source: str | None = None,
        *,
        require_features: bool = True,
    ) -> Preprocessor:
        """Fit on the training split ``df``; returns tasks with their classes resolved.

        ``require_features=False`` allows a table of labels only (image data: the inputs are
        the images, see :mod:`lepton.data.images`).
        """
        numeric, categorical = list(numeric), list(categorical)
        overlap = sorted(set(numeric) & set(categorical))
        if overlap:
            raise DataError(f"column(s) {overlap} are declared both numeric and categorical")
        if require_features and not numeric and not categorical:
            raise DataError("no feature columns declared (data.features.numeric / categorical)")
        targets_cols = {c for t in tasks for c in t.target}
        leak = sorted(targets_cols & (set(numeric) | set(categorical)))
        if leak:
            raise DataError(f"column(s) {leak} are both a feature and a task target")
        require_columns(df, numeric + categorical, source, "feature")
        require_columns(df, sorted(targets_cols), source, "target")
        if len(df) == 0:
            raise DataError(f"{_where(source)}the training split is empty")
        means, stds = [], []
        for col in numeric:
            values = numeric_column(df[col], source)
            finite = values[~np.isnan(values)]
            if finite.size == 0:
                raise DataError(
                    f"{_where(source)}numeric feature '{col}' is empty in the training split"
                )
            mean = float(finite.mean())
            std = float(finite.std())
            means.append(mean)
            stds.append(std if std > 1e-12 else 1.0)
        vocabularies: dict[str, list[str]] = {}
        for col in categorical:
            keys = [category_key(v) for v in df[col].tolist()]
            vocabularies[col] = sorted({k for k in keys if k is not None})
        fitted_tasks: list[Task] = []
        targets: dict[str, TargetInfo] = {}
        for task in tasks:
            task, info = _fit_target(df, task, source)
            fitted_tasks.append(task)
            targets[task.name] = info
        return cls(numeric, categorical, means, stds, vocabularies, fitted_tasks, targets)

    # ------------------------------------------------------------------------ transform
    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes of the categorical features (reserved buckets included)."""
        return [len(self.vocabularies[c]) + RESERVED for c in self.categorical]

    @property
    def feature_columns(self) -> list[str]:
        return self.numeric + self.categorical

    def transform(self, df: pd.DataFrame, source: str | None = None) -> dict[str, torch.Tensor]:
        """Model inputs: ``{"numeric": float32 (N, n_num), "categorical": int64 (N, n_cat)}``."""
        require_columns(df, self.feature_columns, source, "feature")
        n = len(df)
        num = np.zeros((n, len(self.numeric)), dtype="float32")
        for j, col in enumerate(self.numeric):
            values = numeric_column(df[col], source)
            z = self._standardise(j, values)
            huge = np.abs(z) > FLOAT32_MAX
            if huge.any():
                i = int(huge.nonzero()[0][0])
                raise DataError(
                    f"{_where(source)}column '{col}' holds a value too large for the model at "
                    f"row {_row_number(df.index[i])}: {python_value(df[col].iloc[i])!r}"
                )
            num[:, j] = np.where(np.isnan(z), 0.0, z)
        cat = np.zeros((n, len(self.categorical)), dtype="int64")
        for j, col in enumerate(self.categorical):
            cat[:, j] = category_indices(df[col], self._lookup[col])
        return {"numeric": torch.from_numpy(num), "categorical": torch.from_numpy(cat)}

    def _standardise(self, j: int, values: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            return (values - self.means[j]) / self.stds[j]

    def invalid_rows(self, df: pd.DataFrame) -> pd.Series:
        """The rows :meth:`transform` would reject, with the reason (indexed like ``df``).

        A numeric feature holding text that is not a number, an infinite number, or a number so
        large that its standardised value overflows float32 makes a row invalid; a missing value
        does not (it is imputed). Only the feature columns are checked,
        and they must exist (see :meth:`transform`).

        Examples
        --------
        >>> pre = Preprocessor(["x"], [], [0.0], [1.0], {}, [], {})
        >>> pre.invalid_rows(pd.DataFrame({"x": ["1.5", "abc", None]})).to_dict()
        {1: "column 'x' must be numeric, but holds 'abc'"}
        """
        require_columns(df, self.feature_columns, None, "feature")
        reasons: dict[Any, str] = {}
        for j, col in enumerate(self.numeric):
            series = df[col]
            values, bad, inf = _numeric_values(series)
            huge = np.abs(self._standardise(j, values)) > FLOAT32_MAX
            for i in (bad | inf | huge).nonzero()[0]:
                label = series.index[i]
                if label in reasons:
                    continue
                value = python_value(series.iloc[i])
                if bad[i]:
                    reasons[label] = f"column '{col}' must be numeric, but holds {value!r}"
                elif inf[i]:
                    reasons[label] = f"column '{col}' holds an infinite value"
                else:
                    reasons[label] = (
                        f"column '{col}' holds a value too large for the model: {value!r}"
                    )
        if not reasons:
            return pd.Series([], index=df.index[:0], dtype=object)
        order = [label for label in df.index if label in reasons]
        return pd.Series([reasons[k] for k in order], index=order, dtype=object)

    def unknown_categories(self, df: pd.DataFrame) -> dict[str, int]:
        """Per categorical column, how many rows hold a value never seen in training."""
        out = {}
        for col in self.categorical:
            if col in df.columns:
                n = int((category_indices(df[col], self._lookup[col]) == UNKNOWN_INDEX).sum())
                if n:
                    out[col] = n
        return out

    def encode_targets(
        self,
        df: pd.DataFrame,
        tasks: Sequence[str] | None = None,
        source: str | None = None,
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{task: (target, mask)}`` for the tasks whose target columns are present.

        Binary targets are float (N,), multiclass long (N,), multilabel and regression float
        (N, D) (regression standardised); the mask marks the labels that exist.
        """
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        names = list(tasks) if tasks is not None else [t.name for t in self.tasks]
        for name in names:
            info = self.targets[name]
            if not all(c in df.columns for c in info.columns):
                continue
            out[name] = _encode_target(df, name, info, source)
        return out

    # -------------------------------------------------------------------------- persist
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: all a non-Python consumer needs to prepare inputs."""
        return {
            "numeric": [
                {"name": c, "mean": float(m), "std": float(s)}
                for c, m, s in zip(self.numeric, self.means, self.stds, strict=True)
            ],
            "categorical": [
                {
                    "name": c,
                    "vocabulary": self.vocabularies[c],
                    "unknown_index": UNKNOWN_INDEX,
                    "missing_index": MISSING_INDEX,
                    "first_index": RESERVED,
                }
                for c in self.categorical
            ],
            "targets": {name: info.to_dict() for name, info in self.targets.items()},
            "rules": {
                "inputs": "model inputs are two tensors with one row per record: 'numeric', "
                "float32 (rows, len(numeric)), and 'categorical', int64 (rows, len(categorical)), "
                "their columns in the order listed here (an input with no columns is left out)",
                "missing": "a missing value is null/None, NaN, or a text that is empty or blank",
                "numeric": "(x - mean) / std computed in float64, then float32; a missing value "
                "becomes 0; a text is parsed as a number, any other text, an infinite number, "
                "or a value whose standardised form overflows float32 is an error",
                "categorical": "index of the value's text in vocabulary + first_index; "
                "missing -> missing_index; never seen -> unknown_index; "
                "integral numbers are written without a decimal point, booleans as true/false",
                "category_text": "texts are compared exactly (case and inner spaces count); "
                "a number with an integral value is written as an integer (2007.0 -> '2007'), "
                "any other number in its shortest round-trip form (0.25 -> '0.25', "
                "1e-05 -> '1e-05'); true/false for booleans",
                "regression": "prediction = output * std + mean",
                "binary": "p = sigmoid(output); the predicted class is classes[1] when "
                "p >= threshold, else classes[0]; probabilities = [1 - p, p]",
                "multiclass": "probabilities = softmax(output); the predicted class is "
                "classes[argmax]",
                "multilabel": "p_j = sigmoid(output_j) for each label column j; the predicted "
                "labels are the columns with p_j >= threshold",
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], tasks: Sequence[Task]) -> Preprocessor:
        targets = {
            name: TargetInfo(
                kind=t["kind"],
                columns=list(t["columns"]),
                classes=t.get("classes"),
                mean=t.get("mean"),
                std=t.get("std"),
            )
            for name, t in d["targets"].items()
        }
        return cls(
            numeric=[c["name"] for c in d["numeric"]],
            categorical=[c["name"] for c in d["categorical"]],
            means=[c["mean"] for c in d["numeric"]],
            stds=[c["std"] for c in d["numeric"]],
            vocabularies={c["name"]: c["vocabulary"] for c in d["categorical"]},
            tasks=tasks,
            targets=targets,
        )


# ------------------------------------------------------------------------------- targets
def _fit_target(df: pd.DataFrame, task: Task, source: str | None) -> tuple[Task, TargetInfo]:
    cols = list(task.target)
    present = df[cols].notna().any(axis=1)
    if not present.any():
        raise DataError(
            f"task '{task.name}': every label in the training split is missing "
            f"(column{'s' if len(cols) > 1 else ''} {', '.join(cols)})"
        )
    if task.kind in ("binary", "multiclass"):
        col = df[cols[0]]
        values = col[col.notna()]
        if task.classes is None:
            keyed: dict[str, Any] = {}
            for v in values:
                keyed.setdefault(category_key(v), python_value(v))  # type: ignore[arg-type]
            classes = [keyed[k] for k in sorted(keyed, key=_class_sort_key)]
        else:
            classes = list(task.classes)
        if task.kind == "binary" and len(classes) != 2:
            raise DataError(
                f"task '{task.name}': a binary target needs exactly two classes, column "
                f"'{cols[0]}' has {len(classes)} in the training split: "
                f"{', '.join(map(str, classes[:10]))}"
                + ("" if len(classes) != 1 else " (use a larger split or declare `classes`)")
            )
        if task.kind == "multiclass" and len(classes) < 2:
            raise DataError(
                f"task '{task.name}': column '{cols[0]}' has a single class in the training split"
            )
        task = task.with_classes(classes)
        info = TargetInfo(task.kind, cols, classes=classes)
        _encode_target(df, task.name, info, source)  # validates labels against classes
        return task, info
    if task.kind == "multilabel":
        info = TargetInfo(task.kind, cols)
        _encode_target(df, task.name, info, source)
        return task, info
    means, stds = [], []
    for c in cols:
        v = numeric_column(df[c], source, what="numeric (regression target)")
        v = v[~np.isnan(v)]
        if v.size == 0:
            raise DataError(
                f"task '{task.name}': regression target '{c}' is empty in the training split"
            )
        means.append(float(v.mean()))
        s = float(v.std())
        stds.append(s if s > 1e-12 else 1.0)
    return task, TargetInfo(task.kind, cols, mean=means, std=stds)


def _class_sort_key(key: str) -> tuple[int, float, str]:
    try:
        return (0, float(key), key)
    except ValueError:
        return (1, 0.0, key)


def _encode_target(
    df: pd.DataFrame, name: str, info: TargetInfo, source: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if info.kind in ("binary", "multiclass"):
        col = df[info.columns[0]]
        keys = [category_key(v) for v in col.tolist()]
        idx = np.zeros(len(col), dtype="int64")
        mask = np.zeros(len(col), dtype=bool)
        for i, k in enumerate(keys):
            if k is None:
                continue
            j = info._index.get(k)
            if j is None:
                raise DataError(
                    f"{_where(source)}task '{name}': label {col.iloc[i]!r} at row "
                    f"{_row_number(col.index[i])} of column '{col.name}' is not one of the "
                    f"classes {info.classes}"
                )
            idx[i] = j
            mask[i] = True
        tgt = torch.from_numpy(idx)
        if info.kind == "binary":
            tgt = tgt.float()
        return tgt, torch.from_numpy(mask)
    if info.kind == "multilabel":
        mats = []
        for c in info.columns:
            v = numeric_column(df[c], source, what="0/1 (multilabel target)")
            ok = np.isnan(v) | (v == 0) | (v == 1)
            if not ok.all():
                i = int((~ok).nonzero()[0][0])
                raise DataError(
                    f"{_where(source)}task '{name}': column '{c}' must hold 0/1 labels, row "
                    f"{_row_number(df.index[i])} holds {df[c].iloc[i]!r}"
                )
            mats.append(v)
        arr = np.stack(mats, axis=1)
        mask = ~np.isnan(arr)
        return torch.from_numpy(np.nan_to_num(arr).astype("float32")), torch.from_numpy(mask)
    mats = []
    for j, c in enumerate(info.columns):
        v = numeric_column(df[c], source, what="numeric (regression target)")
        mats.append((v - info.mean[j]) / info.std[j])  # type: ignore[index]
    arr = np.stack(mats, axis=1)
    mask = ~np.isnan(arr)
    return torch.from_numpy(np.nan_to_num(arr).astype("float32")), torch.from_numpy(mask)

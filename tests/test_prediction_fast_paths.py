"""The vectorised category lookup and label decoding agree with the plain per-value rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lepton import Task
from lepton.bundle import decode
from lepton.bundle._predictor import _label_sets
from lepton.data.preprocess import (
    MISSING_INDEX,
    UNKNOWN_INDEX,
    category_indices,
    category_key,
)

LOOKUP = {"2007": 2, "a": 3, "true": 4, "1": 5, "0.5": 6}


def naive(series: pd.Series) -> list[int]:
    out = []
    for v in series.tolist():
        k = category_key(v)
        out.append(MISSING_INDEX if k is None else LOOKUP.get(k, UNKNOWN_INDEX))
    return out


@pytest.mark.parametrize(
    "series",
    [
        pd.Series([2007.0, np.nan, 2007.0, 0.5, 3.0]),
        pd.Series([2007, 1, 1, 8], dtype="int64"),
        pd.Series(["a", "", "  ", None, "b", "a", "2007"], dtype="str"),
        pd.Series([True, 1, 1.0, "1", None, "a", float("nan")], dtype=object),  # True != 1 here
        pd.Series([True, False, True]),
        pd.Series(["a", "zz", None], dtype="category"),
        pd.Series([np.nan, np.nan]),
        pd.Series([], dtype="float64"),
    ],
)
def test_category_indices_match_the_per_value_rule(series: pd.Series) -> None:
    assert category_indices(series, LOOKUP).tolist() == naive(series)


@pytest.mark.parametrize("labels", [5, 70])  # 70: more labels than bits in an integer
def test_label_sets_match_a_per_row_loop(labels: int) -> None:
    on = np.random.default_rng(0).random((300, labels)) > 0.6
    names = [f"l{i}" for i in range(labels)]
    sets, inverse = _label_sets(on, names)
    want = [[n for n, v in zip(names, row, strict=True) if v] for row in on]
    assert [sets[i] for i in inverse] == want


def test_decode_keeps_class_values_and_thresholds() -> None:
    raw = torch.tensor([[-2.0], [0.0], [3.0]])
    binary = Task("b", "binary", classes=(False, True), threshold=0.6)
    assert decode(binary, raw, None)["label"] == [False, False, True]
    ints = Task("m", "multiclass", classes=(10, 20, 30))
    labels = decode(ints, torch.tensor([[0.0, 1.0, 0.0], [5.0, 0.0, 0.0]]), None)["label"]
    assert labels == [20, 10] and all(type(x) is int for x in labels)
    multi = Task("t", "multilabel", target=("x", "y"))
    out = decode(multi, torch.tensor([[1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]]), None)
    assert out["label"] == [["x"], ["x", "y"], []]

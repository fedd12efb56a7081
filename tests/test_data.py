"""Data: reading, splitting, the preprocessor fitted on train only, errors that name the problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lepton import DataError, Task
from lepton.config import DataConfig
from lepton.data import (
    BatchLoader,
    Preprocessor,
    TabularAugment,
    TensorData,
    available_datasets,
    get_dataset,
    prepare_data,
    read_table,
    split_frame,
)
from lepton.data.preprocess import MISSING_INDEX, UNKNOWN_INDEX

TASKS = [
    Task("y_bin", "binary"),
    Task("y_cls", "multiclass"),
    Task("tags", "multilabel", target=("l1", "l2")),
    Task("y_reg", "regression"),
]


def fit(df: pd.DataFrame) -> Preprocessor:
    return Preprocessor.fit(df, ["a", "b", "c"], ["color"], TASKS, source="train.csv")


def test_preprocessor_statistics_come_from_the_training_split_only(small_frame) -> None:
    train, other = small_frame.iloc[:60], small_frame.iloc[60:].copy()
    pre = fit(train)
    assert pre.means[0] == pytest.approx(train["a"].mean())
    other["a"] = other["a"] + 1000  # changing other splits must not change anything fitted
    assert fit(train).means[0] == pre.means[0]
    x = pre.transform(train)["numeric"]
    assert abs(float(x[:, 1].mean())) < 1e-5
    # a missing numeric value is imputed with the training mean (0 after standardisation)
    assert float(x[5, 0]) == 0.0


def test_classes_and_targets(small_frame) -> None:
    pre = fit(small_frame)
    by = {t.name: t for t in pre.tasks}
    assert by["y_bin"].classes == ("neg", "pos")
    assert by["y_cls"].classes == ("u", "v", "w")
    enc = pre.encode_targets(small_frame)
    target, mask = enc["y_bin"]
    assert target.dtype == torch.float32 and mask.dtype == torch.bool
    assert int((~mask).sum()) == int(small_frame["y_bin"].isna().sum())
    tags, tag_mask = enc["tags"]
    assert tags.shape == (120, 2)
    assert int((~tag_mask[:, 1]).sum()) == int(small_frame["l2"].isna().sum())
    reg, reg_mask = enc["y_reg"]
    assert reg.shape == (120, 1)
    assert abs(float(reg[reg_mask].mean())) < 1e-5  # standardised


def test_categories_unknown_and_missing_buckets(small_frame) -> None:
    pre = fit(small_frame)
    probe = small_frame.head(3).copy()
    probe["color"] = ["purple", None, "red"]
    cat = pre.transform(probe)["categorical"][:, 0].tolist()
    assert cat[0] == UNKNOWN_INDEX
    assert cat[1] == MISSING_INDEX
    assert cat[2] >= 2
    assert pre.unknown_categories(probe) == {"color": 1}


def test_category_values_compare_as_text() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "year": [2007, 2008, 2007], "y": [1.0, 2.0, 3.0]})
    pre = Preprocessor.fit(df, ["x"], ["year"], [Task("y", "regression")])
    probe = pd.DataFrame({"x": [1.0, 1.0, 1.0], "year": [2007.0, "2008", 2009]})
    cat = pre.transform(probe)["categorical"][:, 0].tolist()
    assert cat[0] == cat[0] and cat[0] >= 2 and cat[1] >= 2 and cat[2] == UNKNOWN_INDEX


def test_non_numeric_value_names_row_and_column(small_frame) -> None:
    bad = small_frame.copy()
    bad["b"] = bad["b"].astype(object)
    bad.loc[17, "b"] = "n/a?"
    with pytest.raises(
        DataError, match=r"train\.csv: column 'b' must be numeric, but row 18 holds 'n/a\?'"
    ):
        fit(bad)


def test_missing_column_lists_existing_ones(small_frame) -> None:
    with pytest.raises(
        DataError, match=r"feature column 'zzz' not found; the data has: a, b, c, color"
    ):
        Preprocessor.fit(small_frame, ["a", "zzz"], [], TASKS)


def test_task_with_every_label_missing_is_an_error(small_frame) -> None:
    df = small_frame.copy()
    df["y_reg"] = np.nan
    with pytest.raises(
        DataError, match=r"task 'y_reg': every label in the training split is missing"
    ):
        fit(df)


def test_binary_target_with_three_values_is_an_error(small_frame) -> None:
    df = small_frame.copy()
    df.loc[0, "y_bin"] = "maybe"
    with pytest.raises(DataError, match=r"task 'y_bin': a binary target needs exactly two classes"):
        fit(df)


def test_unseen_label_at_evaluation_names_row(small_frame) -> None:
    pre = fit(small_frame)
    df = small_frame.head(4).copy()
    df.loc[2, "y_cls"] = "z"
    with pytest.raises(DataError, match=r"label 'z' at row 3 of column 'y_cls'"):
        pre.encode_targets(df, source="eval.csv")


def test_feature_cannot_be_a_target(small_frame) -> None:
    with pytest.raises(DataError, match="both a feature and a task target"):
        Preprocessor.fit(small_frame, ["a", "y_reg"], [], [Task("y_reg", "regression")])


def test_preprocessor_json_round_trip(small_frame) -> None:
    import json

    pre = fit(small_frame)
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())), pre.tasks)
    a, b = pre.transform(small_frame), again.transform(small_frame)
    assert torch.equal(a["numeric"], b["numeric"]) and torch.equal(
        a["categorical"], b["categorical"]
    )
    ea, eb = pre.encode_targets(small_frame), again.encode_targets(small_frame)
    for k in ea:
        assert torch.equal(ea[k][0], eb[k][0]) and torch.equal(ea[k][1], eb[k][1])


def test_split_is_reproducible_disjoint_and_stratified(small_frame) -> None:
    a = split_frame(small_frame, 0.2, 0.2, seed=3, stratify=small_frame["y_cls"])
    b = split_frame(small_frame, 0.2, 0.2, seed=3, stratify=small_frame["y_cls"])
    c = split_frame(small_frame, 0.2, 0.2, seed=4, stratify=small_frame["y_cls"])
    for x, y in zip(a, b, strict=True):
        assert x.index.equals(y.index)
    assert not a[2].index.equals(c[2].index)
    idx = [set(part.index) for part in a]
    assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and not (idx[1] & idx[2])
    assert sum(len(s) for s in idx) == len(small_frame)
    full = small_frame["y_cls"].value_counts(normalize=True)
    test_share = a[2]["y_cls"].value_counts(normalize=True)
    assert (test_share - full).abs().max() < 0.1


def test_read_table_csv_parquet_and_errors(tmp_path, small_frame) -> None:
    small_frame.to_csv(tmp_path / "d.csv", index=False)
    small_frame.to_parquet(tmp_path / "d.parquet", index=False)
    assert read_table(tmp_path / "d.csv").shape == small_frame.shape
    assert read_table(tmp_path / "d.parquet").shape == small_frame.shape
    with pytest.raises(DataError, match="data file not found"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type '\.xlsx'"):
        read_table(tmp_path / "d.xlsx")


def test_separate_split_files(tmp_path, small_frame) -> None:
    small_frame.iloc[:80].to_csv(tmp_path / "train.csv", index=False)
    small_frame.iloc[80:100].to_csv(tmp_path / "val.csv", index=False)
    small_frame.iloc[100:].to_parquet(tmp_path / "test.parquet", index=False)
    cfg = DataConfig(
        train=str(tmp_path / "train.csv"),
        val=str(tmp_path / "val.csv"),
        test=str(tmp_path / "test.parquet"),
        features={"numeric": ["a", "b", "c"], "categorical": ["color"]},
    )
    data = prepare_data(cfg, TASKS)
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 20)


def test_bundled_datasets_load_offline() -> None:
    assert {"penguins", "synthetic"} <= set(available_datasets())
    peng = get_dataset("penguins").load()
    assert len(peng) == 344 and peng["sex"].isna().sum() == 11
    syn = get_dataset("synthetic").load()
    assert len(syn) == 2000


def test_augmentation_changes_only_what_it_should() -> None:
    inputs = {"numeric": torch.zeros(200, 4), "categorical": torch.full((200, 2), 5)}
    g = torch.Generator().manual_seed(0)
    out = TabularAugment(noise_std=0.5)(inputs, g)
    assert 0.4 < float(out["numeric"].std()) < 0.6
    assert torch.equal(out["categorical"], inputs["categorical"])
    out = TabularAugment(feature_dropout=0.5)(
        {"numeric": torch.ones(200, 4), "categorical": torch.full((200, 2), 5)}, g
    )
    dropped = (out["numeric"] == 0).float().mean()
    assert 0.4 < float(dropped) < 0.6
    assert set(out["categorical"].unique().tolist()) == {UNKNOWN_INDEX, 5}
    assert TabularAugment()(inputs, g) is inputs


def test_batch_loader_resumes_mid_epoch_with_the_same_batches() -> None:
    data = TensorData({"numeric": torch.arange(50.0).unsqueeze(1)})
    ref = BatchLoader(data, 8, seed=1)
    seen = [b.inputs["numeric"].flatten().tolist() for _ in range(2) for b in ref]
    a = BatchLoader(data, 8, seed=1)
    first = []
    for i, b in enumerate(a):
        first.append(b.inputs["numeric"].flatten().tolist())
        if i == 2:
            break
    b = BatchLoader(data, 8, seed=1)
    b.load_state_dict(a.state_dict())
    rest = [x.inputs["numeric"].flatten().tolist() for x in b]
    rest += [x.inputs["numeric"].flatten().tolist() for x in b]
    assert first + rest == seen
    # a trailing batch smaller than min_batch is dropped (batch norm needs two rows)
    assert len(BatchLoader(TensorData({"numeric": torch.zeros(17, 1)}), 8, min_batch=2)) == 2

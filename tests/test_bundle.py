"""Bundles: safetensors + JSON, no unpickling, identical predictions in a fresh process."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lepton import Bundle, BundleError, DataError, MultiTaskModel, Task, Trainer
from lepton.bundle import prediction_columns
from lepton.data import from_frame

from .conftest import cli_env

TASKS = [
    Task("y_bin", "binary"),
    Task("y_cls", "multiclass"),
    Task("tags", "multilabel", target=("l1", "l2")),
    Task("y_reg", "regression"),
    Task("fused", "regression", target=("y_reg",), fusion=("y_bin", "y_cls")),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from .conftest import small_frame as _frame_fixture

    df = _frame_fixture.__wrapped__()
    data = from_frame(df, TASKS, numeric=["a", "b", "c"], categorical=["color"])
    model = MultiTaskModel.for_data(data, {"hidden": [16], "head_hidden": [8]})
    Trainer(model, train={"epochs": 2, "batch_size": 32}, progress=False).fit(data.train, data.val)
    path = Bundle(model, data.preprocessor, name="t", metrics={"test": {}}).save(
        tmp_path_factory.mktemp("b") / "bundle"
    )
    return model, data, df, path


def test_bundle_holds_safetensors_and_json_only(trained) -> None:
    _, _, _, path = trained
    assert sorted(p.name for p in path.iterdir()) == ["lepton.json", "model.safetensors"]
    meta = json.loads((path / "lepton.json").read_text())
    assert meta["format"] == "lepton-bundle"
    assert [t["name"] for t in meta["tasks"]] == [t.name for t in TASKS]
    assert meta["outputs"]["y_cls"]["activation"] == "softmax"
    assert meta["preprocessor"]["numeric"][0]["name"] == "a"
    assert {"lepton", "torch", "python"} <= set(meta["versions"])


def test_loading_never_unpickles(trained, monkeypatch) -> None:
    _, _, df, path = trained

    def forbidden(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    bundle = Bundle.load(path)
    assert len(bundle.predictor().predict(df.head(3))) == 3


def test_loaded_bundle_predicts_exactly_what_the_trained_model_predicted(trained) -> None:
    model, data, df, path = trained
    model.eval()
    with torch.no_grad():
        expected = model(data.preprocessor.transform(df))
    got = Bundle.load(path).predictor().raw(df)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_fresh_process_predicts_identically(trained, tmp_path: Path) -> None:
    _, _, df, path = trained
    df.to_csv(tmp_path / "in.csv", index=False)
    here = Bundle.load(path).predictor().predict(pd.read_csv(tmp_path / "in.csv"))
    code = (
        "import sys, pandas as pd; from lepton import Bundle;"
        "p = Bundle.load(sys.argv[1]).predictor();"
        "p.predict(pd.read_csv(sys.argv[2])).to_parquet(sys.argv[3])"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(path),
            str(tmp_path / "in.csv"),
            str(tmp_path / "out.parquet"),
        ],
        check=True,
        env=cli_env(),
    )
    there = pd.read_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(here, there, check_exact=True)


def test_prediction_columns_per_kind(trained) -> None:
    _, _, df, path = trained
    pred = Bundle.load(path).predictor()
    out = pred.predict(df.head(5), keep=["a"])
    tasks = {t.name: t for t in pred.bundle.tasks}
    assert list(out.columns) == ["a"] + [c for t in tasks.values() for c in prediction_columns(t)]
    assert set(out["y_bin"]) <= {"neg", "pos"}
    probs = out[["y_cls_prob_u", "y_cls_prob_v", "y_cls_prob_w"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert out["y_reg"].between(50, 150).all()  # original units (targets ~ 100 ± 10)
    only = pred.predict(df.head(5), tasks=["y_reg"])
    assert list(only.columns) == ["y_reg"]
    records = pred.predict_records(df.head(2).to_dict("records"), tasks=["y_cls", "tags"])
    assert set(records[0]) == {"y_cls", "tags"}
    assert set(records[0]["y_cls"]["probabilities"]) == {"u", "v", "w"}
    assert pred.predict_records([]) == [] and len(pred.predict(df.head(0))) == 0
    with pytest.raises(DataError, match="unknown task"):
        pred.predict(df.head(2), tasks=["nope"])


def test_unseen_category_uses_the_unknown_bucket(trained) -> None:
    _, _, df, path = trained
    probe = df.head(3).copy()
    probe["color"] = "ultraviolet"
    out = Bundle.load(path).predictor().predict(probe)
    assert len(out) == 3 and out["y_reg"].notna().all()


def test_broken_bundles_give_clear_errors(trained, tmp_path: Path) -> None:
    _, _, _, path = trained
    with pytest.raises(BundleError, match="bundle not found"):
        Bundle.load(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "lepton.json").write_text((path / "lepton.json").read_text())
    with pytest.raises(BundleError, match=r"model\.safetensors is missing"):
        Bundle.load(broken)
    (broken / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(BundleError, match="cannot read the weights"):
        Bundle.load(broken)
    meta = json.loads((path / "lepton.json").read_text())
    meta["format_version"] = 99
    (broken / "lepton.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="newer than this Lepton supports"):
        Bundle.load(broken)

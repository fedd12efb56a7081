"""Deploying image models: ONNX export (one NCHW ``image`` input of raw pixels, verified with
onnxruntime) and ``lepton serve`` (records carry the image as nested lists)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from lepton import Bundle
from lepton.bundle import export_onnx, sample_image_input
from lepton.errors import DataError, ExportError

from .conftest import run_cli
from .serving_support import image_run, running_server

TASKS = ["row", "col"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_run(tmp_path_factory)


@pytest.fixture(scope="module")
def images(run_dir: Path) -> np.ndarray:
    """The 30 held-out images, as saved: uint8 (30, 10, 10)."""
    return np.load(run_dir.parent / "test.npz")["images"]


@pytest.fixture
def own_bundle(run_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the bundle (exports write into its lepton.json)."""
    return Bundle.load(run_dir / "bundle").save(tmp_path / "bundle")


def _raw(bundle: Path, images: np.ndarray, tasks: list[str]) -> dict[str, np.ndarray]:
    """The PyTorch predictor's raw outputs, fed as predict_images feeds the model."""
    predictor = Bundle.load(bundle).predictor()
    batch = torch.from_numpy(images.astype(np.float32)[:, None])
    return {t: v.numpy() for t, v in predictor.raw_tensors({"image": batch}, tasks).items()}


# ------------------------------------------------------------------------------------ ONNX
def test_cli_export_image_model_matches_the_predictor(
    own_bundle: Path, images: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "stripes.onnx"
    res = run_cli("export", own_bundle, "--onnx", out)
    assert res.returncode == 0, res.stderr
    assert "inputs image float32 ['batch', 1, 10, 10]" in res.stdout
    assert "verified with onnxruntime on 16 images" in res.stdout

    model = onnx.load(str(out))
    (inp,) = model.graph.input
    assert inp.name == "image"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 10, 10]
    assert [o.name for o in model.graph.output] == TASKS
    (record,) = json.loads((own_bundle / "lepton.json").read_text())["onnx"]
    assert record["tasks"] == TASKS and record["verified_rows"] == 16
    (desc,) = record["inputs"]
    assert desc["name"] == "image" and desc["layout"] == "NCHW"
    assert desc["shape"] == ["batch", 1, 10, 10] and len(desc["mean"]) == 1
    assert max(record["max_abs_diff"].values()) <= 1e-5
    assert json.loads(dict((p.key, p.value) for p in model.metadata_props)["lepton.inputs"]) == [
        desc
    ]

    # raw uint8 pixel values in, as Predictor.predict_images takes them: batch sizes 1 and 29
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    predictor = Bundle.load(own_bundle).predictor()
    for rows in (images[:1], images[1:]):
        got = session.run(None, {"image": rows.astype(np.float32)[:, None]})
        want = _raw(own_bundle, rows, TASKS)
        for name, value in zip(TASKS, got, strict=True):
            np.testing.assert_allclose(value, want[name], atol=1e-5, rtol=1e-5)
        table = predictor.predict_images(rows)
        probs = torch.softmax(torch.from_numpy(got[1]), dim=1).numpy()
        np.testing.assert_allclose(probs[:, 2], table["col_prob_2"], atol=1e-5)
        p_row = 1 / (1 + np.exp(-got[0][:, 0]))
        np.testing.assert_allclose(p_row, table["row_prob_1"], atol=1e-5)


def test_cli_export_task_subset_verified_on_an_image_file(
    own_bundle: Path, run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "col.onnx"
    res = run_cli(
        "export", own_bundle, "--onnx", out, "--tasks", "col", "--data", run_dir.parent / "test.npz"
    )
    assert res.returncode == 0, res.stderr
    assert "verified with onnxruntime on 30 images" in res.stdout
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["col"]


def test_cli_export_image_model_with_table_rows_is_one_line_error(
    own_bundle: Path, tmp_path: Path
) -> None:
    rows = tmp_path / "rows.csv"
    pd.DataFrame({"x": [1.0, 2.0]}).to_csv(rows, index=False)
    res = run_cli("export", own_bundle, "--onnx", tmp_path / "m.onnx", "--data", rows)
    assert res.returncode == 1
    assert res.stderr.strip() == (
        "error: this model takes images (1, 10, 10) (C, H, W): verify it with an image array "
        "(.npy/.npz), not table rows"
    )
    assert not (tmp_path / "m.onnx").exists()


def test_export_rejects_sample_images_of_another_shape(own_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"sample images: images of shape \(1, 8, 8\)"):
        export_onnx(own_bundle, tmp_path / "m.onnx", sample=np.zeros((4, 8, 8)), record=False)
    with pytest.raises(ExportError, match="at least 2 sample records"):
        export_onnx(own_bundle, tmp_path / "m.onnx", sample=np.zeros((1, 10, 10)), record=False)


def test_sample_images_cover_the_training_range(own_bundle: Path) -> None:
    model = Bundle.load(own_bundle).model
    spec = model.spec()["encoder"]
    imgs = sample_image_input(model, rows=16)
    assert imgs.shape == (16, 1, 10, 10) and imgs.dtype == np.float32
    mean, std = spec["mean"][0], spec["std"][0]
    assert np.all(imgs[0] == np.float32(mean))  # a constant image
    assert imgs.min() >= mean - 4 * std - 1e-3 and imgs.max() <= mean + 4 * std + 1e-3
    assert abs(float(imgs[2:].mean()) - mean) < 0.2 * std


# ----------------------------------------------------------------- records (no server)
def test_predict_records_takes_image_records(own_bundle: Path, images: np.ndarray) -> None:
    predictor = Bundle.load(own_bundle).predictor()
    records = [{"image": images[0].tolist()}, {"image": images[1][None]}]
    got = predictor.predict_records(records)
    table = predictor.predict_images(images[:2])
    for i, p in enumerate(got):
        assert p["row"]["label"] == table["row"][i] and p["col"]["label"] == table["col"][i]
        assert p["col"]["probabilities"]["2"] == pytest.approx(table["col_prob_2"][i], abs=1e-6)
    with pytest.raises(DataError, match=r"records\[1\]\.image: the image has shape \(10, 9\)"):
        predictor.predict_records([records[0], {"image": images[1][:, :9].tolist()}])
    with pytest.raises(DataError, match=r"records\[0\]: an image model needs the field 'image'"):
        predictor.predict_records([{"pixels": 1}])


# ------------------------------------------------------------------------------ serving
@pytest.fixture(scope="module")
def server(run_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("serve-images") / "server.log"
    args = ("--max-records", "40", "--max-body-bytes", "10000", "--batch-window-ms", "5")
    with running_server(run_dir, *args, log=log) as s, httpx.Client(base_url=s.url) as client:
        yield client


def test_serves_image_records_like_the_predictor(
    server: httpx.Client, run_dir: Path, images: np.ndarray
) -> None:
    # (C, H, W) and, for a one-channel model, (H, W)
    records = [{"image": images[i][None].tolist()} for i in range(4)]
    records += [{"image": images[i].tolist(), "id": i} for i in range(4, 8)]
    r = server.post("/predict", json={"records": records})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["warnings"] == ["ignored field(s) the model does not use: id"]
    table = Bundle.load(run_dir / "bundle").predictor().predict_images(images[:8])
    assert len(body["predictions"]) == 8
    for i, p in enumerate(body["predictions"]):
        assert list(p) == TASKS
        assert p["row"]["label"] == table["row"][i] and p["col"]["label"] == table["col"][i]
        assert set(p["col"]["probabilities"]) == {"0", "1", "2"}
        for cls, prob in p["col"]["probabilities"].items():
            assert prob == pytest.approx(table[f"col_prob_{cls}"][i], abs=1e-6)
        assert p["row"]["probabilities"]["1"] == pytest.approx(table["row_prob_1"][i], abs=1e-6)

    r = server.post("/predict", json={"records": records[:2], "tasks": ["col"]})
    assert r.status_code == 200, r.text
    assert [list(p) for p in r.json()["predictions"]] == [["col"], ["col"]]


def test_wrong_image_shape_is_422_naming_the_record(
    server: httpx.Client, images: np.ndarray
) -> None:
    good = {"image": images[0].tolist()}
    r = server.post("/predict", json={"records": [good, {"image": images[1][:, :9].tolist()}]})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == (
        "records[1].image: the image has shape (10, 9), the model takes (1, 10, 10) "
        "(channels, height, width) or (10, 10)"
    )
    assert body["detail"][0]["record"] == 1 and body["detail"][0]["field"] == "image"


@pytest.mark.parametrize(
    ("image", "msg"),
    [
        ("NaN", "pixel [0][3][4] is NaN, infinite or too large for float32 (nan)"),
        ("ragged", "the nested lists are ragged"),
        ("text", "the image holds values other than numbers"),
        (None, "expected the image as nested lists of numbers"),
    ],
)
def test_invalid_images_are_422(
    server: httpx.Client, images: np.ndarray, image: str | None, msg: str
) -> None:
    bad: object = None
    if image is not None:
        arr: list = images[0].tolist()
        if image == "NaN":
            arr[3][4] = float("nan")
        elif image == "ragged":
            arr[5] = arr[5][:7]
        else:
            arr[2][2] = "bright"
        bad = [arr]
    content = json.dumps({"records": [{"image": images[0].tolist()}, {"image": bad}]})
    r = server.post("/predict", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith(f"records[1].image: {msg}")


def test_missing_image_and_large_bodies(server: httpx.Client, images: np.ndarray) -> None:
    r = server.post("/predict", json={"records": [{"pixels": [1, 2]}]})
    assert r.status_code == 422
    assert r.json()["error"] == (
        "records[0].image: required field is missing: the image as nested lists (1, 10, 10)"
    )
    # images make bodies large: 30 images of 10×10 exceed --max-body-bytes 10000
    content = json.dumps({"records": [{"image": images[i].tolist()} for i in range(30)]})
    assert len(content) > 10000
    r = server.post("/predict", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_metadata_describes_the_image_input(server: httpx.Client, run_dir: Path) -> None:
    meta = server.get("/metadata").json()
    spec = Bundle.load(run_dir / "bundle").model.spec()["encoder"]
    assert meta["input"] == {
        "type": "image",
        "field": "image",
        "shape": [1, 10, 10],
        "layout": "CHW",
        "accepted_shapes": [[1, 10, 10], [10, 10]],
        "values": "raw pixel values as in training (the model standardises them per channel)",
        "channel_mean": spec["mean"],
        "channel_std": spec["std"],
    }
    assert meta["features"] == []
    assert [t["name"] for t in meta["tasks"]] == TASKS
    schema = server.get("/openapi.json").json()["components"]["schemas"]["Record"]
    assert schema["required"] == ["image"]

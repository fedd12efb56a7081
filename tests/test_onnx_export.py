"""ONNX export: named outputs per task (fusion included), dynamic batch, opset recorded,
verification against PyTorch, task subsets, and preprocessing a non-Python consumer can apply."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from lepton import Bundle
from lepton.bundle import _onnx as onnx_module
from lepton.bundle import export_onnx, sample_records, verify_onnx
from lepton.errors import DataError, ExportError

from .conftest import run_cli
from .serving_support import fusion_bundle, penguin_frame


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fusion_bundle(tmp_path_factory)


@pytest.fixture
def own_bundle(bundle_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the bundle (exports write into its lepton.json)."""
    b = Bundle.load(bundle_dir)
    return b.save(tmp_path / "bundle")


@pytest.fixture(scope="module")
def exported(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Bundle, Path]:
    """The bundle (a private copy) and its full export, made once for this module."""
    folder = tmp_path_factory.mktemp("exported")
    bundle = Bundle.load(bundle_dir)
    bundle.save(folder / "bundle")
    export_onnx(bundle, folder / "m.onnx")
    return bundle, folder / "m.onnx"


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_cli_export_all_tasks_verified_and_recorded(own_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    res = run_cli("export", own_bundle, "--onnx", out)
    assert res.returncode == 0, res.stderr
    assert "verified with onnxruntime" in res.stdout

    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["species", "sex", "body_mass_g"]
    assert [i.name for i in model.graph.input] == ["numeric", "categorical"]
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch size

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    meta = json.loads((own_bundle / "lepton.json").read_text())
    (record,) = meta["onnx"]
    assert record["opset"] == opset and record["file"] == "model.onnx"
    assert record["tasks"] == ["species", "sex", "body_mass_g"]
    assert max(record["max_abs_diff"].values()) <= 1e-5
    # the recorded export survives loading and saving the bundle again
    Bundle.load(own_bundle).save(own_bundle)
    assert json.loads((own_bundle / "lepton.json").read_text())["onnx"] == meta["onnx"]

    # real rows, batch sizes 1 and 37: onnxruntime matches the PyTorch predictor to 1e-5
    predictor = Bundle.load(own_bundle).predictor()
    session = _session(out)
    df = penguin_frame()
    for rows in (df.iloc[:1], df.iloc[3:40]):
        inputs = predictor.preprocessor.transform(rows)
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        want = predictor.raw(rows)
        for name, value in zip(["species", "sex", "body_mass_g"], got, strict=True):
            assert value.shape == tuple(want[name].shape)
            np.testing.assert_allclose(value, want[name].numpy(), atol=1e-5, rtol=1e-5)


def test_cli_export_unknown_task_is_one_line_error(own_bundle: Path, tmp_path: Path) -> None:
    res = run_cli("export", own_bundle, "--onnx", tmp_path / "m.onnx", "--tasks", "species,wings")
    assert res.returncode == 1
    assert res.stderr.strip().startswith("error: unknown task(s) wings")
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "m.onnx").exists()


def _initializers(path: Path) -> list[str]:
    return [i.name for i in onnx.load(str(path)).graph.initializer]


def test_task_subsets_hold_only_the_needed_heads(own_bundle: Path, tmp_path: Path) -> None:
    bundle = Bundle.load(own_bundle)
    only = export_onnx(bundle, tmp_path / "species.onnx", ["species"])
    assert only.tasks == ["species"]
    names = _initializers(tmp_path / "species.onnx")
    assert any("heads.species" in n for n in names)
    assert not any("heads.sex" in n or "heads.body_mass_g" in n for n in names)
    assert [o.name for o in onnx.load(str(tmp_path / "species.onnx")).graph.output] == ["species"]

    # a fusion task alone: its source heads are in the graph, but only its output
    fused = export_onnx(bundle, tmp_path / "mass.onnx", ["body_mass_g"])
    graph = onnx.load(str(tmp_path / "mass.onnx")).graph
    assert [o.name for o in graph.output] == ["body_mass_g"]
    names = _initializers(tmp_path / "mass.onnx")
    assert all(any(f"heads.{t}" in n for n in names) for t in ("species", "sex", "body_mass_g"))
    assert fused.max_abs_diff["body_mass_g"] <= 1e-5

    # both exports are recorded, one entry per file
    meta = json.loads((own_bundle / "lepton.json").read_text())
    assert [e["file"] for e in meta["onnx"]] == ["species.onnx", "mass.onnx"]

    with pytest.raises(DataError, match="unknown task"):
        export_onnx(bundle, tmp_path / "x.onnx", ["nope"])
    with pytest.raises(ExportError, match=r"must end in \.onnx"):
        export_onnx(bundle, tmp_path / "x.pb")


def test_a_graph_that_differs_fails_naming_the_task(
    own_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = Bundle.load(own_bundle)
    original = onnx_module.OnnxGraph.forward

    def skewed(self, *tensors):  # the traced graph adds 1e-3 to the 'sex' logit
        out = list(original(self, *tensors))
        out[self.tasks.index("sex")] = out[self.tasks.index("sex")] + 1e-3
        return tuple(out)

    monkeypatch.setattr(onnx_module.OnnxGraph, "forward", skewed)
    target = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match=r"output 'sex' differs from PyTorch by up to 0\.001"):
        export_onnx(bundle, target)
    assert not target.exists()
    assert "onnx" not in json.loads((own_bundle / "lepton.json").read_text())


def test_verify_onnx_detects_a_changed_model(exported: tuple[Bundle, Path]) -> None:
    _, path = exported
    bundle = Bundle.load(path.parent / "bundle")  # a fresh model, changed below
    inputs = bundle.preprocessor.transform(sample_records(bundle.preprocessor))
    tasks = ["species", "sex", "body_mass_g"]
    assert max(verify_onnx(path, bundle.model, inputs, tasks).values()) <= 1e-5
    with torch.no_grad():
        bundle.model.heads["body_mass_g"].out.bias += 0.5
    with pytest.raises(ExportError, match=r"output 'body_mass_g' differs .* by up to 0\.5"):
        verify_onnx(path, bundle.model, inputs, tasks)


# ----------------------------------------------------------------- a non-Python consumer
def _category_text(value):
    """The category rule of lepton.json, written from its description alone."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return value if value.strip() else None


def _prepare(meta: dict, records: list[dict]) -> dict[str, np.ndarray]:
    """Inputs from raw records using only the bundle's JSON (as a Go or Java service would)."""
    pre = meta["preprocessor"]
    numeric = np.zeros((len(records), len(pre["numeric"])), dtype=np.float32)
    for j, spec in enumerate(pre["numeric"]):
        for i, rec in enumerate(records):
            x = rec.get(spec["name"])
            if x is None or (isinstance(x, float) and math.isnan(x)):
                numeric[i, j] = 0.0
            else:
                numeric[i, j] = (float(x) - spec["mean"]) / spec["std"]
    categorical = np.zeros((len(records), len(pre["categorical"])), dtype=np.int64)
    for j, spec in enumerate(pre["categorical"]):
        index = {v: k + spec["first_index"] for k, v in enumerate(spec["vocabulary"])}
        for i, rec in enumerate(records):
            key = _category_text(rec.get(spec["name"]))
            categorical[i, j] = (
                spec["missing_index"] if key is None else index.get(key, spec["unknown_index"])
            )
    return {"numeric": numeric, "categorical": categorical}


def _decode(meta: dict, name: str, raw: np.ndarray) -> list:
    out = meta["outputs"][name]
    if out["kind"] == "binary":
        p = 1 / (1 + np.exp(-raw[:, 0].astype(np.float64)))
        return [out["labels"][1] if v >= out["threshold"] else out["labels"][0] for v in p]
    if out["kind"] == "multiclass":
        return [out["labels"][int(i)] for i in raw.argmax(axis=1)]
    target = meta["preprocessor"]["targets"][name]
    return list(raw[:, 0] * target["std"][0] + target["mean"][0])


def test_a_non_python_consumer_reproduces_the_predictor(exported: tuple[Bundle, Path]) -> None:
    bundle, path = exported
    meta = json.loads((path.parent / "bundle" / "lepton.json").read_text())
    assert meta["onnx"][0]["file"] == "m.onnx"
    rules = meta["preprocessor"]["rules"]
    for key in ("inputs", "missing", "numeric", "categorical", "category_text", "regression"):
        assert rules[key]
    columns = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "island"]
    rows = [
        (39.1, 18.7, 181, "Dream"),
        (None, 17.0, 200, None),  # missing values
        (50.0, 15.5, 222, "Mars"),  # a category never seen in training
        (45, float("nan"), 210, 7),
    ]
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    inputs = _prepare(meta, records)
    session = _session(path)
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, inputs), strict=True))

    predictor = bundle.predictor()
    want_inputs = predictor.preprocessor.transform(pd.DataFrame.from_records(records))
    np.testing.assert_allclose(inputs["numeric"], want_inputs["numeric"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(inputs["categorical"], want_inputs["categorical"].numpy())
    want = predictor.predict_records(records)
    for name in names:
        decoded = _decode(meta, name, outputs[name])
        for i, row in enumerate(want):
            if "value" in row[name]:
                assert decoded[i] == pytest.approx(row[name]["value"], rel=1e-5)
            else:
                assert decoded[i] == row[name]["label"]

"""`lepton serve`: a real server on a free loopback port, talked to with httpx."""

from __future__ import annotations

import asyncio
import json
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import torch

from lepton import Bundle
from lepton.serve import ServeSettings, create_app

from .conftest import run_cli
from .serving_support import (
    FEATURES,
    fusion_bundle,
    overflowing_record,
    penguin_records,
    running_server,
)

TASKS = ["species", "sex", "body_mass_g"]
TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fusion_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    args = ("--max-records", "20", "--max-body-bytes", "20000", "--batch-window-ms", "5")
    with running_server(bundle_dir, *args, log=log) as s, httpx.Client(base_url=s.url) as client:
        yield client


@pytest.fixture(scope="module")
def auth_server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("auth")
    token_file = folder / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    args = ("--token-file", str(token_file), "--workers", "2")
    log = folder / "server.log"
    with running_server(bundle_dir, *args, log=log) as s, httpx.Client(base_url=s.url) as client:
        yield client


def _predict(client: httpx.Client, body: Any, **kw: Any) -> httpx.Response:
    return client.post("/predict", json=body, **kw)


# ----------------------------------------------------------------------------- happy path
def test_predicts_every_task_for_every_record(server: httpx.Client, bundle_dir: Path) -> None:
    records = penguin_records(5)
    r = _predict(server, {"records": records})
    assert r.status_code == 200, r.text
    body = r.json()
    bundle = Bundle.load(bundle_dir)
    assert body["model"] == {"name": bundle.name, "version": bundle.version}
    assert body["warnings"] == []
    assert len(body["predictions"]) == 5
    for p in body["predictions"]:
        assert list(p) == TASKS
        assert p["species"]["label"] in ("Adelie", "Chinstrap", "Gentoo")
        assert sum(p["species"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert set(p["sex"]["probabilities"]) == {"female", "male"}
        assert isinstance(p["body_mass_g"]["value"], float)


def test_only_the_requested_tasks(server: httpx.Client) -> None:
    r = _predict(server, {"records": penguin_records(3), "tasks": ["body_mass_g", "sex"]})
    assert r.status_code == 200, r.text
    assert [list(p) for p in r.json()["predictions"]] == [["body_mass_g", "sex"]] * 3


def test_ignored_fields_and_unseen_categories_are_warned_once(server: httpx.Client) -> None:
    records = penguin_records(3)
    for rec in records:
        rec["colour"] = "grey"
    records[1]["island"] = "Atlantis"
    r = _predict(server, {"records": records, "tasks": ["species"]})
    assert r.status_code == 200, r.text
    assert r.json()["warnings"] == [
        "ignored field(s) the model does not use: colour",
        "records[1].island: 'Atlantis' was never seen in training (the unknown category is used)",
    ]


def test_predictions_equal_lepton_predict(
    server: httpx.Client, bundle_dir: Path, tmp_path: Path
) -> None:
    # rows 4 and 340 of the penguins lack every measurement: the mean is used
    records = penguin_records(20) + penguin_records(20, start=324)
    src = tmp_path / "records.csv"
    pd.DataFrame.from_records(records, columns=FEATURES).to_csv(src, index=False)
    out = tmp_path / "predictions.csv"
    res = run_cli("predict", bundle_dir, src, "-o", out)
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(out)
    served = [
        p for part in (records[:20], records[20:])
        for p in _predict(server, {"records": part}).json()["predictions"]
    ]  # fmt: skip
    assert len(served) == len(table) == 40
    for i, p in enumerate(served):
        assert p["species"]["label"] == table["species"][i]
        assert p["sex"]["label"] == table["sex"][i]
        for cls, prob in p["species"]["probabilities"].items():
            assert prob == pytest.approx(table[f"species_prob_{cls}"][i], abs=1e-6)
        assert p["sex"]["probabilities"]["male"] == pytest.approx(table["sex_prob_male"][i], 1e-6)
        assert p["body_mass_g"]["value"] == pytest.approx(table["body_mass_g"][i], rel=1e-6)


def test_concurrent_requests_get_their_own_answers(server: httpx.Client) -> None:
    chunks = [penguin_records(3, start=3 * i) for i in range(16)]
    alone = [_predict(server, {"records": c}).json()["predictions"] for c in chunks]
    before = server.get("/metadata").json()["batching"]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda c: _predict(server, {"records": c}), chunks * 4))
    after = server.get("/metadata").json()["batching"]
    for want, got in zip(alone * 4, together, strict=True):
        assert got.status_code == 200
        for a, b in zip(want, got.json()["predictions"], strict=True):
            assert a["species"]["label"] == b["species"]["label"]
            assert a["body_mass_g"]["value"] == pytest.approx(b["body_mass_g"]["value"], 1e-6)
    # 64 requests from 16 threads at once: the micro-batcher ran some of them together
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests == 64 and batches < requests, (requests, batches)


# ------------------------------------------------------------------------------ validation
def _errors(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 422, r.text
    return r.json()["detail"]


def test_missing_feature_names_record_and_field(server: httpx.Client) -> None:
    records = penguin_records(4)
    del records[2]["flipper_length_mm"]
    r = _predict(server, {"records": records})
    (err,) = _errors(r)
    assert (err["record"], err["field"]) == (2, "flipper_length_mm")
    assert r.json()["error"].startswith("records[2].flipper_length_mm: required feature is missing")


def test_wrong_types_name_record_and_field(server: httpx.Client) -> None:
    records = penguin_records(3)
    records[0]["bill_depth_mm"] = "deep"
    records[1]["island"] = ["Dream"]
    records[2]["bill_length_mm"] = True
    errs = _errors(_predict(server, {"records": records}))
    got = {(e["record"], e["field"], e["type"]) for e in errs}
    assert got == {
        (0, "bill_depth_mm", "number_type"),
        (1, "island", "category_type"),
        (2, "bill_length_mm", "number_type"),
    }
    assert "expected a number or null, got text" in errs[0]["msg"]


def test_numbers_too_large_for_the_model_are_422(server: httpx.Client) -> None:
    records = penguin_records(3)
    records[1]["bill_depth_mm"] = 1e300  # finite, but not once standardised to float32
    r = _predict(server, {"records": records})
    (err,) = _errors(r)
    assert (err["record"], err["field"], err["type"]) == (1, "bill_depth_mm", "out_of_range")
    assert (
        r.json()["error"]
        == "records[1].bill_depth_mm: numeric feature: 1e+300 is too large for the model"
    )


def test_integers_too_large_for_a_float_are_422(server: httpx.Client) -> None:
    records = penguin_records(3)
    records[2]["bill_length_mm"] = 10**400  # valid JSON; no float holds it
    r = server.post(
        "/predict",
        content=json.dumps({"records": records}),
        headers={"content-type": "application/json"},
    )
    (err,) = _errors(r)
    assert (err["record"], err["field"], err["type"]) == (2, "bill_length_mm", "out_of_range")
    assert r.json()["error"] == (
        "records[2].bill_length_mm: numeric feature: an integer of 401 digits is too large "
        "for the model"
    )
    records[2]["bill_length_mm"] = -(10**400)
    (err,) = _errors(_predict(server, {"records": records}))
    assert (err["record"], err["type"]) == (2, "out_of_range")
    records[2]["bill_length_mm"] = 39  # a plain integer is still a number
    assert _predict(server, {"records": records}).status_code == 200


def test_numbers_that_overflow_the_model_together_are_422(
    server: httpx.Client, bundle_dir: Path
) -> None:
    record, failed = overflowing_record(bundle_dir)
    records = penguin_records(4)
    records[1] = record
    r = _predict(server, {"records": records})
    (err,) = _errors(r)  # strict JSON: r.json() would fail on a bare NaN
    assert (err["record"], err["task"], err["type"]) == (1, failed[0], "non_finite_output")
    assert r.json()["error"] == (
        f"records[1]: task '{failed[0]}': the model's output is NaN or infinite (the values are "
        "too large for the model together)"
    )
    for task in failed:  # only the requested tasks are checked
        (err,) = _errors(_predict(server, {"records": records, "tasks": [task]}))
        assert (err["record"], err["task"]) == (1, task)
    fine = [t for t in TASKS if t not in failed]
    if fine:
        assert _predict(server, {"records": records, "tasks": fine}).status_code == 200

    # in a micro-batch with other requests: only the bad request fails, with its own index
    good = penguin_records(3, start=10)
    bodies = [{"records": good}, {"records": [*good, record]}, {"records": good}] * 4
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda b: _predict(server, b), bodies))
    for body, answer in zip(bodies, answers, strict=True):
        if len(body["records"]) == 4:
            assert answer.status_code == 422 and answer.json()["detail"][0]["record"] == 3
        else:
            assert answer.status_code == 200 and len(answer.json()["predictions"]) == 3


def test_unknown_task_empty_lists_and_unknown_fields(server: httpx.Client) -> None:
    (err,) = _errors(_predict(server, {"records": penguin_records(1), "tasks": ["sex", "wings"]}))
    assert err["path"] == "tasks[1]" and "unknown task 'wings'" in err["msg"]
    (err,) = _errors(_predict(server, {"records": []}))
    assert err["field"] == "records" and err["type"] == "too_short"
    (err,) = _errors(_predict(server, {"records": penguin_records(1), "tasks": []}))
    assert err["field"] == "tasks"
    (err,) = _errors(_predict(server, {"records": penguin_records(1), "task": ["sex"]}))
    assert err["field"] == "task" and "unknown field" in err["msg"]
    (err,) = _errors(_predict(server, {"records": [penguin_records(1)[0], 7]}))
    assert err["record"] == 1


def test_malformed_json_and_wrong_content_type(server: httpx.Client) -> None:
    json_type = {"content-type": "application/json"}
    r = server.post("/predict", content=b'{"records": [', headers=json_type)
    (err,) = _errors(r)
    assert "not valid JSON" in err["msg"]
    r = server.post("/predict", content=json.dumps({"records": penguin_records(1)}).encode())
    (err,) = _errors(r)
    assert "Content-Type: application/json" in err["msg"]


# ------------------------------------------------------------------------------- limits
def test_too_many_records_is_413(server: httpx.Client) -> None:
    r = _predict(server, {"records": penguin_records(21)})
    assert r.status_code == 413
    assert r.json()["detail"] == (
        "records: 21 records exceed the limit of 20 per request (--max-records)"
    )


def test_too_many_records_is_413_before_the_records_are_validated(server: httpx.Client) -> None:
    # counted first: invalid records (or other errors) beyond the limit are still a 413
    for body in (
        {"records": [{}] * 21},
        {"records": [*penguin_records(20), {"bill_length_mm": "long"}]},
        {"records": [{}] * 25, "tasks": ["wings"], "extra": 1},
    ):
        r = _predict(server, body)
        assert r.status_code == 413, r.text
        assert "records exceed the limit of 20" in r.json()["detail"]
    errs = _errors(_predict(server, {"records": [{}] * 20}))  # at the limit: validated
    assert {e["record"] for e in errs} == set(range(20))


def test_too_large_body_is_413_with_or_without_length(server: httpx.Client) -> None:
    big = {"records": penguin_records(2), "padding": "x" * 30_000}
    r = _predict(server, big)
    assert r.status_code == 413 and "20000 bytes" in r.json()["detail"]
    data = json.dumps(big).encode()

    def chunks():
        for i in range(0, len(data), 4096):
            yield data[i : i + 4096]

    r = server.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


# ---------------------------------------------------------------------- other endpoints
def test_health_ready_metadata_docs(server: httpx.Client) -> None:
    assert server.get("/health").json() == {"status": "ok"}
    assert server.get("/ready").json()["ready"] is True
    meta = server.get("/metadata").json()
    assert [(t["name"], t["kind"]) for t in meta["tasks"]] == [
        ("species", "multiclass"),
        ("sex", "binary"),
        ("body_mass_g", "regression"),
    ]
    assert meta["tasks"][1]["classes"] == ["female", "male"]
    assert meta["tasks"][2]["fusion"] == ["species", "sex"]
    assert [f["name"] for f in meta["features"]] == FEATURES
    island = meta["features"][3]
    assert island["type"] == "categorical"
    assert island["vocabulary"] == ["Biscoe", "Dream", "Torgersen"]  # what a client may send
    assert island["known_values"] == 3
    assert all("vocabulary" not in f for f in meta["features"][:3])
    assert meta["limits"]["max_records"] == 20 and meta["limits"]["auth"] is False
    assert {"lepton", "torch"} <= set(meta["versions"]["bundle"])
    assert server.get("/docs").status_code == 200
    schema = server.get("/openapi.json").json()
    record = schema["components"]["schemas"]["Record"]
    assert set(record["required"]) == set(FEATURES)
    records = schema["components"]["schemas"]["PredictRequest"]["properties"]["records"]
    assert (records["minItems"], records["maxItems"]) == (1, 20)


# ----------------------------------------------------------------------------------- auth
def test_token_is_required_except_for_probes(auth_server: httpx.Client) -> None:
    body = {"records": penguin_records(2)}
    r = _predict(auth_server, body)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "missing bearer token" in r.json()["detail"]
    r = _predict(auth_server, body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "invalid bearer token" in r.json()["detail"]
    r = _predict(auth_server, {"records": []}, headers={"Authorization": f"Basic {TOKEN}"})
    assert r.status_code == 401  # no validation feedback before authentication
    assert auth_server.get("/metadata").status_code == 401
    assert auth_server.get("/health").status_code == 200
    assert auth_server.get("/ready").status_code == 200
    headers = {"Authorization": f"Bearer {TOKEN}"}
    r = _predict(auth_server, body, headers=headers)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    assert auth_server.get("/metadata", headers=headers).json()["limits"]["auth"] is True


def test_bad_token_file_is_a_one_line_error(bundle_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    res = run_cli("serve", bundle_dir, "--token-file", empty, "--port", "1")
    assert res.returncode == 1
    assert res.stderr.strip() == f"error: --token-file {empty}: the file is empty"


# ------------------------------------------------------------------------ no file access
def test_loading_never_unpickles_and_no_route_takes_a_path(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unpickling is not allowed")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    app = create_app(bundle_dir, ServeSettings(docs=False))
    paths = {getattr(r, "path", "") for r in app.routes}
    assert paths == {"/predict", "/health", "/ready", "/metadata"}

    async def talk() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            body = {"records": penguin_records(1), "bundle": "/etc/passwd"}
            return [
                await client.post("/predict", json=body),
                await client.get("/docs"),
                await client.get("/../../etc/passwd"),
            ]

    predict, docs, traversal = asyncio.run(talk())
    assert predict.status_code == 422 and predict.json()["detail"][0]["field"] == "bundle"
    assert docs.status_code == 404 and traversal.status_code == 404


def test_not_ready_before_startup_and_after_shutdown(bundle_dir: Path) -> None:
    app = create_app(Bundle.load(bundle_dir))

    async def talk() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            codes = [(await client.get("/ready")).status_code]
            body = {"records": penguin_records(1)}
            codes.append((await client.post("/predict", json=body)).status_code)
            async with app.router.lifespan_context(app):
                codes.append((await client.get("/ready")).status_code)
                codes.append((await client.post("/predict", json=body)).status_code)
            codes.append((await client.get("/ready")).status_code)
            codes.append((await client.get("/health")).status_code)
            return codes

    assert asyncio.run(talk()) == [503, 503, 200, 200, 503, 200]


def test_a_response_never_holds_nan(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # were the predictor's check of the outputs bypassed, the JSON encoding still refuses NaN
    from lepton.bundle import Predictor

    record, _ = overflowing_record(bundle_dir)
    monkeypatch.setattr(Predictor, "check_finite", lambda self, raw, name_row: None)
    app = create_app(Bundle.load(bundle_dir))

    async def talk() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            return await client.post("/predict", json={"records": [record]})

    r = asyncio.run(talk())
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
    assert b"NaN" not in r.content and b"Infinity" not in r.content

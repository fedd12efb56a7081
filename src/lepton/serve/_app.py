"""The FastAPI application that serves a bundle.

Endpoints: ``POST /predict``, ``GET /health`` (liveness), ``GET /ready`` (the model is loaded
and the batcher runs), ``GET /metadata`` (tasks, features or image input, versions, limits),
``/docs`` (OpenAPI). No endpoint takes a path or a file: the only model is the one given at
start. Records of an image model carry the image as nested lists under ``image``.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations, which
# name models built inside ``create_app``.

import json
import logging
import platform
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer

from lepton.bundle import Bundle
from lepton.bundle._predictor import NonFiniteOutputError, nonfinite_reason
from lepton.data.preprocess import FLOAT32_MAX, category_key
from lepton.errors import DataError, ServeError
from lepton.serve._batcher import BatcherStopped, Job, MicroBatcher
from lepton.serve._schema import IMAGE_FIELD, TOO_MANY_RECORDS, build_models, example_input
from lepton.serve._security import DOCS_PATHS, PUBLIC_PATHS, BearerAuth, BodyLimit

logger = logging.getLogger("lepton.serve")

MAX_WARNINGS = 10


@dataclass
class ServeSettings:
    """Options of the service (the ``lepton serve`` flags).

    Parameters
    ----------
    max_body_bytes:
        Largest request body; a larger one is answered 413.
    max_records:
        Most records in one request; more are answered 413.
    batch_window_ms:
        How long the first request of a batch waits for others to join (0: only the requests
        already queued join).
    max_batch:
        Most records in one batch.
    threads:
        Torch threads for the model (per worker process).
    token:
        Bearer token required by every endpoint except ``/health``, ``/ready`` and the docs.
    docs:
        Serve ``/docs`` and ``/openapi.json``.
    """

    max_body_bytes: int = 1 << 20
    max_records: int = 1000
    batch_window_ms: float = 2.0
    max_batch: int = 512
    threads: int = 1
    token: str | None = None
    docs: bool = True

    def check(self) -> None:
        for name in ("max_body_bytes", "max_records", "max_batch", "threads"):
            if getattr(self, name) < 1:
                raise ServeError(f"{name.replace('_', '-')} must be at least 1")
        if self.batch_window_ms < 0:
            raise ServeError("batch-window-ms must be >= 0")

    def public(self) -> dict[str, Any]:
        """The settings without the token (for ``/metadata``)."""
        d = asdict(self)
        d.pop("token")
        d["auth"] = self.token is not None
        return d


def _error_summary(path: Sequence[Any]) -> tuple[str, int | None, str | None]:
    """``("records[3].x", 3, "x")`` from a validation error location (without ``body``)."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    in_records = len(path) > 1 and path[0] == "records" and isinstance(path[1], int)
    record = path[1] if in_records else None
    field = None
    if record is not None and len(path) > 2:
        field = str(path[2])
    elif path:
        field = str(path[0])
    return text or "body", record, field


def _missing_message(path: Sequence[Any], image_shape: Sequence[int] | None) -> str:
    if len(path) != 3 or path[0] != "records" or not isinstance(path[1], int):
        return "required field is missing"
    if image_shape is not None:
        c, h, w = image_shape
        return f"required field is missing: the image as nested lists ({c}, {h}, {w})"
    return "required feature is missing (send null for an unknown value)"


def _validation_response(
    exc: RequestValidationError,
    content_type: str,
    tasks: Sequence[str],
    image_shape: Sequence[int] | None = None,
) -> JSONResponse:
    errors = exc.errors()
    for err in errors:  # too many records: 413, whatever else is wrong with the request
        if err.get("type") == TOO_MANY_RECORDS:
            return JSONResponse(status_code=413, content={"detail": f"records: {err['msg']}"})
    detail = []
    for err in errors:
        loc = list(err.get("loc", ()))
        kind = err.get("type")
        msg = err.get("msg", "invalid")
        if kind == "json_invalid":
            position = loc[1] if len(loc) > 1 else "?"
            reason = (err.get("ctx") or {}).get("error", "")
            loc = ["body"]
            msg = f"the body is not valid JSON ({reason} at character {position})"
        path = loc[1:] if loc and loc[0] == "body" else loc
        text, record, field = _error_summary(path)
        if kind == "missing":
            msg = _missing_message(path, image_shape)
        elif kind == "extra_forbidden":
            msg = "unknown field (a request holds 'records' and optionally 'tasks')"
        elif kind == "literal_error" and path and path[0] == "tasks":
            msg = f"unknown task {err.get('input')!r}; the model predicts: {', '.join(tasks)}"
        elif not path and kind == "model_attributes_type":
            msg = "expected a JSON object with 'records' (and optionally 'tasks')"
            if "json" not in content_type:
                msg += "; send it with the header 'Content-Type: application/json'"
        item: dict[str, Any] = {"loc": loc, "path": text, "msg": msg, "type": kind}
        if record is not None:
            item["record"] = record
        if field is not None:
            item["field"] = field
        detail.append(item)
    return _error_response(detail)


def _error_response(detail: list[dict[str, Any]]) -> JSONResponse:
    """422 whose ``error`` line names the first of ``detail``'s errors and counts the rest."""
    first = detail[0] if detail else {"path": "body", "msg": "invalid request"}
    more = f" (and {len(detail) - 1} more error(s))" if len(detail) > 1 else ""
    return JSONResponse(
        status_code=422,
        content={"error": f"{first['path']}: {first['msg']}{more}", "detail": detail},
    )


def _nonfinite_response(exc: NonFiniteOutputError) -> JSONResponse:
    """422 naming each record whose output is NaN or infinite, and the task."""
    detail = [
        {
            "loc": ["body", "records", i],
            "path": f"records[{i}]",
            "msg": nonfinite_reason(task),
            "type": "non_finite_output",
            "record": i,
            "task": task,
        }
        for i, task in zip(exc.positions, exc.tasks, strict=True)
    ]
    return _error_response(detail)


def create_app(bundle: Bundle | str | Path, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``bundle`` (a :class:`Bundle` or a bundle folder).

    Run it with any ASGI server (``uvicorn.run(app)``), or use ``lepton serve`` /
    :func:`lepton.serve.serve`. The model runs in one worker thread, fed by a
    :class:`MicroBatcher`.

    Examples
    --------
    >>> app = create_app("runs/penguins/bundle", ServeSettings(max_records=100))  # doctest: +SKIP
    """
    settings = settings or ServeSettings()
    settings.check()
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)  # safetensors + JSON: nothing is unpickled
    predictor = bundle.predictor()
    pre = bundle.preprocessor
    features = pre.feature_columns
    image_shape = bundle.model.image_shape  # (C, H, W) for an image model, else None
    fields = [IMAGE_FIELD] if image_shape is not None else features
    field_set = set(fields)
    task_order = [t.name for t in bundle.tasks]
    vocab_sets = {c: set(pre.vocabularies[c]) for c in pre.categorical}
    model_info = {"name": bundle.name, "version": bundle.version}
    # the records are counted before they are validated: too many is a 413 whatever they hold
    request_model, response_model = build_models(bundle, max_records=settings.max_records)

    def run_batch(jobs: Sequence[Job]) -> list[list[dict[str, Any]]]:
        records = [r for job in jobs for r in job.records]
        wanted = {t for job in jobs for t in job.tasks}
        tasks = [t for t in task_order if t in wanted]
        if image_shape is not None:  # validated images (C, H, W), stacked by the predictor
            predictions = predictor.predict_records(records, tasks)
        else:
            frame = pd.DataFrame.from_records(records, columns=features)
            predictions = predictor.predict_records(frame, tasks)
        out, start = [], 0
        for job in jobs:
            part = predictions[start : start + len(job.records)]
            start += len(job.records)
            if job.tasks == tasks:
                out.append(part)
            else:
                out.append([{t: p[t] for t in job.tasks} for p in part])
        return out

    def setup_thread() -> None:
        torch.set_num_threads(settings.threads)

    batcher = MicroBatcher(
        run_batch, settings.batch_window_ms / 1000.0, settings.max_batch, setup=setup_thread
    )
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        warm = Job([example_input(bundle)], task_order, None)  # type: ignore[arg-type]
        await batcher.call(lambda: run_batch([warm]))
        state["ready"] = True
        logger.info("serving %s %s: tasks %s", bundle.name, bundle.version, task_order)
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.stop()

    app = FastAPI(
        title=f"Lepton: {bundle.name}",
        version=bundle.version,
        description=(
            f"Multi-task predictions of the model **{bundle.name}** (version {bundle.version}): "
            + ", ".join(f"`{t.name}` ({t.kind})" for t in bundle.tasks)
            + ". One request, any subset of the tasks; the shared trunk runs once."
        ),
        lifespan=lifespan,
        docs_url="/docs" if settings.docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    bearer = [HTTPBearer(auto_error=False)] if settings.token else []

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        return _validation_response(exc, content_type, task_order, image_shape)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error on %s", request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error"})

    def _security_dependencies() -> list[Any]:
        return [Depends(b) for b in bearer]

    def _warnings(records: Sequence[dict[str, Any]]) -> list[str]:
        out: list[str] = []
        ignored: dict[str, None] = {}
        n = len(fields)
        for rec in records:
            if len(rec) != n:
                for key in rec:
                    if key not in field_set:
                        ignored.setdefault(key)
        if ignored:
            out.append("ignored field(s) the model does not use: " + ", ".join(ignored))
        unseen = 0
        for i, rec in enumerate(records):
            for col, vocab in vocab_sets.items():
                key = category_key(rec[col])
                if key is not None and key not in vocab:
                    unseen += 1
                    if unseen <= MAX_WARNINGS:
                        out.append(
                            f"records[{i}].{col}: {rec[col]!r} was never seen in training "
                            "(the unknown category is used)"
                        )
        if unseen > MAX_WARNINGS:
            out.append(f"... and {unseen - MAX_WARNINGS} more unseen categories")
        return out

    scales = [
        (col, float(mean), float(std))
        for col, mean, std in zip(pre.numeric, pre.means, pre.stds, strict=True)
    ]

    def _out_of_range(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """422 details for numbers whose standardised value overflows the model's float32."""
        problems = []
        for i, rec in enumerate(records):
            for col, mean, std in scales:
                v = rec[col]
                if v is not None and not abs((v - mean) / std) <= FLOAT32_MAX:
                    path = f"records[{i}].{col}"
                    problems.append(
                        {
                            "loc": ["body", "records", i, col],
                            "path": path,
                            "msg": f"numeric feature: {v!r} is too large for the model",
                            "type": "out_of_range",
                            "record": i,
                            "field": col,
                        }
                    )
        return problems

    @app.post(
        "/predict",
        response_model=response_model,
        dependencies=_security_dependencies(),
        responses={
            401: {"description": "Missing or invalid bearer token"},
            413: {"description": "Too many records, or the body is too large"},
            422: {"description": "Invalid request: each error names the record and the field"},
            503: {"description": "The model is not ready"},
        },
        summary="Predict the requested tasks for each record",
    )
    async def predict(body: request_model) -> Response:  # type: ignore[valid-type]
        records = body.records  # type: ignore[attr-defined]  # at most max_records (validated)
        if not state["ready"]:
            raise HTTPException(503, detail="the model is not ready")
        tasks = list(dict.fromkeys(body.tasks)) if body.tasks else task_order  # type: ignore[attr-defined]
        problems = _out_of_range(records)
        if problems:
            first = problems[0]
            return JSONResponse(
                status_code=422,
                content={"error": f"{first['path']}: {first['msg']}", "detail": problems},
            )
        warnings = _warnings(records)
        try:
            predictions = await batcher.submit(records, tasks)
        except BatcherStopped as e:  # the service is shutting down
            raise HTTPException(503, detail=str(e)) from None
        except NonFiniteOutputError as e:  # numbers that overflow the model together
            return _nonfinite_response(e)
        except DataError as e:  # a record the preprocessor rejects (validation should prevent it)
            return JSONResponse(status_code=422, content={"error": str(e), "detail": []})
        content = {"predictions": predictions, "model": model_info, "warnings": warnings}
        # strict JSON: a NaN or infinity is never sent (the predictor refuses to produce one)
        return Response(json.dumps(content, allow_nan=False), media_type="application/json")

    @app.get("/health", summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        summary="Readiness: the model is loaded and accepts predictions",
        responses={503: {"description": "Not ready (starting or shutting down)"}},
    )
    async def ready() -> JSONResponse:
        ok = state["ready"] and batcher.running
        return JSONResponse(
            status_code=200 if ok else 503, content={"ready": ok, "model": model_info}
        )

    metadata = {
        "model": {**model_info, "created": bundle.metadata.get("created")},
        "tasks": [
            {
                "name": t.name,
                "kind": t.kind,
                "classes" if t.kind in ("binary", "multiclass") else "outputs": list(t.labels),
                "threshold": t.threshold if t.kind in ("binary", "multilabel") else None,
                "fusion": list(t.fusion),
            }
            for t in bundle.tasks
        ],
        "features": [{"name": c, "type": "numeric"} for c in pre.numeric]
        + [
            {
                "name": c,
                "type": "categorical",
                "known_values": len(pre.vocabularies[c]),
                # the categories seen in training, as text; any other value is "unknown"
                "vocabulary": list(pre.vocabularies[c]),
            }
            for c in pre.categorical
        ],
        "versions": {
            "bundle": dict(bundle.versions),
            "server": {
                "lepton": _lepton_version(),
                "torch": torch.__version__.split("+")[0],
                "python": platform.python_version(),
            },
        },
        "input": _input_metadata(bundle),
        "metrics": bundle.metrics,
    }

    @app.get("/metadata", dependencies=_security_dependencies(), summary="Tasks, features, limits")
    async def meta() -> dict[str, Any]:
        return {**metadata, "limits": settings.public(), "batching": batcher.stats.to_dict()}

    public = set(PUBLIC_PATHS) | (set(DOCS_PATHS) if settings.docs else set())
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.token:
        app.add_middleware(BearerAuth, token=settings.token, public=public)
    app.state.bundle = bundle
    app.state.batcher = batcher
    app.state.settings = settings
    return app


def _input_metadata(bundle: Bundle) -> dict[str, Any]:
    """What a record holds: table features, or one image (its field, shape and layout)."""
    shape = bundle.model.image_shape
    if shape is None:
        return {"type": "table", "fields": list(bundle.preprocessor.feature_columns)}
    c, h, w = shape
    encoder = bundle.model.spec()["encoder"]
    return {
        "type": "image",
        "field": IMAGE_FIELD,
        "shape": [c, h, w],
        "layout": "CHW",
        "accepted_shapes": [[c, h, w], [h, w]] if c == 1 else [[c, h, w]],
        "values": "raw pixel values as in training (the model standardises them per channel)",
        "channel_mean": list(encoder["mean"]),
        "channel_std": list(encoder["std"]),
    }


def _lepton_version() -> str:
    from lepton import __version__

    return __version__

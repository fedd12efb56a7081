"""Request and response models of ``/predict``, built from a bundle's feature schema and tasks.

A record must hold every feature of the model: a numeric feature a finite number or ``null``
(missing: the training mean is used), a categorical feature a text, number, boolean or ``null``
(missing bucket; a value never seen in training uses the unknown bucket). Other fields are
allowed and ignored (the response names them in ``warnings``).

A record for an image model holds ``image``: raw pixel values as nested lists of shape
``(C, H, W)`` (or ``(H, W)`` when the model takes one channel), checked for shape and
finiteness while the request is validated.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from lepton.bundle import Bundle
from lepton.bundle._predictor import huge_integer_text
from lepton.data.images import record_image
from lepton.data.preprocess import Preprocessor
from lepton.errors import DataError

#: The field of a record that holds the image, for an image model.
IMAGE_FIELD = "image"
#: Largest image (in pixel values) whose example is put in the OpenAPI schema.
MAX_EXAMPLE_PIXELS = 1024
#: The validation error type of a request with more records than ``--max-records`` (a 413).
TOO_MANY_RECORDS = "too_many_records"


def _type_name(v: Any) -> str:
    return {
        str: "text",
        bool: "boolean",
        int: "integer",
        float: "number",
        list: "array",
        dict: "object",
    }.get(type(v), type(v).__name__)


def _numeric(v: Any) -> float | None:
    """A numeric feature's value as a float (``None`` for a missing one)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise PydanticCustomError(
            "number_type",
            "numeric feature: expected a number or null, got {got}",
            {"got": _type_name(v)},
        )
    try:
        f = float(v)
    except OverflowError:  # a JSON integer beyond the float range
        raise PydanticCustomError(
            "out_of_range",
            "numeric feature: {got} is too large for the model",
            {"got": huge_integer_text(v)},
        ) from None
    if not math.isfinite(f):
        raise PydanticCustomError(
            "finite_number", "numeric feature: expected a finite number, got {got}", {"got": v}
        )
    return f


def _categorical(v: Any) -> str | int | float | bool | None:
    if v is None or isinstance(v, str | bool | int):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise PydanticCustomError(
                "finite_number",
                "categorical feature: expected a finite number, got {got}",
                {"got": v},
            )
        return v
    raise PydanticCustomError(
        "category_type",
        "categorical feature: expected a text, number, boolean or null, got {got}",
        {"got": _type_name(v)},
    )


Numeric = Annotated[
    Any,
    PlainValidator(_numeric),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "null"}], "description": "numeric"}),
]
Categorical = Annotated[
    Any,
    PlainValidator(_categorical),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "number"},
                {"type": "boolean"},
                {"type": "null"},
            ],
            "description": "categorical",
        }
    ),
]


class ModelInfo(BaseModel):
    name: str
    version: str


class ClassPrediction(BaseModel):
    """A classification task: the predicted class (a list of labels for multilabel tasks) and
    the probability of each class or label."""

    label: Any
    probabilities: dict[str, float]


class ValuePrediction(BaseModel):
    """A regression task: the value in the target's units (a list for several targets)."""

    value: float | list[float]


def example_record(pre: Preprocessor) -> dict[str, Any]:
    """A plausible record: training means, and each category's first known value."""
    record: dict[str, Any] = {
        c: round(float(m), 3) for c, m in zip(pre.numeric, pre.means, strict=True)
    }
    for c in pre.categorical:
        vocab = pre.vocabularies[c]
        record[c] = vocab[0] if vocab else None
    return record


def _nested_array(sizes: tuple[int, ...]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "number"}
    for size in reversed(sizes):
        schema = {"type": "array", "items": schema, "minItems": size, "maxItems": size}
    return schema


def image_json_schema(shape: tuple[int, int, int]) -> dict[str, Any]:
    """JSON schema of a record's image: nested lists ``(C, H, W)`` (or ``(H, W)``, one channel)."""
    c, h, w = shape
    layouts = [_nested_array((c, h, w))] + ([_nested_array((h, w))] if c == 1 else [])
    text = f"({c}, {h}, {w}) (channels, height, width)" + (f" or ({h}, {w})" if c == 1 else "")
    return {
        "anyOf": layouts,
        "description": f"The image: raw pixel values as in training, nested lists {text}.",
    }


def _image_field(shape: tuple[int, int, int]) -> Any:
    def check(value: Any) -> Any:
        try:
            return record_image(value, shape)
        except DataError as e:
            raise PydanticCustomError("image", "{reason}", {"reason": str(e)}) from None

    return Annotated[Any, PlainValidator(check), WithJsonSchema(image_json_schema(shape))]


def example_image(bundle: Bundle) -> list[Any]:
    """An image of the model's shape holding each channel's training mean, as nested lists."""
    encoder = bundle.model.spec()["encoder"]
    c, h, w = encoder["shape"]
    return [[[round(float(m), 3)] * w for _ in range(h)] for m in encoder["mean"][:c]]


def example_input(bundle: Bundle) -> dict[str, Any]:
    """A plausible record for ``bundle``: :func:`example_record`, or an image record."""
    if bundle.model.image_shape is not None:
        return {IMAGE_FIELD: example_image(bundle)}
    return example_record(bundle.preprocessor)


def _record_type(bundle: Bundle) -> Any:
    pre = bundle.preprocessor
    shape = bundle.model.image_shape
    if shape is not None:
        fields: dict[str, Any] = {IMAGE_FIELD: _image_field(shape)}
    else:
        fields = {c: Numeric for c in pre.numeric}
        fields.update({c: Categorical for c in pre.categorical})
    record = TypedDict("Record", fields)  # type: ignore[operator]
    record.__pydantic_config__ = ConfigDict(extra="allow", title="Record")  # type: ignore[attr-defined]
    return record


def _request_examples(bundle: Bundle) -> list[dict[str, Any]]:
    shape = bundle.model.image_shape
    if shape is not None and shape[0] * shape[1] * shape[2] > MAX_EXAMPLE_PIXELS:
        return []  # an example this large would bloat /openapi.json
    return [{"records": [example_input(bundle)]}]


def _record_count_check(limit: int) -> Any:
    """A validator of ``records`` that refuses more than ``limit`` before any is validated."""

    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > limit:
            raise PydanticCustomError(
                TOO_MANY_RECORDS,
                "{count} records exceed the limit of {limit} per request (--max-records)",
                {"count": len(value), "limit": limit},
            )
        return value

    return BeforeValidator(check)


def build_models(
    bundle: Bundle, max_records: int | None = None
) -> tuple[type[BaseModel], type[BaseModel]]:
    """``(PredictRequest, PredictResponse)`` for ``bundle``.

    With ``max_records``, a request holding more records fails validation with the error type
    :data:`TOO_MANY_RECORDS` (the service answers 413), counted before any record is validated.
    """
    record = _record_type(bundle)
    records_type: Any = list[record]
    if max_records is not None:
        records_type = Annotated[list[record], _record_count_check(max_records)]
    image = bundle.model.image_shape is not None
    examples = _request_examples(bundle)
    names = tuple(t.name for t in bundle.tasks)
    task_name = Literal[names]  # type: ignore[valid-type]
    request = create_model(
        "PredictRequest",
        __config__=ConfigDict(
            extra="forbid",
            json_schema_extra={"examples": examples} if examples else None,
        ),
        records=(
            records_type,
            Field(
                min_length=1,
                max_length=max_records,
                description=(
                    "One object per record holding the image under 'image'; other fields are "
                    "ignored."
                    if image
                    else "One object per record with every feature of the model "
                    "(null for a missing value); other fields are ignored."
                ),
            ),
        ),
        tasks=(
            list[task_name] | None,
            Field(None, min_length=1, description="Tasks to predict (default: all)."),
        ),
    )
    per_task = {
        t.name: ValuePrediction if t.kind == "regression" else ClassPrediction for t in bundle.tasks
    }
    record_prediction = TypedDict("RecordPrediction", per_task, total=False)  # type: ignore[operator]
    response = create_model(
        "PredictResponse",
        predictions=(
            list[record_prediction],
            Field(description="One object per record, in order: the requested tasks."),
        ),
        model=(ModelInfo, ...),
        warnings=(
            list[str],
            Field(description="Ignored fields and unseen categories, each named once."),
        ),
    )
    return request, response

"""Render the configuration reference (docs/configuration.md) from the pydantic models.

``python -m lepton._docgen > docs/configuration.md``; a test keeps the file in sync.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from lepton.config import Config

HEADER = """# Configuration reference

Generated from the pydantic models in `src/lepton/config.py` (`make docs`). Every field can be
set in the YAML file or overridden with `--set section.field=value`; unknown keys and wrong
types are errors naming the field path. `model` and `balancer` also take the chosen
architecture's or method's own hyperparameters as extra keys (see docs/architectures.md and
docs/balancers.md).
"""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " \\| ".join(repr(a).replace("'", "`") for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "section"
    return getattr(tp, "__name__", str(tp))


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{value!r}`".replace("'", "")


def _models_in(tp: Any, name: str) -> list[tuple[str, type[BaseModel]]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [(name, tp)]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return [m for a in args for m in _models_in(a, name)]
    if origin is dict and len(args) == 2:
        return _models_in(args[1], f"{name}.<name>")
    return []


def _section(name: str, model: type[BaseModel], out: list[str]) -> None:
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    out += [
        f"## `{name}`",
        "",
        doc,
        "",
        "| field | type | default | meaning |",
        "|---|---|---|---|",
    ]
    nested: list[tuple[str, type[BaseModel]]] = []
    for fname, field in model.model_fields.items():
        tp = field.annotation
        desc = (field.description or "").replace("|", "\\|")
        out.append(f"| `{fname}` | {_type_name(tp)} | {_default(field)} | {desc} |")
        nested += _models_in(tp, f"{name}.{fname}")
    out.append("")
    for sub_name, sub_model in nested:
        _section(sub_name, sub_model, out)


def reference_markdown() -> str:
    """The whole reference page."""
    out = [HEADER]
    for name, field in Config.model_fields.items():
        for sub_name, model in _models_in(field.annotation, name):
            _section(sub_name, model, out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")

"""JSON Schemas of event classes that never fail.

Pydantic refuses to describe a field whose type JSON Schema cannot express (a plain
class an event carries in-process). The server's ``/schema`` and the graph still need
an answer: such a field gets an open schema whose description names the type.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from stepstream._text import error_text, safe_text

__all__ = ["event_schema"]


class _Lenient(GenerateJsonSchema):
    """Pydantic's generator, with an open schema where it would raise."""

    def handle_invalid_for_json_schema(
        self, schema: core_schema.CoreSchema, error_info: str
    ) -> JsonSchemaValue:
        return {"description": f"not describable in JSON Schema: {safe_text(error_info)}"}


def event_schema(cls: type[BaseModel]) -> dict[str, Any]:
    """``cls.model_json_schema()``; a field it cannot describe gets an open schema."""
    try:
        return cls.model_json_schema(schema_generator=_Lenient)
    except Exception as exc:  # noqa: BLE001 - a schema is documentation: never a failure
        return {
            "title": cls.__name__,
            "type": "object",
            "description": f"no JSON Schema could be made: {error_text(exc)}",
        }

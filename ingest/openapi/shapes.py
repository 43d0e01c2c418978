"""Small builders for the JSON Schemas of the document (OpenAPI 3.1 uses JSON Schema 2020-12)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
TIMESTAMP: Schema = {"type": "integer", "description": "Unix seconds."}
RFC3339: Schema = {"type": "string", "description": "An RFC 3339 time, UTC."}
STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
ANY_OBJECT: Schema = {"type": "object"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """``schema`` or ``null``."""
    kind = schema.get("type")
    if isinstance(kind, str) and "$ref" not in schema:
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def const(value: str | bool) -> Schema:
    return {"const": value}


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def text(max_length: int, *, min_length: int = 0) -> Schema:
    schema: Schema = {"type": "string", "maxLength": max_length}
    if min_length:
        schema["minLength"] = min_length
    return schema


def shape(properties: dict[str, Schema], *, optional: Iterable[str] = ()) -> Schema:
    """An object answered by the API: every property present unless named ``optional``; more
    properties may follow (Stripe adds fields without a new version)."""
    left_out = set(optional)
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in left_out],
    }


def params(properties: dict[str, Schema], *, required: Iterable[str] = ()) -> Schema:
    """A request's parameters: only those named here are taken."""
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    needed = list(required)
    if needed:
        schema["required"] = needed
    return schema


def v1_list(item: Schema) -> Schema:
    """Stripe's v1 ``list`` object around one page."""
    return shape(
        {
            "object": const("list"),
            "data": array(item),
            "has_more": BOOLEAN,
            "url": STRING,
        }
    )

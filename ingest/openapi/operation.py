"""What the document says about one route: its summary, parameters and answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ingest.openapi.shapes import INTEGER, STRING, Schema, params, text

# v1: Stripe's v1 conventions (form or JSON bodies, the v1 error shape); v2: JSON bodies and the
# v2 error shape; public: no key (operational endpoints, the stream with its session token).
Style = Literal["v1", "v2", "public", "stream"]


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    response: str  # a component schema name, or "text" for a plain-text answer
    style: Style = "v1"
    query: Schema | None = None  # query parameters, as an object schema of flat names
    body: Schema | None = None  # the request body's parameters
    description: str = ""


MAX_ID = 255
PAGE: dict[str, Schema] = {
    "limit": {**INTEGER, "minimum": 1, "maximum": 100},
    "starting_after": text(MAX_ID),
    "ending_before": text(MAX_ID),
}
CREATED: dict[str, Schema] = {
    "created": {**INTEGER, "minimum": 0},
    "created[gt]": {**INTEGER, "minimum": 0},
    "created[gte]": {**INTEGER, "minimum": 0},
    "created[lt]": {**INTEGER, "minimum": 0},
    "created[lte]": {**INTEGER, "minimum": 0},
}
METADATA: Schema = {
    "type": "object",
    "maxProperties": 50,
    "propertyNames": {"maxLength": 40},
    "additionalProperties": text(500),
}
NO_PARAMS = params({})


def page_query(extra: dict[str, Schema] | None = None) -> Schema:
    """A v1 list's query: the page parameters and ``extra`` filters."""
    return params({**PAGE, **(extra or {})})


def ids(*names: str) -> dict[str, Schema]:
    return {name: text(MAX_ID) for name in names}


ID: Schema = STRING

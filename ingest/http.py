"""Request and response values for the HTTP edge, independent of the ASGI plumbing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ingest.forms import decode_json_object, decode_urlencoded
from meterflow.errors import ApiError, InvalidRequest, UnsupportedMediaType

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: bytes
    headers: dict[str, str]
    body: bytes
    request_id: str
    path_params: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def params(self) -> dict[str, Any]:
        """Query parameters merged with a form or JSON body; a name given in both is an error."""
        params = decode_urlencoded(self.query)
        if not self.body:
            return params
        media_type = (self.header("content-type") or "").partition(";")[0].strip().lower()
        if media_type == JSON:
            body_params = decode_json_object(self.body)
        elif media_type in (FORM, ""):
            body_params = decode_urlencoded(self.body)
        else:
            raise UnsupportedMediaType(
                f"Unsupported Content-Type {media_type!r}: send {FORM} or {JSON}."
            )
        if not params:
            return body_params
        # Same duplicate rule as within one source.
        for key in body_params:
            if key in params:
                raise InvalidRequest(f"Parameter {key!r} is given more than once.", param=key)
        params.update(body_params)
        return params


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status=status, body=orjson.dumps(payload))


def error_response(error: ApiError) -> Response:
    response = json_response(error.body(), error.status)
    response.headers.extend((k.lower().encode(), v.encode()) for k, v in error.headers.items())
    return response

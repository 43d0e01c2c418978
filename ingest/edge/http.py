"""Request and response values for the HTTP edge, independent of the ASGI plumbing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ingest.edge.errors import ApiError, InvalidRequest, UnsupportedMediaType
from ingest.edge.forms import decode_json_object, decode_urlencoded

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

    def json_params(self) -> dict[str, Any]:
        """A v2 request's parameters: a JSON object body, and nothing in the query string."""
        if self.query:
            raise InvalidRequest(
                "The v2 API takes parameters only in a JSON request body, not in the query string."
            )
        if not self.body.strip():
            return {}
        media_type = (self.header("content-type") or "").partition(";")[0].strip().lower()
        if media_type != JSON:
            raise UnsupportedMediaType(
                f"The v2 API takes JSON request bodies: send Content-Type {JSON}, "
                f"not {media_type or 'none'!r}."
            )
        return decode_json_object(self.body)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status=status, body=orjson.dumps(payload))


# v2 errors always carry a code; these stand in for errors that have no specific one.
_V2_FALLBACK_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    404: "not_found",
    408: "request_timeout",
    413: "request_too_large",
    414: "request_line_too_long",
    415: "unsupported_media_type",
    429: "rate_limited",
    431: "request_headers_too_large",
    500: "internal_error",
    503: "service_unavailable",
}


def error_response(error: ApiError) -> Response:
    """A v1 error: ``{"error": {"type", "code", "message", "param"}}``."""
    return _with_headers(json_response(error.body(), error.status), error)


def error_response_v2(error: ApiError) -> Response:
    """A v2 error: ``{"error": {"type", "code", "message"}}``, ``code`` always present."""
    code = error.v2_code or error.code or _V2_FALLBACK_CODES.get(error.status, "invalid_request")
    body = {"error": {"type": error.error_type, "code": code, "message": error.message}}
    return _with_headers(json_response(body, error.status), error)


def _with_headers(response: Response, error: ApiError) -> Response:
    response.headers.extend((k.lower().encode(), v.encode()) for k, v in error.headers.items())
    return response

"""Building the OpenAPI document from the router's routes and their descriptions."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ingest.edge.routing import Route
from ingest.openapi.billing_objects import BILLING
from ingest.openapi.objects import ERRORS, EVENTS, METERING, OPERATIONAL, WEBHOOKS_AND_ALERTS
from ingest.openapi.operation import MAX_ID, Operation
from ingest.openapi.operations import OPERATIONS
from ingest.openapi.replay_objects import REPLAY_OBJECTS
from ingest.openapi.shapes import Schema, ref, text
from meterflow.errors import MeterflowError

OPENAPI_VERSION = "3.1.0"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
_PATH_PARAMETER = re.compile(r"\{(\w+)\}")
SCHEMAS: dict[str, Schema] = {**ERRORS, **METERING, **EVENTS, **WEBHOOKS_AND_ALERTS, **BILLING,
                              **OPERATIONAL, **REPLAY_OBJECTS}  # fmt: skip
SECURITY_SCHEMES: dict[str, Schema] = {
    "secretKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An sk_test_… or sk_live_… key as the bearer token.",
    },
    "secretKeyBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "The key as the Basic user name, with an empty password.",
    },
    "meterEventSession": {
        "type": "http",
        "scheme": "bearer",
        "description": "A meter event session's authentication_token.",
    },
}


class UndescribedRoutes(MeterflowError):
    """Routes the document has no description for (or descriptions of no route)."""


def check_described(
    routes: Iterable[Route], operations: Mapping[tuple[str, str], Operation] = OPERATIONS
) -> None:
    """Raise unless every route has a description and every description a route."""
    served = {(route.method, route.template) for route in routes}
    missing = sorted(served - operations.keys())
    stale = sorted(operations.keys() - served)
    if missing or stale:
        raise UndescribedRoutes(
            f"routes without an OpenAPI description: {missing}; descriptions without a route: "
            f"{stale} (see ingest/openapi/operations.py)"
        )


def build_document(
    routes: Iterable[Route], operations: Mapping[tuple[str, str], Operation] = OPERATIONS
) -> dict[str, Any]:
    """The document for ``routes``, in the router's order."""
    routes = list(routes)
    check_described(routes, operations)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation = operations[(route.method, route.template)]
        paths.setdefault(route.template, {})[route.method.lower()] = _operation(route, operation)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "meterflow",
            "version": _meterflow_version(),
            "description": (
                "Usage metering and billing that speaks Stripe's wire format. v1 endpoints take "
                "form-encoded or JSON parameters and answer errors as "
                '{"error": {"type", "code", "message", "param"}}; v2 endpoints take JSON and '
                'answer {"error": {"type", "code", "message"}}, with not_found for an unknown '
                "object. A method a path does not serve answers 404 like an unknown URL."
            ),
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": SECURITY_SCHEMES},
        "security": [{"secretKey": []}, {"secretKeyBasic": []}],
    }


def _operation(route: Route, operation: Operation) -> dict[str, Any]:
    error = ref("V2Error" if route.template.startswith("/v2/") else "Error")
    answer: dict[str, Any] = {
        "operationId": _operation_id(route),
        "summary": operation.summary,
        "parameters": [*_path_parameters(route.template), *_query_parameters(operation.query)],
        "responses": {
            "200": _ok(operation.response),
            "4XX": {"description": "A client error", "content": {JSON: {"schema": error}}},
            "5XX": {"description": "A server error", "content": {JSON: {"schema": error}}},
        },
    }
    if operation.description:
        answer["description"] = operation.description
    if operation.body is not None:
        media = (JSON,) if operation.style in ("v2", "stream") else (FORM, JSON)
        answer["requestBody"] = {
            "required": bool(operation.body.get("required")),
            "content": {m: {"schema": operation.body} for m in media},
        }
    if operation.style == "public":
        answer["security"] = []
    elif operation.style == "stream":
        answer["security"] = [{"meterEventSession": []}]
    return answer


def _ok(response: str) -> dict[str, Any]:
    if response == "text":
        return {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {"description": "OK", "content": {JSON: {"schema": ref(response)}}}


def _path_parameters(template: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": text(MAX_ID, min_length=1)}
        for name in _PATH_PARAMETER.findall(template)
    ]


def _query_parameters(query: Schema | None) -> list[dict[str, Any]]:
    if query is None:
        return []
    required = set(query.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": schema}
        for name, schema in query["properties"].items()
    ]


def _operation_id(route: Route) -> str:
    words = re.sub(r"[^a-z0-9]+", "_", route.template.lower()).strip("_")
    return f"{route.method.lower()}_{words}"


def _meterflow_version() -> str:
    try:
        return version("meterflow")
    except PackageNotFoundError:
        return "0.0.0"

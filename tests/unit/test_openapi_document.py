"""The OpenAPI document covers exactly the routes ingest serves. The routes are the app's own,
assembled by its startup with the database pool and the session keys faked (no I/O), so a route
added without a description fails here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from ingest.app import IngestApp
from ingest.edge.auth import Principal
from ingest.edge.http import Request, Response, json_response
from ingest.edge.routing import Route
from ingest.openapi.document import SCHEMAS, UndescribedRoutes, build_document, check_described
from ingest.openapi.operations import OPERATIONS
from ingest.stream.sessions import SessionAuthority
from meterflow.settings import Settings


class _FakePool:
    def get_size(self) -> int:
        return 0

    def get_idle_size(self) -> int:
        return 0

    def get_max_size(self) -> int:
        return 0

    async def close(self) -> None:
        return None


@pytest.fixture
async def served_routes(monkeypatch: pytest.MonkeyPatch) -> list[Route]:
    async def create_pool(*_args: object, **_kwargs: object) -> _FakePool:
        return _FakePool()

    async def load_keys(_self: SessionAuthority) -> None:
        return None

    monkeypatch.setattr(asyncpg, "create_pool", create_pool)
    monkeypatch.setattr(SessionAuthority, "load_keys", load_keys)
    settings = Settings().with_overrides(
        database_url="postgresql://unused@127.0.0.1:9/none", kafka_bootstrap_servers=""
    )
    app = IngestApp(settings, CollectorRegistry())
    await app.startup()
    routes = app.routes
    await app.shutdown()
    assert len(routes) > 50
    return routes


def test_every_served_route_has_a_description(served_routes: list[Route]) -> None:
    check_described(served_routes)
    assert ("GET", "/openapi.json") in {(r.method, r.template) for r in served_routes}


def test_the_document_has_each_route_with_parameters_and_answers(
    served_routes: list[Route],
) -> None:
    document = build_document(served_routes)
    assert document["openapi"] == "3.1.0"
    listed = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert listed == {(r.method, r.template) for r in served_routes}
    for route in served_routes:
        operation = document["paths"][route.template][route.method.lower()]
        assert operation["summary"], route
        path_names = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert path_names == set(re.findall(r"\{(\w+)\}", route.template))
        responses = operation["responses"]
        assert set(responses) == {"200", "4XX", "5XX"}
        error = responses["4XX"]["content"]["application/json"]["schema"]["$ref"]
        v2 = route.template.startswith("/v2/")
        assert error.endswith("/V2Error" if v2 else "/Error"), route
        if route.method == "POST":
            assert "requestBody" in operation, route
            media = set(operation["requestBody"]["content"])
            assert media == ({"application/json"} if v2 else {"application/json", _FORM})
        if not route.authenticated:
            assert operation["security"] in ([], [{"meterEventSession": []}]), route


_FORM = "application/x-www-form-urlencoded"


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def test_every_reference_resolves(served_routes: list[Route]) -> None:
    document = build_document(served_routes)
    names = {ref.removeprefix("#/components/schemas/") for ref in _refs(document)}
    assert names <= set(SCHEMAS)
    assert {op.response for op in OPERATIONS.values()} - {"text"} <= set(SCHEMAS)


def test_v2_events_have_no_nullable_optional_fields() -> None:
    event = SCHEMAS["V2Event"]
    assert set(event["required"]) == {"id", "object", "type", "created", "livemode", "data"}
    for name in ("context", "reason", "related_object"):
        kind = event["properties"][name]["type"]
        assert kind != "null"
        assert not isinstance(kind, list), name


async def _handler(_request: Request, _who: Principal) -> Response:
    return json_response({})


def test_a_route_without_a_description_is_refused() -> None:
    undescribed = Route("GET", "/v1/unheard_of", _handler)
    with pytest.raises(UndescribedRoutes, match="unheard_of"):
        check_described([undescribed])
    with pytest.raises(UndescribedRoutes):
        build_document([undescribed])

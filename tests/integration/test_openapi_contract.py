"""meterflow's own OpenAPI document against a real ingest (PostgreSQL, Kafka): ``/openapi.json``
is served without a key, and schemathesis sends every operation a bounded number of generated
requests. No answer may be a 5xx, and each must match its documented status, media type and
schema."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import AccountFactory
from tests.fixtures.meter_events_http import auth, create_meter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Generated requests per operation: about 80 operations, so a few hundred requests in all, well
# under a minute on two cores. derandomize keeps every run the same.
MAX_EXAMPLES = 6
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
STREAM = "/v2/billing/meter_event_stream"
REVOKE = "/v2/billing/meter_event_session/revoke"


async def test_the_document_is_served_without_a_key(http: httpx.AsyncClient) -> None:
    response = await http.get("/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert "post" in document["paths"]["/v1/billing/meters"]
    assert document["paths"]["/v2/core/events/{id}"]["get"]["summary"]


def _contract_failures(
    base_url: str, headers_for: Callable[[str], dict[str, str]], known: dict[str, str]
) -> list[str]:
    """Run every operation's generated cases: once with generated path ids, and once more on
    an object the test made, where the path names one; the failures, one line each."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # a part of the document schemathesis cannot read
            raise result.err()
        operations.append(result.ok())
    # Revoking sessions would leave the stream nothing to authenticate with: it goes last.
    operations.sort(key=lambda op: op.path == REVOKE)
    failures: list[str] = []
    for operation in operations:
        strategies = [operation.as_strategy()]
        object_id = known.get(operation.path.split("/{id}", 1)[0])
        if "{id}" in operation.path and object_id is not None:
            strategies.append(operation.as_strategy(path_parameters={"id": object_id}))
        for strategy in strategies:
            try:
                _run_operation(strategy, headers_for(operation.path))
            # Every operation runs; each failure is listed (schemathesis raises a group).
            except (Exception, FailureGroup) as exc:
                failures.append(f"{operation.label}: {type(exc).__name__}: {exc}"[:3000])
    return failures


def _run_operation(strategy: Any, headers: dict[str, str]) -> None:
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=10)

    test: Callable[[], None] = run
    test()


async def _made(http: httpx.AsyncClient, key: str, path: str, form: dict[str, str]) -> Any:
    response = await http.post(path, data=form, headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


async def _objects(http: httpx.AsyncClient, key: str) -> dict[str, str]:
    """One object of each kind, by the path its id follows."""
    meter = await create_meter(http, key)
    customer = await _made(http, key, "/v1/customers", {"name": "Jenny Rosen"})
    price = await _made(
        http,
        key,
        "/v1/prices",
        {
            "currency": "usd",
            "unit_amount": "4",
            "recurring[interval]": "month",
            "recurring[usage_type]": "metered",
            "recurring[meter]": meter["id"],
            "product_data[name]": "Tokens",
        },
    )
    subscription = await _made(
        http, key, "/v1/subscriptions", {"customer": customer["id"], "items[0][price]": price["id"]}
    )
    endpoint = await _made(
        http,
        key,
        "/v1/webhook_endpoints",
        {"url": "https://example.com/hook", "enabled_events[0]": "*"},
    )
    alert = await _made(
        http,
        key,
        "/v1/billing/alerts",
        {
            "alert_type": "usage_threshold",
            "title": "Over 100",
            "usage_threshold[gte]": "100",
            "usage_threshold[meter]": meter["id"],
            "usage_threshold[recurrence]": "one_time",
        },
    )
    grant = await _made(
        http,
        key,
        "/v1/billing/credit_grants",
        {
            "customer": customer["id"],
            "amount[type]": "monetary",
            "amount[monetary][currency]": "usd",
            "amount[monetary][value]": "1000",
            "applicability_config[scope][price_type]": "metered",
            "category": "paid",
        },
    )
    events = await http.get("/v1/events", headers=auth(key))
    return {
        "/v1/billing/meters": meter["id"],
        "/v1/customers": customer["id"],
        "/v1/prices": price["id"],
        "/v1/products": price["product"],
        "/v1/subscriptions": subscription["id"],
        "/v1/subscription_items": subscription["items"]["data"][0]["id"],
        "/v1/webhook_endpoints": endpoint["id"],
        "/v1/billing/alerts": alert["id"],
        "/v1/billing/credit_grants": grant["id"],
        "/v1/events": events.json()["data"][0]["id"],
    }


async def test_every_operation_answers_as_documented(
    ingest_url: str, http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    known = await _objects(http, key)
    session = await http.post("/v2/billing/meter_event_session", json={}, headers=auth(key))
    assert session.status_code == 200, session.text
    token = session.json()["authentication_token"]

    def headers_for(path: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token if path == STREAM else key}"}

    failures = await asyncio.to_thread(_contract_failures, ingest_url, headers_for, known)
    assert failures == [], "\n".join(failures)

"""A meter's changes announce ``billing.meter.created``, ``updated``, ``deactivated`` and
``reactivated``: listed by ``GET /v1/events`` and queued for the endpoints listening to them, in
the change's own transaction."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import AccountFactory
from tests.fixtures.meter_events_http import auth, create_meter, v1_error

pytestmark = pytest.mark.integration

METERS = "/v1/billing/meters"


async def _events(http: httpx.AsyncClient, key: str) -> list[dict[str, Any]]:
    response = await http.get("/v1/events", params={"limit": "100"}, headers=auth(key))
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    return events[::-1]  # oldest first


async def _post(http: httpx.AsyncClient, key: str, path: str, **form: str) -> dict[str, Any]:
    response = await http.post(path, data=form, headers=auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_each_meter_change_announces_its_event(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    key = (await make_account()).secret_key
    endpoint = await _post(
        http,
        key,
        "/v1/webhook_endpoints",
        url="https://example.com/hook",
        **{"enabled_events[0]": "billing.meter.deactivated", "enabled_events[1]": "*"},
    )
    only_created = await _post(
        http,
        key,
        "/v1/webhook_endpoints",
        url="https://example.com/created",
        **{"enabled_events[0]": "billing.meter.created"},
    )
    meter = await create_meter(http, key)
    path = f"{METERS}/{meter['id']}"
    renamed = await _post(http, key, path, display_name="Alpaca tokens")
    deactivated = await _post(http, key, f"{path}/deactivate")
    await _post(http, key, f"{path}/deactivate")  # already inactive: nothing changes
    reactivated = await _post(http, key, f"{path}/reactivate")
    await _post(http, key, f"{path}/reactivate")  # already active: nothing changes

    events = await _events(http, key)
    assert [e["type"] for e in events] == [
        "billing.meter.created",
        "billing.meter.updated",
        "billing.meter.deactivated",
        "billing.meter.reactivated",
    ]
    created, updated, off, on = events
    assert created["data"] == {"object": meter}
    assert updated["data"]["object"] == renamed
    assert updated["data"]["previous_attributes"]["display_name"] == "Alpaca AI tokens"
    assert set(updated["data"]["previous_attributes"]) <= {"display_name", "updated"}
    assert off["data"] == {"object": deactivated}
    assert off["data"]["object"]["status"] == "inactive"
    assert on["data"] == {"object": reactivated}
    assert on["data"]["object"]["status_transitions"] == {"deactivated_at": None}
    for event in events:
        assert (event["object"], event["livemode"]) == ("event", False)
        assert event["api_version"]
        assert event["data"]["object"]["id"] == meter["id"]
        one = await http.get(f"/v1/events/{event['id']}", headers=auth(key))
        assert one.json()["type"] == event["type"]

    conn = await asyncpg.connect(database_url)
    try:
        queued = await conn.fetch(
            "SELECT endpoint_id, event_id, event_type FROM webhook_deliveries ORDER BY id"
        )
    finally:
        await conn.close()
    by_endpoint: dict[str, list[str]] = {}
    for row in queued:
        by_endpoint.setdefault(row["endpoint_id"], []).append(row["event_type"])
    assert by_endpoint == {
        endpoint["id"]: [e["type"] for e in events],
        only_created["id"]: ["billing.meter.created"],
    }


async def test_a_refused_change_announces_nothing(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    account = await make_account()
    key = account.secret_key
    await create_meter(http, key)
    # The second meter with the same event name is refused: its insert and its event roll back.
    taken = await http.post(
        METERS,
        data={
            "display_name": "again",
            "event_name": "alpaca_ai_tokens",
            "default_aggregation[formula]": "sum",
        },
        headers=auth(key),
    )
    assert v1_error(taken, 400)["code"] == "resource_already_exists"
    unknown = await http.post(f"{METERS}/mtr_test_nope/deactivate", headers=auth(key))
    v1_error(unknown, 404)
    assert [e["type"] for e in await _events(http, key)] == ["billing.meter.created"]
    other = (await make_account("other")).secret_key
    assert await _events(http, other) == []


async def test_endpoints_accept_the_meter_event_types(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    types = [
        "billing.meter.created",
        "billing.meter.updated",
        "billing.meter.deactivated",
        "billing.meter.reactivated",
    ]
    form = {f"enabled_events[{i}]": t for i, t in enumerate(types)}
    endpoint = await _post(http, key, "/v1/webhook_endpoints", url="https://example.com/h", **form)
    assert endpoint["enabled_events"] == types

"""``GET /v1/events`` and ``GET /v1/events/:id`` over real HTTP, on ``billing.alert.triggered``
events written straight into ``v1_events`` as the evaluator writes them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from meterflow.alerts import ALERT_COLUMNS, alert_from_row, alert_triggered_event
from meterflow.v1_events import new_v1_event_id
from tests.conftest import AccountFactory
from tests.fixtures.meter_events_http import auth, create_meter, v1_error

pytestmark = pytest.mark.integration

EVENTS = "/v1/events"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def _alert_id(http: httpx.AsyncClient, key: str) -> str:
    meter = await create_meter(http, key)
    response = await http.post(
        "/v1/billing/alerts",
        data={
            "alert_type": "usage_threshold",
            "title": "Over 100",
            "usage_threshold[gte]": "100",
            "usage_threshold[meter]": meter["id"],
            "usage_threshold[recurrence]": "one_time",
        },
        headers=auth(key),
    )
    assert response.status_code == 200, response.text
    alert_id: str = response.json()["id"]
    return alert_id


async def insert_event(
    pool: asyncpg.Pool,
    alert_id: str,
    customer: str,
    value: int,
    created_s: int,
    *,
    event_type: str | None = None,
) -> dict[str, Any]:
    """Store a firing's event as the evaluator does; ``event_type`` relabels it for filters."""
    row = await pool.fetchrow(f"SELECT {ALERT_COLUMNS} FROM billing_alerts WHERE id = $1", alert_id)
    assert row is not None
    alert = alert_from_row(dict(row))
    event = alert_triggered_event(
        event_id=new_v1_event_id(), alert=alert, customer=customer, value=value, created=created_s
    )
    if event_type is not None:
        event["type"] = event_type
    await pool.execute(
        """INSERT INTO v1_events (id, account_id, livemode, type, created, body, published)
           VALUES ($1, $2, $3, $4, $5, $6::json, true)""",
        event["id"],
        alert.account_id,
        alert.livemode,
        event["type"],
        created_s,
        orjson.dumps(event).decode(),
    )
    return event


async def _endpoint(http: httpx.AsyncClient, key: str) -> str:
    response = await http.post(
        "/v1/webhook_endpoints",
        data={"url": "https://example.com/hook", "enabled_events[]": "*"},
        headers=auth(key),
    )
    assert response.status_code == 200, response.text
    endpoint_id: str = response.json()["id"]
    return endpoint_id


async def _delivery(
    pool: asyncpg.Pool, endpoint_id: str, event: dict[str, Any], status: str
) -> None:
    now_ms = int(time.time() * 1000)
    await pool.execute(
        """INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, body, status,
               next_attempt_ms, created_ms)
           VALUES ($1, $2, $3, $4, $5, $6, $6)""",
        endpoint_id,
        event["id"],
        event["type"],
        orjson.dumps(event).decode(),
        status,
        now_ms,
    )


async def test_list_and_retrieve_with_live_pending_webhooks(
    http: httpx.AsyncClient, make_account: AccountFactory, pool: asyncpg.Pool
) -> None:
    key = (await make_account()).secret_key
    alert_id = await _alert_id(http, key)
    now_s = int(time.time())
    first = await insert_event(pool, alert_id, "cus_1", 120, now_s - 20)
    second = await insert_event(pool, alert_id, "cus_2", 101, now_s - 10)
    hook_a, hook_b = await _endpoint(http, key), await _endpoint(http, key)
    await _delivery(pool, hook_a, second, "pending")
    await _delivery(pool, hook_b, second, "pending")
    await _delivery(pool, hook_a, first, "succeeded")
    await _delivery(pool, hook_b, first, "pending")

    response = await http.get(EVENTS, headers=auth(key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["object"], body["url"], body["has_more"]) == ("list", EVENTS, False)
    *alerts, meter_created = body["data"]  # creating the alert's meter announced it first
    assert alerts == [{**second, "pending_webhooks": 2}, {**first, "pending_webhooks": 1}]
    assert meter_created["type"] == "billing.meter.created"
    triggered = body["data"][0]["data"]["object"]
    assert triggered["object"] == "billing.alert_triggered"
    assert (triggered["alert"]["id"], triggered["customer"], triggered["value"]) == (
        alert_id,
        "cus_2",
        101,
    )

    one = await http.get(f"{EVENTS}/{first['id']}", headers=auth(key))
    assert one.json() == {**first, "pending_webhooks": 1}
    # A delivery that completes leaves the count; the stored body is untouched.
    await pool.execute(
        "UPDATE webhook_deliveries SET status = 'succeeded' WHERE event_id = $1", first["id"]
    )
    assert (await http.get(f"{EVENTS}/{first['id']}", headers=auth(key))).json() == first
    missing = await http.get(f"{EVENTS}/evt_nope", headers=auth(key))
    assert v1_error(missing, 404)["code"] == "resource_missing"
    nul = await http.get(f"{EVENTS}/evt%00", headers=auth(key))  # no id can hold a NUL
    assert v1_error(nul, 404)["message"].startswith("Unrecognized request URL")


async def test_filters_and_pagination(
    http: httpx.AsyncClient, make_account: AccountFactory, pool: asyncpg.Pool
) -> None:
    key = (await make_account()).secret_key
    alert_id = await _alert_id(http, key)
    base_s = int(time.time()) - 1000
    events = [await insert_event(pool, alert_id, f"cus_{n}", 100 + n, base_s + n * 10)
              for n in range(4)]  # fmt: skip
    other = await insert_event(pool, alert_id, "cus_x", 1, base_s + 50, event_type="other.type")
    e0, e1, e2, e3 = (e["id"] for e in events)
    meter_listed = await http.get(
        EVENTS, params={"type": "billing.meter.created"}, headers=auth(key)
    )
    (meter_created,) = (e["id"] for e in meter_listed.json()["data"])  # stored first, created now

    async def ids(params: httpx.QueryParams | dict[str, str]) -> tuple[list[str], bool]:
        response = await http.get(EVENTS, params=params, headers=auth(key))
        assert response.status_code == 200, response.text
        return [e["id"] for e in response.json()["data"]], response.json()["has_more"]

    assert await ids({}) == ([other["id"], e3, e2, e1, e0, meter_created], False)
    assert await ids({"type": "billing.alert.triggered"}) == ([e3, e2, e1, e0], False)
    assert await ids({"type": "billing.alert"}) == ([], False)  # exact, no prefix matching
    assert await ids(
        httpx.QueryParams([("types[]", "other.type"), ("types[]", "billing.alert.triggered")])
    ) == (
        [other["id"], e3, e2, e1, e0],
        False,
    )
    assert await ids({"type": "billing.alert.triggered", "limit": "2"}) == ([e3, e2], True)
    assert await ids({"type": "billing.alert.triggered", "limit": "2", "starting_after": e2}) == (
        [e1, e0],
        False,
    )
    assert await ids({"limit": "1", "ending_before": e1}) == ([e2], True)
    assert await ids({"created[gte]": str(base_s + 10), "created[lt]": str(base_s + 30)}) == (
        [e2, e1],
        False,
    )
    assert await ids({"created": str(base_s + 30)}) == ([e3], False)
    assert await ids({"created[gt]": str(base_s + 30)}) == ([other["id"], meter_created], False)

    for params, param in (
        ({"type": "a", "types[]": "b"}, "types"),
        ({"limit": "101"}, "limit"),
        ({"created[gte]": "yesterday"}, "created[gte]"),
        ({"created[between]": "1"}, "created[between]"),
        ({"created": "1.5"}, "created"),
        ({"starting_after": "a", "ending_before": "b"}, "ending_before"),
        ({"delivery_success": "true"}, "delivery_success"),
        ({"expand[]": "data.request"}, "expand"),
    ):
        error = v1_error(await http.get(EVENTS, params=params, headers=auth(key)), 400)
        assert error["param"] == param, params
    cursor = await http.get(EVENTS, params={"starting_after": "evt_nope"}, headers=auth(key))
    assert v1_error(cursor, 404)["param"] == "starting_after"


async def test_other_accounts_and_modes_see_none_of_it(
    http: httpx.AsyncClient, make_account: AccountFactory, pool: asyncpg.Pool
) -> None:
    key = (await make_account()).secret_key
    event = await insert_event(pool, await _alert_id(http, key), "cus_1", 500, int(time.time()))
    for other in ((await make_account("other")).secret_key,
                  (await make_account("live", livemode=True)).secret_key):  # fmt: skip
        assert (await http.get(EVENTS, headers=auth(other))).json()["data"] == []
        one = await http.get(f"{EVENTS}/{event['id']}", headers=auth(other))
        assert v1_error(one, 404)["param"] == "id"
        cursor = await http.get(EVENTS, params={"ending_before": event["id"]}, headers=auth(other))
        v1_error(cursor, 404)
    mine = (await http.get(EVENTS, headers=auth(key))).json()["data"]
    assert [e["id"] for e in mine] == [event["id"], mine[1]["id"]]
    assert (mine[0], mine[1]["type"]) == (event, "billing.meter.created")

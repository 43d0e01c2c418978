"""The official Stripe SDKs, pointed at meterflow, manage billing alerts and read v1 events
unchanged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
import stripe

from meterflow.alerts import ALERT_COLUMNS, alert_from_row, alert_triggered_event
from meterflow.v1_events import new_v1_event_id
from tests.conftest import AccountFactory
from tests.fixtures.node_sdk import needs_node, run_node_script

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


def _client(key: str, base_url: str) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": base_url}, max_network_retries=0)


def _alert_calls(key: str, base_url: str) -> dict[str, Any]:
    client = _client(key, base_url)
    meter = client.v1.billing.meters.create(
        {
            "display_name": "Alpaca AI tokens",
            "event_name": "alpaca_ai_tokens",
            "default_aggregation": {"formula": "sum"},
        }
    )
    alerts = client.v1.billing.alerts
    first = alerts.create(
        {
            "alert_type": "usage_threshold",
            "title": "Over 1000",
            "usage_threshold": {
                "gte": 1000,
                "meter": meter.id,
                "recurrence": "one_time",
                "filters": [{"type": "customer", "customer": "cus_py"}],
            },
        }
    )
    second = alerts.create(
        {
            "alert_type": "usage_threshold",
            "title": "Anyone over 10",
            "usage_threshold": {"gte": 10, "meter": meter.id, "recurrence": "one_time"},
        }
    )
    threshold = alerts.retrieve(first.id, {"expand": ["usage_threshold.meter"]}).usage_threshold
    report: dict[str, Any] = {
        "meter_id": meter.id,
        "first": first.to_dict(),
        "first_type": type(first).__name__,
        "retrieved": alerts.retrieve(first.id).to_dict(),
        "expanded_meter": type(threshold.meter).__name__ if threshold else None,
        "listed": [a.id for a in alerts.list({"meter": meter.id}).data],
        "auto_paged": [a.id for a in alerts.list({"limit": 1}).auto_paging_iter()],
        "deactivated": alerts.deactivate(first.id).status,
        "activated": alerts.activate(first.id).status,
        "archived": alerts.archive(second.id).status,
        "after_archive": [a.id for a in alerts.list().data],
        "second_id": second.id,
    }
    try:
        alerts.retrieve(second.id)
    except stripe.InvalidRequestError as exc:
        report["archived_retrieve"] = (exc.http_status, exc.code)
    try:
        alerts.create(
            {
                "alert_type": "usage_threshold",
                "title": "Bad",
                "usage_threshold": {"gte": 0, "meter": meter.id, "recurrence": "one_time"},
            }
        )
    except stripe.InvalidRequestError as exc:
        report["bad_threshold"] = (exc.http_status, exc.param)
    return report


async def test_python_sdk_alert_lifecycle(ingest_url: str, make_account: AccountFactory) -> None:
    key = (await make_account()).secret_key
    # The SDK is synchronous: run it in a worker thread so the event loop (and server) stay free.
    report = await asyncio.to_thread(_alert_calls, key, ingest_url)
    first = report["first"]
    assert report["first_type"] == "Alert"
    assert first == {
        "id": first["id"],
        "object": "billing.alert",
        "alert_type": "usage_threshold",
        "livemode": False,
        "status": "active",
        "title": "Over 1000",
        "credit_balance_threshold": None,
        "usage_threshold": {
            "filters": [{"customer": "cus_py", "type": "customer"}],
            "gte": 1000,
            "meter": report["meter_id"],
            "recurrence": "one_time",
        },
    }
    assert report["retrieved"] == first
    assert report["expanded_meter"] == "Meter"
    assert report["listed"] == [report["second_id"], first["id"]]
    assert report["auto_paged"] == [report["second_id"], first["id"]]
    assert (report["deactivated"], report["activated"], report["archived"]) == (
        "inactive",
        "active",
        "archived",
    )
    assert report["after_archive"] == [first["id"]]
    assert report["archived_retrieve"] == (404, "resource_missing")
    assert report["bad_threshold"] == (400, "usage_threshold[gte]")


def _event_calls(key: str, base_url: str, event_id: str) -> dict[str, Any]:
    client = _client(key, base_url)
    event = client.v1.events.retrieve(event_id)
    listed = client.v1.events.list({"type": "billing.alert.triggered"})
    triggered = event.data.object
    return {
        "type": event.type,
        "object_class": type(triggered).__name__,
        "customer": triggered["customer"],
        "value": triggered["value"],
        "alert_id": triggered["alert"]["id"],
        "listed": [e.id for e in listed.data],
        "none_of_other_type": client.v1.events.list({"type": "other.type"}).data == [],
    }


async def test_python_sdk_reads_a_triggered_event(
    ingest_url: str, make_account: AccountFactory, pool: asyncpg.Pool
) -> None:
    account = await make_account()
    report = await asyncio.to_thread(_alert_calls, account.secret_key, ingest_url)
    row = await pool.fetchrow(
        f"SELECT {ALERT_COLUMNS} FROM billing_alerts WHERE id = $1", report["first"]["id"]
    )
    assert row is not None
    alert = alert_from_row(dict(row))
    event = alert_triggered_event(
        event_id=new_v1_event_id(), alert=alert, customer="cus_py", value=1200,
        created=int(time.time()),
    )  # fmt: skip
    await pool.execute(
        """INSERT INTO v1_events (id, account_id, livemode, type, created, body)
           VALUES ($1, $2, $3, $4, $5, $6::json)""",
        event["id"],
        alert.account_id,
        alert.livemode,
        event["type"],
        event["created"],
        orjson.dumps(event).decode(),
    )
    seen = await asyncio.to_thread(_event_calls, account.secret_key, ingest_url, event["id"])
    assert seen == {
        "type": "billing.alert.triggered",
        "object_class": "AlertTriggered",
        "customer": "cus_py",
        "value": 1200,
        "alert_id": alert.id,
        "listed": [event["id"]],
        "none_of_other_type": True,
    }


@needs_node
async def test_node_sdk_alert_lifecycle(ingest_url: str, make_account: AccountFactory) -> None:
    key = (await make_account()).secret_key
    report = await run_node_script("alerts.mjs", ingest_url, key)
    first = report["first"]
    assert first == {
        "id": first["id"],
        "object": "billing.alert",
        "alert_type": "usage_threshold",
        "livemode": False,
        "status": "active",
        "title": "Over 1000",
        "credit_balance_threshold": None,
        "usage_threshold": {
            "filters": [{"customer": "cus_node", "type": "customer"}],
            "gte": 1000,
            "meter": report["meterId"],
            "recurrence": "one_time",
        },
    }
    assert report["secondFilters"] is None
    assert report["expandedMeter"] == report["meterId"]
    assert len(report["listedIds"]) == 2
    assert report["listedIds"][1] == first["id"]
    assert report["autoPaged"] == 2
    assert (report["deactivated"], report["activated"], report["archived"]) == (
        "inactive",
        "active",
        "archived",
    )
    assert report["afterArchiveIds"] == [first["id"]]
    assert report["archivedRetrieve"] == {"type": "StripeInvalidRequestError", "status": 404,
                                          "code": "resource_missing"}  # fmt: skip
    assert report["badThreshold"] == {"type": "StripeInvalidRequestError", "status": 400,
                                      "param": "usage_threshold[gte]"}  # fmt: skip

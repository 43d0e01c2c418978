"""``/v2/core/events`` over real HTTP, and through the official Stripe Python SDK: retrieve, list,
auto-pagination, the ``object_id`` filter, fetching the event a webhook announced, and the whole
way from invalid stream events to a verified webhook."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import stripe
from prometheus_client import CollectorRegistry
from stripe.events import (
    V1BillingMeterErrorReportTriggeredEvent,
    V1BillingMeterErrorReportTriggeredEventNotification,
)

from aggregator.notifications import EventNotifications
from aggregator.webhooks.core_events import CoreEvent, thin_notification
from aggregator.webhooks.policy import signature_header
from ingest.webhooks.store import new_secret
from meterflow.settings import Settings
from tests.conftest import AccountFactory
from tests.fixtures.error_reports import create_events, meter_event
from tests.fixtures.meter_events import wait_until
from tests.fixtures.meter_events_http import auth, v2_error
from tests.fixtures.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

# Stripe's spec has context, reason and related_object optional and not nullable: meterflow
# has no value for the first two, so they are left out, never null.
EVENT_KEYS = {"id", "object", "type", "created", "livemode", "related_object", "data"}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


def _client(key: str, base_url: str) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": base_url}, max_network_retries=0)


async def _events(pool: asyncpg.Pool, account_id: str, meters: list[str]) -> list[CoreEvent]:
    start = int(time.time() * 1000)
    return await create_events(
        pool,
        [meter_event(account_id, m, start + n, errors=n + 1) for n, m in enumerate(meters)],
    )


async def test_retrieve_answers_the_full_event(
    http: httpx.AsyncClient, pool: asyncpg.Pool, make_account: AccountFactory
) -> None:
    account = await make_account()
    (event,) = await _events(pool, account.account_id, ["mtr_a"])
    response = await http.get(f"/v2/core/events/{event.id}", headers=auth(account.secret_key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == EVENT_KEYS
    assert body["object"] == "v2.core.event"
    assert body["type"] == "v1.billing.meter.error_report_triggered"
    assert body["created"].endswith("Z")
    assert body["livemode"] is False
    assert body["related_object"] == event.related_object
    assert body["data"] == event.data


async def test_an_event_about_no_object_has_no_related_object(
    http: httpx.AsyncClient, pool: asyncpg.Pool, make_account: AccountFactory
) -> None:
    account = await make_account()
    no_meter = replace(
        meter_event(account.account_id, "", int(time.time() * 1000)),
        type="v1.billing.meter.no_meter_found",
        related_object=None,
    )
    (event,) = await create_events(pool, [no_meter])
    response = await http.get(f"/v2/core/events/{event.id}", headers=auth(account.secret_key))
    assert response.status_code == 200, response.text
    assert set(response.json()) == EVENT_KEYS - {"related_object"}
    listed = await http.get("/v2/core/events", headers=auth(account.secret_key))
    assert set(listed.json()["data"][0]) == EVENT_KEYS - {"related_object"}


async def test_another_accounts_event_is_a_v2_404(
    http: httpx.AsyncClient, pool: asyncpg.Pool, make_account: AccountFactory
) -> None:
    owner = await make_account()
    stranger = await make_account("stranger")
    (event,) = await _events(pool, owner.account_id, ["mtr_a"])
    for path in (f"/v2/core/events/{event.id}", "/v2/core/events/evt_test_unknown"):
        error = v2_error(await http.get(path, headers=auth(stranger.secret_key)), 404)
        # Stripe's v2 code for an unknown object; v1 says resource_missing.
        assert (error["type"], error["code"]) == ("invalid_request_error", "not_found")
    listed = await http.get("/v2/core/events", headers=auth(stranger.secret_key))
    assert listed.json() == {"data": [], "next_page_url": None, "previous_page_url": None}


async def test_list_pages_newest_first_both_ways(
    http: httpx.AsyncClient, pool: asyncpg.Pool, make_account: AccountFactory
) -> None:
    account = await make_account()
    headers = auth(account.secret_key)
    events = await _events(pool, account.account_id, ["mtr_a", "mtr_b", "mtr_a", "mtr_c", "mtr_a"])
    newest_first = [e.id for e in reversed(events)]

    first = (await http.get("/v2/core/events", params={"limit": 2}, headers=headers)).json()
    assert set(first) == {"data", "next_page_url", "previous_page_url"}
    assert [e["id"] for e in first["data"]] == newest_first[:2]
    assert first["previous_page_url"] is None
    assert first["next_page_url"].startswith("/v2/core/events?limit=2&")
    second = (await http.get(first["next_page_url"], headers=headers)).json()
    assert [e["id"] for e in second["data"]] == newest_first[2:4]
    third = (await http.get(second["next_page_url"], headers=headers)).json()
    assert [e["id"] for e in third["data"]] == newest_first[4:]
    assert third["next_page_url"] is None
    back = (await http.get(third["previous_page_url"], headers=headers)).json()
    assert [e["id"] for e in back["data"]] == newest_first[2:4]
    assert back["previous_page_url"] is not None

    only_a = (
        await http.get("/v2/core/events", params={"object_id": "mtr_a"}, headers=headers)
    ).json()
    assert [e["id"] for e in only_a["data"]] == [newest_first[i] for i in (0, 2, 4)]
    typed = await http.get(
        "/v2/core/events", params={"types[0]": "v1.billing.meter.no_meter_found"}, headers=headers
    )
    assert typed.json()["data"] == []

    for params in ({"page": "junk"}, {"limit": "0"}, {"created[gt]": "2024-01-01T00:00:00Z"}):
        error = v2_error(await http.get("/v2/core/events", params=params, headers=headers), 400)
        assert error["message"]


async def test_the_python_sdk_retrieves_lists_and_fetches_notified_events(
    ingest_url: str, pool: asyncpg.Pool, make_account: AccountFactory
) -> None:
    account = await make_account()
    other = await make_account("other")
    events = await _events(pool, account.account_id, ["mtr_a", "mtr_b", "mtr_a", "mtr_b", "mtr_a"])
    (foreign,) = await _events(pool, other.account_id, ["mtr_a"])
    secret = new_secret()
    body = orjson.dumps(thin_notification(events[0]))
    header = signature_header(secret, body, int(time.time()))
    found = await asyncio.to_thread(
        _use_sdk,
        account.secret_key,
        ingest_url,
        (events[-1].id, foreign.id),
        (body, header, secret),
    )
    assert found["retrieved"] == (events[-1].id, "v1.billing.meter.error_report_triggered", 5)
    assert found["paged"] == [e.id for e in reversed(events)]
    assert found["first_page"] == 2
    assert found["by_object"] == [events[3].id, events[1].id]
    assert found["foreign"] == 404
    assert found["fetched"] == (events[0].id, 1, "meter_event_invalid_value", "req-1")


def _use_sdk(
    key: str, base_url: str, ids: tuple[str, str], signed: tuple[bytes, str, str]
) -> dict[str, Any]:
    event_id, foreign_id = ids
    body, header, secret = signed
    client = _client(key, base_url)
    found: dict[str, Any] = {}
    event = client.v2.core.events.retrieve(event_id)
    assert isinstance(event, V1BillingMeterErrorReportTriggeredEvent)
    found["retrieved"] = (event.id, event.type, event.data.reason.error_count)
    page = client.v2.core.events.list({"limit": 2})
    found["first_page"] = len(page.data)
    found["paged"] = [e.id for e in page.auto_paging_iter()]
    by_object = client.v2.core.events.list({"object_id": "mtr_b"})
    found["by_object"] = [e.id for e in by_object.data]
    try:
        client.v2.core.events.retrieve(foreign_id)
    except stripe.StripeError as exc:
        found["foreign"] = exc.http_status
    notification = client.parse_event_notification(body, header, secret)
    assert isinstance(notification, V1BillingMeterErrorReportTriggeredEventNotification)
    fetched = notification.fetch_event()
    (error_type,) = fetched.data.reason.error_types
    found["fetched"] = (
        fetched.id,
        fetched.data.reason.error_count,
        error_type.code,
        error_type.sample_errors[0].request.identifier,
    )
    return found


async def test_stream_rejections_reach_the_sdk_end_to_end(
    ingest_url: str,
    ingest_settings: Settings,
    pool: asyncpg.Pool,
    make_account: AccountFactory,
) -> None:
    """Invalid events sent to meter_event_stream become error reports that a webhook announces,
    and the SDK verifies the notification, fetches the event and its meter."""
    account = await make_account()
    settings = ingest_settings.with_overrides(
        consumer_group=f"g-{ingest_settings.topic_prefix}",
        error_report_window_s=1.0,
        error_report_grace_s=0.2,
    )
    notifications = EventNotifications(settings, pool, CollectorRegistry())
    async with WebhookReceiver() as hook:
        setup = await asyncio.to_thread(
            _sdk_stream_invalid_events, account.secret_key, ingest_url, hook.url
        )
        await notifications.start()
        task = asyncio.create_task(notifications.run())
        try:
            await wait_until(lambda: _received(hook, 2), 30, "both error-report webhooks")
        finally:
            notifications.request_stop()
            await asyncio.wait_for(task, 15)
            await notifications.stop()
    signed = [(r.body, r.headers["stripe-signature"]) for r in hook.received]
    found = await asyncio.to_thread(
        _sdk_read_notifications, account.secret_key, ingest_url, signed, setup["secret"]
    )
    assert found == {
        "v1.billing.meter.error_report_triggered": (
            setup["meter_id"],
            3,
            [("meter_event_invalid_value", 3, ["bad-0", "bad-1", "bad-2"])],
        ),
        "v1.billing.meter.no_meter_found": (
            None,
            1,
            [("no_meter", 1, ["unknown-0"])],
        ),
    }


async def _received(hook: WebhookReceiver, count: int) -> bool:
    return len(hook.received) >= count


def _sdk_stream_invalid_events(key: str, base_url: str, hook_url: str) -> dict[str, str]:
    client = stripe.StripeClient(
        key, base_addresses={"api": base_url, "meter_events": base_url}, max_network_retries=0
    )
    meter = client.v1.billing.meters.create(
        {
            "display_name": "Alpaca AI tokens",
            "event_name": "alpaca_ai_tokens",
            "default_aggregation": {"formula": "sum"},
        }
    )
    endpoint = client.v1.webhook_endpoints.create(
        {"url": hook_url, "enabled_events": ["*"], "description": "error reports"}
    )
    session = client.v2.billing.meter_event_session.create()
    stream = stripe.StripeClient(
        session.authentication_token,
        base_addresses={"meter_events": base_url},
        max_network_retries=0,
    )
    events: Any = [
        {
            "event_name": "alpaca_ai_tokens",
            "identifier": f"bad-{n}",
            "payload": {"stripe_customer_id": "cus_1", "value": "twelve"},
        }
        for n in range(3)
    ] + [
        {
            "event_name": "nothing_here",
            "identifier": "unknown-0",
            "payload": {"stripe_customer_id": "cus_1", "value": "1"},
        },
    ]
    stream.v2.billing.meter_event_stream.create({"events": events})
    assert endpoint.secret is not None
    return {"meter_id": meter.id, "secret": endpoint.secret}


def _sdk_read_notifications(
    key: str, base_url: str, signed: list[tuple[bytes, str]], secret: str
) -> dict[str, Any]:
    client = _client(key, base_url)
    found: dict[str, Any] = {}
    for body, header in signed:
        notification: Any = client.parse_event_notification(body, header, secret)
        event: Any = notification.fetch_event()
        meter_id = None
        if isinstance(notification, V1BillingMeterErrorReportTriggeredEventNotification):
            meter_id = notification.fetch_related_object().id
        found[event.type] = (
            meter_id,
            event.data.reason.error_count,
            [
                (t.code, t.error_count, [s.request.identifier for s in t.sample_errors])
                for t in event.data.reason.error_types
            ],
        )
    return found

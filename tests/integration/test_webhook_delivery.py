"""Webhook delivery against real PostgreSQL and real local HTTP endpoints: signed thin events,
retries with backoff, a log of every attempt, and dead endpoints that delay nobody else."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
import stripe
from prometheus_client import CollectorRegistry
from stripe.events import V1BillingMeterErrorReportTriggeredEventNotification

from aggregator.notifications import EventNotifications
from aggregator.webhooks.worker import WebhookDeliveryWorker
from deploy.ports import free_port
from ingest.edge.auth import Principal
from ingest.webhooks.store import (
    EndpointChanges,
    NewEndpoint,
    WebhookEndpoint,
    WebhookEndpointStore,
)
from meterflow.records.rejected import RejectedRecord
from meterflow.settings import Settings
from tests.conftest import AccountFactory
from tests.fixtures.error_reports import create_events, meter_event, produce_rejected, rejection
from tests.fixtures.meter_events import wait_until
from tests.fixtures.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(ingest_settings: Settings) -> Settings:
    return ingest_settings.with_overrides(
        consumer_group=f"g-{ingest_settings.topic_prefix}",
        webhook_timeout_s=5.0,
        webhook_backoff_base_s=0.2,
        webhook_backoff_max_s=1.0,
        webhook_max_attempts=3,
        webhook_concurrency=8,
    )


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    assert settings.database_url is not None
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, pool: asyncpg.Pool, registry: CollectorRegistry | None = None
) -> AsyncIterator[WebhookDeliveryWorker]:
    worker = WebhookDeliveryWorker(
        settings, pool, registry or CollectorRegistry(), poll_interval_s=0.05
    )
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, settings.webhooks.webhook_timeout_s + 5)


async def _endpoint(
    pool: asyncpg.Pool, account_id: str, url: str, events: tuple[str, ...] = ("*",)
) -> WebhookEndpoint:
    store = WebhookEndpointStore(pool)
    return await store.create(Principal(account_id, False), NewEndpoint(url, list(events)), 0)


async def _deliveries(pool: asyncpg.Pool, endpoint_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT d.id, d.event_id, d.status, d.attempt_count,
                  coalesce(json_agg(json_build_object(
                      'attempt', a.attempt, 'status_code', a.status_code, 'error', a.error,
                      'started_ms', a.started_ms, 'duration_ms', a.duration_ms)
                      ORDER BY a.attempt) FILTER (WHERE a.attempt IS NOT NULL), '[]') AS attempts
           FROM webhook_deliveries d
           LEFT JOIN webhook_delivery_attempts a ON a.delivery_id = d.id
           WHERE d.endpoint_id = $1 GROUP BY d.id ORDER BY d.id""",
        endpoint_id,
    )
    return [{**dict(r), "attempts": orjson.loads(r["attempts"])} for r in rows]


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_the_signed_thin_event_reaches_the_endpoint(
    settings: Settings, pool: asyncpg.Pool, make_account: AccountFactory
) -> None:
    acct = (await make_account()).account_id
    registry = CollectorRegistry()
    async with WebhookReceiver() as hook:
        endpoint = await _endpoint(pool, acct, hook.url)
        (event,) = await create_events(pool, [meter_event(acct, "mtr_a", _now_ms())])
        async with running_worker(settings, pool, registry):
            await wait_until(lambda: _has(hook.received, 1), 10, "the webhook")
            await wait_until(lambda: _settled(pool, endpoint.id), 10, "the delivery recorded")
    (received,) = hook.received
    assert received.path == "/hooks/stripe"
    assert received.headers["content-type"] == "application/json; charset=utf-8"
    signature = received.headers["stripe-signature"]
    stripe.WebhookSignature.verify_header(received.body, signature, endpoint.secret)
    client = stripe.StripeClient("sk_test_unused")
    notification = client.parse_event_notification(received.body, signature, endpoint.secret)
    assert isinstance(notification, V1BillingMeterErrorReportTriggeredEventNotification)
    assert notification.id == event.id
    assert notification.related_object.id == "mtr_a"
    assert orjson.loads(received.body) == {
        "id": event.id,
        "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered",
        "created": orjson.loads(received.body)["created"],
        "livemode": False,
        "related_object": {
            "id": "mtr_a",
            "type": "billing.meter",
            "url": "/v1/billing/meters/mtr_a",
        },
    }
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(received.body, signature, "whsec_other")
    (delivery,) = await _deliveries(pool, endpoint.id)
    assert (delivery["status"], delivery["attempt_count"]) == ("succeeded", 1)
    assert [(a["attempt"], a["status_code"], a["error"]) for a in delivery["attempts"]] == [
        (1, 200, None)
    ]
    assert (
        registry.get_sample_value("meterflow_webhook_deliveries_total", {"outcome": "succeeded"})
        == 1
    )
    assert registry.get_sample_value("meterflow_webhook_delivery_seconds_count") == 1


async def test_only_enabled_endpoints_listening_to_the_type_get_a_delivery(
    pool: asyncpg.Pool, make_account: AccountFactory
) -> None:
    acct = (await make_account()).account_id
    other = (await make_account("other")).account_id
    url = "http://127.0.0.1:9/unused"
    everything = await _endpoint(pool, acct, url)
    this_type = await _endpoint(pool, acct, url, ("v1.billing.meter.error_report_triggered",))
    another_type = await _endpoint(pool, acct, url, ("billing.alert.triggered",))
    disabled = await _endpoint(pool, acct, url)
    store = WebhookEndpointStore(pool)
    await store.update(Principal(acct, False), disabled.id, EndpointChanges(status="disabled"))
    another_account = await _endpoint(pool, other, url)
    await create_events(pool, [meter_event(acct, "mtr_a", _now_ms())])
    counts = {
        e.id: len(await _deliveries(pool, e.id))
        for e in (everything, this_type, another_type, disabled, another_account)
    }
    assert list(counts.values()) == [1, 1, 0, 0, 0]


async def test_a_failing_endpoint_is_retried_with_backoff_and_every_attempt_logged(
    settings: Settings, pool: asyncpg.Pool, make_account: AccountFactory
) -> None:
    acct = (await make_account()).account_id
    async with WebhookReceiver([500]) as hook:
        endpoint = await _endpoint(pool, acct, hook.url)
        await create_events(pool, [meter_event(acct, "mtr_a", _now_ms())])
        async with running_worker(settings, pool):
            await wait_until(lambda: _settled(pool, endpoint.id), 15, "the retried delivery")
    (delivery,) = await _deliveries(pool, endpoint.id)
    assert (delivery["status"], delivery["attempt_count"]) == ("succeeded", 2)
    first, second = delivery["attempts"]
    assert (first["attempt"], first["status_code"], first["error"]) == (1, 500, "HTTP 500")
    assert (second["attempt"], second["status_code"], second["error"]) == (2, 200, None)
    assert second["started_ms"] - first["started_ms"] >= 200  # the backoff base
    assert len(hook.received) == 2
    assert hook.received[0].body == hook.received[1].body


async def test_a_dead_endpoint_is_given_up_after_the_last_attempt(
    settings: Settings, pool: asyncpg.Pool, make_account: AccountFactory
) -> None:
    acct = (await make_account()).account_id
    endpoint = await _endpoint(pool, acct, f"http://127.0.0.1:{free_port()}/gone")
    await create_events(pool, [meter_event(acct, "mtr_a", _now_ms())])
    registry = CollectorRegistry()
    async with running_worker(settings, pool, registry):
        await wait_until(lambda: _settled(pool, endpoint.id), 15, "the delivery given up")
    (delivery,) = await _deliveries(pool, endpoint.id)
    assert (delivery["status"], delivery["attempt_count"]) == ("failed", 3)
    assert [(a["attempt"], a["status_code"], a["error"]) for a in delivery["attempts"]] == [
        (n, None, "connection refused") for n in (1, 2, 3)
    ]
    starts = [a["started_ms"] for a in delivery["attempts"]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps[0] >= 200
    assert gaps[1] >= 400
    outcomes = {
        o: registry.get_sample_value("meterflow_webhook_deliveries_total", {"outcome": o})
        for o in ("retrying", "failed")
    }
    assert outcomes == {"retrying": 2, "failed": 1}


async def test_dead_and_hanging_endpoints_do_not_delay_a_healthy_one(
    settings: Settings, pool: asyncpg.Pool, make_account: AccountFactory
) -> None:
    acct = (await make_account()).account_id
    events = 12
    async with WebhookReceiver(hang=True) as hanging, WebhookReceiver() as healthy:
        await _endpoint(pool, acct, hanging.url)
        await _endpoint(pool, acct, f"http://127.0.0.1:{free_port()}/refused")
        healthy_endpoint = await _endpoint(pool, acct, healthy.url)
        await create_events(pool, [meter_event(acct, f"mtr_{n}", _now_ms()) for n in range(events)])
        started = time.monotonic()
        async with running_worker(settings, pool):
            await wait_until(
                lambda: _has(healthy.received, events), 10, "every event at the healthy endpoint"
            )
            took = time.monotonic() - started
            # The hanging endpoint holds its share of the slots for the whole timeout (5 s) per
            # request; the healthy endpoint got everything before the first of them timed out.
            assert took < settings.webhooks.webhook_timeout_s * 0.8, took
            assert 1 <= len(hanging.received) <= settings.webhooks.webhook_concurrency // 4
            await wait_until(
                lambda: _settled(pool, healthy_endpoint.id, events), 10, "deliveries recorded"
            )
    assert {d["status"] for d in await _deliveries(pool, healthy_endpoint.id)} == {"succeeded"}


async def test_rejected_events_reach_a_webhook_end_to_end(
    settings: Settings, make_account: AccountFactory, kafka_bootstrap: str
) -> None:
    settings = settings.with_overrides(error_report_window_s=1.0, error_report_grace_s=0.2)
    acct = (await make_account()).account_id
    assert settings.database_url is not None
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=5)
    notifications = EventNotifications(settings, pool, CollectorRegistry())
    try:
        async with WebhookReceiver() as hook:
            endpoint = await _endpoint(pool, acct, hook.url, ("v1.billing.meter.no_meter_found",))
            await notifications.start()
            task = asyncio.create_task(notifications.run())
            now = _now_ms()
            await produce_rejected(
                kafka_bootstrap,
                settings.topic_prefix,
                [RejectedRecord(acct, False, now, (rejection("no_meter", None, "req-1"),))],
            )
            await wait_until(lambda: _has(hook.received, 1), 30, "the no_meter_found webhook")
            notifications.request_stop()
            await asyncio.wait_for(task, 15)
    finally:
        await notifications.stop()
        await pool.close()
    (received,) = hook.received
    client = stripe.StripeClient("sk_test_unused")
    notification = client.parse_event_notification(
        received.body, received.headers["stripe-signature"], endpoint.secret
    )
    assert notification.type == "v1.billing.meter.no_meter_found"
    assert notification.id.startswith("evt_test_")


async def _has(received: list[Any], count: int) -> bool:
    return len(received) >= count


async def _settled(pool: asyncpg.Pool, endpoint_id: str, count: int = 1) -> bool:
    done = await pool.fetchval(
        """SELECT count(*) FROM webhook_deliveries
           WHERE endpoint_id = $1 AND status <> 'pending'""",
        endpoint_id,
    )
    return int(done) >= count

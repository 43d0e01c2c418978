"""Billing alerts end to end: events sent over HTTP, folded, relayed, evaluated; each firing is
recorded once, stored as a v1 event, put on the events topic and queued for webhooks."""

from __future__ import annotations

import time
from collections import defaultdict
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from aggregator.alerts.metrics import AlertMetrics
from aggregator.alerts.periods import period_of
from aggregator.alerts.store import StoredEvent
from aggregator.alerts.v1_events import V1EventPublisher
from meterflow.alerts import TRIGGERED_TYPE, Alert
from meterflow.kafka.producer import idempotent_producer
from meterflow.kafka.topics import V1_EVENTS_PARTITIONS, v1_events_topic
from meterflow.settings import Settings
from meterflow.v1_events import v1_event_key
from tests.conftest import AccountFactory
from tests.fixtures.alerts import (
    PipelineProbe,
    RefusingProducer,
    RelayingAggregator,
    RunningEvaluator,
    firings,
    insert_alert,
    queued_deliveries,
    read_topic,
    set_alert_status,
    v1_events,
)
from tests.fixtures.meter_events import wait_until
from tests.fixtures.meter_events_http import auth, create_meter, event_form

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DAY_S = 86_400


class Usage:
    """Sends meter events for one account's meter, at chosen event times."""

    def __init__(self, http: httpx.AsyncClient, key: str) -> None:
        self._http = http
        self.key = key

    async def send(self, customer: str, value: str, timestamp_s: int | None = None) -> None:
        form = event_form(customer, value)
        if timestamp_s is not None:
            form["timestamp"] = str(timestamp_s)
        sent = await self._http.post("/v1/billing/meter_events", data=form, headers=auth(self.key))
        assert sent.status_code == 200, sent.text


async def _account_meter(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> tuple[str, str, Usage]:
    account = await make_account()
    meter = await create_meter(http, account.secret_key)
    return account.account_id, meter["id"], Usage(http, account.secret_key)


async def _events_on_topic(settings: Settings) -> list[tuple[bytes | None, dict[str, Any]]]:
    assert settings.kafka_bootstrap_servers is not None
    records = await read_topic(
        settings.kafka_bootstrap_servers,
        v1_events_topic(settings.topic_prefix),
        V1_EVENTS_PARTITIONS,
    )
    events = [(r.key, orjson.loads(r.value)) for r in records]
    # Creating the test's meters announced billing.meter.* events; a sweep may publish them too.
    return [(key, event) for key, event in events if event["type"] == TRIGGERED_TYPE]


async def _all_published(database_url: str, count: int) -> None:
    async def published() -> bool:
        events = await v1_events(database_url)
        return len(events) == count and all(e.published for e in events)

    await wait_until(published, 15, f"{count} events published")


async def test_one_time_fires_once_per_customer_and_reaches_topic_store_and_webhooks(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    ingest_settings: Settings,
    database_url: str,
) -> None:
    account_id, meter_id, usage = await _account_meter(http, make_account)
    other_key = (await make_account("other")).secret_key  # its endpoint hears nothing of ours
    endpoints = {}
    for name, key, events in (
        ("alerts", usage.key, TRIGGERED_TYPE),
        ("reports", usage.key, "v1.billing.meter.error_report_triggered"),
        ("elsewhere", other_key, TRIGGERED_TYPE),
    ):
        created = await http.post(
            "/v1/webhook_endpoints",
            data={"url": f"http://127.0.0.1:9/{name}", "enabled_events[]": events},
            headers=auth(key),
        )
        assert created.status_code == 200, created.text
        endpoints[name] = created.json()["id"]
    group = f"alerts-{ingest_settings.topic_prefix}"

    async def alert(gte: int, **extra: Any) -> Alert:
        return await insert_alert(
            database_url, account_id=account_id, meter_id=meter_id, gte=gte, **extra
        )

    async with (
        RelayingAggregator(ingest_settings),
        PipelineProbe(ingest_settings) as probe,
        RunningEvaluator(ingest_settings, group) as running,
    ):
        await usage.send("cus_1", "6")  # before any alert exists: still counts
        await probe.settled([group])
        for_cus_1 = await alert(10, customer="cus_1")
        for_everyone = await alert(10)
        inactive = await alert(1, status="inactive")
        archived = await alert(1, status="archived")

        await usage.send("cus_1", "4.5")  # 10.5: both alerts fire for cus_1
        await usage.send("cus_2", "30")  # only the unfiltered alert watches cus_2
        await usage.send("cus_3", "3")  # below every active threshold
        await probe.settled([group])
        await usage.send("cus_1", "100")
        await usage.send("cus_2", "100")
        await probe.settled([group])
        assert len(await firings(database_url)) == 3

        # Reactivated, an alert fires again on the next usage it sees.
        await set_alert_status(database_url, inactive.id, "active")
        await usage.send("cus_3", "1")
        await probe.settled([group])
        # From the crossing event's receipt to the firing's commit: seconds at most, even here.
        fast_notifications = running.registry.get_sample_value(
            "meterflow_alert_notification_latency_seconds_bucket", {"le": "5.0"}
        )
        fired_one_time = running.registry.get_sample_value(
            "meterflow_alert_firings_total", {"recurrence": "one_time"}
        )

    fired = {(f.alert_id, f.customer, f.period_start, f.value) for f in await firings(database_url)}
    assert fired == {
        (for_cus_1.id, "cus_1", 0, Decimal("10.5")),
        (for_everyone.id, "cus_1", 0, Decimal("10.5")),
        (for_everyone.id, "cus_2", 0, Decimal(30)),
        (inactive.id, "cus_3", 0, Decimal(4)),
    }
    assert archived.id not in {f[0] for f in fired}
    assert (fast_notifications, fired_one_time) == (4, 4)

    await _all_published(database_url, 4)
    stored = {e.id: e.body for e in await v1_events(database_url)}
    by_firing = {
        (e["data"]["object"]["alert"]["id"], e["data"]["object"]["customer"]): e
        for e in stored.values()
    }
    triggered = by_firing[(for_everyone.id, "cus_1")]
    assert triggered["type"] == TRIGGERED_TYPE
    assert triggered["data"]["object"]["value"] == 10  # the usage, floored
    assert triggered["data"]["object"]["object"] == "billing.alert_triggered"
    assert triggered["data"]["object"]["alert"]["usage_threshold"] == {
        "filters": None, "gte": 10, "meter": meter_id, "recurrence": "one_time",
    }  # fmt: skip
    assert by_firing[(for_cus_1.id, "cus_1")]["data"]["object"]["alert"]["usage_threshold"][
        "filters"
    ] == [{"customer": "cus_1", "type": "customer"}]

    on_topic = await _events_on_topic(ingest_settings)
    assert {e["id"]: e for _, e in on_topic} == stored
    assert len(on_topic) == 4
    assert {k for k, _ in on_topic} == {v1_event_key(account_id, False)}

    deliveries = await queued_deliveries(database_url)
    assert {(d.endpoint_id, d.event_id) for d in deliveries} == {
        (endpoints["alerts"], event_id) for event_id in stored
    }
    assert all(orjson.loads(d.body) == stored[d.event_id] for d in deliveries)


async def test_daily_and_monthly_fire_once_per_period_of_event_time(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    ingest_settings: Settings,
    database_url: str,
) -> None:
    account_id, meter_id, usage = await _account_meter(http, make_account)
    group = f"alerts-{ingest_settings.topic_prefix}"
    daily = await insert_alert(
        database_url, account_id=account_id, meter_id=meter_id, gte=10, recurrence="daily"
    )
    monthly = await insert_alert(
        database_url, account_id=account_id, meter_id=meter_id, gte=10, recurrence="monthly"
    )
    now = int(time.time())
    # Three UTC days; now - 32 days is always in an earlier calendar month than now.
    sent = [("cus_1", 10, now), ("cus_1", 10, now - DAY_S), ("cus_1", 10, now - 32 * DAY_S)]
    # 6 a day never reaches a daily 10; two days of it reach a monthly 10 within one month.
    sent += [("cus_2", 6, now), ("cus_2", 6, now - DAY_S)]
    async with (
        RelayingAggregator(ingest_settings),
        PipelineProbe(ingest_settings) as probe,
        RunningEvaluator(ingest_settings, group),
    ):
        for customer, value, at in sent:
            await usage.send(customer, str(value), at)
        await probe.settled([group])
        # More usage in periods that fired already fires nothing new.
        for customer, _, at in sent:
            if customer == "cus_1":
                await usage.send(customer, "50", at)
        await probe.settled([group])

    per_period: dict[tuple[str, str, int], int] = defaultdict(int)
    for customer, value, at in sent:
        per_period[(daily.id, customer, period_of("daily", at)[0])] += value
        per_period[(monthly.id, customer, period_of("monthly", at)[0])] += value
    expected = {k for k, total in per_period.items() if total >= 10}
    fired = await firings(database_url)
    assert {(f.alert_id, f.customer, f.period_start) for f in fired} == expected
    assert sum(1 for alert_id, *_ in expected if alert_id == daily.id) == 3
    assert all(f.value >= 10 for f in fired)
    await _all_published(database_url, len(expected))


async def test_restarts_and_a_replay_from_offset_zero_fire_nothing_twice(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    ingest_settings: Settings,
    database_url: str,
) -> None:
    account_id, meter_id, usage = await _account_meter(http, make_account)
    await insert_alert(database_url, account_id=account_id, meter_id=meter_id, gte=10)
    group = f"alerts-{ingest_settings.topic_prefix}"
    async with (
        RelayingAggregator(ingest_settings),
        PipelineProbe(ingest_settings) as probe,
    ):
        async with RunningEvaluator(ingest_settings, group) as running:
            for i in range(4):
                await usage.send(f"cus_{i}", "10")
            await running.restart(abrupt=True)  # wherever it is: mid-batch, mid-transaction
            for i in range(4, 8):
                await usage.send(f"cus_{i}", "10")
            await running.restart()
            for i in range(8):
                await usage.send(f"cus_{i}", "5")  # redelivered or not, these fire nothing
            await probe.settled([group])
        first = await firings(database_url)
        assert sorted(f.customer for f in first) == [f"cus_{i}" for i in range(8)]

        # A new group reads the whole usage-changes topic again.
        async with RunningEvaluator(ingest_settings, f"replay-{group}") as replay:
            await probe.settled([f"replay-{group}"])
            assert replay.records_read() > 0
    assert await firings(database_url) == first
    await _all_published(database_url, 8)
    on_topic = await _events_on_topic(ingest_settings)
    assert sorted(e["id"] for _, e in on_topic) == sorted(f.event_id for f in first)


async def test_evaluators_racing_in_one_group_and_across_groups_fire_once(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    ingest_settings: Settings,
    database_url: str,
) -> None:
    account_id, meter_id, usage = await _account_meter(http, make_account)
    alerts = [
        await insert_alert(
            database_url, account_id=account_id, meter_id=meter_id, gte=5, recurrence=recurrence
        )
        for recurrence in ("one_time", "daily")
    ]
    groups = [
        f"alerts-a-{ingest_settings.topic_prefix}",
        f"alerts-b-{ingest_settings.topic_prefix}",
    ]
    customers = [f"cus_{i}" for i in range(12)]
    async with (
        RelayingAggregator(ingest_settings),
        PipelineProbe(ingest_settings) as probe,
        RunningEvaluator(ingest_settings, groups[0]),
        RunningEvaluator(ingest_settings, groups[0]),
        RunningEvaluator(ingest_settings, groups[1]),
    ):
        for _ in range(2):
            for customer in customers:
                await usage.send(customer, "5")
        await probe.settled(groups)

    fired = await firings(database_url)
    assert {(f.alert_id, f.customer) for f in fired} == {
        (a.id, c) for a in alerts for c in customers
    }
    await _all_published(database_url, len(fired))
    assert sorted(e.id for e in await v1_events(database_url)) == sorted(f.event_id for f in fired)
    on_topic = [e["id"] for _, e in await _events_on_topic(ingest_settings)]
    assert sorted(on_topic) == sorted(f.event_id for f in fired)


async def test_an_event_kafka_refused_stays_stored_and_a_sweep_publishes_it(
    ingest_settings: Settings, database_url: str, kafka_bootstrap: str
) -> None:
    topic = v1_events_topic(ingest_settings.topic_prefix)
    body = {"id": "evt_refused", "object": "event", "type": TRIGGERED_TYPE}
    stored = StoredEvent("evt_refused", "acct_1", False, orjson.dumps(body))
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        created_s = int(time.time())
        await pool.execute(
            """INSERT INTO v1_events (id, account_id, livemode, type, created, body)
               VALUES ($1, 'acct_1', false, $2, $3, $4::json)""",
            stored.id,
            TRIGGERED_TYPE,
            created_s,
            stored.body.decode(),
        )
        registry = CollectorRegistry()
        refused = V1EventPublisher(RefusingProducer(), topic, pool, AlertMetrics(registry))
        assert await refused.publish([stored]) is False
        assert registry.get_sample_value("meterflow_alert_publish_failures_total") == 1

        clock = [float(created_s)]
        sweeper = V1EventPublisher(
            idempotent_producer(kafka_bootstrap, "test-sweep"),
            topic,
            pool,
            AlertMetrics(CollectorRegistry()),
            clock=lambda: clock[0],
        )
        await sweeper.start()
        try:
            assert (
                await sweeper.sweep_once() == 0
            )  # just committed: its evaluator may still send it
            clock[0] += 10
            assert await sweeper.sweep_once() == 1
            assert await sweeper.sweep_once() == 0
        finally:
            await sweeper.stop()
    finally:
        await pool.close()
    assert [(e.id, e.published) for e in await v1_events(database_url)] == [("evt_refused", True)]
    assert await _events_on_topic(ingest_settings) == [(v1_event_key("acct_1", False), body)]

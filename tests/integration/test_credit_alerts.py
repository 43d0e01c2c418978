"""Credit balance alerts end to end: credits granted through the API, usage sent over HTTP, folded,
relayed and evaluated; ledger changes evaluated by the recheck sweep. Each drop of the available
balance to the alert's value fires once, stored as a v1 event, put on the events topic and queued
for webhooks; a rise above the value re-arms the alert."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from meterflow.alerts import TRIGGERED_TYPE
from meterflow.kafka.topics import V1_EVENTS_PARTITIONS, v1_events_topic
from meterflow.settings import Settings
from meterflow.store.accounts import create_key
from tests.conftest import AccountFactory
from tests.fixtures.alerts import (
    PipelineProbe,
    RelayingAggregator,
    RunningEvaluator,
    StoredV1Event,
    queued_deliveries,
    read_topic,
    v1_events,
)
from tests.fixtures.credit_alerts import (
    CreditCustomers,
    CreditState,
    credit_state,
    fired_values,
    rechecks_drained,
    wait_for_armed,
    wait_for_firings,
)
from tests.fixtures.meter_events import wait_until
from tests.fixtures.meter_events_http import auth

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def _credits(http: httpx.AsyncClient, key: str) -> CreditCustomers:
    credits = CreditCustomers(http, key)
    await credits.metered()
    return credits


async def _triggered_on_topic(settings: Settings) -> list[dict[str, Any]]:
    assert settings.kafka_bootstrap_servers is not None
    records = await read_topic(
        settings.kafka_bootstrap_servers,
        v1_events_topic(settings.topic_prefix),
        V1_EVENTS_PARTITIONS,
    )
    events = [orjson.loads(r.value) for r in records]
    return [e for e in events if e["type"] == TRIGGERED_TYPE]


async def _triggered(database_url: str) -> list[StoredV1Event]:
    """The billing.alert.triggered events (billing objects announce events of their own)."""
    return [e for e in await v1_events(database_url) if e.body["type"] == TRIGGERED_TYPE]


async def _all_published(database_url: str, count: int) -> None:
    async def published() -> bool:
        events = await _triggered(database_url)
        return len(events) == count and all(e.published for e in events)

    await wait_until(published, 15, f"{count} events published")


async def test_fires_once_per_drop_and_rearms_when_credits_are_granted(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    ingest_settings: Settings,
    database_url: str,
) -> None:
    key = (await make_account()).secret_key
    credits = await _credits(http, key)
    jenny = await credits.customer("Jenny")
    await credits.grant(jenny, 1000)
    endpoint = await http.post(
        "/v1/webhook_endpoints",
        data={"url": "http://127.0.0.1:9/alerts", "enabled_events[]": TRIGGERED_TYPE},
        headers=auth(key),
    )
    assert endpoint.status_code == 200, endpoint.text
    group = f"alerts-{ingest_settings.topic_prefix}"
    async with (
        RelayingAggregator(ingest_settings),
        PipelineProbe(ingest_settings) as probe,
        RunningEvaluator(ingest_settings, group) as running,
    ):
        alert = await credits.alert(jenny, 200)
        await credits.use(jenny, 500)  # 500 left: above 200
        await probe.settled([group])
        await rechecks_drained(database_url)
        assert await fired_values(database_url, alert) == []

        await credits.use(jenny, 400)  # 100 left: fires
        assert await wait_for_firings(database_url, alert, 1) == [100]
        await credits.use(jenny, 50)  # 50 left: lower still, but fired already
        await probe.settled([group])
        assert await credit_state(database_url, alert) == CreditState(armed=False, firings=1)

        await credits.grant(jenny, 1000)  # 1050 left: the sweep re-arms it, no usage needed
        await wait_for_armed(database_url, alert)
        await credits.use(jenny, 900)  # 150 left: fires again
        assert await wait_for_firings(database_url, alert, 2) == [100, 150]
        await probe.settled([group])
        await rechecks_drained(database_url)
        metrics = {
            (name, trigger): running.registry.get_sample_value(
                f"meterflow_credit_alert_{name}_total", {"trigger": trigger}
            )
            for name in ("firings", "rearms")
            for trigger in ("usage", "recheck")
        }
        latency = running.registry.get_sample_value(
            "meterflow_credit_alert_notification_latency_seconds_count"
        )

    assert await fired_values(database_url, alert) == [100, 150]
    assert await credit_state(database_url, alert) == CreditState(armed=False, firings=2)
    assert metrics == {
        ("firings", "usage"): 2, ("firings", "recheck"): 0,
        ("rearms", "usage"): 0, ("rearms", "recheck"): 1,
    }  # fmt: skip
    assert latency == 2

    await _all_published(database_url, 2)
    stored = {e.id: e.body for e in await _triggered(database_url)}
    values = sorted(e["data"]["object"]["value"] for e in stored.values())
    assert values == [100, 150]
    event = next(iter(stored.values()))
    assert event["type"] == TRIGGERED_TYPE
    triggered = event["data"]["object"]
    assert (triggered["object"], triggered["customer"]) == ("billing.alert_triggered", jenny)
    assert triggered["alert"]["id"] == alert
    assert triggered["alert"]["usage_threshold"] is None
    assert triggered["alert"]["credit_balance_threshold"] == {
        "filters": [{"customer": jenny, "type": "customer"}],
        "lte": {
            "balance_type": "monetary",
            "custom_pricing_unit": None,
            "monetary": {"currency": "usd", "value": 200},
        },
    }
    assert {e["id"]: e for e in await _triggered_on_topic(ingest_settings)} == stored
    deliveries = await queued_deliveries(database_url)
    assert sorted(d.event_id for d in deliveries if d.event_type == TRIGGERED_TYPE) == sorted(
        stored
    )


async def test_ledger_changes_and_new_alerts_fire_without_usage(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    ingest_settings: Settings,
    database_url: str,
) -> None:
    key = (await make_account()).secret_key
    credits = await _credits(http, key)
    voided, expired, empty, inactive, above = [
        await credits.customer(name) for name in ("voided", "expired", "empty", "inactive", "above")
    ]
    voided_grant = await credits.grant(voided, 1000)
    expired_grant = await credits.grant(expired, 1000)
    await credits.grant(expired, 300)
    await credits.grant(above, 1000)
    group = f"alerts-{ingest_settings.topic_prefix}"
    alerts = {
        name: await credits.alert(customer, value)
        for name, customer, value in (
            ("voided", voided, 500),
            ("expired", expired, 500),
            ("empty", empty, 0),  # no credits at all: 0 <= 0
            ("inactive", inactive, 0),
            ("above", above, 999),
        )
    }
    await credits.post(f"/v1/billing/alerts/{alerts['inactive']}/deactivate", {})
    async with RunningEvaluator(ingest_settings, group) as running:
        # A new alert is evaluated at once: already at or below its value, it fires.
        assert await wait_for_firings(database_url, alerts["empty"], 1) == [0]
        await rechecks_drained(database_url)
        assert await fired_values(database_url, alerts["voided"]) == []
        assert await fired_values(database_url, alerts["inactive"]) == []

        await credits.post(f"/v1/billing/credit_grants/{voided_grant}/void", {})
        await credits.post(f"/v1/billing/credit_grants/{expired_grant}/expire", {})
        assert await wait_for_firings(database_url, alerts["voided"], 1) == [0]
        assert await wait_for_firings(database_url, alerts["expired"], 1) == [300]

        # Reactivated, an alert is evaluated again at once.
        await credits.post(f"/v1/billing/alerts/{alerts['inactive']}/activate", {})
        assert await wait_for_firings(database_url, alerts["inactive"], 1) == [0]
        await rechecks_drained(database_url)
        fired = running.registry.get_sample_value(
            "meterflow_credit_alert_firings_total", {"trigger": "recheck"}
        )
    assert fired == 4
    assert await fired_values(database_url, alerts["above"]) == []
    await _all_published(database_url, 4)


async def test_grants_taking_effect_or_expiring_later_are_evaluated_then(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    ingest_settings: Settings,
    database_url: str,
) -> None:
    credits = await _credits(http, (await make_account()).secret_key)
    pending, expiring = await credits.customer("pending"), await credits.customer("expiring")
    later_s = int(time.time()) + 6
    await credits.grant(pending, 1000, effective_at=later_s)
    await credits.grant(expiring, 1000, expires_at=later_s)
    alerts = {name: await credits.alert(customer, 0) for name, customer in
              (("pending", pending), ("expiring", expiring))}  # fmt: skip
    async with RunningEvaluator(ingest_settings, f"alerts-{ingest_settings.topic_prefix}"):
        # Nothing in effect yet: 0 <= 0 fires; 1,000 in effect: armed, nothing fires.
        assert await wait_for_firings(database_url, alerts["pending"], 1) == [0]
        await rechecks_drained(database_url)
        before = (
            await fired_values(database_url, alerts["expiring"]),
            await credit_state(database_url, alerts["pending"]),
        )
        assert time.time() < later_s, "too slow to see the state before the grants' times"
        assert before == ([], CreditState(armed=False, firings=1))
        # The recheck due when the pending grant takes effect re-arms its alert; the one due
        # at the other grant's expiry fires its alert (before any closer records the expiry).
        await wait_for_armed(database_url, alerts["pending"])
        assert await wait_for_firings(database_url, alerts["expiring"], 1) == [0]


async def test_racing_evaluators_and_restarts_fire_each_drop_once(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    ingest_settings: Settings,
    database_url: str,
) -> None:
    credits = await _credits(http, (await make_account()).secret_key)
    customers = [await credits.customer(f"c{i}") for i in range(8)]
    alerts = {}
    for customer in customers:
        await credits.grant(customer, 1000)
        alerts[customer] = await credits.alert(customer, 400)
    prefix = ingest_settings.topic_prefix
    groups = [f"alerts-a-{prefix}", f"alerts-b-{prefix}"]
    again = customers[::2]
    async with (
        RelayingAggregator(ingest_settings),
        PipelineProbe(ingest_settings) as probe,
        RunningEvaluator(ingest_settings, groups[0]) as first,
        RunningEvaluator(ingest_settings, groups[0]),
        RunningEvaluator(ingest_settings, groups[1]),
    ):
        for customer in customers:
            await credits.use(customer, 350)
        await first.restart(abrupt=True)  # wherever it is: mid-batch, mid-sweep
        for customer in customers:
            await credits.use(customer, 350)  # 300 left: each fires once
        for customer in again:
            await wait_for_firings(database_url, alerts[customer], 1)
            await credits.grant(customer, 1000)  # 1300: re-armed by whichever sweep gets it
        for customer in again:
            await wait_for_armed(database_url, alerts[customer])
            await credits.use(customer, 1000)  # 300 again: a second drop
        await first.restart()
        await probe.settled(groups)
        await rechecks_drained(database_url)

        # A new group reads every usage change again: the balances are still low, but every
        # alert is disarmed, so nothing fires.
        async with RunningEvaluator(ingest_settings, f"replay-{prefix}") as replay:
            await probe.settled([f"replay-{prefix}"])
            assert replay.records_read() > 0

    for customer in customers:
        expected = [300, 300] if customer in again else [300]
        assert await fired_values(database_url, alerts[customer]) == expected, customer
        state = await credit_state(database_url, alerts[customer])
        assert state == CreditState(armed=False, firings=len(expected))
    firings = 8 + len(again)
    await _all_published(database_url, firings)
    stored = sorted(e.id for e in await _triggered(database_url))
    on_topic = {e["id"] for e in await _triggered_on_topic(ingest_settings)}
    assert sorted(on_topic) == stored


async def test_accounts_and_modes_are_apart(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    ingest_settings: Settings,
    database_url: str,
) -> None:
    account = await make_account()
    conn = await asyncpg.connect(database_url)
    try:
        live_key = await create_key(conn, account.account_id, livemode=True)
    finally:
        await conn.close()
    test_mode = await _credits(http, account.secret_key)
    live_mode = await _credits(http, live_key)
    other = await _credits(http, (await make_account("other")).secret_key)
    jenny = await test_mode.customer("Jenny")
    await test_mode.grant(jenny, 1000)
    jenny_alert = await test_mode.alert(jenny, 500)
    live = await live_mode.customer("Live")
    await live_mode.grant(live, 1000)
    live_alert = await live_mode.alert(live, 500)
    group = f"alerts-{ingest_settings.topic_prefix}"
    async with (
        RelayingAggregator(ingest_settings),
        PipelineProbe(ingest_settings) as probe,
        RunningEvaluator(ingest_settings, group),
    ):
        # Usage under the same customer ids, on other accounts' and modes' meters: no balance
        # of theirs changes, so neither alert fires.
        await other.use(jenny, 900)
        await other.use(live, 900)
        await live_mode.use(jenny, 900)
        await test_mode.use(live, 900)
        await probe.settled([group])
        await rechecks_drained(database_url)
        assert await fired_values(database_url, jenny_alert) == []
        assert await fired_values(database_url, live_alert) == []

        await live_mode.use(live, 600)
        assert await wait_for_firings(database_url, live_alert, 1) == [400]
        await probe.settled([group])
    assert await fired_values(database_url, jenny_alert) == []
    (event,) = [e.body for e in await _triggered(database_url)]
    assert (event["livemode"], event["data"]["object"]["customer"]) == (True, live)

"""The official Python Stripe SDK records usage and cancels it against meterflow, unchanged."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import stripe

from meterflow.records.meter_events import EventsRecord, partition_key
from tests.conftest import AccountFactory
from tests.fixtures.meter_events_http import mark_processed
from tests.fixtures.meter_events_topic import MeterEventsReader

pytestmark = pytest.mark.integration


async def test_python_sdk_meter_events_and_adjustments(
    ingest_url: str,
    make_account: AccountFactory,
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    account = await make_account()
    key = account.secret_key
    # The SDK is synchronous: run it in a worker thread so the event loop stays free.
    events = await asyncio.to_thread(_record_usage, key, ingest_url)
    assert events["v1"]["object"] == "billing.meter_event"
    assert events["v1"]["identifier"] == "sdk-v1"
    assert events["v2"]["object"] == "v2.billing.meter_event"
    assert events["v2"]["timestamp"] == events["v2"]["sent_timestamp"]
    assert events["no_meter"] == ("InvalidRequestError", 400, "no_meter")
    assert events["v2_bad_value"] == ("InvalidRequestError", 400, "payload_invalid_value")

    # Cancels need the events processed; stand in for the aggregator.
    for identifier in ("sdk-v1", "sdk-v2"):
        await mark_processed(
            database_url, account.account_id, identifier, events["meter_id"], "cus_sdk"
        )
    adjustments = await asyncio.to_thread(_cancel_usage, key, ingest_url)
    assert adjustments["v1"] == ("billing.meter_event_adjustment", "pending", "sdk-v1")
    assert adjustments["v2"][:3] == ("v2.billing.meter_event_adjustment", "pending", "sdk-v2")
    assert adjustments["v2"][3].startswith("mtr_event_adj_")
    assert adjustments["duplicate"] == ("InvalidRequestError", 400, "duplicate_meter_event")

    async with MeterEventsReader(kafka_bootstrap, topic_prefix) as topic:
        records = await topic.read_decoded(4)
        assert await topic.record_count() == 4
    expected_key = partition_key(account.account_id, False, "cus_sdk")
    assert all(k == expected_key for k, _ in records)
    kinds = sorted(
        (type(r).__name__, r.events[0].identifier if isinstance(r, EventsRecord) else r.identifier)
        for _, r in records
    )
    assert kinds == [
        ("CancelRecord", "sdk-v1"),
        ("CancelRecord", "sdk-v2"),
        ("EventsRecord", "sdk-v1"),
        ("EventsRecord", "sdk-v2"),
    ]


def _client(key: str, base_url: str) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": base_url}, max_network_retries=0)


def _record_usage(key: str, base_url: str) -> dict[str, Any]:
    client = _client(key, base_url)
    meter = client.v1.billing.meters.create(
        {
            "display_name": "Alpaca AI tokens",
            "event_name": "alpaca_ai_tokens",
            "default_aggregation": {"formula": "sum"},
        }
    )
    v1 = client.v1.billing.meter_events.create(
        {
            "event_name": "alpaca_ai_tokens",
            "payload": {"stripe_customer_id": "cus_sdk", "value": "25"},
            "identifier": "sdk-v1",
            "timestamp": int(time.time()) - 60,
        }
    )
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 60))
    v2 = client.v2.billing.meter_events.create(
        {
            "event_name": "alpaca_ai_tokens",
            "payload": {"stripe_customer_id": "cus_sdk", "value": "5"},
            "identifier": "sdk-v2",
            "timestamp": stamp,
        }
    )
    report: dict[str, Any] = {
        "meter_id": meter.id,
        "v1": {"object": v1.object, "identifier": v1.identifier},
        "v2": {"object": v2.object, "timestamp": v2.timestamp, "sent_timestamp": stamp},
    }
    try:
        client.v1.billing.meter_events.create(
            {"event_name": "nope", "payload": {"stripe_customer_id": "c", "value": "1"}}
        )
    except stripe.InvalidRequestError as exc:
        report["no_meter"] = (type(exc).__name__, exc.http_status, exc.code)
    try:
        client.v2.billing.meter_events.create(
            {"event_name": "alpaca_ai_tokens", "payload": {"stripe_customer_id": "c", "value": "x"}}
        )
    except stripe.InvalidRequestError as exc:
        report["v2_bad_value"] = (type(exc).__name__, exc.http_status, exc.code)
    return report


def _cancel_usage(key: str, base_url: str) -> dict[str, Any]:
    client = _client(key, base_url)
    v1 = client.v1.billing.meter_event_adjustments.create(
        {"event_name": "alpaca_ai_tokens", "type": "cancel", "cancel": {"identifier": "sdk-v1"}}
    )
    v2 = client.v2.billing.meter_event_adjustments.create(
        {"event_name": "alpaca_ai_tokens", "type": "cancel", "cancel": {"identifier": "sdk-v2"}}
    )
    assert v1.cancel is not None
    report: dict[str, Any] = {
        "v1": (v1.object, v1.status, v1.cancel.identifier),
        "v2": (v2.object, v2.status, v2.cancel.identifier, v2.id),
    }
    try:
        client.v1.billing.meter_events.create(
            {
                "event_name": "alpaca_ai_tokens",
                "payload": {"stripe_customer_id": "cus_sdk", "value": "1"},
                "identifier": "sdk-v1",
            }
        )
    except stripe.InvalidRequestError as exc:
        report["duplicate"] = (type(exc).__name__, exc.http_status, exc.code)
    return report

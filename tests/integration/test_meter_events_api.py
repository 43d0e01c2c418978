"""Meter events (v1 and v2) over real HTTP, against real Kafka and PostgreSQL.

Every accepted event must be on the topic (decoded with the wire contract, keyed by customer)
before its 2xx; every rejected one must leave the topic untouched.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from meterflow.records.meter_events import EventsRecord, partition_key
from tests.conftest import AccountFactory
from tests.fixtures.meter_events_http import (
    EVENT_NAME,
    auth,
    create_meter,
    event_form,
    mark_processed,
    v1_error,
    v2_error,
)
from tests.fixtures.meter_events_topic import MeterEventsReader

pytestmark = pytest.mark.integration


async def test_v1_form_event_is_on_the_topic_before_the_answer(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    account = await make_account()
    meter = await create_meter(http, account.secret_key)
    event_ts = int(time.time()) - 3600
    before_ms = int(time.time() * 1000)
    response = await http.post(
        "/v1/billing/meter_events",
        data=event_form(identifier="evt-1", timestamp=str(event_ts)),
        headers=auth(account.secret_key),
    )
    after_ms = int(time.time() * 1000)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "object": "billing.meter_event",
        "created": body["created"],
        "event_name": EVENT_NAME,
        "identifier": "evt-1",
        "livemode": False,
        "payload": {"stripe_customer_id": "cus_1", "value": "25"},
        "timestamp": event_ts,
    }
    assert before_ms // 1000 <= body["created"] <= after_ms // 1000

    async with MeterEventsReader(kafka_bootstrap, topic_prefix) as topic:
        [(key, record)] = await topic.read_decoded(1)
        assert await topic.record_count() == 1
    assert key == partition_key(account.account_id, False, "cus_1")
    assert isinstance(record, EventsRecord)
    assert (record.account_id, record.livemode) == (account.account_id, False)
    assert before_ms <= record.received_ms <= after_ms
    assert len(record.batch) == 32
    [event] = record.events
    assert (event.meter_id, event.event_name, event.identifier) == (
        meter["id"],
        EVENT_NAME,
        "evt-1",
    )
    assert (event.customer, event.value, event.timestamp_s) == ("cus_1", "25", event_ts)


async def test_v1_json_body_generated_identifier_and_default_timestamp(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    account = await make_account()
    await create_meter(
        http,
        account.secret_key,
        **{"customer_mapping[event_payload_key]": "org", "customer_mapping[type]": "by_id",
           "value_settings[event_payload_key]": "tokens"},
    )  # fmt: skip
    response = await http.post(
        "/v1/billing/meter_events",
        json={"event_name": EVENT_NAME, "payload": {"org": "cus_9", "tokens": "-1.5", "x": "y"}},
        headers=auth(account.secret_key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert str(uuid.UUID(body["identifier"])) == body["identifier"]
    assert body["timestamp"] == body["created"]
    assert body["payload"] == {"org": "cus_9", "tokens": "-1.5", "x": "y"}

    async with MeterEventsReader(kafka_bootstrap, topic_prefix) as topic:
        [(key, record)] = await topic.read_decoded(1)
    assert key == partition_key(account.account_id, False, "cus_9")
    assert isinstance(record, EventsRecord)
    [event] = record.events
    assert (event.identifier, event.customer, event.value) == (body["identifier"], "cus_9", "-1.5")
    assert event.timestamp_s == body["timestamp"]


async def test_v2_json_event(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    account = await make_account()
    meter = await create_meter(http, account.secret_key)
    event_ts = int(time.time()) - 120
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(event_ts))
    response = await http.post(
        "/v2/billing/meter_events",
        json={
            "event_name": EVENT_NAME,
            "payload": {"stripe_customer_id": "cus_2", "value": "7"},
            "identifier": "v2-evt",
            "timestamp": f"{stamp}.250Z",
        },
        headers=auth(account.secret_key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "object", "created", "event_name", "identifier", "livemode", "payload", "timestamp",
    }  # fmt: skip
    assert body["object"] == "v2.billing.meter_event"
    assert body["timestamp"] == f"{stamp}.000Z"
    assert body["created"].endswith("Z")
    assert (body["identifier"], body["livemode"]) == ("v2-evt", False)

    async with MeterEventsReader(kafka_bootstrap, topic_prefix) as topic:
        [(key, record)] = await topic.read_decoded(1)
    assert key == partition_key(account.account_id, False, "cus_2")
    assert isinstance(record, EventsRecord)
    [event] = record.events
    assert (event.meter_id, event.timestamp_s, event.value) == (meter["id"], event_ts, "7")


def _v1_rejected(now_s: int) -> list[tuple[dict[str, str], str, str]]:
    """(form, code, param) for POST /v1/billing/meter_events; none may reach the topic."""
    return [
        (event_form() | {"event_name": "no_such_meter"}, "no_meter", "event_name"),
        ({"event_name": EVENT_NAME, "payload[value]": "1"}, "payload_no_customer_defined",
         "payload[stripe_customer_id]"),
        ({"event_name": EVENT_NAME, "payload[stripe_customer_id]": "c"}, "payload_no_value_defined",
         "payload[value]"),
        (event_form(value="abc"), "payload_invalid_value", "payload[value]"),
        (event_form(value="1e3"), "payload_invalid_value", "payload[value]"),
        (event_form(value="NaN"), "payload_invalid_value", "payload[value]"),
        (event_form(value="1234567890123456"), "payload_invalid_value", "payload[value]"),
        (event_form(timestamp=str(now_s - 36 * 86400)), "timestamp_too_far_in_past", "timestamp"),
        (event_form(timestamp=str(now_s + 600)), "timestamp_in_future", "timestamp"),
        (event_form(timestamp="soon"), "parameter_invalid_integer", "timestamp"),
        (event_form() | {"event_name": "e" * 101}, "string_too_long", "event_name"),
        (event_form(identifier="i" * 101), "string_too_long", "identifier"),
        (event_form() | {f"payload[k{i}]": "v" for i in range(49)}, "parameter_invalid", "payload"),
        ({"event_name": EVENT_NAME, "payload[stripe_customer_id]": "c",
          "payload[value][deep]": "1"}, "parameter_invalid", "payload[value]"),
        ({"event_name": EVENT_NAME}, "parameter_missing", "payload"),
        ({"payload[value]": "1"}, "parameter_missing", "event_name"),
        (event_form(colour="red"), "parameter_unknown", "colour"),
        (event_form() | {"expand[]": "payload"}, "parameter_invalid", "expand"),
    ]  # fmt: skip


async def test_invalid_events_are_rejected_and_publish_nothing(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    account = await make_account()
    headers = auth(account.secret_key)
    await create_meter(http, account.secret_key)
    v1 = "/v1/billing/meter_events"
    v2 = "/v2/billing/meter_events"
    for form, code, param in _v1_rejected(int(time.time())):
        error = v1_error(await http.post(v1, data=form, headers=headers), 400)
        assert (error["code"], error.get("param")) == (code, param), form

    payload = {"stripe_customer_id": "cus_1", "value": "1"}
    non_string = await http.post(
        v1, json={"event_name": EVENT_NAME, "payload": {**payload, "value": 25}}, headers=headers
    )
    assert v1_error(non_string, 400)["param"] == "payload[value]"

    for body, code, named in (
        ({"event_name": EVENT_NAME, "payload": payload, "timestamp": "2026-11-21 10:00"},
         "parameter_invalid", "timestamp"),
        ({"event_name": EVENT_NAME, "payload": payload, "timestamp": 1_780_000_000},
         "parameter_invalid", "timestamp"),
        ({"event_name": EVENT_NAME, "payload": payload, "timestamp": "2020-01-01T00:00:00Z"},
         "timestamp_too_far_in_past", "timestamp"),
        ({"event_name": EVENT_NAME, "payload": {**payload, "value": 25}}, "parameter_invalid",
         "payload[value]"),
        ({"event_name": EVENT_NAME, "payload": {**payload, "value": "1e3"}},
         "payload_invalid_value", "payload[value]"),
        ({"event_name": "no_such_meter", "payload": payload}, "no_meter", "event_name"),
        ({"event_name": EVENT_NAME}, "parameter_missing", "payload"),
    ):  # fmt: skip
        error = v2_error(await http.post(v2, json=body, headers=headers), 400)
        assert error["code"] == code, body
        assert named in error["message"], error
        assert error["type"] == "invalid_request_error"

    form_body = await http.post(v2, data=event_form(), headers=headers)
    assert v2_error(form_body, 415)["code"] == "unsupported_media_type"
    query = await http.post(v2, params={"event_name": EVENT_NAME}, json={}, headers=headers)
    v2_error(query, 400)
    malformed = await http.post(
        v2, content=b"{", headers={**headers, "Content-Type": "application/json"}
    )
    assert v2_error(malformed, 400)["code"] == "invalid_request"
    assert v2_error(await http.post(v2, json=payload), 401)["code"] == "unauthenticated"

    async with MeterEventsReader(kafka_bootstrap, topic_prefix) as topic:
        assert await topic.record_count() == 0
        # A valid sentinel is the first and only record: nothing rejected was queued either.
        sentinel = await http.post(v1, data=event_form(identifier="sentinel"), headers=headers)
        assert sentinel.status_code == 200, sentinel.text
        [(_, record)] = await topic.read_decoded(1)
        assert isinstance(record, EventsRecord)
        assert record.events[0].identifier == "sentinel"
        assert await topic.record_count() == 1


async def test_inactive_meter_rejects_events_at_once(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    account = await make_account()
    headers = auth(account.secret_key)
    meter = await create_meter(http, account.secret_key)
    url = "/v1/billing/meter_events"
    assert (await http.post(url, data=event_form(), headers=headers)).status_code == 200  # cached
    await http.post(f"/v1/billing/meters/{meter['id']}/deactivate", headers=headers)
    error = v1_error(await http.post(url, data=event_form(), headers=headers), 400)
    assert (error["code"], error["param"]) == ("archived_meter", "event_name")
    v2 = await http.post(
        "/v2/billing/meter_events",
        json={"event_name": EVENT_NAME, "payload": {"stripe_customer_id": "c", "value": "1"}},
        headers=headers,
    )
    assert v2_error(v2, 400)["code"] == "archived_meter"
    async with MeterEventsReader(kafka_bootstrap, topic_prefix) as topic:
        assert await topic.record_count() == 1
    await http.post(f"/v1/billing/meters/{meter['id']}/reactivate", headers=headers)
    assert (await http.post(url, data=event_form(), headers=headers)).status_code == 200


async def test_duplicate_of_a_processed_event(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    alice = await make_account("alice")
    bob = await make_account("bob")
    meter = await create_meter(http, alice.secret_key)
    await create_meter(http, bob.secret_key)
    await mark_processed(database_url, alice.account_id, "seen-1", meter["id"])

    response = await http.post(
        "/v1/billing/meter_events",
        data=event_form(identifier="seen-1"),
        headers=auth(alice.secret_key),
    )
    error = v1_error(response, 400)
    assert error["code"] == "duplicate_meter_event"
    assert error["message"] == "An event already exists with identifier seen-1."
    assert response.headers["stripe-should-retry"] == "false"
    v2 = await http.post(
        "/v2/billing/meter_events",
        json={
            "event_name": EVENT_NAME,
            "payload": {"stripe_customer_id": "c", "value": "1"},
            "identifier": "seen-1",
        },
        headers=auth(alice.secret_key),
    )
    assert v2_error(v2, 400)["code"] == "duplicate_meter_event"
    async with MeterEventsReader(kafka_bootstrap, topic_prefix) as topic:
        assert await topic.record_count() == 0
        # Identifiers are per account: Bob may use the same one.
        bobs = await http.post(
            "/v1/billing/meter_events",
            data=event_form(identifier="seen-1"),
            headers=auth(bob.secret_key),
        )
        assert bobs.status_code == 200, bobs.text
        [(key, _)] = await topic.read_decoded(1)
        assert key == partition_key(bob.account_id, False, "cus_1")


async def test_event_metrics(http: httpx.AsyncClient, make_account: AccountFactory) -> None:
    account = await make_account()
    headers = auth(account.secret_key)
    await create_meter(http, account.secret_key)
    await http.post("/v1/billing/meter_events", data=event_form(), headers=headers)
    await http.post("/v1/billing/meter_events", data=event_form(value="x"), headers=headers)
    assert (await http.get("/readyz")).json() == {"status": "ready"}
    metrics = (await http.get("/metrics")).text
    for line in (
        'meterflow_meter_event_requests_total{endpoint="/v1/billing/meter_events",'
        'outcome="accepted"} 1.0',
        'meterflow_meter_event_requests_total{endpoint="/v1/billing/meter_events",'
        'outcome="invalid"} 1.0',
        "meterflow_kafka_records_published_total 1.0",
        "meterflow_kafka_publish_duration_seconds_count 1.0",
        "meterflow_kafka_producer_connected 1.0",
    ):
        assert line in metrics, line

"""meter_event_session + meter_event_stream against real Kafka and PostgreSQL: accepted events are
counted, invalid ones reach the rejected-events topic with Stripe's codes, structural problems and
bad tokens are refused, nothing is dropped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import stripe

from deploy.ports import free_port
from ingest.stream.tokens import SessionClaims, sign
from meterflow.records.meter_events import EventsRecord
from meterflow.rules.events import format_rfc3339
from meterflow.settings import Settings
from tests.conftest import AccountFactory
from tests.fixtures.ingest_server import running_ingest
from tests.fixtures.meter_events import customer_totals, wait_until
from tests.fixtures.meter_events_http import auth, create_meter, v2_error
from tests.fixtures.meter_events_topic import MeterEventsReader
from tests.fixtures.node_sdk import needs_node, run_node_script

pytestmark = pytest.mark.integration

STREAM = "/v2/billing/meter_event_stream"
SESSION = "/v2/billing/meter_event_session"


async def _session(http: httpx.AsyncClient, key: str) -> dict[str, Any]:
    response = await http.post(SESSION, json={}, headers=auth(key))
    assert response.status_code == 200, response.text
    session: dict[str, Any] = response.json()
    return session


def _event(customer: str, value: str = "1", **extra: Any) -> dict[str, Any]:
    return {
        "event_name": "alpaca_ai_tokens",
        "payload": {"stripe_customer_id": customer, "value": value},
        **extra,
    }


async def test_a_stream_of_batches_is_counted_exactly(
    http: httpx.AsyncClient,
    *,
    make_account: AccountFactory,
    aggregator: None,
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    account = await make_account()
    await create_meter(http, account.secret_key)
    session = await _session(http, account.secret_key)
    assert session["object"] == "v2.billing.meter_event_session"
    assert session["id"].startswith("mes_")
    created_ms = int(time.time() * 1000)
    assert session["expires_at"] > format_rfc3339(created_ms + 14 * 60 * 1000)
    token = session["authentication_token"]
    customers = [f"cus_{i}" for i in range(30)]
    for batch in range(5):
        events = [_event(customers[(batch * 100 + i) % 30], "2", identifier=f"s{batch}-{i}")
                  for i in range(100)]  # fmt: skip
        response = await http.post(STREAM, json={"events": events}, headers=auth(token))
        assert response.status_code == 200, response.text
        assert response.json() == {}
    # A resent batch (a client retry) counts nothing more.
    again = [_event(customers[i % 30], "2", identifier=f"s0-{i}") for i in range(100)]
    assert (await http.post(STREAM, json={"events": again}, headers=auth(token))).status_code == 200

    async def folded() -> bool:
        totals = await customer_totals(database_url)
        return sum(count for _, count in totals.values()) >= 500

    await wait_until(folded, 30, "500 stream events folded")
    totals = await customer_totals(database_url)
    assert sum(count for _, count in totals.values()) == 500
    assert sum(value for value, _ in totals.values()) == Decimal(1000)
    async with MeterEventsReader(kafka_bootstrap, topic_prefix) as topic:
        records = await topic.record_count()
        decoded = await topic.read_decoded(records)
    # Grouped by partition: far fewer records than events, each in its customers' partition.
    assert records <= 6 * 12
    for key, record in decoded:
        assert isinstance(record, EventsRecord)
        assert key.decode().startswith(f"{account.account_id}:test:")


async def test_invalid_events_are_accepted_then_reported_with_their_codes(
    http: httpx.AsyncClient,
    *,
    make_account: AccountFactory,
    aggregator: None,
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    account = await make_account()
    meter = await create_meter(http, account.secret_key)
    inactive = await create_meter(http, account.secret_key, event_name="old_meter")
    deactivate = f"/v1/billing/meters/{inactive['id']}/deactivate"
    assert (await http.post(deactivate, headers=auth(account.secret_key))).status_code == 200
    token = (await _session(http, account.secret_key))["authentication_token"]
    events = [
        _event("cus_ok", "5", identifier="good"),
        {**_event("cus_x"), "event_name": "nothing_here", "identifier": "e-no-meter"},
        {"event_name": "alpaca_ai_tokens", "payload": {"value": "1"}, "identifier": "e-no-cus"},
        _event("cus_x", "12abc", identifier="e-bad-value"),
        _event("cus_x", "1234567890123456", identifier="e-digits"),
        _event("cus_x", identifier="e-old", timestamp="2020-01-01T00:00:00Z"),
        _event("cus_x", identifier="e-future", timestamp=format_rfc3339(
            int(time.time() * 1000) + 3_600_000)),
        {**_event("cus_x"), "event_name": "old_meter", "identifier": "e-archived"},
    ]  # fmt: skip
    response = await http.post(STREAM, json={"events": events}, headers=auth(token))
    assert response.status_code == 200, response.text
    async with MeterEventsReader(kafka_bootstrap, topic_prefix, rejected=True) as rejected_topic:
        (record,) = await rejected_topic.read_rejected(1)
    assert record.account_id == account.account_id
    codes = {r.identifier: (r.code, r.meter_id) for r in record.rejections}
    assert codes == {
        "e-no-meter": ("no_meter", None),
        "e-no-cus": ("meter_event_no_customer_defined", meter["id"]),
        "e-bad-value": ("meter_event_invalid_value", meter["id"]),
        "e-digits": ("meter_event_value_too_many_digits", meter["id"]),
        "e-old": ("timestamp_too_far_in_past", meter["id"]),
        "e-future": ("timestamp_in_future", meter["id"]),
        "e-archived": ("archived_meter", inactive["id"]),
    }
    assert next(r for r in record.rejections if r.identifier == "e-bad-value").event == events[3]

    async def folded() -> bool:
        return "cus_ok" in await customer_totals(database_url)

    await wait_until(folded, 30, "the valid event folded")
    assert await customer_totals(database_url) == {"cus_ok": (Decimal(5), 1)}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "events"),
        ({"events": []}, "events"),
        ({"events": "x"}, "events"),
        ({"events": [_event("c")] * 101}, "events"),
        ({"events": [1]}, "events[0]"),
        ({"events": [{"payload": {"stripe_customer_id": "c", "value": "1"}}]},
         "events[0].event_name"),
        ({"events": [{**_event("c"), "payload": {"value": 1}}]}, "events[0].payload"),
        ({"events": [{**_event("c"), "payload": ["x"]}]}, "events[0].payload"),
        ({"events": [{**_event("c"), "identifier": 7}]}, "events[0].identifier"),
        ({"events": [{**_event("c"), "identifier": "i" * 101}]}, "events[0].identifier"),
        ({"events": [{**_event("c"), "timestamp": 1717243200}]}, "events[0].timestamp"),
        ({"events": [{**_event("c"), "timestamp": "yesterday"}]}, "events[0].timestamp"),
        ({"events": [{**_event("c"), "colour": "red"}]}, "events[0].colour"),
        ({"events": [_event("c")], "extra": 1}, "extra"),
        ({"events": [{**_event("c"), "identifier": "a\x00b"}]}, "events[0].identifier"),
        ({"events": [_event("c\nd")]}, "events[0].payload"),
    ],
)  # fmt: skip
async def test_structural_problems_refuse_the_whole_request(
    http: httpx.AsyncClient,
    *,
    make_account: AccountFactory,
    kafka_bootstrap: str,
    topic_prefix: str,
    body: dict[str, Any],
    param: str,
) -> None:
    account = await make_account()
    await create_meter(http, account.secret_key)
    token = (await _session(http, account.secret_key))["authentication_token"]
    response = await http.post(STREAM, json=body, headers=auth(token))
    error = v2_error(response, 400)
    assert param in error["message"] or error["code"] == "parameter_unknown", error
    for raw in (b"not json", b"[1, 2]", b'{"events": [', b"\xff\xfe"):
        bad = await http.post(
            STREAM, content=raw, headers={**auth(token), "Content-Type": "application/json"}
        )
        v2_error(bad, 400)
    async with MeterEventsReader(kafka_bootstrap, topic_prefix) as topic:
        assert await topic.record_count() == 0
    async with MeterEventsReader(kafka_bootstrap, topic_prefix, rejected=True) as topic:
        assert await topic.record_count() == 0


async def test_tokens_secret_keys_expiry_and_revocation(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    account = await make_account()
    await create_meter(http, account.secret_key)
    body = {"events": [_event("cus_1")]}
    # A secret key, no key, or a forged token: 401.
    for headers in (auth(account.secret_key), {}, auth("mes_e30.AAAA"), auth("garbage")):
        error = v2_error(await http.post(STREAM, json=body, headers=headers), 401)
        assert error["code"] != "billing_meter_event_session_expired"
    session = await _session(http, account.secret_key)
    token = session["authentication_token"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    v2_error(await http.post(STREAM, json=body, headers=auth(forged)), 401)
    # An expired token, signed with the server's own key.
    conn = await asyncpg.connect(database_url)
    try:
        key = await conn.fetchrow("SELECT id, secret FROM session_signing_keys LIMIT 1")
    finally:
        await conn.close()
    assert key is not None
    now_ms = int(time.time() * 1000)
    expired = sign(
        SessionClaims(account.account_id, False, "mes_old", now_ms - 20 * 60_000,
                      now_ms - 5 * 60_000, key["id"]),
        bytes(key["secret"]),
    )  # fmt: skip
    response = await http.post(STREAM, json=body, headers=auth(expired))
    error = v2_error(response, 401)
    assert error["code"] == "billing_meter_event_session_expired"
    assert error["type"] == "temporary_session_expired"
    # The live token works until the account revokes its sessions; a new one works after.
    assert (await http.post(STREAM, json=body, headers=auth(token))).status_code == 200
    revoke = await http.post(f"{SESSION}/revoke", json={}, headers=auth(account.secret_key))
    assert revoke.status_code == 200, revoke.text
    error = v2_error(await http.post(STREAM, json=body, headers=auth(token)), 401)
    assert error["code"] == "billing_meter_event_session_expired"
    fresh = (await _session(http, account.secret_key))["authentication_token"]
    assert (await http.post(STREAM, json=body, headers=auth(fresh))).status_code == 200


@pytest.fixture
def limited_ingest(ingest_settings: Settings) -> Iterator[str]:
    settings = ingest_settings.with_overrides(
        http_port=free_port(), rate_limit_stream_events_per_s=150.0
    )
    with running_ingest(settings) as url:
        yield url


async def test_stream_rate_limit_answers_429_with_retry_after(
    limited_ingest: str, make_account: AccountFactory
) -> None:
    account = await make_account()
    async with httpx.AsyncClient(base_url=limited_ingest, timeout=10) as http:
        await create_meter(http, account.secret_key)
        token = (await _session(http, account.secret_key))["authentication_token"]
        body = {"events": [_event("cus_1") for _ in range(100)]}
        first = await http.post(STREAM, json=body, headers=auth(token))
        assert first.status_code == 200, first.text
        second = await http.post(STREAM, json=body, headers=auth(token))
        error = v2_error(second, 429)
        assert error["type"] == "rate_limit_error"
        assert int(second.headers["retry-after"]) >= 1
        other = await make_account()
        await create_meter(http, other.secret_key)
        other_token = (await _session(http, other.secret_key))["authentication_token"]
        assert (await http.post(STREAM, json=body, headers=auth(other_token))).status_code == 200


async def test_python_sdk_session_and_stream(
    ingest_url: str,
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    aggregator: None,
    database_url: str,
) -> None:
    account = await make_account()
    await create_meter(http, account.secret_key)
    await asyncio.to_thread(_sdk_stream, account.secret_key, ingest_url)

    async def folded() -> bool:
        return "cus_sdk" in await customer_totals(database_url)

    await wait_until(folded, 30, "SDK stream events folded")
    assert await customer_totals(database_url) == {"cus_sdk": (Decimal(30), 3)}


def _sdk_stream(key: str, base_url: str) -> None:
    client = stripe.StripeClient(
        key, base_addresses={"api": base_url, "meter_events": base_url}, max_network_retries=0
    )
    session = client.v2.billing.meter_event_session.create()
    assert session.object == "v2.billing.meter_event_session"
    stream_client = stripe.StripeClient(
        session.authentication_token, base_addresses={"meter_events": base_url},
        max_network_retries=0,
    )  # fmt: skip
    events: Any = [_event("cus_sdk", "10", identifier=f"sdk-{i}") for i in range(3)]
    stream_client.v2.billing.meter_event_stream.create({"events": events})


@needs_node
async def test_node_sdk_session_and_stream(
    ingest_url: str, make_account: AccountFactory, aggregator: None
) -> None:
    account = await make_account()
    report = await run_node_script("stream.mjs", ingest_url, account.secret_key)
    assert report["sessionObject"] == "v2.billing.meter_event_session"
    assert report["secretKeyError"] == {"type": "StripeAuthenticationError", "status": 401}
    assert report["aggregatedValue"] == 100

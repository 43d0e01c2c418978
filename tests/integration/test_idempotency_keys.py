"""Idempotency-Key over real HTTP, against real Kafka and PostgreSQL: replays, reuse errors,
keys per account, outcomes not kept, a request in flight, keys past their lifetime."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import pytest

from deploy.ports import free_port
from ingest.edge.idempotency import IN_PROGRESS_LEASE_MS, KEY_LIFETIME_MS
from ingest.events.api import generated_identifier
from meterflow.settings import Settings
from tests.conftest import AccountFactory
from tests.fixtures.ingest_server import running_ingest
from tests.fixtures.meter_events import wait_until
from tests.fixtures.meter_events_http import (
    EVENT_NAME,
    auth,
    create_meter,
    event_form,
    v1_error,
    v2_error,
)
from tests.fixtures.meter_events_topic import MeterEventsReader

pytestmark = pytest.mark.integration

EVENTS_V1 = "/v1/billing/meter_events"
EVENTS_V2 = "/v2/billing/meter_events"
METERS = "/v1/billing/meters"


def _keyed(key: str, secret_key: str) -> dict[str, str]:
    return {**auth(secret_key), "Idempotency-Key": key}


def _meter_form(event_name: str = "tokens") -> dict[str, str]:
    return {
        "display_name": "Tokens",
        "event_name": event_name,
        "default_aggregation[formula]": "sum",
    }


async def _key_rows(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(
            "SELECT account_id, idempotency_key, state, response_status FROM idempotency_keys"
        )
    finally:
        await conn.close()


async def _age_key(database_url: str, key: str, by_ms: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE idempotency_keys SET created_ms = created_ms - $2 WHERE idempotency_key = $1",
            key,
            by_ms,
        )
    finally:
        await conn.close()


def _assert_replay_of(replayed: httpx.Response, first: httpx.Response) -> None:
    assert replayed.status_code == first.status_code
    assert replayed.content == first.content
    assert replayed.headers["content-type"] == first.headers["content-type"]
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.headers["original-request"] == first.headers["request-id"]
    assert replayed.headers["request-id"] != first.headers["request-id"]
    assert "idempotent-replayed" not in first.headers


async def _metric(http: httpx.AsyncClient, outcome: str) -> str:
    metrics = (await http.get("/metrics")).text
    prefix = f'meterflow_idempotent_requests_total{{outcome="{outcome}"}} '
    return next((line.removeprefix(prefix) for line in metrics.splitlines()
                 if line.startswith(prefix)), "absent")  # fmt: skip


async def test_a_retried_event_is_replayed_and_published_once(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    account = await make_account()
    await create_meter(http, account.secret_key)
    headers = _keyed("evt-key-1", account.secret_key)
    first = await http.post(EVENTS_V1, data=event_form(), headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["identifier"] == generated_identifier("evt-key-1")
    replayed = await http.post(EVENTS_V1, data=event_form(), headers=headers)
    _assert_replay_of(replayed, first)

    payload = {"event_name": EVENT_NAME, "payload": {"stripe_customer_id": "c", "value": "2"}}
    v2_headers = _keyed("evt-key-2", account.secret_key)
    v2_first = await http.post(EVENTS_V2, json=payload, headers=v2_headers)
    assert v2_first.status_code == 200, v2_first.text
    _assert_replay_of(await http.post(EVENTS_V2, json=payload, headers=v2_headers), v2_first)

    async with MeterEventsReader(kafka_bootstrap, topic_prefix) as topic:
        # Every publish is acknowledged before its answer, so this count is final.
        assert await topic.record_count() == 2
    assert await _metric(http, "stored") == "2.0"
    assert await _metric(http, "replayed") == "2.0"


async def test_a_retried_create_makes_one_meter_whatever_the_encoding(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    account = await make_account()
    headers = _keyed("create-1", account.secret_key)
    first = await http.post(METERS, data=_meter_form(), headers=headers)
    assert first.status_code == 200, first.text
    as_json = {
        "event_name": "tokens",
        "default_aggregation": {"formula": "sum"},
        "display_name": "Tokens",
    }
    _assert_replay_of(await http.post(METERS, json=as_json, headers=headers), first)
    listed = await http.get(METERS, headers=headers)  # a GET ignores the key
    assert [m["id"] for m in listed.json()["data"]] == [first.json()["id"]]
    assert "idempotent-replayed" not in listed.headers


async def test_meter_actions_are_replayed(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    account = await make_account()
    meter = await create_meter(http, account.secret_key)
    deactivate = f"{METERS}/{meter['id']}/deactivate"
    headers = _keyed("deactivate-1", account.secret_key)
    first = await http.post(deactivate, headers=headers)
    assert first.json()["status"] == "inactive"
    await http.post(f"{METERS}/{meter['id']}/reactivate", headers=auth(account.secret_key))
    # The replay answers what the deactivation answered, and does not deactivate again.
    _assert_replay_of(await http.post(deactivate, headers=headers), first)
    current = await http.get(f"{METERS}/{meter['id']}", headers=auth(account.secret_key))
    assert current.json()["status"] == "active"


async def test_a_key_reused_for_another_request_is_an_idempotency_error(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    account = await make_account()
    await create_meter(http, account.secret_key)
    headers = _keyed("reused", account.secret_key)
    assert (await http.post(EVENTS_V1, data=event_form(), headers=headers)).status_code == 200

    other_value = await http.post(EVENTS_V1, data=event_form(value="26"), headers=headers)
    assert other_value.status_code == 400
    assert set(other_value.json()["error"]) == {"type", "message"}
    assert other_value.json()["error"]["type"] == "idempotency_error"
    assert "different parameters" in other_value.json()["error"]["message"]

    other_path = await http.post(METERS, data=_meter_form(), headers=headers)
    error = other_path.json()["error"]
    assert (other_path.status_code, error["type"]) == (400, "idempotency_error")
    assert f"POST {EVENTS_V1}" in error["message"]
    assert f"POST {METERS}" in error["message"]

    payload: dict[str, Any] = {"event_name": EVENT_NAME, "payload": {"stripe_customer_id": "c"}}
    payload["payload"]["value"] = "1"
    v2_headers = _keyed("reused-v2", account.secret_key)
    assert (await http.post(EVENTS_V2, json=payload, headers=v2_headers)).status_code == 200
    payload["payload"]["value"] = "2"
    v2 = v2_error(await http.post(EVENTS_V2, json=payload, headers=v2_headers), 400)
    assert (v2["type"], v2["code"]) == ("idempotency_error", "invalid_request")

    async with MeterEventsReader(kafka_bootstrap, topic_prefix) as topic:
        assert await topic.record_count() == 2
    assert await _metric(http, "mismatched") == "3.0"


async def test_keys_belong_to_one_account(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    one, two = await make_account("one"), await make_account("two")
    first = await http.post(METERS, data=_meter_form(), headers=_keyed("shared", one.secret_key))
    second = await http.post(METERS, data=_meter_form(), headers=_keyed("shared", two.secret_key))
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] != second.json()["id"]
    assert "idempotent-replayed" not in second.headers
    # Each account's key now stands for its own request.
    replayed = await http.post(METERS, data=_meter_form(), headers=_keyed("shared", two.secret_key))
    _assert_replay_of(replayed, second)


async def test_client_errors_are_kept_and_header_rules_apply(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    account = await make_account()
    headers = _keyed("before-the-meter", account.secret_key)
    first = await http.post(EVENTS_V1, data=event_form(), headers=headers)
    assert v1_error(first, 400)["code"] == "no_meter"
    await create_meter(http, account.secret_key)
    # The key's outcome is settled: the retry gets the same 400 although it would now succeed.
    _assert_replay_of(await http.post(EVENTS_V1, data=event_form(), headers=headers), first)

    too_long = await http.post(
        EVENTS_V1, data=event_form(), headers=_keyed("k" * 256, account.secret_key)
    )
    error = v1_error(too_long, 400)
    assert error["type"] == "invalid_request_error"
    assert "Idempotency-Key" in error["message"]
    longest = await http.post(
        EVENTS_V1, data=event_form(), headers=_keyed("k" * 255, account.secret_key)
    )
    assert longest.status_code == 200, longest.text

    unauthenticated = await http.post(
        METERS, data=_meter_form(), headers={"Idempotency-Key": "no-account"}
    )
    assert unauthenticated.status_code == 401
    rows = await _key_rows(database_url)
    assert sorted((r["idempotency_key"], r["state"], r["response_status"]) for r in rows) == [
        ("before-the-meter", "completed", 400),
        ("k" * 255, "completed", 200),
    ]


async def test_a_503_is_not_kept_so_the_retry_can_succeed(
    ingest_settings: Settings,
    make_account: AccountFactory,
    database_url: str,
    http: httpx.AsyncClient,
) -> None:
    account = await make_account()
    headers = _keyed("through-an-outage", account.secret_key)
    await create_meter(http, account.secret_key)
    unreachable = ingest_settings.with_overrides(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        http_port=free_port(),
        publish_timeout_s=1.0,
    )
    with running_ingest(unreachable) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as outage:
            failed = await outage.post(EVENTS_V1, data=event_form(), headers=headers)
            assert v1_error(failed, 503)["type"] == "api_error"
            assert await _metric(outage, "not_stored") == "1.0"
    assert await _key_rows(database_url) == []

    retried = await http.post(EVENTS_V1, data=event_form(), headers=headers)
    assert retried.status_code == 200, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert ingest_settings.kafka_bootstrap_servers is not None
    bootstrap, prefix = ingest_settings.kafka_bootstrap_servers, ingest_settings.topic_prefix
    async with MeterEventsReader(bootstrap, prefix) as topic:
        assert await topic.record_count() == 1


async def test_a_retry_while_the_first_request_runs_is_a_409(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    account = await make_account()
    meter = await create_meter(http, account.secret_key)
    url = f"{METERS}/{meter['id']}"
    headers = _keyed("rename-1", account.secret_key)
    blocker = await asyncpg.connect(database_url)
    try:
        # Hold the meter's row lock: the rename stops inside its handler, key taken.
        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute("SELECT 1 FROM meters WHERE id = $1 FOR UPDATE", meter["id"])
        first = asyncio.create_task(http.post(url, data={"display_name": "A"}, headers=headers))

        async def key_taken() -> bool:
            return [r["state"] for r in await _key_rows(database_url)] == ["in_progress"]

        await wait_until(key_taken, 10, "the first request to take the key")
        again = await http.post(url, data={"display_name": "A"}, headers=headers)
        error = again.json()["error"]
        assert again.status_code == 409
        assert (error["type"], error["code"]) == ("idempotency_error", "idempotency_key_in_use")
        assert not first.done()
        await blocking.rollback()
    finally:
        await blocker.close()
    done = await asyncio.wait_for(first, 10)
    assert done.json()["display_name"] == "A"
    _assert_replay_of(await http.post(url, data={"display_name": "A"}, headers=headers), done)
    assert await _metric(http, "in_progress") == "1.0"


async def test_keys_past_their_lifetime_or_lease_are_taken_over(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    account = await make_account()
    headers = _keyed("old", account.secret_key)
    first = await http.post(METERS, data=_meter_form("a"), headers=headers)
    assert first.status_code == 200
    await _age_key(database_url, "old", KEY_LIFETIME_MS - 60_000)
    still = await http.post(METERS, data=_meter_form("b"), headers=headers)
    assert still.json()["error"]["type"] == "idempotency_error"  # 23 h 59 min: still honoured
    await _age_key(database_url, "old", 60_000)
    fresh = await http.post(METERS, data=_meter_form("b"), headers=headers)
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["id"] != first.json()["id"]

    # A request that died mid-way (its process crashed) holds the key only for the lease.
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO idempotency_keys (account_id, livemode, idempotency_key,
                   request_method, request_path, fingerprint, created_ms, owner_request, state)
               VALUES ($1, false, 'orphan', 'POST', $2, '\\x00', $3, 'req_dead', 'in_progress')""",
            account.account_id,
            METERS,
            int(time.time() * 1000) - IN_PROGRESS_LEASE_MS - 1000,
        )
    finally:
        await conn.close()
    taken = await http.post(
        METERS, data=_meter_form("c"), headers=_keyed("orphan", account.secret_key)
    )
    assert taken.status_code == 200, taken.text

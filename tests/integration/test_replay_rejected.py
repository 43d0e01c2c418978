"""``meterflow replay rejected`` against real Kafka and PostgreSQL: events rejected for
``no_meter`` count exactly once after the meter is created and the re-drive runs twice, keeping
their identifiers and timestamps; events that fail again go back to the rejected topic and into
a fresh error report; an event now beyond 35 days is reported; filters select."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from meterflow.records.rejected import RejectedRecord, Rejection
from meterflow.rules.events import format_rfc3339
from meterflow.settings import Settings
from meterflow.windows import DAY_S
from tests.conftest import AccountFactory
from tests.fixtures.error_reports import produce_rejected, running_consumer
from tests.fixtures.meter_events import wait_until
from tests.fixtures.meter_events_http import EVENT_NAME, auth, create_meter
from tests.fixtures.meter_events_topic import MeterEventsReader
from tests.fixtures.meterflow_cli import Ran, cli_env, meterflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STREAM = "/v2/billing/meter_event_stream"
NOW = int(time.time())


def _event(n: int, name: str = EVENT_NAME, **payload: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_name": name,
        "payload": payload or {"stripe_customer_id": f"cus_{n % 3}", "value": str(n)},
    }
    if n % 2:  # half carry an identifier and a timestamp; the stream makes up the others'
        event["identifier"] = f"evt-{n}"
        event["timestamp"] = format_rfc3339((NOW - 3600 - n * 60) * 1000)
    return event


def _outcomes(ran: Ran) -> dict[str, int]:
    assert ran.code == 0, ran.err
    found = re.search(
        r"accepted ([\d,]+), duplicate ([\d,]+), rejected ([\d,]+), too_old ([\d,]+)", ran.out
    )
    assert found is not None, ran.out
    names = ("accepted", "duplicate", "rejected", "too_old")
    return {name: int(found.group(i + 1).replace(",", "")) for i, name in enumerate(names)}


async def _totals(database_url: str, account_id: str) -> dict[str, tuple[Decimal, int]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT customer, sum(value_sum) AS s, sum(event_count) AS c FROM rollups_minute
               WHERE account_id = $1 GROUP BY customer""",
            account_id,
        )
    finally:
        await conn.close()
    return {r["customer"]: (r["s"], int(r["c"])) for r in rows}


@pytest.fixture
async def error_reports(ingest_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The error-report consumer, folding the rejected topic into report windows."""
    settings = ingest_settings.with_overrides(consumer_group=f"g-{ingest_settings.topic_prefix}")
    assert settings.database_url is not None
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    async with running_consumer(settings, pool):
        yield pool
    await pool.close()


@pytest.mark.usefixtures("aggregator")
async def test_no_meter_rejections_count_once_after_the_meter_exists_and_two_redrives(
    http: httpx.AsyncClient,
    *,
    ingest_settings: Settings,
    make_account: AccountFactory,
    database_url: str,
    kafka_bootstrap: str,
    error_reports: asyncpg.Pool,
) -> None:
    account = await make_account()
    session = await http.post(
        "/v2/billing/meter_event_session", json={}, headers=auth(account.secret_key)
    )
    token = session.json()["authentication_token"]
    events = [_event(n) for n in range(30)]
    unknown = [_event(n, "no_such_meter_yet") for n in range(100, 104)]
    for start in range(0, 30, 10):
        sent = await http.post(
            STREAM, json={"events": events[start : start + 10]}, headers=auth(token)
        )
        assert sent.status_code == 200, sent.text
    sent = await http.post(STREAM, json={"events": unknown}, headers=auth(token))
    assert sent.status_code == 200, sent.text
    # One more, dated 34 days back when it was rejected and now more than 35 days old.
    old_id = "evt-old"
    await produce_rejected(
        kafka_bootstrap,
        ingest_settings.topic_prefix,
        [
            RejectedRecord(
                account.account_id,
                False,
                (NOW - 2 * DAY_S) * 1000,
                (
                    Rejection(
                        "no_meter", "No meter", None, EVENT_NAME, old_id,
                        {**_event(7), "identifier": old_id,
                         "timestamp": format_rfc3339((NOW - 36 * DAY_S) * 1000)},
                    ),
                ),
            )
        ],
    )  # fmt: skip
    async with MeterEventsReader(kafka_bootstrap, ingest_settings.topic_prefix) as topic:
        assert await topic.record_count() == 0  # nothing was accepted
    await create_meter(http, account.secret_key)
    env = cli_env(ingest_settings)
    redrive = ("replay", "rejected", "--account", account.account_id, "--test")

    nothing = await meterflow(env, *redrive, "--code", "archived_meter")
    assert _outcomes(nothing) == {"accepted": 0, "duplicate": 0, "rejected": 0, "too_old": 0}
    later = await meterflow(env, *redrive, "--since", str(NOW + 3600))
    assert "0 rejections matched" in later.out

    started_ms = int(time.time() * 1000)
    first = await meterflow(env, *redrive, "--code", "no_meter")
    assert _outcomes(first) == {"accepted": 30, "duplicate": 0, "rejected": 4, "too_old": 1}
    assert (
        f"now more than 35 days old, not counted (back on the rejected-events topic): {old_id}"
        in (first.out)
    )
    assert "rejected again (back on the rejected-events topic): no_meter 4" in first.out
    second = await meterflow(env, *redrive, "--code", "no_meter")
    # The 30 are known, and the 4 no_meter failures the first run published back repeat
    # identifiers seen earlier in the run (the too-old one came back with its own code).
    assert _outcomes(second) == {"accepted": 0, "duplicate": 34, "rejected": 4, "too_old": 1}

    expected: dict[str, tuple[Decimal, int]] = {}
    for n in range(30):
        customer = f"cus_{n % 3}"
        total, count = expected.get(customer, (Decimal(0), 0))
        expected[customer] = (total + n, count + 1)

    async def counted() -> bool:
        return await _totals(database_url, account.account_id) == expected

    await wait_until(counted, 60, "the re-driven events to be folded")
    conn = await asyncpg.connect(database_url)
    try:
        stamped = await conn.fetch(
            """SELECT identifier, event_ts FROM meter_events JOIN event_series USING (series_id)
               WHERE account_id = $1 AND identifier LIKE 'evt-%'""",
            account.account_id,
        )
    finally:
        await conn.close()
    # Each kept its identifier and its own timestamp.
    assert {r["identifier"]: r["event_ts"] for r in stamped} == {
        f"evt-{n}": NOW - 3600 - n * 60 for n in range(1, 30, 2)
    }

    # The failures came back as fresh rejections, counted by the error-report consumer on its
    # own schedule in windows of the re-drives' time: both re-drives' 4, and some or all of the
    # original 34 (30 events and 4) when they fell in the 10 s window the first re-drive started
    # in.
    async def recent_reports() -> int:
        windows = await error_reports.fetch(
            """SELECT window_start_ms, error_count FROM error_report_windows
               WHERE account_id = $1 AND code = 'no_meter'""",
            account.account_id,
        )
        recent = (r["error_count"] for r in windows if r["window_start_ms"] >= started_ms - 10_000)
        return int(sum(recent))

    async def reported_again() -> bool:
        return await recent_reports() >= 8

    await wait_until(reported_again, 60, "the re-drives' rejections to be reported")
    assert 8 <= await recent_reports() <= 8 + 34
    for ran in (first, second):
        assert "rejections matched" in ran.out

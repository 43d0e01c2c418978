"""Rejected stream events on a real Kafka topic become error-report events in a real PostgreSQL:
grouped per meter and window, counted exactly once through restarts and redelivery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from aggregator.error_reports.closer import ErrorReportCloser
from aggregator.error_reports.consumer import error_report_group
from aggregator.error_reports.reports import tally_rejections
from aggregator.error_reports.store import apply_tallies
from meterflow.kafka.offsets import OffsetFenced, PartitionSpan
from meterflow.kafka.topics import meter_events_rejected_topic
from meterflow.records.rejected import RejectedRecord
from meterflow.settings import Settings
from tests.conftest import AccountFactory
from tests.fixtures.error_reports import fold_rejected, rejection, running_consumer, stored_events

pytestmark = pytest.mark.integration

WINDOW_MS = 10_000
GRACE_MS = 5_000
# A window boundary an hour ago: windows are reported by a closer whose clock the test sets.
T0 = (int(time.time() * 1000) // 3_600_000 - 1) * 3_600_000


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> float:
        return self.now_ms / 1000


@pytest.fixture
def settings(ingest_settings: Settings) -> Settings:
    return ingest_settings.with_overrides(
        consumer_group=f"g-{ingest_settings.topic_prefix}",
        error_report_window_s=WINDOW_MS / 1000,
        error_report_grace_s=GRACE_MS / 1000,
    )


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    assert settings.database_url is not None
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


def _closer(settings: Settings, pool: asyncpg.Pool, clock: Clock) -> ErrorReportCloser:
    return ErrorReportCloser(settings, pool, CollectorRegistry(), clock=clock)


async def test_rejections_become_one_report_per_meter_and_window(
    settings: Settings, pool: asyncpg.Pool, make_account: AccountFactory, kafka_bootstrap: str
) -> None:
    acct = (await make_account()).account_id
    other = (await make_account("other")).account_id
    invalid = [rejection("meter_event_invalid_value", "mtr_a", f"inv-{n}") for n in range(7)]
    records = [
        RejectedRecord(acct, False, T0 + 100, (*invalid[:3], rejection("no_meter", None, "nm-1"))),
        RejectedRecord(
            acct, False, T0 + 5_000, (*invalid[3:], rejection("no_meter", None, "nm-2"))
        ),
        RejectedRecord(
            acct,
            False,
            T0 + 9_999,
            (
                rejection("timestamp_in_future", "mtr_a", "fut-1"),
                rejection("archived_meter", "mtr_b", "arch-1"),
            ),
        ),
        RejectedRecord(acct, False, T0 + 10_000, (rejection("timestamp_in_future", "mtr_a", "n"),)),
        RejectedRecord(other, False, T0 + 1, (rejection("no_meter", None, "other-1"),)),
    ]
    registry = CollectorRegistry()
    async with running_consumer(settings, pool, registry):
        await fold_rejected(
            settings.database_url or "", kafka_bootstrap, settings.topic_prefix, records
        )
    for code, count in [
        ("meter_event_invalid_value", 7),
        ("no_meter", 3),
        ("timestamp_in_future", 2),
        ("archived_meter", 1),
    ]:
        assert (
            registry.get_sample_value("meterflow_error_report_rejections_total", {"code": code})
            == count
        )

    clock = Clock(T0 + WINDOW_MS + GRACE_MS - 1)
    closer = _closer(settings, pool, clock)
    assert await closer.run_once() == []  # the first window is over, but not its grace period
    clock.now_ms += 1
    first = await closer.run_once()
    assert len(first) == 4  # mtr_a, mtr_b and no meter for acct; no meter for other
    assert await closer.run_once() == []

    events = await stored_events(settings.database_url or "", acct)
    by_meter = {(e["related_object"] or {}).get("id"): e for e in events}
    assert set(by_meter) == {"mtr_a", "mtr_b", None}
    meter_a = by_meter["mtr_a"]
    assert meter_a["type"] == "v1.billing.meter.error_report_triggered"
    assert meter_a["id"].startswith("evt_test_")
    assert meter_a["related_object"] == {
        "id": "mtr_a",
        "type": "billing.meter",
        "url": "/v1/billing/meters/mtr_a",
    }
    data = meter_a["data"]
    assert data["developer_message_summary"] == "There are 8 invalid events"
    assert data["reason"]["error_count"] == 8
    invalid_type, future_type = data["reason"]["error_types"]
    assert (invalid_type["code"], invalid_type["error_count"]) == ("meter_event_invalid_value", 7)
    assert [s["request"]["identifier"] for s in invalid_type["sample_errors"]] == [
        f"inv-{n}" for n in range(5)
    ]
    assert invalid_type["sample_errors"][0]["error_message"] == "meter_event_invalid_value: inv-0"
    assert (future_type["code"], future_type["error_count"]) == ("timestamp_in_future", 1)
    assert data["validation_start"].endswith(":00:00.000Z")
    assert data["validation_end"].endswith(":00:10.000Z")

    no_meter = by_meter[None]
    assert no_meter["type"] == "v1.billing.meter.no_meter_found"
    assert no_meter["data"]["developer_message_summary"] == "There are 2 invalid events"
    assert by_meter["mtr_b"]["data"]["developer_message_summary"] == "There is 1 invalid event"
    (other_event,) = await stored_events(settings.database_url or "", other)
    assert other_event["data"]["reason"]["error_types"][0]["sample_errors"] == [
        {"error_message": "no_meter: other-1", "request": {"identifier": "other-1"}}
    ]

    clock.now_ms += WINDOW_MS
    (second_window,) = await closer.run_once()
    assert second_window.data["validation_start"].endswith(":00:10.000Z")
    assert second_window.data["reason"]["error_count"] == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM error_report_windows") == 0


async def test_each_rejection_counts_once_through_crashes_and_redelivery(
    settings: Settings, pool: asyncpg.Pool, make_account: AccountFactory, kafka_bootstrap: str
) -> None:
    acct = (await make_account()).account_id
    dsn = settings.database_url or ""

    def batch(first: int, count: int) -> list[RejectedRecord]:
        return [
            RejectedRecord(
                acct,
                False,
                T0 + 10 * n,
                (rejection("meter_event_invalid_value", "mtr_a", f"e-{n}"),),
            )
            for n in range(first, first + count)
        ]

    async with running_consumer(settings, pool):
        await fold_rejected(dsn, kafka_bootstrap, settings.topic_prefix, batch(0, 30))
    # Crashed (cancelled) mid-run: its advisory Kafka commit may or may not have happened; the
    # next consumer resumes from the offsets stored with the tallies.
    async with running_consumer(settings, pool):
        await fold_rejected(dsn, kafka_bootstrap, settings.topic_prefix, batch(30, 20))

    # A zombie replaying the first records (as after a rebalance) is fenced and changes nothing.
    replay = tally_rejections(batch(0, 1), WINDOW_MS)
    topic = meter_events_rejected_topic(settings.topic_prefix)
    async with pool.acquire() as conn:
        partition = await conn.fetchval(
            "SELECT partition FROM consumer_offsets WHERE group_id = $1 AND next_offset > 0",
            error_report_group(settings),
        )
        with pytest.raises(OffsetFenced):
            await apply_tallies(
                conn,
                group=error_report_group(settings),
                topic=topic,
                spans=[PartitionSpan(partition, 0, 1)],
                tallies=replay,
            )
        assert await conn.fetchval("SELECT sum(error_count) FROM error_report_windows") == 50

    # Two closers racing (two aggregator processes) report each window once, as do later passes.
    clock = Clock(T0 + WINDOW_MS + GRACE_MS)
    results = await asyncio.gather(
        _closer(settings, pool, clock).run_once(), _closer(settings, pool, clock).run_once()
    )
    assert sum(len(r) for r in results) == 1
    assert await _closer(settings, pool, clock).run_once() == []
    (event,) = await stored_events(dsn, acct)
    assert event["data"]["reason"]["error_count"] == 50
    assert event["data"]["developer_message_summary"] == "There are 50 invalid events"


async def test_rejections_arriving_after_their_window_was_reported_are_reported_again(
    settings: Settings, pool: asyncpg.Pool, make_account: AccountFactory, kafka_bootstrap: str
) -> None:
    acct = (await make_account()).account_id
    dsn = settings.database_url or ""
    clock = Clock(T0 + WINDOW_MS + GRACE_MS)
    closer = _closer(settings, pool, clock)
    async with running_consumer(settings, pool):
        early = RejectedRecord(acct, False, T0 + 1, (rejection("archived_meter", "mtr_a", "a1"),))
        await fold_rejected(dsn, kafka_bootstrap, settings.topic_prefix, [early])
        assert len(await closer.run_once()) == 1
        late = RejectedRecord(acct, False, T0 + 2, (rejection("archived_meter", "mtr_a", "a2"),))
        await fold_rejected(dsn, kafka_bootstrap, settings.topic_prefix, [late])
        assert len(await closer.run_once()) == 1
    first, second = await stored_events(dsn, acct)
    assert first["data"]["validation_start"] == second["data"]["validation_start"]
    assert first["source_key"] != second["source_key"]
    assert [
        e["data"]["reason"]["error_types"][0]["sample_errors"][0]["request"]["identifier"]
        for e in (first, second)
    ] == ["a1", "a2"]

"""Pre-aggregated (hour/day) meters in the real aggregator: overwrites, late arrivals, cancels,
replay. Records go straight to Kafka so every receipt position is chosen by the test."""

from __future__ import annotations

import time
from decimal import Decimal

import asyncpg
import pytest

from meterflow.kafka.topics import meter_events_topic
from meterflow.records.meter_events import CancelRecord, MeterEventsRecord
from meterflow.settings import Settings
from tests.fixtures.meter_events import (
    events_record,
    fold_records,
    rollups_disagreeing_with_minutes,
)

pytestmark = pytest.mark.integration

HOUR = int(time.time()) // 86_400 * 86_400 - 86_400 + 5 * 3600  # 05:00 UTC yesterday
DAY = HOUR - 5 * 3600

Rows = list[tuple[str, int, Decimal, int]]  # (meter, minute, value_sum, event_count)


@pytest.fixture
async def meters(database_url: str) -> None:
    """acct_1 with an hour `sum` meter, a day `count` meter and a raw `sum` meter."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO accounts (id, name) VALUES ('acct_1', 'windows')")
        for meter_id, formula, window in (
            ("mtr_h", "sum", "hour"),
            ("mtr_d", "count", "day"),
            ("mtr_r", "sum", None),
        ):
            await conn.execute(
                """INSERT INTO meters (id, account_id, livemode, event_name, display_name,
                       formula, customer_key, value_key, event_time_window, created, updated)
                   VALUES ($1, 'acct_1', false, $1, $1, $2, 'stripe_customer_id', 'value', $3,
                           0, 0)""",
                meter_id,
                formula,
                window,
            )
    finally:
        await conn.close()


async def _rows(database_url: str) -> Rows:
    """The minute rollups (and a check that the hour rollups agree with them)."""
    assert await rollups_disagreeing_with_minutes(database_url) == []
    conn = await asyncpg.connect(database_url)
    try:
        found = await conn.fetch(
            """SELECT meter_id, minute_ts, value_sum, event_count FROM rollups_minute
               ORDER BY meter_id, minute_ts"""
        )
    finally:
        await conn.close()
    return [(r["meter_id"], r["minute_ts"], r["value_sum"], r["event_count"]) for r in found]


async def _usage_changes(database_url: str) -> list[tuple[int, str, int, int]]:
    conn = await asyncpg.connect(database_url)
    try:
        found = await conn.fetch(
            "SELECT seq, meter_id, first_event_ts, last_event_ts FROM usage_changes ORDER BY seq"
        )
    finally:
        await conn.close()
    return [tuple(r) for r in found]


def _cancel(received_ms: int, meter: str, identifier: str) -> CancelRecord:
    return CancelRecord("acct_1", False, received_ms, f"c{received_ms}", meter, meter,
                        identifier, "cus_1")  # fmt: skip


async def test_the_last_received_event_of_each_window_survives(
    meters: None,
    aggregator: None,
    database_url: str,
    kafka_bootstrap: str,
    ingest_settings: Settings,
) -> None:
    topic = meter_events_topic(ingest_settings.topic_prefix)
    history: list[MeterEventsRecord] = [
        events_record(1000, "a", [("h1", "cus_1", "5", HOUR + 10),
                                  ("h2", "cus_1", "7", HOUR + 3000)], meter="mtr_h"),
        # Received before h2, so it never survives, though it arrives at the aggregator later.
        events_record(999, "b", [("h3", "cus_1", "3", HOUR + 100)], meter="mtr_h"),
        events_record(1000, "a", [("d1", "cus_1", "1", DAY + 60), ("d2", "cus_1", "1", HOUR)],
                      meter="mtr_d"),
        events_record(1000, "a", [("r1", "cus_1", "2", HOUR), ("r2", "cus_1", "4", HOUR)],
                      meter="mtr_r"),
    ]  # fmt: skip
    await fold_records(database_url, kafka_bootstrap, topic, history)
    assert await _rows(database_url) == [
        ("mtr_d", HOUR, Decimal(1), 1),
        ("mtr_h", HOUR + 3000, Decimal(7), 1),
        ("mtr_r", HOUR, Decimal(6), 2),
    ]

    # A newer receipt with an earlier timestamp in the same hour overwrites; its minute moves.
    newer = events_record(2000, "c", [("h4", "cus_1", "11", HOUR + 20)], meter="mtr_h")
    next_hour = events_record(2001, "d", [("h5", "cus_1", "13", HOUR + 3600)], meter="mtr_h")
    await fold_records(database_url, kafka_bootstrap, topic, [newer, next_hour])
    hour_rows = [r for r in await _rows(database_url) if r[0] == "mtr_h"]
    assert hour_rows == [
        ("mtr_h", HOUR, Decimal(11), 1),
        ("mtr_h", HOUR + 3600, Decimal(13), 1),
    ]

    seen_before_cancels = await _usage_changes(database_url)
    assert {meter for _, meter, _, _ in seen_before_cancels} == {"mtr_d", "mtr_h", "mtr_r"}

    # Cancelling the survivor restores the previously received event (h2, not h3 nor h1);
    # cancelling an overwritten event changes nothing; cancelling the only event empties.
    await fold_records(database_url, kafka_bootstrap, topic, [
        _cancel(3000, "mtr_h", "h4"),
        _cancel(3001, "mtr_h", "h1"),
        _cancel(3002, "mtr_h", "h5"),
        _cancel(3003, "mtr_d", "d1"),
    ])  # fmt: skip
    after_cancels = await _rows(database_url)
    # The usage-change feed tells downstream consumers which usage moved, and over which times.
    cancel_changes = [c for c in await _usage_changes(database_url)
                      if c[0] > max(seq for seq, *_ in seen_before_cancels)]  # fmt: skip
    hour_changes = [(first, last) for _, meter, first, last in cancel_changes if meter == "mtr_h"]
    assert min(f for f, _ in hour_changes) == HOUR + 10
    assert max(last for _, last in hour_changes) == HOUR + 3600
    assert after_cancels == [
        ("mtr_d", HOUR, Decimal(1), 1),
        ("mtr_h", HOUR + 3000, Decimal(7), 1),
        ("mtr_r", HOUR, Decimal(6), 2),
    ]

    # Replaying every record again (Kafka redelivery, a topic replay) changes nothing.
    await fold_records(database_url, kafka_bootstrap, topic, [*history, newer, next_hour])
    assert await _rows(database_url) == after_cancels
    conn = await asyncpg.connect(database_url)
    try:
        survivors = await conn.fetch(
            "SELECT meter_id, window_ts, identifier FROM window_survivors ORDER BY meter_id"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in survivors] == [("mtr_d", DAY, "d2"), ("mtr_h", HOUR, "h2")]

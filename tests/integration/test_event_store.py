"""The fold's one-statement store of a run of events, against a real PostgreSQL: dedupe within and
across runs, minute sums, the ``last`` election by receipt order, usage changes, and the
candidate survivors handed back for pre-aggregated meters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from decimal import Decimal

import asyncpg
import pytest

from aggregator.rollups.columns import EventColumns, Segment
from aggregator.rollups.event_store import StoredRun, store_events
from aggregator.rollups.series import EventSeries
from aggregator.rollups.store import ensure_event_partitions
from meterflow.records.meter_events import EventsRecord
from meterflow.windows import TimeWindow
from tests.fixtures.meter_events import events_record

pytestmark = pytest.mark.integration

HOUR = 1_717_243_200  # 2024-06-01T12:00:00Z


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def _store(
    conn: asyncpg.Connection,
    *records: EventsRecord,
    windows: Mapping[str, TimeWindow] | None = None,
) -> StoredRun:
    columns = EventColumns()
    for record in records:
        columns.add(record)
    await ensure_event_partitions(conn, columns.days())
    await EventSeries().assign(conn, [Segment(events=columns)])
    async with conn.transaction():
        return await store_events(conn, columns, windows or {})


async def _minutes(conn: asyncpg.Connection) -> dict[tuple[str, int], tuple[object, ...]]:
    rows = await conn.fetch(
        """SELECT meter_id, minute_ts, value_sum, event_count, last_value, last_received_ms,
                  last_receipt_batch, last_receipt_index FROM rollups_minute"""
    )
    return {(r["meter_id"], r["minute_ts"]): tuple(r)[2:] for r in rows}


async def test_minutes_sum_and_count_and_last_follows_receipt_not_timestamp(
    conn: asyncpg.Connection,
) -> None:
    stored = await _store(
        conn,
        events_record(1000, "b", [("a", "cus_1", "1", HOUR + 125), ("b", "cus_1", "2", HOUR + 61)]),
        events_record(900, "z", [("c", "cus_1", "10", HOUR + 179)]),  # received earlier
    )
    assert (stored.new_count, stored.candidates) == (3, [])
    assert await _minutes(conn) == {
        ("mtr_1", HOUR + 60): (Decimal(2), 1, Decimal(2), 1000, "b", 1),
        ("mtr_1", HOUR + 120): (Decimal(11), 2, Decimal(1), 1000, "b", 0),
    }
    changes = await conn.fetch(
        """SELECT customer, first_event_ts, last_event_ts, last_received_ms FROM usage_changes"""
    )
    assert [tuple(r) for r in changes] == [("cus_1", HOUR + 61, HOUR + 179, 1000)]


async def test_same_millisecond_ties_break_on_batch_then_index(conn: asyncpg.Connection) -> None:
    await _store(
        conn,
        events_record(5, "b", [("x", "cus_1", "1", HOUR), ("y", "cus_1", "2", HOUR)]),
        events_record(5, "a", [("z", "cus_1", "3", HOUR)]),
    )
    assert (await _minutes(conn))[("mtr_1", HOUR)] == (Decimal(6), 3, Decimal(2), 5, "b", 1)


async def test_a_repeated_identifier_keeps_the_first_received_within_and_across_runs(
    conn: asyncpg.Connection,
) -> None:
    stored = await _store(
        conn,
        events_record(2000, "b", [("dup", "cus_1", "5", HOUR)]),
        events_record(1000, "a", [("dup", "cus_1", "7", HOUR), ("other", "cus_1", "1", HOUR)]),
    )
    assert stored.new_count == 2
    kept = await conn.fetch("SELECT identifier, value FROM meter_events ORDER BY identifier")
    assert [tuple(r) for r in kept] == [("dup", Decimal(7)), ("other", Decimal(1))]
    again = await _store(conn, events_record(3000, "c", [("dup", "cus_1", "100", HOUR)]))
    assert again.new_count == 0
    assert (await _minutes(conn))[("mtr_1", HOUR)][:2] == (Decimal(8), 2)
    assert await conn.fetchval("SELECT count(*) FROM usage_changes") == 1


async def test_a_later_run_takes_over_last_only_if_received_after_it(
    conn: asyncpg.Connection,
) -> None:
    await _store(conn, events_record(2000, "b", [("a", "cus_1", "5", HOUR)]))
    await _store(conn, events_record(1000, "a", [("b", "cus_1", "9", HOUR + 1)]))  # a late arrival
    assert (await _minutes(conn))[("mtr_1", HOUR)] == (Decimal(14), 2, Decimal(5), 2000, "b", 0)
    await _store(conn, events_record(3000, "c", [("c", "cus_1", "4", HOUR + 2)]))
    assert (await _minutes(conn))[("mtr_1", HOUR)] == (Decimal(18), 3, Decimal(4), 3000, "c", 0)


async def test_pre_aggregated_meters_hand_back_one_candidate_per_window(
    conn: asyncpg.Connection,
) -> None:
    stored = await _store(
        conn,
        events_record(1000, "b", [("h1", "cus_1", "1", HOUR + 10), ("h2", "cus_1", "2", HOUR + 20)],
                      meter="mtr_h"),
        events_record(900, "a", [("h3", "cus_1", "3", HOUR + 30),
                                 ("h4", "cus_1", "4", HOUR + 3600)], meter="mtr_h"),
        events_record(950, "c", [("d1", "cus_1", "5", HOUR), ("d2", "cus_2", "6", HOUR)],
                      meter="mtr_d"),
        events_record(800, "d", [("r1", "cus_1", "7", HOUR)], meter="mtr_r"),
        windows={"mtr_h": "hour", "mtr_d": "day"},
    )  # fmt: skip
    assert stored.new_count == 7
    assert sorted((c.meter_id, c.customer, c.identifier) for c in stored.candidates) == [
        ("mtr_d", "cus_1", "d1"),
        ("mtr_d", "cus_2", "d2"),
        ("mtr_h", "cus_1", "h2"),  # received last in its hour: (1000, "b", 1)
        ("mtr_h", "cus_1", "h4"),  # alone in the next hour
    ]
    assert next(c for c in stored.candidates if c.identifier == "h2").value == Decimal(2)
    # Only the raw meter adds to minutes here; windows' minute rows belong to their survivors.
    assert set(await _minutes(conn)) == {("mtr_r", HOUR)}
    assert await conn.fetchval("SELECT count(*) FROM meter_events") == 7
    changed = await conn.fetch("SELECT meter_id, customer FROM usage_changes")
    assert sorted(tuple(r) for r in changed) == [
        ("mtr_d", "cus_1"), ("mtr_d", "cus_2"), ("mtr_h", "cus_1"), ("mtr_r", "cus_1"),
    ]  # fmt: skip


async def test_an_empty_run_touches_nothing(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        stored = await store_events(conn, EventColumns(), {})
    assert (stored.new_count, stored.candidates) == (0, [])
    assert await conn.fetchval("SELECT count(*) FROM usage_changes") == 0

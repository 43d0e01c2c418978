"""The bench's PostgreSQL counters against a real server: a writer's WAL and blocks show up in
the difference of two snapshots once the writer's session has reported them."""

from __future__ import annotations

import asyncpg
import pytest

from loadtest.bench.pg_io import IoCounters, io_counters, per_event
from tests.fixtures.meter_events import wait_until

pytestmark = pytest.mark.integration

ROWS = 5_000


async def test_a_writers_wal_and_blocks_are_counted(database_url: str) -> None:
    reader = await asyncpg.connect(database_url)
    try:
        before = await io_counters(reader)
        writer = await asyncpg.connect(database_url)
        try:
            await writer.execute("CREATE TABLE io_probe (n bigint PRIMARY KEY, pad text)")
            await writer.execute(
                "INSERT INTO io_probe SELECT n, repeat('x', 100) FROM generate_series(1, $1) n",
                ROWS,
            )
        finally:
            await writer.close()  # a session reports its statistics when it ends, if not before
        after: IoCounters = before

        async def counted() -> bool:
            nonlocal after
            after = await io_counters(reader)
            return after.wal_records - before.wal_records >= ROWS

        await wait_until(counted, 10, f"{ROWS} WAL records counted")
    finally:
        await reader.close()
    io = per_event(before, after, ROWS)
    assert io["wal_records"] >= 1.0  # a heap row and an index entry per row, at least one record
    assert io["wal_bytes"] > 100  # each row carries 100 bytes of padding
    assert after.blks_hit + after.blks_read > before.blks_hit + before.blks_read

"""Retention maintenance against a real PostgreSQL: what is past retention goes, in chunks; what
is recent stays; one process at a time; the aggregator's loop and the CLI run the same pass."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from aggregator.maintenance.retention import (
    EVENT_IDENTIFIER_RETENTION_MS,
    IDEMPOTENCY_KEY_RETENTION_MS,
    MAINTENANCE_LOCK_KEY,
    MaintenanceLoop,
    run_maintenance,
)
from aggregator.rollups.store import ensure_event_partitions
from meterflow.settings import Settings
from meterflow.store.pg import Conn
from meterflow.windows import DAY_S
from tests.fixtures.event_series import series_id
from tests.fixtures.meter_events import wait_until

pytestmark = pytest.mark.integration

MINUTE_MS = 60_000
RETENTION_DAYS = 37


def _partition(day_s: int) -> str:
    return "meter_events_" + datetime.fromtimestamp(day_s, tz=UTC).strftime("%Y%m%d")


async def _seed(conn: Conn, now_ms: int, *, old_identifiers: int, tag: str = "") -> None:
    """Identifiers and idempotency keys either side of their cutoffs."""
    identifiers = [(f"{tag}old-{i}", now_ms - EVENT_IDENTIFIER_RETENTION_MS - MINUTE_MS - i)
                   for i in range(old_identifiers)]  # fmt: skip
    identifiers.append((f"{tag}recent", now_ms - EVENT_IDENTIFIER_RETENTION_MS + MINUTE_MS))
    series = await series_id(conn, "acct_1", "mtr_1", "cus_1")
    await conn.executemany(
        """INSERT INTO event_identifiers (digest, series_id, event_ts, received_ms)
           VALUES (event_digest('acct_1', false, $1), $3, $2::bigint / 1000, $2)""",
        [(*identifier, series) for identifier in identifiers],
    )
    await conn.executemany(
        """INSERT INTO idempotency_keys (account_id, livemode, idempotency_key, request_method,
               request_path, fingerprint, created_ms, owner_request, state)
           VALUES ('acct_1', false, $1, 'POST', '/v1/billing/meters', '\\x00', $2, 'req_1',
                   'in_progress')""",
        [
            (f"{tag}old-key", now_ms - IDEMPOTENCY_KEY_RETENTION_MS - MINUTE_MS),
            (f"{tag}recent-key", now_ms - IDEMPOTENCY_KEY_RETENTION_MS + MINUTE_MS),
        ],
    )


async def _partitions(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'meter_events'::regclass ORDER BY c.relname"""
    )
    return [r["relname"] for r in rows]


async def _insert_event(conn: asyncpg.Connection, event_ts: int) -> None:
    await conn.execute(
        """INSERT INTO meter_events (series_id, identifier, value, event_ts, received_ms,
               receipt_batch, receipt_index)
           VALUES ($4, $1, 1, $2, $3, 'b', 0)""",
        f"e-{event_ts}",
        event_ts,
        event_ts * 1000,
        await series_id(conn, "acct_1", "mtr_1", "cus_1"),
    )


async def test_a_pass_removes_what_is_past_retention_and_keeps_the_rest(database_url: str) -> None:
    now_ms = int(time.time() * 1000)
    now_s = now_ms // 1000
    today = now_s - now_s % DAY_S
    # The newest expired day ends at or before now - 37 days; the next one ends after it.
    newest_expired = today - (RETENTION_DAYS + 1) * DAY_S
    days = [newest_expired - DAY_S, newest_expired, newest_expired + DAY_S, today]
    conn = await asyncpg.connect(database_url)
    try:
        await ensure_event_partitions(conn, days)
        for day in days:
            await _insert_event(conn, day + 3600)
        await _seed(conn, now_ms, old_identifiers=25)
        for window_ts in (newest_expired - DAY_S, today):
            await conn.execute(
                """INSERT INTO window_survivors VALUES ('acct_1', false, 'mtr_1', 'cus_1', $1,
                       'i', 1, $1, 0, 'b', 0)""",
                window_ts,
            )
        for event_id, age_days in (("evt_old", 31), ("evt_new", 29)):
            await conn.execute(
                """INSERT INTO core_events (id, account_id, livemode, type, created_ms, data,
                       source_key) VALUES ($1, 'acct_1', false, 't', $2, '{}', $1)""",
                event_id,
                now_ms - age_days * DAY_S * 1000,
            )
        # An old v1 event still waiting for the sweep stays until it is published.
        for event_id, age_days, published in (
            ("evt_v1_old", 31, True), ("evt_v1_unsent", 31, False), ("evt_v1_new", 29, True),
        ):  # fmt: skip
            await conn.execute(
                """INSERT INTO v1_events (id, account_id, livemode, type, created, body, published)
                   VALUES ($1, 'acct_1', false, 't', $2, '{}', $3)""",
                event_id,
                now_ms // 1000 - age_days * DAY_S,
                published,
            )

        report = await run_maintenance(
            conn, now_ms=now_ms, retention_days=RETENTION_DAYS, chunk_rows=10
        )
        assert report is not None
        assert report.rows_pruned == {
            "event_identifiers": 25, "idempotency_keys": 1, "window_survivors": 1,
            "core_events": 1, "webhook_deliveries": 0, "usage_changes": 0, "v1_events": 1,
        }  # fmt: skip
        assert await conn.fetchval("SELECT window_ts FROM window_survivors") == today
        assert await conn.fetchval("SELECT id FROM core_events") == "evt_new"
        kept = await conn.fetch("SELECT id FROM v1_events ORDER BY id")
        assert [r["id"] for r in kept] == ["evt_v1_new", "evt_v1_unsent"]
        assert report.partitions_dropped == [_partition(days[0]), _partition(days[1])]

        assert await _partitions(conn) == [_partition(days[2]), _partition(today)]
        assert await conn.fetchval("SELECT count(*) FROM meter_events") == 2
        identifiers = await conn.fetch("SELECT digest FROM event_identifiers")
        recent = await conn.fetchval("SELECT event_digest('acct_1', false, 'recent')")
        assert [r["digest"] for r in identifiers] == [recent]
        keys = await conn.fetch("SELECT idempotency_key FROM idempotency_keys")
        assert [r["idempotency_key"] for r in keys] == ["recent-key"]

        again = await run_maintenance(conn, now_ms=now_ms, retention_days=RETENTION_DAYS)
        assert again is not None
        assert set(again.rows_pruned.values()) == {0}
        assert again.partitions_dropped == []
    finally:
        await conn.close()


async def test_one_process_at_a_time_and_a_busy_partition_waits(database_url: str) -> None:
    now_ms = int(time.time() * 1000)
    expired_day = (now_ms // 1000) - (RETENTION_DAYS + 2) * DAY_S
    expired_day -= expired_day % DAY_S
    conn = await asyncpg.connect(database_url)
    other = await asyncpg.connect(database_url)
    try:
        await ensure_event_partitions(conn, [expired_day])
        await _seed(conn, now_ms, old_identifiers=3)

        await other.execute("SELECT pg_advisory_lock($1)", MAINTENANCE_LOCK_KEY)
        assert await run_maintenance(conn, now_ms=now_ms, retention_days=RETENTION_DAYS) is None
        assert await conn.fetchval("SELECT count(*) FROM event_identifiers") == 4
        await other.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK_KEY)

        # A reader holds the old partition: the pass gives up on it after its lock timeout.
        async with other.transaction():
            await other.execute(f"LOCK TABLE {_partition(expired_day)} IN ACCESS SHARE MODE")
            busy = await run_maintenance(conn, now_ms=now_ms, retention_days=RETENTION_DAYS)
        assert busy is not None
        assert busy.rows_pruned["event_identifiers"] == 3
        assert busy.partitions_dropped == []
        assert await _partitions(conn) == [_partition(expired_day)]

        later = await run_maintenance(conn, now_ms=now_ms, retention_days=RETENTION_DAYS)
        assert later is not None
        assert later.partitions_dropped == [_partition(expired_day)]
        assert await _partitions(conn) == []
    finally:
        await other.close()
        await conn.close()


async def test_the_aggregator_loop_prunes_periodically_and_counts(database_url: str) -> None:
    settings = Settings().with_overrides(database_url=database_url, maintenance_interval_s=0.1)
    registry = CollectorRegistry()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    loop = MaintenanceLoop(settings, pool, registry)
    task = asyncio.create_task(loop.run())
    try:

        def pruned(table: str) -> float:
            labels = {"table": table}
            value = registry.get_sample_value("meterflow_maintenance_rows_pruned_total", labels)
            return value or 0.0

        for round_, expected in (("a-", 5), ("b-", 10)):
            async with pool.acquire() as conn:
                await _seed(conn, int(time.time() * 1000), old_identifiers=5, tag=round_)

            async def pruned_so_far(expected: int = expected) -> bool:
                return pruned("event_identifiers") == expected

            # The second round is seeded after a pass pruned the first: a later pass finds it.
            await wait_until(pruned_so_far, 10, f"the loop to prune {expected} identifiers")
        assert pruned("idempotency_keys") == 2
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM event_identifiers") == 2
        passes = registry.get_sample_value(
            "meterflow_maintenance_passes_total", {"outcome": "done"}
        )
        assert passes is not None
        assert passes >= 2
    finally:
        loop.request_stop()
        await asyncio.wait_for(task, 10)
        await pool.close()


async def test_the_cli_runs_one_pass(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await _seed(conn, int(time.time() * 1000), old_identifiers=2)
    finally:
        await conn.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy.cli",
        "maintenance",
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == (
        "pruned 2 from event_identifiers, 1 from idempotency_keys, 0 from window_survivors, "
        "0 from core_events, 0 from webhook_deliveries, 0 from usage_changes, 0 from v1_events; "
        "dropped partitions: none"
    )

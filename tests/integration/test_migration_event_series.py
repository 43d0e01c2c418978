"""0017_event_series upgrades a database holding text-keyed raw events and identifiers in place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from meterflow.store.migrations import load_migrations, migrate
from tests.fixtures.postgres import database_before

pytestmark = pytest.mark.integration

SERIES = 17  # the migration that keys raw events and identifiers by series id
DAY = 1_764_806_400  # 2025-12-04 00:00 UTC
# (account, livemode, meter, customer, identifier, value, event_ts, cancelled): three series,
# two days, one series in both modes.
OLD_EVENTS = [
    ("acct_a", False, "mtr_1", "cus_1", "e1", "1.5", DAY + 10, False),
    ("acct_a", False, "mtr_1", "cus_1", "e2", "2", DAY + 86_400 + 5, True),
    ("acct_a", True, "mtr_1", "cus_1", "e1", "7", DAY + 20, False),
    ("acct_b", False, "mtr_2", "cus_9", "x", "-3", DAY + 86_400 + 60, False),
]


@pytest.fixture
async def before_series(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A database migrated up to the migration before the series ids."""
    async with database_before(pg_admin_dsn, SERIES, "mf_series") as dsn:
        yield dsn


async def _seed(conn: asyncpg.Connection) -> None:
    for day in (DAY, DAY + 86_400):
        stamp = "20251204" if day == DAY else "20251205"
        await conn.execute(
            f"CREATE TABLE meter_events_{stamp} PARTITION OF meter_events "
            f"FOR VALUES FROM ({day}) TO ({day + 86_400})"
        )
    await conn.executemany(
        """INSERT INTO meter_events (account_id, livemode, meter_id, customer, identifier, value,
               event_ts, received_ms, receipt_batch, receipt_index, cancelled)
           VALUES ($1, $2, $3, $4, $5, $6::numeric, $7::bigint, $7::bigint * 1000, 'b', 0, $8)""",
        OLD_EVENTS,
    )
    await conn.executemany(
        """INSERT INTO event_identifiers
               (digest, account_id, livemode, meter_id, customer, event_ts, received_ms)
           VALUES (event_digest($1, $2, $5), $1, $2, $3, $4, $6::bigint, $6::bigint * 1000)""",
        [(*e[:5], e[6]) for e in OLD_EVENTS],
    )
    # An identifier whose raw event is gone (a series with no raw event left).
    await conn.execute(
        """INSERT INTO event_identifiers
               (digest, account_id, livemode, meter_id, customer, event_ts, received_ms)
           VALUES (event_digest('acct_c', false, 'lone'), 'acct_c', false, 'mtr_3', 'cus_3',
                   1, 1000)"""
    )


async def test_raw_events_and_identifiers_keep_their_rows_under_series_ids(
    before_series: str,
) -> None:
    conn = await asyncpg.connect(before_series)
    try:
        await _seed(conn)
        applied = await migrate(before_series)
        assert applied == [m.name for m in load_migrations() if m.version >= SERIES]

        series = await conn.fetch("SELECT * FROM event_series ORDER BY series_id")
        keys = {(r["account_id"], r["livemode"], r["meter_id"], r["customer"]) for r in series}
        assert keys == {e[:4] for e in OLD_EVENTS} | {("acct_c", False, "mtr_3", "cus_3")}
        assert len(series) == len(keys)

        events = await conn.fetch(
            """SELECT s.account_id, s.livemode, s.meter_id, s.customer, e.identifier, e.value,
                      e.event_ts, e.cancelled, e.received_ms
               FROM meter_events e JOIN event_series s USING (series_id)
               ORDER BY s.account_id, s.livemode, e.identifier"""
        )
        assert [(*tuple(r)[:5], str(r["value"]), r["event_ts"], r["cancelled"]) for r in events] \
            == sorted(OLD_EVENTS, key=lambda e: (e[0], e[1], e[4]))  # fmt: skip
        assert all(r["received_ms"] == r["event_ts"] * 1000 for r in events)

        # Each day kept its partition, by the same name.
        parts = await conn.fetch(
            """SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'meter_events'::regclass ORDER BY c.relname"""
        )
        assert [r["relname"] for r in parts] == ["meter_events_20251204", "meter_events_20251205"]
        assert f"FROM ('{DAY}') TO ('{DAY + 86_400}')" in parts[0]["bound"]

        identifiers = await conn.fetch(
            """SELECT s.account_id, s.livemode, s.meter_id, s.customer, i.event_ts
               FROM event_identifiers i JOIN event_series s USING (series_id)
               WHERE i.digest = event_digest(s.account_id, s.livemode, $1)""",
            "lone",
        )
        assert [tuple(r) for r in identifiers] == [("acct_c", False, "mtr_3", "cus_3", 1)]
        assert await conn.fetchval("SELECT count(*) FROM event_identifiers") == len(OLD_EVENTS) + 1

        indexes = await conn.fetch(
            """SELECT tablename, indexdef FROM pg_indexes
               WHERE tablename IN ('meter_events', 'event_identifiers') ORDER BY indexname"""
        )
        definitions = " ".join(r["indexdef"] for r in indexes)
        assert "meter_events USING btree (series_id, event_ts)" in definitions
        assert "brin (received_ms)" in definitions
        for gone in ("meter_events_by_text", "event_identifiers_by_text"):
            assert await conn.fetchval("SELECT to_regclass($1)", gone) is None

        # New series get ids past the migrated ones.
        made = await conn.fetchval(
            """INSERT INTO event_series (account_id, livemode, meter_id, customer)
               VALUES ('acct_new', false, 'mtr_1', 'cus_1') RETURNING series_id"""
        )
        assert made > max(r["series_id"] for r in series)
        assert Decimal(str(events[0]["value"])) == Decimal("1.5")
    finally:
        await conn.close()

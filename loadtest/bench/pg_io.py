"""What PostgreSQL wrote and read while the fold ran, per folded event: WAL records, full-page
images and bytes (``pg_stat_wal``), and blocks found in shared buffers or read from outside them
(``pg_stat_database``, this database). Counters are cumulative; a measurement is the difference
of two snapshots, taken with no other writer busy. Backends report their reads when their
transaction ends or when they exit, so the second snapshot comes after the aggregators stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import asyncpg

_SNAPSHOT = """
SELECT w.wal_records, w.wal_fpi, w.wal_bytes::bigint AS wal_bytes, d.blks_read, d.blks_hit
FROM pg_stat_wal w, pg_stat_database d WHERE d.datname = current_database()
"""


@dataclass(frozen=True, slots=True)
class IoCounters:
    wal_records: int
    wal_fpi: int
    wal_bytes: int
    blks_read: int
    blks_hit: int


async def io_counters(conn: asyncpg.Connection) -> IoCounters:
    # Statistics read inside a transaction are cached for it; outside one they are current.
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    (row,) = await conn.fetch(_SNAPSHOT)  # pg_stat_database has a row for every database
    return IoCounters(*(int(row[f.name]) for f in fields(IoCounters)))


def per_event(before: IoCounters, after: IoCounters, events: int) -> dict[str, float]:
    """Each counter's growth from ``before`` to ``after`` divided by ``events``."""
    return {
        f.name: round((getattr(after, f.name) - getattr(before, f.name)) / max(1, events), 3)
        for f in fields(IoCounters)
    }

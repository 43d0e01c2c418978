"""Storage per accepted event: fold M events through the real path and weigh what they left.

Records are produced to Kafka as ingest's stream endpoint writes them (as in
:mod:`loadtest.bench.fold_rate`, a slice at a time so ten million events never sit in memory),
then one aggregator folds them. Before and after the fold, each table's heap (with TOAST) and
indexes are weighed with ``pg_table_size`` / ``pg_indexes_size`` over every partition, and the
WAL position is read; the differences divided by the events accepted (new rows in the dedupe
set) give bytes per event for each group of tables:

- the dedupe set: ``event_identifiers``;
- raw events: ``meter_events``, all partitions, and the series ids they refer to
  (``event_series``, a row per series);
- rollups: ``rollups_minute``, ``rollups_hour``, ``rollups_day``, ``window_survivors``;
- transient rows: ``usage_changes`` (kept 24 hours).

Sizes are taken right after the fold, dead row versions included: the rollups' rows are
updated in place batch after batch, so theirs are far above what a row costs once its minute,
hour or day is over and vacuum has made the space reusable. The rollup tables are then rewritten
(``VACUUM FULL``, which keeps their fillfactor) and weighed again: those bytes per row feed
:mod:`loadtest.bench.sizing`, whose estimates are written beside the results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from loadtest.bench.fold_rate import FoldWorkload, fold_through, produce, record_slices
from loadtest.bench.sizing import MeasuredBytes
from loadtest.bench.stack import BenchStack
from meterflow.kafka.topics import ensure_topics, meter_events_topic, topic_specs

ROLLUPS = ("rollups_minute", "rollups_hour", "rollups_day", "window_survivors")
GROUPS: dict[str, tuple[str, ...]] = {
    "dedupe set": ("event_identifiers",),
    "raw events": ("meter_events", "event_series"),
    "rollups": ROLLUPS,
    "transient": ("usage_changes",),
}
SLICE_EVENTS = 100_000

# The leaves of a table: its partitions, or the table itself when it has none.
_LEAVES = """
WITH tree AS (SELECT relid FROM pg_partition_tree($1::regclass) WHERE isleaf)
SELECT relid FROM tree UNION ALL SELECT $1::regclass WHERE NOT EXISTS (SELECT FROM tree)
"""
_TABLE_BYTES = f"""
SELECT coalesce(sum(pg_table_size(relid)), 0)::bigint AS heap,
       coalesce(sum(pg_indexes_size(relid)), 0)::bigint AS indexes
FROM ({_LEAVES}) leaves
"""
# Per index as defined on the table: a partition's index counts towards its parent index.
_INDEX_BYTES = f"""
SELECT coalesce(pg_partition_root(i.indexrelid), i.indexrelid)::regclass::text AS name,
       sum(pg_relation_size(i.indexrelid))::bigint AS bytes
FROM pg_index i WHERE i.indrelid IN (SELECT relid FROM ({_LEAVES}) leaves)
GROUP BY 1 ORDER BY 1
"""


@dataclass(frozen=True, slots=True)
class TableSize:
    rows: int
    heap: int
    indexes: dict[str, int]

    @property
    def total(self) -> int:
        return self.heap + sum(self.indexes.values())


async def table_sizes(
    conn: asyncpg.Connection, tables: tuple[str, ...] | None = None
) -> dict[str, TableSize]:
    sizes = {}
    for table in tables or tuple(t for names in GROUPS.values() for t in names):
        rows = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        heap = await conn.fetchrow(_TABLE_BYTES, table)
        assert heap is not None  # noqa: S101 - an aggregate always yields a row
        indexes = {r["name"]: int(r["bytes"]) for r in await conn.fetch(_INDEX_BYTES, table)}
        sizes[table] = TableSize(rows, int(heap["heap"]), indexes)
    return sizes


# -- pure part ---------------------------------------------------------------------------------


def growth(
    before: dict[str, TableSize], after: dict[str, TableSize], accepted: int
) -> dict[str, Any]:
    """Per table and per group: rows, heap and index bytes added, and bytes per accepted event."""
    per = max(1, accepted)
    tables: dict[str, Any] = {}
    for table, now in after.items():
        was = before.get(table, TableSize(0, 0, {}))
        indexes = {n: b - was.indexes.get(n, 0) for n, b in now.indexes.items()}
        added = now.total - was.total
        tables[table] = {
            "rows": now.rows - was.rows,
            "heap_bytes": now.heap - was.heap,
            "index_bytes": indexes,
            "total_bytes": added,
            "bytes_per_event": round(added / per, 1),
            "bytes_per_row": round(added / (now.rows - was.rows), 1)
            if now.rows > was.rows
            else None,
        }
    groups = {
        group: {
            "tables": list(names),
            "total_bytes": sum(tables[t]["total_bytes"] for t in names),
            "bytes_per_event": round(sum(tables[t]["total_bytes"] for t in names) / per, 1),
        }
        for group, names in GROUPS.items()
    }
    return {"tables": tables, "groups": groups}


def compacted(sizes: dict[str, TableSize]) -> dict[str, Any]:
    """Bytes per row of each table as a whole (after ``VACUUM FULL``)."""
    return {
        table: {
            "rows": size.rows,
            "total_bytes": size.total,
            "bytes_per_row": round(size.total / size.rows, 1) if size.rows else None,
        }
        for table, size in sizes.items()
    }


def measured_bytes(phase: dict[str, Any]) -> MeasuredBytes:
    """What :mod:`loadtest.bench.sizing` needs from a storage phase's result."""
    tables, groups, compact = phase["tables"], phase["groups"], phase["rollups_compacted"]
    identifiers = tables["event_identifiers"]
    btree = sum(b for n, b in identifiers["index_bytes"].items() if n.endswith("_pkey"))
    return MeasuredBytes(
        dedupe_per_event=groups["dedupe set"]["bytes_per_event"],
        dedupe_btree_per_event=round(btree / max(1, phase["accepted_events"]), 1),
        raw_per_event=groups["raw events"]["bytes_per_event"],
        transient_per_event=groups["transient"]["bytes_per_event"],
        wal_per_event=phase["wal_bytes_per_event"],
        minute_row=compact["rollups_minute"]["bytes_per_row"] or 0.0,
        hour_row=compact["rollups_hour"]["bytes_per_row"] or 0.0,
        day_row=compact["rollups_day"]["bytes_per_row"] or 0.0,
    )


# -- the measurement ---------------------------------------------------------------------------


async def measure_storage(
    stack: BenchStack,
    workloads: list[FoldWorkload],
    prefix: str,
    deadline_s: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Produce the workloads' events, fold them with one aggregator, weigh what they added."""
    await ensure_topics(stack.bootstrap, topic_specs(prefix))
    topic = meter_events_topic(prefix)
    records = events = 0
    started = time.perf_counter()
    for produced in record_slices(workloads, int(time.time()), SLICE_EVENTS):
        await produce(stack.bootstrap, topic, produced.records)
        records += len(produced.records)
        events += produced.events
        if events % (10 * SLICE_EVENTS) < SLICE_EVENTS:
            say(f"storage: produced {events:,} events")
    produce_s = time.perf_counter() - started
    accounts = [w.account_id for w in workloads]
    conn = await asyncpg.connect(stack.database_url)
    try:
        before = await table_sizes(conn)
        accepted_before = await _identifiers(conn, accounts)
        lsn_before = await conn.fetchval("SELECT pg_current_wal_lsn()")
        run = await fold_through(
            stack,
            prefix=prefix,
            group=f"bench-storage-{prefix}",
            records=records,
            aggregators=1,
            deadline_s=deadline_s,
            log_name="storage",
        )
        wal = int(
            await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)", lsn_before)
        )
        accepted = await _identifiers(conn, accounts) - accepted_before
        after = await table_sizes(conn)
        say("storage: rewriting the rollup tables (VACUUM FULL) to weigh them compacted")
        await conn.execute(f"VACUUM (FULL) {', '.join(ROLLUPS)}")
        compact = await table_sizes(conn, ROLLUPS)
    finally:
        await conn.close()
    series = sum(len(w.meters) * w.customers for w in workloads)
    return {
        "accounts": len(workloads),
        "meters_per_account": len(workloads[0].meters),
        "customers_per_account": workloads[0].customers,
        "series": series,
        "events": events,
        "records": records,
        "accepted_events": accepted,
        "produce_s": round(produce_s, 1),
        "finished": run.done_s is not None,
        "fold_s": round(run.done_s, 1) if run.done_s else None,
        "fold_events_per_s": round(events / run.done_s, 1) if run.done_s else None,
        "events_per_series_minute": round(accepted / max(1, series) / 60, 2),
        "wal_bytes": wal,
        "wal_bytes_per_event": round(wal / max(1, accepted), 1),
        **growth(before, after, accepted),
        "rollups_compacted": compacted(compact),
    }


async def _identifiers(conn: asyncpg.Connection, accounts: list[str]) -> int:
    return int(
        await conn.fetchval(
            """SELECT count(*) FROM event_identifiers
               WHERE series_id IN (SELECT series_id FROM event_series
                                   WHERE account_id = ANY($1::text[]))""",
            accounts,
        )
    )

"""Pre-loading the dedupe set and the raw-event store, so the fold can be measured at scale.

Everything is generated inside PostgreSQL by ``INSERT ... SELECT FROM generate_series``, in two
concurrent lanes: the dedupe set (``event_identifiers``, one connection, chunks in receipt
order), and the raw events (``meter_events``, one statement per day partition on two
connections, the partitions created first with the aggregator's names). Rows look like
production's:

- identifiers are random UUID text (36 characters, like a client's), for one tenant account and
  its meters, over ``customers`` customers (the fold workload's customer ids, so the fold lands
  on series that exist); the dedupe set's receipt times spread evenly over the 48 hours before
  the load, in receipt order, as the fold writes them (which keeps the BRIN age index tight);
- raw events spread evenly over the 35 days of event time before the load, received a few
  seconds after their event time, with receipt batches shaped like ingest's (16 hex characters
  of process prefix, 16 of counter) of 100 events. They are not the same events as the dedupe
  set's: what matters to the fold is each table's size and shape.

All of it belongs to the one account the fold then writes to. In production every tenant's
inserts hit its own part of the dedupe set's primary key in proportion to its share of it, so
inserts land all over the index; a single-account fold workload reproduces that only if its
account holds the whole set.

When a lane adds at least as many rows as its table holds (the first load; the tables hold only
the bench's own folds), its indexes are dropped first and rebuilt after the load, which is about
twice as fast, and checked afterwards to be exactly what they were (``pg_get_indexdef``). A
btree rebuilt that way is packed tighter than one grown by random inserts (about 70 % full), so
the dedupe set's btrees are built at fillfactor 70 and the option is reset afterwards; a
partitioned index's options cannot be reset, so the raw events' index is rebuilt as defined
(90 %). Smaller additions insert through the live indexes. Each lane ends with
``VACUUM (ANALYZE)``, as autovacuum would have done by then, so that neither an autovacuum of
the new rows nor missing statistics disturb the fold measured next.

The SQL that knows the two tables' columns is all in this module, for the fold's owners to adapt.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from meterflow.errors import MeterflowError
from meterflow.windows import DAY_S

DEDUPE_WINDOW_MS = 48 * 3_600_000
RAW_EVENT_DAYS = 35
DEFAULT_RAW_RATIO = 2.0  # the figure: 100 million raw events beside 50 million identifiers
IDENTIFIER_CHUNK = 2_000_000
RAW_INSERTERS = 2
RANDOM_INSERT_FILLFACTOR = 70
_MAINTENANCE_WORK_MEM = "1GB"
# Disk per preloaded row, tables with their indexes (measured with series ids at 50 million
# identifiers and 100 million raw events: 113 and 169 bytes), and room for what a load needs
# meanwhile (the index sorts' temporary files, WAL up to max_wal_size and beyond it under load)
# plus a reserve left free for everyone else on the machine.
IDENTIFIER_BYTES = 125
RAW_EVENT_BYTES = 190
TRANSIENT_BYTES = 6 * 2**30
RESERVE_BYTES = 4 * 2**30


class PreloadFailed(MeterflowError):
    """The preload left the database other than the migrations define it."""


class NotEnoughDisk(MeterflowError):
    """A preload step would leave too little free disk; nothing of it was loaded."""


def disk_needed(identifiers: int, raw_events: int) -> int:
    """Bytes a step adding these rows needs free before it starts (the reserve included)."""
    if not identifiers and not raw_events:
        return 0
    rows = identifiers * IDENTIFIER_BYTES + raw_events * RAW_EVENT_BYTES
    return rows + TRANSIENT_BYTES + RESERVE_BYTES


# -- pure part ---------------------------------------------------------------------------------


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"0,10_000_000,5e7"`` -> ``(0, 10000000, 50000000)``: preload sizes, never decreasing."""
    sizes = tuple(int(float(part)) for part in text.replace("_", "").split(",") if part.strip())
    if not sizes or any(s < 0 for s in sizes) or list(sizes) != sorted(sizes):
        raise ValueError(f"preload sizes must be non-negative and increasing: {text!r}")
    return sizes


def raw_events_for(identifiers: int, ratio: float) -> int:
    return round(identifiers * ratio)


def should_rebuild(present: int, adding: int) -> bool:
    """Drop and rebuild a table's indexes around a load when it at least doubles the table."""
    return adding > 0 and adding >= present


def chunks(first: int, last: int, size: int) -> list[tuple[int, int]]:
    """``[first, last)`` in pieces of at most ``size``."""
    return [(lo, min(last, lo + size)) for lo in range(first, last, size)]


def day_spans(start_s: int, end_s: int) -> list[tuple[int, int, int]]:
    """``(day_ts, from_s, to_s)`` for each UTC day that ``[start_s, end_s)`` overlaps."""
    spans = []
    day = start_s - start_s % DAY_S
    while day < end_s:
        spans.append((day, max(day, start_s), min(day + DAY_S, end_s)))
        day += DAY_S
    return spans


def spread(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders), summing to ``total``."""
    whole = sum(weights)
    if whole <= 0:
        return [0] * len(weights)
    exact = [total * w / whole for w in weights]
    parts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


_BOUNDS = re.compile(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")


def uncovered_days(days: Sequence[int], bounds: Sequence[str]) -> list[int]:
    """The days (UTC day starts) that no existing partition's range bound covers."""
    ranges = [(int(m[1]), int(m[2])) for b in bounds if (m := _BOUNDS.search(b))]
    return [d for d in days if not any(lo <= d and d + DAY_S <= hi for lo, hi in ranges)]


def partition_name(day_ts: int) -> str:
    """The aggregator's name for a ``meter_events`` day partition (aggregator/rollups/store.py)."""
    return "meter_events_" + datetime.fromtimestamp(day_ts, tz=UTC).strftime("%Y%m%d")


@dataclass(frozen=True, slots=True)
class IndexDefinition:
    name: str
    method: str  # btree, brin, ...
    index_def: str  # pg_get_indexdef
    constraint: str | None  # the constraint it backs, if any
    constraint_def: str | None  # pg_get_constraintdef


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def drop_statement(table: str, index: IndexDefinition) -> str:
    if index.constraint is not None:
        return f"ALTER TABLE {quoted(table)} DROP CONSTRAINT {quoted(index.constraint)}"
    return f"DROP INDEX {quoted(index.name)}"


def create_statements(table: str, index: IndexDefinition, fillfactor: int | None) -> list[str]:
    """The statements that rebuild ``index`` as defined; a btree packed at ``fillfactor`` (then
    reset to its default) when given and the definition sets no storage option of its own."""
    packed = fillfactor is not None and index.method == "btree"
    if index.constraint is not None and index.constraint_def is not None:
        body = index.constraint_def
        packed = packed and " WITH (" not in body
        statement = f"ALTER TABLE {quoted(table)} ADD CONSTRAINT {quoted(index.constraint)} {body}"
    else:
        # A partitioned table's index reads ``ON ONLY``, which would build no partition's index.
        statement = index.index_def.replace(" ON ONLY ", " ON ", 1)
        packed = packed and " WITH (" not in statement and " WHERE " not in statement
    if not packed:
        return [statement]
    return [
        f"{statement} WITH (fillfactor = {fillfactor})",
        f"ALTER INDEX {quoted(index.name)} RESET (fillfactor)",
    ]


# -- SQL ---------------------------------------------------------------------------------------

# Per row: h, a 64-bit hash of the row's number, picks meter, customer, value and delays. The
# tenant's series are created first (_SERIES); each row then finds its series id by
# (meter, customer) in a hash join.
_METER = "($4::text[])[1 + ((h >> 32) & 65535) % cardinality($4::text[])]"
_CUSTOMER = "$5 || lpad(((h & 2147483647) % $6)::text, $7, '0')"
_SERIES_OF_ROW = (
    "JOIN event_series s ON s.account_id = $1 AND s.livemode = $2 "
    "AND s.meter_id = g.meter_id AND s.customer = g.customer"
)

# $1 account, $2 livemode, $3 meters, $4 customer prefix, $5 customers, $6 digits.
_SERIES = """
INSERT INTO event_series (account_id, livemode, meter_id, customer)
SELECT $1, $2, m, $4 || lpad(c::text, $6, '0')
FROM unnest($3::text[]) m, generate_series(0, $5 - 1) c
ON CONFLICT DO NOTHING
"""

# $1 account, $2 livemode, $3 salt, $4 meters, $5 customer prefix, $6 customers, $7 digits,
# rows [$8, $9) of the step's [$10, $10 + $11), receipt times over [$12, $12 + $13) ms.
_IDENTIFIERS = f"""
INSERT INTO event_identifiers (digest, series_id, event_ts, received_ms)
SELECT event_digest($1, $2, md5($3 || i::text)::uuid::text), s.series_id,
       received_ms / 1000 - ((h >> 48) & 63), received_ms
FROM (SELECT i, h, {_METER} AS meter_id, {_CUSTOMER} AS customer, received_ms
      FROM (SELECT i, hashint8extended(i, 0) AS h,
                   $12::bigint + (i - $10) * $13::bigint / $11::bigint AS received_ms
            FROM generate_series($8::bigint, $9::bigint - 1) i) r) g
{_SERIES_OF_ROW}
"""

# As above, then: event times over [$10, $10 + $11) s for rows [$8, $9), $12 the batch prefix.
_RAW_EVENTS = f"""
INSERT INTO meter_events
    (series_id, event_ts, identifier, value, received_ms, receipt_batch, receipt_index)
SELECT s.series_id, event_ts, md5($3 || 'r' || i::text)::uuid::text,
       ((h >> 16) & 1023) + 1, event_ts * 1000 + ((h >> 48) & 4095),
       $12 || lpad(to_hex(i / 100), 16, '0'), (i % 100)::int
FROM (SELECT i, h, {_METER} AS meter_id, {_CUSTOMER} AS customer, event_ts
      FROM (SELECT i, hashint8extended(i, 1) AS h,
                   $10::bigint + (i - $8) * $11::bigint / ($9::bigint - $8::bigint) AS event_ts
            FROM generate_series($8::bigint, $9::bigint - 1) i) r) g
{_SERIES_OF_ROW}
"""

_WARM_IDENTIFIERS = "SELECT count(digest) FROM event_identifiers"
# $1 today's UTC day start, $2 the account: the window index of today's partition.
_WARM_RAW_EVENTS = """
SELECT count(*) FROM meter_events
WHERE series_id IN (SELECT series_id FROM event_series WHERE account_id = $2)
  AND event_ts >= $1 AND event_ts < $1 + 86400
"""
_WARM_RAW_HEAP = "SELECT count(*) FROM meter_events WHERE event_ts >= $1 AND event_ts < $1 + 86400"

_INDEXES = """
SELECT c.relname AS name, am.amname AS method, pg_get_indexdef(i.indexrelid) AS index_def,
       con.conname AS constraint_name,
       CASE WHEN con.oid IS NOT NULL THEN pg_get_constraintdef(con.oid) END AS constraint_def
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am am ON am.oid = c.relam
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
WHERE i.indrelid = $1::regclass
ORDER BY c.relname
"""

_PARTITION_BOUNDS = """
SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'meter_events'::regclass
"""

# Rows of a (possibly partitioned) table as the statistics have them: exact after VACUUM, and
# cheap where count(*) over 100 million rows is not; never analysed counts as empty.
_LEAVES = """
WITH tree AS (SELECT relid FROM pg_partition_tree($1::regclass) WHERE isleaf)
SELECT relid FROM tree UNION ALL SELECT $1::regclass WHERE NOT EXISTS (SELECT FROM tree)
"""
_ROWS = f"""
SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint
FROM ({_LEAVES}) leaves JOIN pg_class c ON c.oid = leaves.relid
"""

# Every leaf of a (possibly partitioned) table, indexes and TOAST included.
TOTAL_BYTES = f"""
SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM ({_LEAVES}) leaves
"""


# -- loading -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Insert:
    sql: str
    args: tuple[Any, ...]
    rows: int


@dataclass(frozen=True, slots=True)
class PreloadTenant:
    """The account the preload fills (and the fold then writes to), and its series."""

    account_id: str
    meter_ids: tuple[str, ...]
    customers: int
    customer_prefix: str
    customer_digits: int
    livemode: bool = False


async def index_definitions(conn: asyncpg.Connection, table: str) -> list[IndexDefinition]:
    rows = await conn.fetch(_INDEXES, table)
    return [
        IndexDefinition(
            r["name"], r["method"], r["index_def"], r["constraint_name"], r["constraint_def"]
        )
        for r in rows
    ]


class Preloader:
    """Grows the tenant's dedupe set and raw events, keeping count of what it has loaded."""

    def __init__(
        self,
        database_url: str,
        tenant: PreloadTenant,
        say: Callable[[str], None],
        *,
        raw_ratio: float = DEFAULT_RAW_RATIO,
        data_dir: Path | None = None,
    ) -> None:
        self._url = database_url
        self._data_dir = data_dir  # where PostgreSQL keeps its files: checked for free space
        self._tenant = tenant
        self._say = say
        self.raw_ratio = raw_ratio
        self.identifiers = 0
        self.raw_events = 0
        self._salt = secrets.token_hex(4)
        self._batch_prefix = secrets.token_hex(8)
        self._loaded = {"event_identifiers": 0, "meter_events": 0}
        self._target = {"event_identifiers": 0, "meter_events": 0}
        self._started = 0.0

    async def grow_to(self, identifiers: int) -> dict[str, Any]:
        """Load rows until the dedupe set holds ``identifiers`` preloaded identifiers and the raw
        store ``raw_ratio`` times as many events; returns what it did and how long it took."""
        raw = raw_events_for(identifiers, self.raw_ratio)
        adding = (max(0, identifiers - self.identifiers), max(0, raw - self.raw_events))
        if self._data_dir is not None:
            needed, free = disk_needed(*adding), shutil.disk_usage(self._data_dir).free
            if needed > free:
                raise NotEnoughDisk(
                    f"preloading {adding[0]:,} identifiers and {adding[1]:,} raw events needs "
                    f"about {needed / 1e9:,.0f} GB free (a {RESERVE_BYTES / 2**30:.0f} GiB "
                    f"reserve included); {self._data_dir} has {free / 1e9:,.0f} GB"
                )
        self._started = time.perf_counter()
        self._loaded = {"event_identifiers": 0, "meter_events": 0}
        self._target = {"event_identifiers": adding[0], "meter_events": adding[1]}
        now_ms = int(time.time() * 1000)
        self._say(
            f"preload: adding {adding[0]:,} identifiers (48 h of receipt times) and "
            f"{adding[1]:,} raw events (35 days of event time)"
        )
        await self._create_series()
        lanes = await asyncio.gather(
            self._identifier_lane(self.identifiers, identifiers, now_ms),
            self._raw_lane(self.raw_events, raw, now_ms // 1000),
        )
        self.identifiers = max(identifiers, self.identifiers)
        self.raw_events = max(raw, self.raw_events)
        total_s = time.perf_counter() - self._started
        conn = await asyncpg.connect(self._url)
        try:
            sizes = {t: int(await conn.fetchval(TOTAL_BYTES, t)) for t in self._loaded}
        finally:
            await conn.close()
        self._say(
            f"preload: {self.identifiers:,} identifiers and {self.raw_events:,} raw events "
            f"loaded; this step took {total_s:.0f} s"
        )
        return {
            "identifiers": self.identifiers,
            "raw_events": self.raw_events,
            "added_identifiers": adding[0],
            "added_raw_events": adding[1],
            "seconds": round(total_s, 1),
            "lanes": dict(zip(("event_identifiers", "meter_events"), lanes, strict=True)),
            "total_bytes": sizes,
        }

    async def warm_up(self) -> dict[str, Any]:
        """Read what a running fold keeps in memory: the dedupe set's primary key (inserts land
        at random in all of it) and the day partition of raw events that new events go to, with
        its index. Right after a load they are on disk only (reading the rest of the load pushed
        them out of memory), which a fold that has been running for a while never meets.
        Returns how long that took and the rows the reads counted."""
        started = time.perf_counter()
        conn = await asyncpg.connect(self._url)
        try:
            async with conn.transaction():
                # Index-only scans read every leaf page of the index into shared buffers.
                await conn.execute("SET LOCAL enable_seqscan = off")
                await conn.execute("SET LOCAL enable_bitmapscan = off")
                identifiers = await conn.fetchval(_WARM_IDENTIFIERS)
                now_s = int(time.time())
                today = now_s - now_s % DAY_S
                raw = await conn.fetchval(_WARM_RAW_EVENTS, today, self._tenant.account_id)
                await conn.execute("RESET enable_seqscan")
                await conn.execute("RESET enable_bitmapscan")
                heap = await conn.fetchval(_WARM_RAW_HEAP, today)
        finally:
            await conn.close()
        seconds = time.perf_counter() - started
        self._say(f"preload: dedupe set and today's raw events read into memory in {seconds:.0f} s")
        return {"seconds": round(seconds, 1), "rows": int(identifiers) + int(raw) + int(heap)}

    def _progress(self, table: str, rows: int) -> None:
        self._loaded[table] += rows
        elapsed = time.perf_counter() - self._started
        ids, raw = self._loaded["event_identifiers"], self._loaded["meter_events"]
        self._say(
            f"preload: identifiers {ids:,}/{self._target['event_identifiers']:,}, raw events "
            f"{raw:,}/{self._target['meter_events']:,} ({elapsed:.0f} s)"
        )

    async def _create_series(self) -> None:
        t = self._tenant
        conn = await asyncpg.connect(self._url)
        try:
            await conn.execute(
                _SERIES, t.account_id, t.livemode, list(t.meter_ids), t.customer_prefix,
                t.customers, t.customer_digits,
            )  # fmt: skip
        finally:
            await conn.close()

    async def _identifier_lane(self, have: int, want: int, now_ms: int) -> dict[str, Any]:
        t = self._tenant
        fixed = (t.account_id, t.livemode, self._salt, list(t.meter_ids), t.customer_prefix,
                 t.customers, t.customer_digits)  # fmt: skip
        window = (have, want - have, now_ms - DEDUPE_WINDOW_MS, DEDUPE_WINDOW_MS)
        statements = [
            Insert(_IDENTIFIERS, (*fixed, lo, hi, *window), hi - lo)
            for lo, hi in chunks(have, want, IDENTIFIER_CHUNK)
        ]
        return await self._load("event_identifiers", statements, RANDOM_INSERT_FILLFACTOR)

    async def _raw_lane(self, have: int, want: int, now_s: int) -> dict[str, Any]:
        t = self._tenant
        fixed = (t.account_id, t.livemode, self._salt, list(t.meter_ids), t.customer_prefix,
                 t.customers, t.customer_digits)  # fmt: skip
        spans = day_spans(now_s - RAW_EVENT_DAYS * DAY_S, now_s)
        if want <= have:
            return {"rows_added": 0}
        counts = spread(want - have, [to_s - from_s for _, from_s, to_s in spans])
        statements = []
        lo = have
        for (_, from_s, to_s), count in zip(spans, counts, strict=True):
            if count:
                args = (*fixed, lo, lo + count, from_s, to_s - from_s, self._batch_prefix)
                statements.append(Insert(_RAW_EVENTS, args, count))
            lo += count
        conn = await asyncpg.connect(self._url)
        try:
            await self._create_partitions(conn, [day for day, _, _ in spans])
        finally:
            await conn.close()
        # The larger lane gets a second connection: day partitions load independently.
        return await self._load("meter_events", statements, None, RAW_INSERTERS)

    async def _create_partitions(self, conn: asyncpg.Connection, days: list[int]) -> None:
        bounds = [r[0] for r in await conn.fetch(_PARTITION_BOUNDS)]
        for day in uncovered_days(days, bounds):
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF meter_events "
                f"FOR VALUES FROM ({day}) TO ({day + DAY_S})"
            )

    async def _insert(self, table: str, statements: list[Insert], inserters: int) -> None:
        pending = iter(statements)

        async def inserter() -> None:
            conn = await asyncpg.connect(self._url, command_timeout=None)
            try:
                for insert in pending:  # shared: each statement goes to one inserter
                    await conn.execute(insert.sql, *insert.args)
                    self._progress(table, insert.rows)
            finally:
                await conn.close()

        await asyncio.gather(*(inserter() for _ in range(inserters)))

    async def _load(
        self,
        table: str,
        statements: list[Insert],
        fillfactor: int | None,
        inserters: int = 1,
    ) -> dict[str, Any]:
        """Run the inserts on ``inserters`` connections (indexes dropped around them if it
        pays), then VACUUM (ANALYZE)."""
        adding = sum(statement.rows for statement in statements)
        if not adding:
            return {"rows_added": 0}
        conn = await asyncpg.connect(self._url, command_timeout=None)
        try:
            await conn.execute(f"SET maintenance_work_mem = '{_MAINTENANCE_WORK_MEM}'")
            present = int(await conn.fetchval(_ROWS, table))
            rebuild = should_rebuild(present, adding)
            indexes = await index_definitions(conn, table)
            started = time.perf_counter()
            if rebuild:
                for index in indexes:
                    await conn.execute(drop_statement(table, index))
            await self._insert(table, statements, inserters)
            loaded = time.perf_counter()
            if rebuild:
                self._say(f"preload: building {table}'s indexes")
                for index in indexes:
                    for statement in create_statements(table, index, fillfactor):
                        await conn.execute(statement)
                if await index_definitions(conn, table) != indexes:
                    raise PreloadFailed(f"preload: {table}'s indexes differ after the rebuild")
            else:
                for index in indexes:
                    if index.method == "brin":
                        await conn.execute(
                            "SELECT brin_summarize_new_values($1::text::regclass)", index.name
                        )
            indexed = time.perf_counter()
            self._say(f"preload: VACUUM (ANALYZE) {table}")
            await conn.execute(f"VACUUM (ANALYZE) {table}")
            vacuumed = time.perf_counter()
        finally:
            await conn.close()
        return {
            "rows_present": present,
            "rows_added": adding,
            "rebuilt_indexes": rebuild,
            "insert_s": round(loaded - started, 1),
            "index_s": round(indexed - loaded, 1),
            "vacuum_s": round(vacuumed - indexed, 1),
            "rows_per_s": round(adding / max(loaded - started, 1e-9)),
        }

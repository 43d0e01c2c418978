"""Retention: removing what the pipeline has stopped needing, a little at a time.

- ``event_identifiers`` rows received more than 48 hours ago (the dedupe set promises 24);
- ``idempotency_keys`` older than 24 hours, which ingest no longer honours;
- ``window_survivors`` of pre-aggregation windows older than the event retention (no event can
  arrive for them any more; their minute rollups stay);
- ``usage_changes`` older than 24 hours (consumers read the feed within seconds);
- ``core_events`` older than 30 days (Stripe's event retention) and webhook deliveries completed
  more than 30 days ago, with their attempts;
- ``v1_events`` older than 30 days, once published (an unpublished one still awaits the sweep);
- ``meter_events`` day partitions whose whole day is older than the event retention, dropped
  whole.

Rows are deleted at most :data:`CHUNK_ROWS` per statement, each statement its own transaction, so
no lock is held for long. A partition is dropped only if its lock comes within a few seconds;
otherwise the next pass tries again. A session advisory lock lets one process at a time do a
pass; the others skip it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge

from meterflow.lifecycle.reconnect import DatabaseRetry
from meterflow.settings import Settings
from meterflow.store.outages import DATABASE_ERRORS
from meterflow.store.pg import Conn
from meterflow.windows import DAY_S

log = logging.getLogger("meterflow.aggregator")

HOUR_MS = 3_600_000
EVENT_IDENTIFIER_RETENTION_MS = 48 * HOUR_MS
IDEMPOTENCY_KEY_RETENTION_MS = 24 * HOUR_MS
CHUNK_ROWS = 10_000
# Fixed key for pg_try_advisory_lock: b"mflwmain" read as a signed 64-bit integer.
MAINTENANCE_LOCK_KEY = int.from_bytes(b"mflwmain", "big", signed=True)
_DROP_LOCK_TIMEOUT = "5s"

EVENT_RETENTION_MS = 30 * 24 * HOUR_MS

PrunedTable = Literal[
    "event_identifiers", "idempotency_keys", "window_survivors", "core_events",
    "webhook_deliveries", "usage_changes", "v1_events",
]  # fmt: skip
# Table -> the expression of a row's age in unix milliseconds.
_AGE_COLUMN: dict[PrunedTable, str] = {
    "event_identifiers": "received_ms",
    "idempotency_keys": "created_ms",
    "window_survivors": "window_ts * 1000",
    "core_events": "created_ms",
    "webhook_deliveries": "completed_ms",  # NULL while pending: never pruned
    "usage_changes": "(extract(epoch FROM changed_at) * 1000)",
    "v1_events": "(CASE WHEN published THEN created * 1000 END)",  # NULL: never pruned
}
USAGE_CHANGE_RETENTION_MS = 24 * HOUR_MS

# -- pure part ---------------------------------------------------------------------------------

# pg_get_expr of a range partition bound: FOR VALUES FROM ('1700006400') TO ('1700092800').
_UPPER_BOUND = re.compile(r"\bTO \('?(-?\d+)'?\)\s*$")


def partition_upper_bound(bound: str) -> int | None:
    """The exclusive upper bound of a range partition of one integer column, if it has one."""
    found = _UPPER_BOUND.search(bound)
    return None if found is None else int(found.group(1))


def expired_partitions(
    partitions: Iterable[tuple[str, str]], *, now_s: int, retention_days: int
) -> list[str]:
    """Names of the partitions, given as ``(name, bound)``, whose every event time is older than
    ``retention_days`` before ``now_s``. The default partition and unparsed bounds never expire.
    """
    cutoff_s = now_s - retention_days * DAY_S
    expired = []
    for name, bound in partitions:
        upper = partition_upper_bound(bound)
        if upper is not None and upper <= cutoff_s:
            expired.append(name)
    return sorted(expired)


@dataclass(slots=True)
class MaintenanceReport:
    rows_pruned: dict[PrunedTable, int] = field(default_factory=dict)
    partitions_dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rows = ", ".join(f"{n} from {table}" for table, n in self.rows_pruned.items())
        dropped = ", ".join(self.partitions_dropped) or "none"
        return f"pruned {rows or 'nothing'}; dropped partitions: {dropped}"


# -- one pass ----------------------------------------------------------------------------------


async def run_maintenance(
    conn: Conn, *, now_ms: int, retention_days: int, chunk_rows: int = CHUNK_ROWS
) -> MaintenanceReport | None:
    """One retention pass; ``None`` if another process holds the maintenance lock."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK_KEY):
        return None
    try:
        report = MaintenanceReport()
        report.rows_pruned["event_identifiers"] = await prune_rows(
            conn, "event_identifiers", now_ms - EVENT_IDENTIFIER_RETENTION_MS, chunk_rows
        )
        report.rows_pruned["idempotency_keys"] = await prune_rows(
            conn, "idempotency_keys", now_ms - IDEMPOTENCY_KEY_RETENTION_MS, chunk_rows
        )
        report.rows_pruned["window_survivors"] = await prune_rows(
            conn, "window_survivors", now_ms - retention_days * DAY_S * 1000, chunk_rows
        )
        report.rows_pruned["core_events"] = await prune_rows(
            conn, "core_events", now_ms - EVENT_RETENTION_MS, chunk_rows
        )
        report.rows_pruned["webhook_deliveries"] = await prune_rows(
            conn, "webhook_deliveries", now_ms - EVENT_RETENTION_MS, chunk_rows
        )
        report.rows_pruned["usage_changes"] = await prune_rows(
            conn, "usage_changes", now_ms - USAGE_CHANGE_RETENTION_MS, chunk_rows
        )
        report.rows_pruned["v1_events"] = await prune_rows(
            conn, "v1_events", now_ms - EVENT_RETENTION_MS, chunk_rows
        )
        report.partitions_dropped = await drop_expired_partitions(
            conn, now_s=now_ms // 1000, retention_days=retention_days
        )
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK_KEY)
    # A pass that removed nothing is routine; one that did is worth a line.
    changed = any(report.rows_pruned.values()) or report.partitions_dropped
    log.log(logging.INFO if changed else logging.DEBUG, "maintenance: %s", report.summary())
    return report


async def prune_rows(conn: Conn, table: PrunedTable, older_than_ms: int, chunk_rows: int) -> int:
    """Delete rows aged before ``older_than_ms``, ``chunk_rows`` per statement; return how many."""
    column = _AGE_COLUMN[table]
    # The outer age test is re-checked against a row updated meanwhile (an idempotency key taken
    # over anew), which then stays.
    statement = (
        f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2)) AND {column} < $1"
    )
    total = 0
    while True:
        status = await conn.execute(statement, older_than_ms, chunk_rows)
        deleted = int(status.rpartition(" ")[2])
        total += deleted
        if deleted < chunk_rows:
            return total


async def drop_expired_partitions(conn: Conn, *, now_s: int, retention_days: int) -> list[str]:
    """Drop the ``meter_events`` partitions past retention; return the names dropped."""
    rows = await conn.fetch(
        """SELECT c.oid::regclass::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'meter_events'::regclass"""
    )
    expired = expired_partitions(
        ((r["name"], r["bound"]) for r in rows), now_s=now_s, retention_days=retention_days
    )
    dropped = []
    for name in expired:
        try:
            async with conn.transaction():
                # DROP locks meter_events itself: never queue behind a long fold and stall the
                # folds queued behind us.
                await conn.execute(f"SET LOCAL lock_timeout = '{_DROP_LOCK_TIMEOUT}'")
                await conn.execute(f"DROP TABLE IF EXISTS {name}")
        except asyncpg.LockNotAvailableError:
            log.warning("maintenance: %s is busy; dropping it next pass", name)
            continue
        dropped.append(name)
    return dropped


# -- in the aggregator -------------------------------------------------------------------------


class MaintenanceMetrics:
    def __init__(self, registry: CollectorRegistry, *, started_s: float) -> None:
        self.rows_pruned = Counter(
            "meterflow_maintenance_rows_pruned_total",
            "Rows deleted by retention maintenance, by table.",
            ["table"],
            registry=registry,
        )
        self.partitions_dropped = Counter(
            "meterflow_maintenance_partitions_dropped_total",
            "meter_events day partitions dropped by retention maintenance.",
            registry=registry,
        )
        self.passes = Counter(
            "meterflow_maintenance_passes_total",
            "Maintenance passes, by outcome: done, skipped (another process held the lock), "
            "failed.",
            ["outcome"],
            registry=registry,
        )
        # Starts at the process's start, so a new process has the alert's hour for its first
        # pass; across processes, the newest value tells when maintenance last ran anywhere.
        self.last_done = Gauge(
            "meterflow_maintenance_last_done_timestamp_seconds",
            "Unix time of the last maintenance pass this process completed (before its first, "
            "of its start).",
            registry=registry,
        )
        self.last_done.set(started_s)

    def record(self, report: MaintenanceReport, *, now_s: float) -> None:
        for table, count in report.rows_pruned.items():
            self.rows_pruned.labels(table).inc(count)
        self.partitions_dropped.inc(len(report.partitions_dropped))
        self.passes.labels("done").inc()
        self.last_done.set(now_s)


class MaintenanceLoop:
    """Runs a pass at start and then every ``maintenance_interval_s`` until asked to stop
    (a :class:`~meterflow.lifecycle.component.Component`)."""

    name = "maintenance"

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._clock = clock
        self.metrics = MaintenanceMetrics(registry, started_s=clock())
        self._stopping = asyncio.Event()
        self._retry = DatabaseRetry(self.name, registry)

    async def start(self) -> None:
        """Nothing to connect: each pass takes a pooled connection."""

    def ready(self) -> bool:
        return not self._stopping.is_set()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        """Nothing to release."""

    async def run_once(self) -> MaintenanceReport | None:
        async with self._pool.acquire() as conn:
            report = await run_maintenance(
                conn,
                now_ms=int(self._clock() * 1000),
                retention_days=self._settings.aggregator.event_retention_days,
            )
        if report is None:
            self.metrics.passes.labels("skipped").inc()
            log.debug("maintenance: another process holds the lock; skipped")
        else:
            self.metrics.record(report, now_s=self._clock())
        return report

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except DATABASE_ERRORS as exc:
                # The database is away: the pass starts over once it is back, after a backoff.
                self.metrics.passes.labels("failed").inc()
                await self._retry.pause(exc, self._stopping)
                continue
            except Exception:
                # Housekeeping must outlive a bad pass; the next one starts over.
                self.metrics.passes.labels("failed").inc()
                log.exception("maintenance pass failed")
            else:
                self._retry.succeeded()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopping.wait(), self._settings.aggregator.maintenance_interval_s
                )

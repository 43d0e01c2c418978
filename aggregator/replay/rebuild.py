"""``meterflow replay rebuild``: recompute rollups from the meter-events topic, report what
differs from the live tables, and optionally put the rebuilt rows in place.

1. Check the request: the account and its meters, a range of whole UTC days that the topic
   still holds (:func:`~aggregator.replay.scope.check_range`, from the topic's own
   ``retention.ms``); take the rebuild lock (one rebuild at a time).
2. Create empty shadow tables (:mod:`aggregator.replay.shadow`).
3. Fold, with the fold's own code, every record from a little before the range up to where the
   live consumer group has got (:mod:`aggregator.replay.shadow_fold`), showing progress; then
   catch up with the live group, which kept folding, until it is a few thousand records ahead.
4. Hand over in one transaction (:mod:`aggregator.replay.handover`): hold the live group at its
   offsets, fold the last records, compare per (meter, customer, window), and with ``apply``
   swap the differing rows in.
5. Drop the shadow tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from aggregator.maintenance.retention import EVENT_IDENTIFIER_RETENTION_MS, partition_upper_bound
from aggregator.replay.compare import Bounds, Difference, kept_from
from aggregator.replay.handover import HandOver, hand_over, live_offsets
from aggregator.replay.scope import (
    RebuildRefused,
    RebuildScope,
    check_range,
    default_range,
    utc_day,
)
from aggregator.replay.shadow import (
    Schemas,
    create_shadow,
    drop_shadow,
    live_schema,
    shadow_connection,
)
from aggregator.replay.shadow_fold import FoldCounts, ShadowFolder
from aggregator.replay.swap import Swapped
from aggregator.rollups.store import ensure_event_partitions
from meterflow.errors import ConfigurationError
from meterflow.kafka.positions import (
    Retention,
    beginning_offsets,
    offsets_at,
    reading_consumer,
    topic_retention,
)
from meterflow.kafka.topics import meter_events_topic
from meterflow.settings import Settings
from meterflow.store.pg import Conn
from meterflow.windows import DAY_S

# Fixed key for pg_try_advisory_lock: b"mflwrbld" read as a signed 64-bit integer.
REBUILD_LOCK_KEY = int.from_bytes(b"mflwrbld", "big", signed=True)
# The hand-over transaction folds at most about this many records while the live group waits.
HAND_OVER_RECORDS = 5000
CATCH_UP_ROUNDS = 10


@dataclass(frozen=True, slots=True)
class RebuildRequest:
    account_id: str
    meter_ids: tuple[str, ...] = ()  # none: every meter of the account
    start_s: int | None = None  # none: the first day the topic still holds
    end_s: int | None = None  # none: the end of tomorrow
    apply: bool = False


@dataclass(frozen=True, slots=True)
class RebuildReport:
    scope: RebuildScope
    counts: FoldCounts
    records_to_read: int
    differences: list[Difference]
    swapped: Swapped | None
    offsets: dict[int, int]
    fold_s: float
    compare_s: float  # the comparison before the hand-over (the live fold runs on)
    hand_over_s: float  # the hand-over transaction (the live fold waits)

    @property
    def events_per_s(self) -> float:
        return self.counts.events_selected / self.fold_s if self.fold_s > 0 else 0.0


async def _scope(conn: Conn, request: RebuildRequest, start_s: int, end_s: int) -> RebuildScope:
    if await conn.fetchval("SELECT 1 FROM accounts WHERE id = $1", request.account_id) is None:
        raise RebuildRefused(f"no account {request.account_id}")
    rows = await conn.fetch("SELECT id FROM meters WHERE account_id = $1", request.account_id)
    owned = {r["id"] for r in rows}
    unknown = sorted(set(request.meter_ids) - owned)
    if unknown:
        raise RebuildRefused(f"no meter {', '.join(unknown)} in account {request.account_id}")
    meters = frozenset(request.meter_ids or owned)
    if not meters:
        raise RebuildRefused(f"account {request.account_id} has no meters")
    return RebuildScope(request.account_id, meters, start_s, end_s)


async def _ensure_live_days(live: Conn, schemas: Schemas, first_s: int, end_s: int) -> None:
    """Create the live ``meter_events`` day partitions the swap may write (a day the live fold
    never saw an event of has none)."""
    rows = await live.fetch(
        f"""SELECT pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = '{schemas.shadow}.meter_events'::regclass"""
    )
    uppers = (partition_upper_bound(r["bound"]) for r in rows)
    days = {upper - DAY_S for upper in uppers if upper is not None}
    await ensure_event_partitions(live, {d for d in days if first_s <= d < end_s})


async def rebuild(
    settings: Settings, request: RebuildRequest, progress: Callable[[str], None]
) -> RebuildReport:
    """Steps 1 to 5 of the module docstring."""
    if not settings.database_url or not settings.kafka_bootstrap_servers:
        raise ConfigurationError("a rebuild needs DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS")
    topic = meter_events_topic(settings.topic_prefix)
    retention = await topic_retention(settings.kafka_bootstrap_servers, topic, settings.kafka)
    now_ms = int(time.time() * 1000)
    default_start, default_end = default_range(now_ms, retention.retention_ms)
    start_s = default_start if request.start_s is None else request.start_s
    end_s = default_end if request.end_s is None else request.end_s
    check_range(start_s, end_s, now_ms=now_ms, retention_ms=retention.retention_ms)
    live = await asyncpg.connect(settings.database_url)
    try:
        if not await live.fetchval("SELECT pg_try_advisory_lock($1)", REBUILD_LOCK_KEY):
            raise RebuildRefused("another rebuild is running; try again when it has finished")
        scope = await _scope(live, request, start_s, end_s)
        schemas = await create_shadow(live, await live_schema(live))
        try:
            return await _run(
                settings, request, scope=scope, schemas=schemas, live=live, topic=topic,
                retention=retention, progress=progress,
            )  # fmt: skip
        finally:
            await drop_shadow(live)
    finally:
        await live.close()


async def _run(
    settings: Settings,
    request: RebuildRequest,
    *,
    scope: RebuildScope,
    schemas: Schemas,
    live: Conn,
    topic: str,
    retention: Retention,
    progress: Callable[[str], None],
) -> RebuildReport:
    assert settings.database_url  # noqa: S101 - checked by rebuild()
    assert settings.kafka_bootstrap_servers  # noqa: S101 - checked by rebuild()
    group = settings.aggregator.consumer_group
    consumer = reading_consumer(settings.kafka_bootstrap_servers, settings.kafka)
    shadow = await shadow_connection(settings.database_url, schemas)
    await consumer.start()
    try:
        beginnings = await beginning_offsets(consumer, topic)
        starts = await offsets_at(consumer, topic, scope.read_from_ms)
        if retention.retention_bytes is not None:
            _check_nothing_deleted(beginnings, starts, scope)
        folder = ShadowFolder(shadow, consumer, topic, scope, starts=starts, progress=progress)
        targets = await live_offsets(live, schemas.live, group, topic, beginnings)
        records_to_read = folder.gap(targets)
        progress(
            f"rebuild: account {scope.account_id}, {len(scope.meter_ids)} meter(s), event days "
            f"{utc_day(scope.start_s)} to {utc_day(scope.end_s - DAY_S)}; "
            f"{records_to_read:,} records to read up to where group {group} has folded"
        )
        started = time.monotonic()
        await folder.fold_to(targets, report=True)
        for _round in range(CATCH_UP_ROUNDS):
            targets = await live_offsets(live, schemas.live, group, topic, beginnings)
            if folder.gap(targets) <= HAND_OVER_RECORDS:
                break
            await folder.fold_to(targets)
        fold_s = time.monotonic() - started
        now_ms = int(time.time() * 1000)
        bounds = Bounds(
            scope, kept_from(scope, now_ms // 1000, settings.aggregator.event_retention_days)
        )
        if request.apply:
            await _ensure_live_days(live, schemas, bounds.kept_from_s, scope.end_s)
        started = time.monotonic()
        handed: HandOver = await hand_over(
            shadow, schemas, folder, group=group, topic=topic, beginnings=beginnings,
            bounds=bounds, apply=request.apply, now_ms=now_ms,
            dedupe_ms=EVENT_IDENTIFIER_RETENTION_MS, progress=progress,
        )  # fmt: skip
        compare_s = time.monotonic() - started - handed.held_s
    finally:
        await consumer.stop()
        await shadow.close()
    return RebuildReport(
        scope=scope,
        counts=folder.counts,
        records_to_read=records_to_read,
        differences=handed.differences,
        swapped=handed.swapped,
        offsets=handed.offsets,
        fold_s=fold_s,
        compare_s=compare_s,
        hand_over_s=handed.held_s,
    )


def _check_nothing_deleted(
    beginnings: dict[int, int], starts: dict[int, int], scope: RebuildScope
) -> None:
    """Under retention by size, a partition whose first record still held is the one the
    rebuild would start at may have lost earlier records it needed: refuse. (Retention by time
    only deletes what :func:`~aggregator.replay.scope.check_range` already keeps out.)"""
    lost = sorted(p for p, first in beginnings.items() if first > 0 and starts[p] == first)
    if lost:
        raise RebuildRefused(
            f"partitions {lost} of the meter-events topic (retention.bytes is set) no longer hold "
            f"records from before {utc_day(scope.start_s)}: some the rebuild needs may have "
            "been deleted; rebuild a later range"
        )

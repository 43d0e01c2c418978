"""Applying a folded batch to PostgreSQL: one transaction holds the rollups and the offsets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aggregator.fold import (
    DAY_S,
    MINUTE_S,
    EventRow,
    Segment,
    TimeWindow,
    day_of,
    first_of_each_identifier,
    latest_per_window,
    minute_deltas,
    minute_of,
    overwrites,
    split_by_window,
    window_of,
)
from aggregator.meter_windows import MeterWindows
from aggregator.usage_changes import UsageChanges, UsageKey, record_usage_changes
from aggregator.window_store import apply_overwrites, recompute_window, stored_survivors
from meterflow.errors import MeterflowError
from meterflow.event_records import CancelRecord
from meterflow.pg import Conn

_PARTITION_LOCK = 0x6D6676_0002  # serialises creation of meter_events day partitions

_EVENT_COLUMNS = (
    "account_id", "livemode", "meter_id", "customer", "identifier", "value", "event_ts",
    "received_ms", "receipt_batch", "receipt_index",
)  # fmt: skip


# The incoming minute's latest event was received after the stored one (receipt order).
_NEWER = (
    "(r.last_received_ms IS NULL OR (EXCLUDED.last_received_ms, EXCLUDED.last_receipt_batch, "
    "EXCLUDED.last_receipt_index) > (r.last_received_ms, r.last_receipt_batch, "
    "r.last_receipt_index))"
)


class OffsetFenced(MeterflowError):
    """The stored offset is not where this batch starts: another consumer owns the partition now,
    or this one must re-seek. The transaction is rolled back; nothing is applied."""

    retriable = True


@dataclass(frozen=True, slots=True)
class PartitionSpan:
    """The offsets one batch covers in one Kafka partition: ``[first, next)``."""

    partition: int
    first_offset: int
    next_offset: int


@dataclass(slots=True)
class FoldOutcome:
    events_new: int = 0
    events_duplicate: int = 0
    cancels_applied: int = 0
    cancels_unmatched: int = 0


async def stored_offsets(
    conn: Conn, group: str, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    rows = await conn.fetch(
        """SELECT partition, next_offset FROM consumer_offsets
           WHERE group_id = $1 AND topic = $2 AND partition = ANY($3::int[])""",
        group,
        topic,
        list(partitions),
    )
    return {r["partition"]: r["next_offset"] for r in rows}


def _partition_name(day_ts: int) -> str:
    return "meter_events_" + datetime.fromtimestamp(day_ts, tz=UTC).strftime("%Y%m%d")


async def ensure_event_partitions(conn: Conn, days: Iterable[int]) -> None:
    """Create the day partitions of ``meter_events`` that do not exist yet (idempotent)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
        for day in sorted(set(days)):
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_partition_name(day)} PARTITION OF meter_events "
                f"FOR VALUES FROM ({day}) TO ({day + DAY_S})"
            )


async def fence_offsets(conn: Conn, group: str, topic: str, spans: Sequence[PartitionSpan]) -> None:
    """Lock this batch's offset rows and check each partition continues where it left off."""
    await conn.executemany(
        """INSERT INTO consumer_offsets (group_id, topic, partition, next_offset)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
        [(group, topic, s.partition, s.first_offset) for s in spans],
    )
    rows = await conn.fetch(
        """SELECT partition, next_offset FROM consumer_offsets
           WHERE group_id = $1 AND topic = $2 AND partition = ANY($3::int[]) FOR UPDATE""",
        group,
        topic,
        [s.partition for s in spans],
    )
    stored = {r["partition"]: r["next_offset"] for r in rows}
    for span in spans:
        if stored[span.partition] != span.first_offset:
            raise OffsetFenced(
                f"partition {span.partition}: stored offset {stored[span.partition]}, "
                f"batch starts at {span.first_offset}"
            )


async def _insert_new_events(conn: Conn, rows: Sequence[EventRow]) -> list[EventRow]:
    """Record identifiers; only events whose identifier was not seen before are returned."""
    unique = first_of_each_identifier(rows)
    inserted = await conn.fetch(
        """INSERT INTO event_identifiers
               (account_id, livemode, identifier, meter_id, customer, event_ts, received_ms)
           SELECT * FROM unnest($1::text[], $2::bool[], $3::text[], $4::text[], $5::text[],
                                $6::bigint[], $7::bigint[])
           ON CONFLICT DO NOTHING
           RETURNING account_id, livemode, identifier""",
        [r.account_id for r in unique],
        [r.livemode for r in unique],
        [r.identifier for r in unique],
        [r.meter_id for r in unique],
        [r.customer for r in unique],
        [r.event_ts for r in unique],
        [r.received_ms for r in unique],
    )
    fresh = {(r["account_id"], r["livemode"], r["identifier"]) for r in inserted}
    new_rows = [r for r in unique if r.dedupe_key in fresh]
    if new_rows:
        await conn.copy_records_to_table(
            "meter_events",
            records=[
                (
                    r.account_id,
                    r.livemode,
                    r.meter_id,
                    r.customer,
                    r.identifier,
                    r.value,
                    r.event_ts,
                    r.received_ms,
                    r.receipt_batch,
                    r.receipt_index,
                )
                for r in new_rows
            ],
            columns=_EVENT_COLUMNS,
        )
    return new_rows


async def _add_to_rollups(conn: Conn, rows: Sequence[EventRow]) -> None:
    deltas = minute_deltas(rows)
    if not deltas:
        return
    keys = list(deltas)
    values = [deltas[k] for k in keys]
    await conn.execute(
        f"""INSERT INTO rollups_minute AS r
               (account_id, livemode, meter_id, customer, minute_ts, value_sum, event_count,
                last_value, last_received_ms, last_receipt_batch, last_receipt_index)
           SELECT * FROM unnest($1::text[], $2::bool[], $3::text[], $4::text[], $5::bigint[],
                                $6::numeric[], $7::bigint[], $8::numeric[], $9::bigint[],
                                $10::text[], $11::int[])
           ON CONFLICT (account_id, livemode, meter_id, customer, minute_ts) DO UPDATE SET
               value_sum = r.value_sum + EXCLUDED.value_sum,
               event_count = r.event_count + EXCLUDED.event_count,
               last_value = CASE WHEN {_NEWER} THEN EXCLUDED.last_value ELSE r.last_value END,
               last_received_ms = CASE WHEN {_NEWER} THEN EXCLUDED.last_received_ms
                                       ELSE r.last_received_ms END,
               last_receipt_batch = CASE WHEN {_NEWER} THEN EXCLUDED.last_receipt_batch
                                         ELSE r.last_receipt_batch END,
               last_receipt_index = CASE WHEN {_NEWER} THEN EXCLUDED.last_receipt_index
                                         ELSE r.last_receipt_index END""",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [k[3] for k in keys],
        [k[4] for k in keys],
        [v.value_sum for v in values],
        [v.event_count for v in values],
        [v.last_value for v in values],
        [v.last_receipt[0] for v in values],
        [v.last_receipt[1] for v in values],
        [v.last_receipt[2] for v in values],
    )


async def recompute_minute(
    conn: Conn, *, account_id: str, livemode: bool, meter_id: str, customer: str, minute_ts: int
) -> None:
    """Rebuild one rollup row from the raw events that still count."""
    scope = (account_id, livemode, meter_id, customer, minute_ts, minute_ts + MINUTE_S)
    where = """account_id = $1 AND livemode = $2 AND meter_id = $3 AND customer = $4
               AND event_ts >= $5 AND event_ts < $6 AND NOT cancelled"""
    totals = await conn.fetchrow(
        f"SELECT coalesce(sum(value), 0) AS s, count(*) AS c FROM meter_events WHERE {where}",
        *scope,
    )
    assert totals is not None  # noqa: S101 - an aggregate always yields a row
    if totals["c"] == 0:
        await conn.execute(
            """DELETE FROM rollups_minute WHERE account_id = $1 AND livemode = $2
               AND meter_id = $3 AND customer = $4 AND minute_ts = $5""",
            *scope[:5],
        )
        return
    last = await conn.fetchrow(
        f"""SELECT value, received_ms, receipt_batch, receipt_index FROM meter_events
            WHERE {where}
            ORDER BY received_ms DESC, receipt_batch DESC, receipt_index DESC LIMIT 1""",
        *scope,
    )
    assert last is not None  # noqa: S101 - count > 0
    await conn.execute(
        """UPDATE rollups_minute SET value_sum = $6, event_count = $7, last_value = $8,
               last_received_ms = $9, last_receipt_batch = $10, last_receipt_index = $11
           WHERE account_id = $1 AND livemode = $2 AND meter_id = $3 AND customer = $4
               AND minute_ts = $5""",
        *scope[:5],
        totals["s"],
        totals["c"],
        last["value"],
        last["received_ms"],
        last["receipt_batch"],
        last["receipt_index"],
    )


async def _fold_events(
    conn: Conn, rows: Sequence[EventRow], windows: Mapping[str, TimeWindow | None]
) -> None:
    """Add raw meters' events to their minutes; let pre-aggregated meters' events overwrite."""
    raw, windowed = split_by_window(rows, windows)
    await _add_to_rollups(conn, raw)
    if windowed:
        candidates = latest_per_window(windowed)
        stored = await stored_survivors(conn, list(candidates))
        await apply_overwrites(conn, overwrites(candidates, stored))


async def _apply_cancel(
    conn: Conn, cancel: CancelRecord, windows: Mapping[str, TimeWindow | None]
) -> tuple[UsageKey, int] | None:
    """Cancel the event; returns its (meter, customer) key and time, or None if nothing matched."""
    target = await conn.fetchrow(
        """SELECT meter_id, customer, event_ts FROM event_identifiers
           WHERE account_id = $1 AND livemode = $2 AND identifier = $3""",
        cancel.account_id,
        cancel.livemode,
        cancel.identifier,
    )
    if target is None:
        return None
    status = await conn.execute(
        """UPDATE meter_events SET cancelled = true
           WHERE account_id = $1 AND livemode = $2 AND meter_id = $3 AND customer = $4
             AND identifier = $5 AND event_ts = $6 AND NOT cancelled""",
        cancel.account_id,
        cancel.livemode,
        target["meter_id"],
        target["customer"],
        cancel.identifier,
        target["event_ts"],
    )
    if status.endswith(" 0"):
        return None
    usage_key = (cancel.account_id, cancel.livemode, target["meter_id"], target["customer"])
    window = windows.get(target["meter_id"])
    if window is not None:
        key = (
            cancel.account_id,
            cancel.livemode,
            target["meter_id"],
            target["customer"],
            window_of(target["event_ts"], window),
        )
        await recompute_window(conn, key, window)
        return usage_key, target["event_ts"]
    await recompute_minute(
        conn,
        account_id=cancel.account_id,
        livemode=cancel.livemode,
        meter_id=target["meter_id"],
        customer=target["customer"],
        minute_ts=minute_of(target["event_ts"]),
    )
    return usage_key, target["event_ts"]


def event_days(segments: Iterable[Segment]) -> set[int]:
    return {day_of(row.event_ts) for s in segments for row in s.events}


def meter_ids(segments: Iterable[Segment]) -> set[str]:
    ids = {row.meter_id for s in segments for row in s.events}
    ids.update(s.cancel.meter_id for s in segments if s.cancel is not None)
    return ids


async def apply_batch(
    conn: Conn,
    *,
    group: str,
    topic: str,
    spans: Sequence[PartitionSpan],
    segments: Sequence[Segment],
    meter_windows: MeterWindows,
) -> FoldOutcome:
    """Fold one consumed batch exactly once.

    1. Lock the offset rows of the batch's partitions and check that each continues exactly where
       the last committed batch ended; otherwise roll back (:class:`OffsetFenced`).
    2. For each run of events: keep identifiers not seen before (the dedupe set), store those raw
       events, and add them to the minute rollups; for pre-aggregated meters, the latest received
       event of each window replaces the window's survivor instead.
    3. For each cancel: mark the raw event cancelled and rebuild its minute (raw meters) or
       re-elect its window's survivor (pre-aggregated meters) from what still counts.
    4. Append the (meter, customer) usage this batch changed to the ``usage_changes`` feed.
    5. Advance the stored offsets past the batch.
    All of it commits together, or none of it does.
    """
    outcome = FoldOutcome()
    changes = UsageChanges()
    async with conn.transaction():
        await fence_offsets(conn, group, topic, spans)
        windows = await meter_windows.resolve(conn, meter_ids(segments))
        for segment in segments:
            if segment.cancel is not None:
                cancelled = await _apply_cancel(conn, segment.cancel, windows)
                if cancelled is not None:
                    changes.touch(*cancelled, segment.cancel.received_ms)
                    outcome.cancels_applied += 1
                else:
                    outcome.cancels_unmatched += 1
                continue
            new_rows = await _insert_new_events(conn, segment.events)
            outcome.events_new += len(new_rows)
            outcome.events_duplicate += len(segment.events) - len(new_rows)
            await _fold_events(conn, new_rows, windows)
            changes.touch_all(
                ((r.account_id, r.livemode, r.meter_id, r.customer), r.event_ts, r.received_ms)
                for r in new_rows
            )
        await record_usage_changes(conn, changes)
        await conn.executemany(
            """UPDATE consumer_offsets SET next_offset = $4, updated_at = now()
               WHERE group_id = $1 AND topic = $2 AND partition = $3""",
            [(group, topic, s.partition, s.next_offset) for s in spans],
        )
    return outcome


def spans_of(offsets: Mapping[int, tuple[int, int]]) -> list[PartitionSpan]:
    """``{partition: (first offset, last offset)}`` -> spans covering ``[first, last + 1)``."""
    return [PartitionSpan(p, first, last + 1) for p, (first, last) in sorted(offsets.items())]

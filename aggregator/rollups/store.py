"""Applying a folded batch to PostgreSQL: one transaction holds the rollups and the offsets
(fenced and advanced through :mod:`meterflow.kafka.offsets`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aggregator.rollups.columns import Segment
from aggregator.rollups.event_store import store_events
from aggregator.rollups.fold import EventRow, keyed_by_window, latest_per_window, overwrites
from aggregator.rollups.hour_store import HourKey, hour_of, refresh_hours
from aggregator.rollups.meter_windows import MeterWindows
from aggregator.rollups.series import SERIES_OF, EventSeries
from aggregator.rollups.window_store import apply_overwrites, recompute_window, stored_survivors
from aggregator.usage_feed.outbox import UsageChanges, record_usage_changes
from meterflow.kafka.offsets import PartitionSpan, advance_offsets, fence_offsets
from meterflow.receipt import receipt_order
from meterflow.records.meter_events import CancelRecord
from meterflow.store.pg import Conn
from meterflow.usage.keys import UsageKey
from meterflow.windows import DAY_S, HOUR_S, MINUTE_S, WINDOW_S, TimeWindow, minute_of, window_of

_PARTITION_LOCK = 0x6D6676_0002  # serialises creation of meter_events day partitions


@dataclass(slots=True)
class FoldOutcome:
    events_new: int = 0
    events_duplicate: int = 0
    cancels_applied: int = 0
    cancels_unmatched: int = 0


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


async def recompute_minute(
    conn: Conn, *, account_id: str, livemode: bool, meter_id: str, customer: str, minute_ts: int
) -> None:
    """Rebuild one rollup row from the raw events that still count."""
    scope = (account_id, livemode, meter_id, customer, minute_ts, minute_ts + MINUTE_S)
    where = f"""series_id = ({SERIES_OF}) AND event_ts >= $5 AND event_ts < $6 AND NOT cancelled"""
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
            ORDER BY {receipt_order(latest_first=True)} LIMIT 1""",
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


async def _elect_survivors(
    conn: Conn, rows: Sequence[EventRow], windows: Mapping[str, TimeWindow | None]
) -> set[HourKey]:
    """Let new events of pre-aggregated meters replace their windows' survivors where newer;
    returns the hours whose minute rows changed."""
    keyed = keyed_by_window(rows, windows)
    if not keyed:
        return set()
    candidates = latest_per_window(keyed)
    stored = await stored_survivors(conn, list(candidates))
    changed = overwrites(candidates, stored)
    await apply_overwrites(conn, changed)
    return {
        (*c.key[:4], hour_of(event.event_ts))
        for c in changed
        for event in (c.survivor, c.replaced)
        if event is not None
    }


def _hours_of_cancel(key: UsageKey, event_ts: int, window: TimeWindow | None) -> set[HourKey]:
    """The hours a cancel may rewrite: the event's, or every hour of its window (the window's
    new survivor may sit in another hour)."""
    if window is None:
        return {(*key, hour_of(event_ts))}
    start = window_of(event_ts, window)
    return {(*key, hour) for hour in range(start, start + WINDOW_S[window], HOUR_S)}


async def _apply_cancel(
    conn: Conn, cancel: CancelRecord, windows: Mapping[str, TimeWindow | None]
) -> tuple[UsageKey, int] | None:
    """Cancel the event; returns its (meter, customer) key and time, or None if nothing matched."""
    target = await conn.fetchrow(
        """SELECT i.series_id, s.meter_id, s.customer, i.event_ts
           FROM event_identifiers i JOIN event_series s USING (series_id)
           WHERE i.digest = event_digest($1, $2, $3)""",
        cancel.account_id,
        cancel.livemode,
        cancel.identifier,
    )
    if target is None:
        return None
    status = await conn.execute(
        """UPDATE meter_events SET cancelled = true
           WHERE series_id = $1 AND event_ts = $2 AND identifier = $3 AND NOT cancelled""",
        target["series_id"],
        target["event_ts"],
        cancel.identifier,
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
    return {day for s in segments for day in s.events.days()}


def meter_ids(segments: Iterable[Segment]) -> set[str]:
    ids = {meter for s in segments for meter in s.events.meter_ids()}
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
    series: EventSeries,
) -> FoldOutcome:
    """Fold one consumed batch exactly once.

    1. Lock the offset rows of the batch's partitions and check that each continues exactly where
       the last committed batch ended; otherwise roll back
       (:class:`~meterflow.kafka.offsets.OffsetFenced`).
    2. For each run of events, in one statement (:mod:`aggregator.rollups.event_store`): keep
       identifiers not seen before (the dedupe set), store those raw events, add them to the
       minute rollups and append the (meter, customer) usage they changed to the
       ``usage_changes`` feed; for
       pre-aggregated meters, the latest received event of each window replaces the window's
       survivor instead of adding to it.
    3. For each cancel: mark the raw event cancelled and rebuild its minute (raw meters) or
       re-elect its window's survivor (pre-aggregated meters) from what still counts.
    4. Rebuild, from their minutes, the hour rollups that steps 2 and 3 rewrote rather than
       added to (:mod:`aggregator.rollups.hour_store`).
    5. Append the usage the cancels changed to ``usage_changes``.
    6. Advance the stored offsets past the batch.
    All of it commits together, or none of it does. Before it, the runs' series ids are read or
    created (:class:`~aggregator.rollups.series.EventSeries`), committed on their own unless the
    caller holds a transaction.
    """
    await series.assign(conn, segments)
    outcome = FoldOutcome()
    changes = UsageChanges()
    async with conn.transaction():
        await fence_offsets(conn, group, topic, spans)
        meters = meter_ids(segments)
        windows = await meter_windows.resolve(conn, meters)
        windowed = {m: w for m in meters if (w := windows.get(m)) is not None}
        hours: set[HourKey] = set()
        for segment in segments:
            if segment.cancel is not None:
                cancelled = await _apply_cancel(conn, segment.cancel, windows)
                if cancelled is not None:
                    changes.touch(*cancelled, segment.cancel.received_ms)
                    usage_key, event_ts = cancelled
                    hours |= _hours_of_cancel(usage_key, event_ts, windows.get(usage_key[2]))
                    outcome.cancels_applied += 1
                else:
                    outcome.cancels_unmatched += 1
                continue
            stored = await store_events(conn, segment.events, windowed)
            outcome.events_new += stored.new_count
            outcome.events_duplicate += len(segment.events) - stored.new_count
            hours |= await _elect_survivors(conn, stored.candidates, windows)
        await refresh_hours(conn, hours)
        await record_usage_changes(conn, changes)
        await advance_offsets(conn, group, topic, spans)
    return outcome

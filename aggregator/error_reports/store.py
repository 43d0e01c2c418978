"""Error reports in PostgreSQL: rejection tallies folded exactly once, closed windows turned into
core events exactly once.

Folding and closing share one advisory lock: folds take it shared and run side by side, a closing
pass takes it exclusively. A pass therefore reads every tally of a window at once and never races a
fold adding to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from aggregator.error_reports.reports import (
    MAX_SAMPLES,
    CodeTally,
    ErrorReport,
    Sample,
    StoredTally,
    WindowCode,
    group_reports,
)
from aggregator.webhooks.core_events import CoreEvent, insert_core_events
from meterflow.kafka.offsets import PartitionSpan, advance_offsets, fence_offsets
from meterflow.store.pg import Conn

# Fixed key for the advisory lock: b"mflwerrp" read as a signed 64-bit integer.
ERROR_REPORT_LOCK = int.from_bytes(b"mflwerrp", "big", signed=True)

EventMaker = Callable[[ErrorReport], CoreEvent]


async def apply_tallies(
    conn: Conn,
    *,
    group: str,
    topic: str,
    spans: Sequence[PartitionSpan],
    tallies: Mapping[WindowCode, CodeTally],
) -> None:
    """Fold one consumed batch's tallies exactly once.

    1. Take the error-report lock, shared.
    2. Lock the offset rows of the batch's partitions and check that each continues exactly where
       the last committed batch ended; otherwise roll back
       (:class:`~meterflow.kafka.offsets.OffsetFenced`).
    3. Add the tallies to the stored ones: counts add up, samples fill up to
       :data:`MAX_SAMPLES` in arrival order. Keys go in sorted order, so concurrent folds lock
       rows in the same order.
    4. Advance the stored offsets past the batch.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", ERROR_REPORT_LOCK)
        await fence_offsets(conn, group, topic, spans)
        if tallies:
            await conn.executemany(
                f"""INSERT INTO error_report_windows AS w
                        (account_id, livemode, meter_id, window_start_ms, window_end_ms, code,
                         error_count, sample_messages, sample_identifiers)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                    ON CONFLICT (account_id, livemode, meter_id, window_start_ms, code)
                    DO UPDATE SET
                        error_count = w.error_count + EXCLUDED.error_count,
                        sample_messages =
                            (w.sample_messages || EXCLUDED.sample_messages)[1:{MAX_SAMPLES}],
                        sample_identifiers =
                            (w.sample_identifiers || EXCLUDED.sample_identifiers)[1:{MAX_SAMPLES}]
                """,
                [
                    (
                        key.account_id,
                        key.livemode,
                        key.meter_id,
                        key.window_start_ms,
                        tally.window_end_ms,
                        key.code,
                        tally.error_count,
                        [s.error_message for s in tally.samples],
                        [s.identifier for s in tally.samples],
                    )
                    for key, tally in sorted(tallies.items())
                ],
            )
        await advance_offsets(conn, group, topic, spans)


async def close_due_windows(
    conn: Conn, *, closed_before_ms: int, max_windows: int, make_event: EventMaker
) -> list[CoreEvent]:
    """Report the windows that ended at or before ``closed_before_ms``; return the new events.

    1. Take the error-report lock, exclusively.
    2. Read every tally of up to ``max_windows`` such windows (per account, mode and meter).
    3. Create one core event per window, unless its source key exists already, and queue its
       webhook deliveries.
    4. Delete the tallies reported.
    All of it commits together, or none of it does: a window is reported once.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ERROR_REPORT_LOCK)
        rows = await conn.fetch(
            """WITH due AS (
                   SELECT DISTINCT window_end_ms, account_id, livemode, meter_id, window_start_ms
                   FROM error_report_windows WHERE window_end_ms <= $1
                   ORDER BY window_end_ms LIMIT $2
               )
               SELECT w.seq, w.account_id, w.livemode, w.meter_id, w.window_start_ms,
                      w.window_end_ms, w.code, w.error_count, w.sample_messages,
                      w.sample_identifiers
               FROM error_report_windows w
               JOIN due USING (account_id, livemode, meter_id, window_start_ms)""",
            closed_before_ms,
            max_windows,
        )
        if not rows:
            return []
        tallies = [
            StoredTally(
                seq=r["seq"],
                key=WindowCode(
                    r["account_id"], r["livemode"], r["meter_id"], r["window_start_ms"], r["code"]
                ),
                window_end_ms=r["window_end_ms"],
                error_count=r["error_count"],
                samples=tuple(
                    Sample(m, i)
                    for m, i in zip(r["sample_messages"], r["sample_identifiers"], strict=True)
                ),
            )
            for r in rows
        ]
        created = await insert_core_events(
            conn, [make_event(report) for report in group_reports(tallies)]
        )
        await conn.execute(
            "DELETE FROM error_report_windows WHERE seq = ANY($1::bigint[])",
            [t.seq for t in tallies],
        )
    return created

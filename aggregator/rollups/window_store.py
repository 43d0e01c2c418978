"""Pre-aggregated meters in PostgreSQL: each window's surviving event and its minute rollup.

For a meter with ``event_time_window``, a window's minute rows in ``rollups_minute`` hold only
the survivor: one row, at the survivor's minute, with that event's value and a count of one.
Changing the survivor therefore means deleting one minute row and writing another, in the same
transaction as the fold that caused it.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from aggregator.rollups.fold import EventRow, Overwrite, WindowKey
from aggregator.rollups.series import SERIES_OF
from meterflow.receipt import receipt_order
from meterflow.store.pg import Conn
from meterflow.windows import WINDOW_S, TimeWindow, minute_of

_KEYS = """unnest($1::text[], $2::bool[], $3::text[], $4::text[], $5::bigint[])"""


def _key_arrays(keys: Sequence[WindowKey]) -> list[list[object]]:
    return [[k[i] for k in keys] for i in range(5)]


def event_row(r: asyncpg.Record) -> EventRow:
    """An event as a row of ``meter_events`` or ``window_survivors`` (or the fold's candidates)
    holds it."""
    return EventRow(
        account_id=r["account_id"],
        livemode=r["livemode"],
        meter_id=r["meter_id"],
        customer=r["customer"],
        identifier=r["identifier"],
        value=r["value"],
        event_ts=r["event_ts"],
        received_ms=r["received_ms"],
        receipt_batch=r["receipt_batch"],
        receipt_index=r["receipt_index"],
    )


async def stored_survivors(conn: Conn, keys: Sequence[WindowKey]) -> dict[WindowKey, EventRow]:
    """The current survivor of each window in ``keys`` that has one, locked for this batch."""
    if not keys:
        return {}
    rows = await conn.fetch(
        f"""SELECT s.* FROM window_survivors s
            JOIN {_KEYS} AS k(account_id, livemode, meter_id, customer, window_ts)
              USING (account_id, livemode, meter_id, customer, window_ts)
            FOR UPDATE OF s""",
        *_key_arrays(keys),
    )
    out: dict[WindowKey, EventRow] = {}
    for r in rows:
        key = (r["account_id"], r["livemode"], r["meter_id"], r["customer"], r["window_ts"])
        out[key] = event_row(r)
    return out


async def _drop_minutes(conn: Conn, events: Sequence[EventRow]) -> None:
    """Delete the minute rows that held ``events`` (former survivors)."""
    if not events:
        return
    await conn.execute(
        f"""DELETE FROM rollups_minute r
            USING {_KEYS} AS k(account_id, livemode, meter_id, customer, minute_ts)
            WHERE (r.account_id, r.livemode, r.meter_id, r.customer, r.minute_ts)
                = (k.account_id, k.livemode, k.meter_id, k.customer, k.minute_ts)""",
        [e.account_id for e in events],
        [e.livemode for e in events],
        [e.meter_id for e in events],
        [e.customer for e in events],
        [minute_of(e.event_ts) for e in events],
    )


async def apply_overwrites(conn: Conn, changes: Sequence[Overwrite]) -> None:
    """Make each change's event the survivor of its window.

    1. Store the new survivors.
    2. Delete the minute rows of the survivors they replace.
    3. Write each new survivor's minute row: its value, a count of one, itself as ``last``.
    """
    if not changes:
        return
    keys = [c.key for c in changes]
    new = [c.survivor for c in changes]
    await conn.execute(
        """INSERT INTO window_survivors AS s
               (account_id, livemode, meter_id, customer, window_ts, identifier, value, event_ts,
                received_ms, receipt_batch, receipt_index)
            SELECT * FROM unnest($1::text[], $2::bool[], $3::text[], $4::text[], $5::bigint[],
                                 $6::text[], $7::numeric[], $8::bigint[], $9::bigint[],
                                 $10::text[], $11::int[])
            ON CONFLICT (account_id, livemode, meter_id, customer, window_ts) DO UPDATE SET
                identifier = EXCLUDED.identifier, value = EXCLUDED.value,
                event_ts = EXCLUDED.event_ts, received_ms = EXCLUDED.received_ms,
                receipt_batch = EXCLUDED.receipt_batch, receipt_index = EXCLUDED.receipt_index""",
        *_key_arrays(keys),
        [e.identifier for e in new],
        [e.value for e in new],
        [e.event_ts for e in new],
        [e.received_ms for e in new],
        [e.receipt_batch for e in new],
        [e.receipt_index for e in new],
    )
    await _drop_minutes(conn, [c.replaced for c in changes if c.replaced is not None])
    await conn.execute(
        """INSERT INTO rollups_minute AS r
               (account_id, livemode, meter_id, customer, minute_ts, value_sum, event_count,
                last_value, last_received_ms, last_receipt_batch, last_receipt_index)
           SELECT a, l, m, c, t, v, 1, v, rm, rb, ri
           FROM unnest($1::text[], $2::bool[], $3::text[], $4::text[], $5::bigint[],
                       $6::numeric[], $7::bigint[], $8::text[], $9::int[])
                AS n(a, l, m, c, t, v, rm, rb, ri)
           ON CONFLICT (account_id, livemode, meter_id, customer, minute_ts) DO UPDATE SET
               value_sum = EXCLUDED.value_sum, event_count = 1,
               last_value = EXCLUDED.last_value, last_received_ms = EXCLUDED.last_received_ms,
               last_receipt_batch = EXCLUDED.last_receipt_batch,
               last_receipt_index = EXCLUDED.last_receipt_index""",
        [e.account_id for e in new],
        [e.livemode for e in new],
        [e.meter_id for e in new],
        [e.customer for e in new],
        [minute_of(e.event_ts) for e in new],
        [e.value for e in new],
        [e.received_ms for e in new],
        [e.receipt_batch for e in new],
        [e.receipt_index for e in new],
    )


async def recompute_window(conn: Conn, key: WindowKey, window: TimeWindow) -> None:
    """Re-elect a window's survivor from the raw events that still count (after a cancel)."""
    account_id, livemode, meter_id, customer, window_ts = key
    latest = await conn.fetchrow(
        f"""SELECT $1::text AS account_id, $2::bool AS livemode, $3::text AS meter_id,
                  $4::text AS customer, identifier, value, event_ts, received_ms, receipt_batch,
                  receipt_index
           FROM meter_events
           WHERE series_id = ({SERIES_OF})
             AND event_ts >= $5 AND event_ts < $6 AND NOT cancelled
           ORDER BY {receipt_order(latest_first=True)} LIMIT 1""",
        account_id,
        livemode,
        meter_id,
        customer,
        window_ts,
        window_ts + WINDOW_S[window],
    )
    held = (await stored_survivors(conn, [key])).get(key)
    if latest is None:
        if held is not None:
            await conn.execute(
                """DELETE FROM window_survivors WHERE account_id = $1 AND livemode = $2
                   AND meter_id = $3 AND customer = $4 AND window_ts = $5""",
                *key,
            )
            await _drop_minutes(conn, [held])
        return
    survivor = event_row(latest)
    if held is None or held.receipt != survivor.receipt:
        await apply_overwrites(conn, [Overwrite(key, survivor, held)])

"""Hour rollups: ``rollups_hour`` kept equal to the sum of each hour's minute rows.

Runs of events add to their hours in the statement that adds them to their minutes
(:mod:`aggregator.rollups.event_store`). Everything else that rewrites minute rows (a cancel, a
pre-aggregated window's new survivor) names the hours it touched, and :func:`refresh_hours`
rebuilds them from their minutes, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Collection

from meterflow.receipt import receipt_order
from meterflow.store.pg import Conn
from meterflow.windows import HOUR_S

HourKey = tuple[str, bool, str, str, int]  # (account, livemode, meter, customer, hour start)

_KEYS = "unnest($1::text[], $2::bool[], $3::text[], $4::text[], $5::bigint[])"
_LAST_FIRST = receipt_order("r.last_", latest_first=True)


def hour_of(ts_s: int) -> int:
    return ts_s - ts_s % HOUR_S


async def refresh_hours(conn: Conn, keys: Collection[HourKey]) -> None:
    """Rebuild each hour in ``keys`` from its minute rows (an hour without any is removed)."""
    if not keys:
        return
    ordered = sorted(keys)
    arrays = [[k[i] for k in ordered] for i in range(5)]
    await conn.execute(
        f"""DELETE FROM rollups_hour h
            USING {_KEYS} AS k(account_id, livemode, meter_id, customer, hour_ts)
            WHERE (h.account_id, h.livemode, h.meter_id, h.customer, h.hour_ts)
                = (k.account_id, k.livemode, k.meter_id, k.customer, k.hour_ts)""",
        *arrays,
    )
    await conn.execute(
        f"""INSERT INTO rollups_hour
                (account_id, livemode, meter_id, customer, hour_ts, value_sum, event_count,
                 last_value, last_received_ms, last_receipt_batch, last_receipt_index)
            SELECT k.account_id, k.livemode, k.meter_id, k.customer, k.hour_ts,
                   sum(r.value_sum), sum(r.event_count),
                   (array_agg(r.last_value ORDER BY {_LAST_FIRST}))[1],
                   (array_agg(r.last_received_ms ORDER BY {_LAST_FIRST}))[1],
                   (array_agg(r.last_receipt_batch ORDER BY {_LAST_FIRST}))[1],
                   (array_agg(r.last_receipt_index ORDER BY {_LAST_FIRST}))[1]
            FROM {_KEYS} AS k(account_id, livemode, meter_id, customer, hour_ts)
            JOIN rollups_minute r
              ON r.account_id = k.account_id AND r.livemode = k.livemode
             AND r.meter_id = k.meter_id AND r.customer = k.customer
             AND r.minute_ts >= k.hour_ts AND r.minute_ts < k.hour_ts + {HOUR_S}
            GROUP BY k.account_id, k.livemode, k.meter_id, k.customer, k.hour_ts""",
        *arrays,
    )

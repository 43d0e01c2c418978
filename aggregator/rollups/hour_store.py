"""Hour and day rollups: ``rollups_hour`` kept equal to the sum of each hour's minute rows, and
``rollups_day`` to the sum of each day's hour rows.

Runs of events add to their hours and days in the statement that adds them to their minutes
(:mod:`aggregator.rollups.event_store`). Everything else that rewrites minute rows (a cancel, a
pre-aggregated window's new survivor) names the hours it touched, and :func:`refresh_hours`
rebuilds them from their minutes, then their days from their hours, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from meterflow.receipt import receipt_order
from meterflow.store.pg import Conn
from meterflow.windows import DAY_S, HOUR_S, MINUTE_S

HourKey = tuple[str, bool, str, str, int]  # (account, livemode, meter, customer, hour start)

_KEYS = "unnest($1::text[], $2::bool[], $3::text[], $4::text[], $5::bigint[])"
_LAST_FIRST = receipt_order("r.last_", latest_first=True)


def hour_of(ts_s: int) -> int:
    return ts_s - ts_s % HOUR_S


async def refresh_hours(conn: Conn, keys: Collection[HourKey]) -> None:
    """Rebuild each hour in ``keys`` from its minute rows, then the days holding them from their
    hour rows (an hour or a day without any is removed)."""
    if not keys:
        return
    await _rebuild(conn, _HOURS, _MINUTES, keys)
    await _rebuild(conn, _DAYS, _HOURS, {(*k[:4], k[4] - k[4] % DAY_S) for k in keys})


@dataclass(frozen=True, slots=True)
class _Level:
    table: str
    bucket: str  # the column of the bucket's start
    size_s: int


_MINUTES = _Level("rollups_minute", "minute_ts", MINUTE_S)
_HOURS = _Level("rollups_hour", "hour_ts", HOUR_S)
_DAYS = _Level("rollups_day", "day_ts", DAY_S)


async def _rebuild(conn: Conn, level: _Level, finer: _Level, keys: Collection[HourKey]) -> None:
    """Rebuild the rows of ``level`` named by ``keys`` (the same key shape, with the bucket's
    start last) from the rows of ``finer`` they hold."""
    table, bucket, size_s = level.table, level.bucket, level.size_s
    finer_bucket = finer.bucket
    ordered = sorted(keys)
    arrays = [[k[i] for k in ordered] for i in range(5)]
    await conn.execute(
        f"""DELETE FROM {table} h
            USING {_KEYS} AS k(account_id, livemode, meter_id, customer, {bucket})
            WHERE (h.account_id, h.livemode, h.meter_id, h.customer, h.{bucket})
                = (k.account_id, k.livemode, k.meter_id, k.customer, k.{bucket})""",
        *arrays,
    )
    await conn.execute(
        f"""INSERT INTO {table}
                (account_id, livemode, meter_id, customer, {bucket}, value_sum, event_count,
                 last_value, last_received_ms, last_receipt_batch, last_receipt_index)
            SELECT k.account_id, k.livemode, k.meter_id, k.customer, k.{bucket},
                   sum(r.value_sum), sum(r.event_count),
                   (array_agg(r.last_value ORDER BY {_LAST_FIRST}))[1],
                   (array_agg(r.last_received_ms ORDER BY {_LAST_FIRST}))[1],
                   (array_agg(r.last_receipt_batch ORDER BY {_LAST_FIRST}))[1],
                   (array_agg(r.last_receipt_index ORDER BY {_LAST_FIRST}))[1]
            FROM {_KEYS} AS k(account_id, livemode, meter_id, customer, {bucket})
            JOIN {finer.table} r
              ON r.account_id = k.account_id AND r.livemode = k.livemode
             AND r.meter_id = k.meter_id AND r.customer = k.customer
             AND r.{finer_bucket} >= k.{bucket} AND r.{finer_bucket} < k.{bucket} + {size_s}
            GROUP BY k.account_id, k.livemode, k.meter_id, k.customer, k.{bucket}""",
        *arrays,
    )

"""Folded usage, read: the one module of queries on ``rollups_minute``, ``rollups_hour`` and
``rollups_day`` outside the fold.

A (meter, customer)'s usage over ``[start_s, end_s)`` is read from its minute rows there;
pre-aggregated meters' minute rows hold only their windows' survivors, so raw and pre-aggregated
meters read alike. A read yields the totals every formula needs; the meter's formula picks the
value (:meth:`UsageTotals.value`), so one query serves keys of meters with different formulas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from meterflow.receipt import receipt_order
from meterflow.store.pg import Conn
from meterflow.usage.keys import UsageKey, UsageSpan, UsageTotals
from meterflow.windows import DAY_S, HOUR_S

# The `last` formula's candidate is the most recently received minute (receipt order).
_LAST_FIRST = receipt_order("last_", latest_first=True)


@dataclass(frozen=True, slots=True)
class UsageBucket:
    """The usage of one non-empty bucket ``[start_s, start_s + bucket_s)``."""

    start_s: int
    totals: UsageTotals


def _totals(row: asyncpg.Record) -> UsageTotals:
    return UsageTotals(
        value_sum=row["value_sum"],
        event_count=int(row["event_count"]),
        last_value=row["last_value"],
    )


# Keys and [start, end) of each span, the hours wholly inside it, [first_hour, end_hour), and the
# days wholly inside it, [first_day, end_day).
_SPANS = """
    SELECT *, start_ts + (3600 - start_ts % 3600) % 3600 AS first_hour,
           end_ts - end_ts % 3600 AS end_hour,
           start_ts + (86400 - start_ts % 86400) % 86400 AS first_day,
           end_ts - end_ts % 86400 AS end_day
    FROM unnest($1::text[], $2::bool[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
         WITH ORDINALITY AS q(account_id, livemode, meter_id, customer, start_ts, end_ts, i)
"""
_SAME_KEY = """ON r.account_id = q.account_id AND r.livemode = q.livemode
              AND r.meter_id = q.meter_id AND r.customer = q.customer"""
_ROLLUP = (
    "r.value_sum, r.event_count, r.last_value, r.last_received_ms, r.last_receipt_batch, "
    "r.last_receipt_index"
)

# A span's usage: its whole days from the day rollups, the whole hours before the first of them
# and after the last from the hour rollups (all its whole hours if it holds no whole day), and the
# minutes before its first whole hour and after its last from the minute rollups. Each part is a
# primary-key range scan, so a month costs about what a day does: at most 23 hours and 59 minutes
# at each edge, plus one row per day.
_TOTALS = f"""
WITH q AS ({_SPANS}), parts AS (
    SELECT q.i, {_ROLLUP} FROM q JOIN rollups_minute r {_SAME_KEY}
       AND r.minute_ts >= q.start_ts AND r.minute_ts < least(q.first_hour, q.end_ts)
    UNION ALL
    SELECT q.i, {_ROLLUP} FROM q JOIN rollups_hour r {_SAME_KEY}
       AND r.hour_ts >= q.first_hour
       AND r.hour_ts < CASE WHEN q.first_day < q.end_day THEN q.first_day ELSE q.end_hour END
    UNION ALL
    SELECT q.i, {_ROLLUP} FROM q JOIN rollups_day r {_SAME_KEY}
       AND r.day_ts >= q.first_day AND r.day_ts < q.end_day
    UNION ALL
    SELECT q.i, {_ROLLUP} FROM q JOIN rollups_hour r {_SAME_KEY}
       AND q.first_day < q.end_day AND r.hour_ts >= q.end_day AND r.hour_ts < q.end_hour
    UNION ALL
    SELECT q.i, {_ROLLUP} FROM q JOIN rollups_minute r {_SAME_KEY}
       AND r.minute_ts >= greatest(q.end_hour, q.first_hour, q.start_ts)
       AND r.minute_ts < q.end_ts
)
SELECT p.i, sum(p.value_sum) AS value_sum, sum(p.event_count) AS event_count,
       (array_agg(p.last_value ORDER BY {receipt_order("p.last_", latest_first=True)}))[1]
           AS last_value
FROM parts p GROUP BY p.i
"""


async def usage_totals(conn: Conn, spans: Sequence[UsageSpan]) -> dict[UsageSpan, UsageTotals]:
    """The totals of each span that has usage, in one query; spans without usage are absent.
    Spans start and end on whole minutes."""
    if not spans:
        return {}
    rows = await conn.fetch(_TOTALS, *[[s[i] for s in spans] for i in range(6)])
    return {spans[r["i"] - 1]: _totals(r) for r in rows}


async def usage_total(conn: Conn, span: UsageSpan) -> UsageTotals:
    """The totals of one span (no usage: zeros)."""
    return (await usage_totals(conn, [span])).get(span, UsageTotals())


async def usage_buckets(
    conn: Conn,
    key: UsageKey,
    *,
    start_s: int,
    end_s: int,
    bucket_s: int,
    limit: int,
    oldest_first: bool = False,
) -> list[UsageBucket]:
    """Up to ``limit`` non-empty buckets of ``bucket_s`` seconds (epoch-aligned) within
    ``[start_s, end_s)``, newest first unless ``oldest_first``."""
    account_id, livemode, meter_id, customer = key
    table, column = "rollups_minute", "minute_ts"
    for size_s, coarser in (
        (HOUR_S, ("rollups_hour", "hour_ts")),
        (DAY_S, ("rollups_day", "day_ts")),
    ):
        if bucket_s % size_s == 0 and start_s % size_s == 0 and end_s % size_s == 0:
            table, column = coarser
    rows = await conn.fetch(
        f"""SELECT {column} - {column} % $7 AS bucket,
                   sum(value_sum) AS value_sum, sum(event_count) AS event_count,
                   (array_agg(last_value ORDER BY {_LAST_FIRST}))[1] AS last_value
            FROM {table}
            WHERE account_id = $1 AND livemode = $2 AND meter_id = $3 AND customer = $4
              AND {column} >= $5 AND {column} < $6
            GROUP BY bucket ORDER BY bucket {"ASC" if oldest_first else "DESC"} LIMIT $8""",
        account_id,
        livemode,
        meter_id,
        customer,
        start_s,
        end_s,
        bucket_s,
        limit,
    )
    return [UsageBucket(r["bucket"], _totals(r)) for r in rows]


async def folded_event_count(conn: Conn, account_id: str) -> int:
    """How many events the fold has counted for an account, over every meter and mode."""
    total = await conn.fetchval(
        "SELECT coalesce(sum(event_count), 0) FROM rollups_minute WHERE account_id = $1",
        account_id,
    )
    return int(total)

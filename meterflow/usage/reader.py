"""Folded usage, read: the one module of queries on ``rollups_minute`` outside the fold.

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

# The `last` formula's candidate is the most recently received minute (receipt order).
_LAST_FIRST = receipt_order("last_", latest_first=True)
_LAST_FIRST_R = receipt_order("r.last_", latest_first=True)


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


async def usage_totals(conn: Conn, spans: Sequence[UsageSpan]) -> dict[UsageSpan, UsageTotals]:
    """The totals of each span that has usage, in one query; spans without usage are absent."""
    if not spans:
        return {}
    rows = await conn.fetch(
        f"""SELECT q.i, sum(r.value_sum) AS value_sum, sum(r.event_count) AS event_count,
                   (array_agg(r.last_value ORDER BY {_LAST_FIRST_R}))[1] AS last_value
            FROM unnest($1::text[], $2::bool[], $3::text[], $4::text[], $5::bigint[],
                        $6::bigint[]) WITH ORDINALITY
                 AS q(account_id, livemode, meter_id, customer, start_ts, end_ts, i)
            JOIN rollups_minute r
              ON r.account_id = q.account_id AND r.livemode = q.livemode
             AND r.meter_id = q.meter_id AND r.customer = q.customer
             AND r.minute_ts >= q.start_ts AND r.minute_ts < q.end_ts
            GROUP BY q.i""",
        *[[s[i] for s in spans] for i in range(6)],
    )
    return {spans[r["i"] - 1]: _totals(r) for r in rows}


async def usage_total(conn: Conn, span: UsageSpan) -> UsageTotals:
    """The totals of one span. Event summaries' hot path: a plain primary-key range scan, kept
    apart from :func:`usage_totals`; for several spans use that, never a loop over this."""
    account_id, livemode, meter_id, customer, start_s, end_s = span
    row = await conn.fetchrow(
        f"""SELECT sum(value_sum) AS value_sum, sum(event_count) AS event_count,
                   (array_agg(last_value ORDER BY {_LAST_FIRST}))[1] AS last_value
            FROM rollups_minute
            WHERE account_id = $1 AND livemode = $2 AND meter_id = $3 AND customer = $4
              AND minute_ts >= $5 AND minute_ts < $6""",
        account_id,
        livemode,
        meter_id,
        customer,
        start_s,
        end_s,
    )
    if row is None or row["event_count"] is None:
        return UsageTotals()
    return _totals(row)


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
    rows = await conn.fetch(
        f"""SELECT minute_ts - minute_ts % $7 AS bucket,
                   sum(value_sum) AS value_sum, sum(event_count) AS event_count,
                   (array_agg(last_value ORDER BY {_LAST_FIRST}))[1] AS last_value
            FROM rollups_minute
            WHERE account_id = $1 AND livemode = $2 AND meter_id = $3 AND customer = $4
              AND minute_ts >= $5 AND minute_ts < $6
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

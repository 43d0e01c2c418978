"""Comparing the shadow tables with the live ones over a rebuild's scope, per (meter, customer,
window).

:func:`compare` writes every difference to the session's temporary table
``rebuild_differences``, one row per key that differs, then reads them back. A key is a
(mode, meter, customer, bucket) at one level:

* ``minute``, ``hour``, ``day``: a row of ``rollups_minute``, ``rollups_hour`` or
  ``rollups_day`` missing on one side, or with another sum, count or latest receipt;
* ``window``: a pre-aggregation window whose survivor differs (``window_survivors``);
* ``events``: the raw events of one (meter, customer, UTC day) in ``meter_events``, compared by
  count, sum and a fingerprint of every event (identifier, value, times, receipt, cancelled).

Window survivors and raw events are compared only from the first day the live retention pass
still keeps them; rollups are kept for ever and compared over the whole scope.

A comparison can be restricted to the keys listed in the temporary table ``rebuild_recheck``
(:func:`recheck`): every level of some (mode, meter, customer, day), or of every day of some
(mode, meter, customer), and single keys of one level. The hand-over compares everything before
it holds the live group, then, while it does, only what could have changed since
(:mod:`aggregator.replay.handover`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from aggregator.replay.scope import RebuildScope
from aggregator.replay.shadow import Schemas
from meterflow.store.pg import Conn
from meterflow.windows import DAY_S, HOUR_S, MINUTE_S

Level = Literal["minute", "hour", "day", "window", "events"]

# level -> (table, bucket column, bucket size in seconds; 0 for a survivor's window)
ROLLUP_LEVELS: dict[Level, tuple[str, str, int]] = {
    "minute": ("rollups_minute", "minute_ts", MINUTE_S),
    "hour": ("rollups_hour", "hour_ts", HOUR_S),
    "day": ("rollups_day", "day_ts", DAY_S),
}
DIFFERENCES = "pg_temp.rebuild_differences"
RECHECK = "pg_temp.rebuild_recheck"
# (mode, meter, customer, UTC day or None for every day): every level of it is compared again.
RecheckKey = tuple[bool, str, str, int | None]
# How far one key's bucket reaches, per level (a survivor's window is named by its start).
_WIDTH: dict[Level, int] = {"minute": MINUTE_S, "hour": HOUR_S, "day": DAY_S, "window": 1,
                            "events": DAY_S}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Totals:
    """One side of a difference: the key's sum, count and latest received value."""

    value_sum: Decimal
    count: int
    last_value: Decimal | None


@dataclass(frozen=True, slots=True)
class Difference:
    level: Level
    livemode: bool
    meter_id: str
    customer: str
    bucket_ts: int
    live: Totals | None  # None: the key is missing from the live tables
    rebuilt: Totals | None  # None: the rebuild has nothing there


@dataclass(frozen=True, slots=True)
class Bounds:
    """The scope's parameters as the statements take them: $1 to $4 for rollups, and $5 for
    what retention prunes."""

    scope: RebuildScope
    kept_from_s: int  # first day the retention pass keeps raw events and survivors of

    def args(self) -> tuple[str, list[str], int, int]:
        s = self.scope
        return (s.account_id, sorted(s.meter_ids), s.start_s, s.end_s)

    def pruned_args(self) -> tuple[str, list[str], int, int, int]:
        return (*self.args(), self.kept_from_s)


def kept_from(scope: RebuildScope, now_s: int, retention_days: int) -> int:
    """The first day of the scope whose raw events and window survivors live retention keeps
    (a day after the first one it may already have dropped)."""
    return max(scope.start_s, (now_s - retention_days * DAY_S) // DAY_S * DAY_S + DAY_S)


_CREATE = f"""CREATE TEMP TABLE IF NOT EXISTS {DIFFERENCES.split(".")[1]} (
    level text NOT NULL, livemode boolean NOT NULL, meter_id text NOT NULL,
    customer text NOT NULL, bucket_ts bigint NOT NULL,
    live_present boolean NOT NULL, live_sum numeric, live_count bigint, live_last numeric,
    rebuilt_present boolean NOT NULL, rebuilt_sum numeric, rebuilt_count bigint,
    rebuilt_last numeric
) ON COMMIT DROP"""

_CREATE_RECHECK = f"""CREATE TEMP TABLE IF NOT EXISTS {RECHECK.split(".")[1]} (
    level text, livemode boolean NOT NULL, meter_id text NOT NULL, customer text NOT NULL,
    day_ts bigint, bucket_ts bigint
) ON COMMIT DROP"""


def _rows(
    schema: str, table: str, bucket: str, lower: str, *, level: Level, restricted: bool
) -> str:
    """The scope's rows of one table with ``bucket`` in ``[lower, $4)``: all of them, or only
    those of the keys in ``rebuild_recheck`` (which never overlap)."""
    source = f"{schema}.{table}"
    if table == "meter_events":  # keyed by series id: the series' columns come from its row
        source = f"""(SELECT s.account_id, s.livemode, s.meter_id, s.customer, e.*
                      FROM {source} e JOIN event_series s USING (series_id))"""
    if not restricted:
        return f"""(SELECT * FROM {source} t
                    WHERE account_id = $1 AND meter_id = ANY($2::text[])
                      AND {bucket} >= {lower} AND {bucket} < $4)"""
    return f"""(SELECT t.* FROM {RECHECK} k JOIN {source} t
                  ON t.account_id = $1 AND t.meter_id = ANY($2::text[])
                 AND t.livemode = k.livemode AND t.meter_id = k.meter_id
                 AND t.customer = k.customer AND (k.level IS NULL OR k.level = '{level}')
                 AND t.{bucket} >= greatest({lower}, coalesce(k.bucket_ts, k.day_ts, {lower}))
                 AND t.{bucket} < least($4, coalesce(k.bucket_ts + {_WIDTH[level]},
                                                      k.day_ts + {DAY_S}, $4)))"""


def _rollup_differences(schemas: Schemas, level: Level, *, restricted: bool) -> str:
    table, bucket, _size = ROLLUP_LEVELS[level]
    compared = (
        "{0}.value_sum, {0}.event_count, {0}.last_value, {0}.last_received_ms, "
        "{0}.last_receipt_batch, {0}.last_receipt_index"
    )
    return f"""INSERT INTO {DIFFERENCES}
        SELECT '{level}', coalesce(l.livemode, s.livemode), coalesce(l.meter_id, s.meter_id),
               coalesce(l.customer, s.customer), coalesce(l.{bucket}, s.{bucket}),
               l.{bucket} IS NOT NULL, l.value_sum, l.event_count, l.last_value,
               s.{bucket} IS NOT NULL, s.value_sum, s.event_count, s.last_value
        FROM {_rows(schemas.live, table, bucket, "$3", level=level, restricted=restricted)} l
        FULL JOIN {_rows(schemas.shadow, table, bucket, "$3", level=level, restricted=restricted)} s
          ON l.livemode = s.livemode AND l.meter_id = s.meter_id AND l.customer = s.customer
         AND l.{bucket} = s.{bucket}
        WHERE l.{bucket} IS NULL OR s.{bucket} IS NULL
           OR ({compared.format("l")}) IS DISTINCT FROM ({compared.format("s")})"""


_KEPT = "greatest($3::bigint, $5::bigint)"


def _window_differences(schemas: Schemas, *, restricted: bool) -> str:
    compared = (
        "{0}.identifier, {0}.value, {0}.event_ts, {0}.received_ms, {0}.receipt_batch, "
        "{0}.receipt_index"
    )
    return f"""INSERT INTO {DIFFERENCES}
        SELECT 'window', coalesce(l.livemode, s.livemode), coalesce(l.meter_id, s.meter_id),
               coalesce(l.customer, s.customer), coalesce(l.window_ts, s.window_ts),
               l.window_ts IS NOT NULL, l.value, 1, l.value,
               s.window_ts IS NOT NULL, s.value, 1, s.value
        FROM {
        _rows(
            schemas.live,
            "window_survivors",
            "window_ts",
            _KEPT,
            level="window",
            restricted=restricted,
        )
    } l
        FULL JOIN {
        _rows(
            schemas.shadow,
            "window_survivors",
            "window_ts",
            _KEPT,
            level="window",
            restricted=restricted,
        )
    } s
          ON l.livemode = s.livemode AND l.meter_id = s.meter_id AND l.customer = s.customer
         AND l.window_ts = s.window_ts
        WHERE l.window_ts IS NULL OR s.window_ts IS NULL
           OR ({compared.format("l")}) IS DISTINCT FROM ({compared.format("s")})"""


def _event_groups(schema: str, *, restricted: bool) -> str:
    fingerprint = (
        "identifier || '/' || value || '/' || event_ts || '/' || received_ms || '/' || "
        "receipt_batch || '/' || receipt_index || '/' || cancelled"
    )
    return f"""SELECT livemode, meter_id, customer, event_ts - event_ts % {DAY_S} AS day_ts,
                  coalesce(sum(value) FILTER (WHERE NOT cancelled), 0) AS value_sum,
                  count(*) FILTER (WHERE NOT cancelled) AS counted, count(*) AS stored,
                  sum(hashtextextended({fingerprint}, 0)::numeric) AS fingerprint
           FROM {
        _rows(schema, "meter_events", "event_ts", _KEPT, level="events", restricted=restricted)
    } e
           GROUP BY livemode, meter_id, customer, day_ts"""


def _event_differences(schemas: Schemas, *, restricted: bool) -> str:
    return f"""INSERT INTO {DIFFERENCES}
        SELECT 'events', coalesce(l.livemode, s.livemode), coalesce(l.meter_id, s.meter_id),
               coalesce(l.customer, s.customer), coalesce(l.day_ts, s.day_ts),
               l.day_ts IS NOT NULL, l.value_sum, l.counted, NULL,
               s.day_ts IS NOT NULL, s.value_sum, s.counted, NULL
        FROM ({_event_groups(schemas.live, restricted=restricted)}) l
        FULL JOIN ({_event_groups(schemas.shadow, restricted=restricted)}) s
          ON l.livemode = s.livemode AND l.meter_id = s.meter_id AND l.customer = s.customer
         AND l.day_ts = s.day_ts
        WHERE l.day_ts IS NULL OR s.day_ts IS NULL
           OR (l.value_sum, l.counted, l.stored, l.fingerprint)
              IS DISTINCT FROM (s.value_sum, s.counted, s.stored, s.fingerprint)"""


async def recheck(conn: Conn, touched: Iterable[RecheckKey], differed: Iterable[Difference]) -> int:
    """Fill ``rebuild_recheck`` (dropped at commit): every level of the ``touched`` days (a
    whole pair: all its days), and each earlier difference's own key where no touched day
    covers it already. Returns how many rows it holds."""
    days = set(touched)
    whole = {k[:3] for k in days if k[3] is None}
    rows: list[tuple[str | None, bool, str, str, int | None, int | None]] = [
        (None, *k, None) for k in days if k[3] is None or k[:3] not in whole
    ]
    for d in set(differed):
        pair = (d.livemode, d.meter_id, d.customer)
        if pair not in whole and (*pair, d.bucket_ts // DAY_S * DAY_S) not in days:
            rows.append((d.level, *pair, None, d.bucket_ts))
    await conn.execute(_CREATE_RECHECK)
    await conn.execute(f"TRUNCATE {RECHECK}")
    await conn.execute(
        f"""INSERT INTO {RECHECK} SELECT * FROM unnest($1::text[], $2::bool[], $3::text[],
                                                   $4::text[], $5::bigint[], $6::bigint[])""",
        *([row[i] for row in rows] for i in range(6)),
    )
    # A temporary table has no statistics until analysed; with them the planner walks the
    # rollups' primary keys per listed key instead of scanning whole tables.
    await conn.execute(f"ANALYZE {RECHECK}")
    return len(rows)


async def compare(
    conn: Conn, schemas: Schemas, bounds: Bounds, *, restricted: bool = False
) -> list[Difference]:
    """Record every difference in ``rebuild_differences`` (dropped at commit) and return them,
    ordered by meter, customer, level and bucket; with ``restricted``, only over the keys
    :func:`recheck` listed. Runs in the caller's transaction."""
    await conn.execute(_CREATE)
    await conn.execute(f"TRUNCATE {DIFFERENCES}")
    for level in ROLLUP_LEVELS:
        await conn.execute(
            _rollup_differences(schemas, level, restricted=restricted), *bounds.args()
        )
    await conn.execute(_window_differences(schemas, restricted=restricted), *bounds.pruned_args())
    await conn.execute(_event_differences(schemas, restricted=restricted), *bounds.pruned_args())
    await conn.execute(f"ANALYZE {DIFFERENCES}")  # the swap joins it with the live tables
    rows = await conn.fetch(
        f"""SELECT * FROM {DIFFERENCES}
            ORDER BY meter_id, customer, livemode, level, bucket_ts"""
    )
    return [
        Difference(
            level=r["level"],
            livemode=r["livemode"],
            meter_id=r["meter_id"],
            customer=r["customer"],
            bucket_ts=r["bucket_ts"],
            live=_totals(r["live_present"], r["live_sum"], r["live_count"], r["live_last"]),
            rebuilt=_totals(
                r["rebuilt_present"], r["rebuilt_sum"], r["rebuilt_count"], r["rebuilt_last"]
            ),
        )
        for r in rows
    ]


def _totals(
    present: bool, value_sum: Decimal | None, count: int | None, last: Decimal | None
) -> Totals | None:
    if not present:
        return None
    return Totals(value_sum or Decimal(0), count or 0, last)

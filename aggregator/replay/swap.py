"""Putting the rebuilt rows in place of the live ones that differ, inside the hand-over
transaction (:mod:`aggregator.replay.rebuild`), after :func:`~aggregator.replay.compare.compare`
recorded the differences.

1. Each differing key of ``rollups_minute``, ``rollups_hour``, ``rollups_day`` and
   ``window_survivors`` is deleted from the live table and the rebuilt row, if any, inserted.
2. Each differing (meter, customer, day) of raw events is replaced the same way in
   ``meter_events``, whose cancels read it later.
3. Identifiers of the raw events of step 2 that the live dedupe set lacks, received within its
   48 hours, are added to it, so a resend of an event the live fold had lost stays a
   duplicate.
4. One ``usage_changes`` row per changed (meter, customer), spanning the changed windows, tells
   the alert evaluators to look again.
Keys that do not differ are not touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from aggregator.replay.compare import DIFFERENCES, ROLLUP_LEVELS, Bounds
from aggregator.replay.shadow import Schemas
from meterflow.store.pg import Conn
from meterflow.windows import DAY_S, HOUR_S

_KEY = """t.account_id = $1 AND t.livemode = d.livemode AND t.meter_id = d.meter_id
          AND t.customer = d.customer"""


@dataclass(frozen=True, slots=True)
class Swapped:
    rows_deleted: int
    rows_inserted: int
    identifiers_restored: int
    usage_changes: int


def _count(status: str) -> int:
    return int(status.rpartition(" ")[2])


# Raw events and identifiers carry a series id; their key columns are the series' (as ``t``).
_SERIES = "JOIN event_series t USING (series_id)"


async def _replace(conn: Conn, schemas: Schemas, table: str, *, level: str, match: str,
                   account_id: str) -> tuple[int, int]:  # fmt: skip
    deleted = await conn.execute(
        f"""DELETE FROM {schemas.live}.{table} t USING {DIFFERENCES} d
            WHERE d.level = '{level}' AND {_KEY} AND {match}""",
        account_id,
    )
    inserted = await conn.execute(
        f"""INSERT INTO {schemas.live}.{table}
            SELECT t.* FROM {schemas.shadow}.{table} t JOIN {DIFFERENCES} d
              ON d.level = '{level}' AND {_KEY} AND {match}""",
        account_id,
    )
    return _count(deleted), _count(inserted)


async def _replace_events(conn: Conn, schemas: Schemas, account_id: str) -> tuple[int, int]:
    """Step 2: the raw events (``e``) of each differing (meter, customer, day)."""
    match = f"e.event_ts >= d.bucket_ts AND e.event_ts < d.bucket_ts + {DAY_S}"
    deleted = await conn.execute(
        f"""DELETE FROM {schemas.live}.meter_events e USING event_series t, {DIFFERENCES} d
            WHERE e.series_id = t.series_id AND d.level = 'events' AND {_KEY} AND {match}""",
        account_id,
    )
    inserted = await conn.execute(
        f"""INSERT INTO {schemas.live}.meter_events
            SELECT e.* FROM {schemas.shadow}.meter_events e {_SERIES} JOIN {DIFFERENCES} d
              ON d.level = 'events' AND {_KEY} AND {match}""",
        account_id,
    )
    return _count(deleted), _count(inserted)


async def swap(conn: Conn, schemas: Schemas, bounds: Bounds, *, now_ms: int,
               dedupe_ms: int) -> Swapped:  # fmt: skip
    """Steps 1 to 4 of the module docstring, in the caller's transaction."""
    account_id = bounds.scope.account_id
    deleted = inserted = 0
    replaced = [(table, level, f"t.{bucket} = d.bucket_ts")
                for level, (table, bucket, _size) in ROLLUP_LEVELS.items()]  # fmt: skip
    replaced.append(("window_survivors", "window", "t.window_ts = d.bucket_ts"))
    for table, level, match in replaced:
        gone, added = await _replace(
            conn, schemas, table, level=level, match=match, account_id=account_id
        )
        deleted += gone
        inserted += added
    gone, added = await _replace_events(conn, schemas, account_id)
    deleted += gone
    inserted += added
    restored = await conn.execute(
        f"""INSERT INTO {schemas.live}.event_identifiers
            SELECT e.* FROM {schemas.shadow}.event_identifiers e {_SERIES} JOIN {DIFFERENCES} d
              ON d.level = 'events' AND {_KEY}
             AND e.event_ts >= d.bucket_ts AND e.event_ts < d.bucket_ts + {DAY_S}
            WHERE e.received_ms >= $2
            ON CONFLICT DO NOTHING""",
        account_id,
        now_ms - dedupe_ms,
    )
    # Each level's bucket ends where the next bucket starts; a day of raw events ends with its
    # day, a survivor's window within its day.
    changes = await conn.execute(
        f"""INSERT INTO {schemas.live}.usage_changes
                (account_id, livemode, meter_id, customer, first_event_ts, last_event_ts)
            SELECT $1, livemode, meter_id, customer, min(bucket_ts),
                   max(bucket_ts + CASE level WHEN 'minute' THEN 60 WHEN 'hour' THEN {HOUR_S}
                                              ELSE {DAY_S} END - 1)
            FROM {DIFFERENCES}
            GROUP BY livemode, meter_id, customer""",
        account_id,
    )
    return Swapped(deleted, inserted, _count(restored), _count(changes))

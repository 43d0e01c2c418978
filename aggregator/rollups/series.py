"""Series ids: the integer a raw event and an identifier carry for (account, mode, meter, customer).

``event_series`` rows are written once and never changed or deleted, so an id read from a
committed row stays valid for good and the aggregator keeps every id it has read. An id learnt
inside a transaction that may still roll back is used but not kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aggregator.rollups.columns import Segment, SeriesKey
from meterflow.store.pg import Conn

# Beyond this many cached ids the cache starts again empty: a bound on memory, not on
# correctness (a missing id is read again).
MAX_CACHED = 1_000_000

# The series id of ($1 account, $2 livemode, $3 meter, $4 customer), for statements on raw events.
SERIES_OF = """SELECT series_id FROM event_series
               WHERE account_id = $1 AND livemode = $2 AND meter_id = $3 AND customer = $4"""

_KEYS = "unnest($1::text[], $2::bool[], $3::text[], $4::text[])"

_CREATE = f"""INSERT INTO event_series (account_id, livemode, meter_id, customer)
SELECT * FROM {_KEYS} ON CONFLICT DO NOTHING"""

_READ = f"""SELECT s.series_id, s.account_id, s.livemode, s.meter_id, s.customer
FROM event_series s JOIN {_KEYS} AS k(account_id, livemode, meter_id, customer)
  USING (account_id, livemode, meter_id, customer)"""


def _columns(keys: Sequence[SeriesKey]) -> list[list[object]]:
    return [[k[i] for k in keys] for i in range(4)]


async def series_ids(conn: Conn, keys: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
    """The id of each of ``keys``, creating those that have none yet. ``keys`` in a fixed order
    (sorted) keep concurrent creators from waiting on each other in a cycle."""
    columns = _columns(keys)
    # A concurrent creator of the same series makes this wait for its commit; the read, a
    # statement of its own, then sees the row either way.
    await conn.execute(_CREATE, *columns)
    rows = await conn.fetch(_READ, *columns)
    found = {
        (r["account_id"], r["livemode"], r["meter_id"], r["customer"]): int(r["series_id"])
        for r in rows
    }
    if len(found) != len(set(keys)):  # cannot happen: every key was just created or found
        missing = sorted(set(keys) - set(found))[:3]
        raise RuntimeError(f"event_series has no row for {missing}")
    return found


class EventSeries:
    """A per-process cache of series ids, filling each run's ``series_id`` column."""

    def __init__(self, max_cached: int = MAX_CACHED) -> None:
        self._ids: dict[SeriesKey, int] = {}
        self._max_cached = max_cached

    async def assign(self, conn: Conn, segments: Iterable[Segment]) -> None:
        """Fill the ``series_id`` column of every run of events in ``segments``."""
        runs = [(s.events, list(s.events.series_keys())) for s in segments if len(s.events)]
        if not runs:
            return
        keys = {key for _, run_keys in runs for key in run_keys}
        known = {key: id_ for key in keys if (id_ := self._ids.get(key)) is not None}
        missing = sorted(keys.difference(known))
        if missing:
            learnt = await series_ids(conn, missing)
            known.update(learnt)
            if not conn.is_in_transaction():  # committed: safe to keep
                if len(self._ids) + len(learnt) > self._max_cached:
                    self._ids.clear()
                self._ids.update(learnt)
        for run, run_keys in runs:
            run.series_id = [known[key] for key in run_keys]

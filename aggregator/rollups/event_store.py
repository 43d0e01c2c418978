"""Storing a run of events in one statement: dedupe, raw events, minute rollups, usage changes.

One round trip per run of events, whatever its size. The run arrives as its series ids and the
events' own columns (the account, mode, meter and customer come from ``event_series``), and
PostgreSQL does the per-event work in C:

1. keep the first received event of each identifier within the run (receipt order);
2. record identifiers in ``event_identifiers`` (as their ``event_digest``, with the event's
   series id); those already there are duplicates and stop here;
3. store the new events in ``meter_events`` (keyed by series id and event time);
4. for raw meters, add each (meter, customer, minute)'s sum and count to ``rollups_minute`` and
   let its latest received event become the minute's ``last`` if it was received after the
   stored one; the same for its hour in ``rollups_hour`` and its day in ``rollups_day``, added
   up from the run's minutes and hours;
5. append one ``usage_changes`` row per (meter, customer) touched, with its event-time span.

For pre-aggregated (hour/day) meters, the latest received new event of each window touched comes
back to the caller, which lets it replace the window's stored survivor if it was received after
it (:mod:`aggregator.rollups.window_store`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aggregator.rollups.columns import EventColumns
from aggregator.rollups.fold import EventRow
from aggregator.rollups.window_store import event_row
from meterflow.receipt import receipt_columns, receipt_order
from meterflow.store.pg import Conn
from meterflow.windows import DAY_S, HOUR_S, MINUTE_S, WINDOW_S, TimeWindow

_RECEIPT_DESC = receipt_order(latest_first=True)
_RECEIPT_ASC = receipt_order()

# The stored minute's ``last`` loses to the incoming one received after it.
_NEWER = (
    f"(r.last_received_ms IS NULL OR {receipt_columns('EXCLUDED.last_')} "
    f"> {receipt_columns('r.last_')})"
)


def _bucket_rows(name: str, bucket: str, size_s: int) -> str:
    """CTE ``name``: the new raw meters' events per (meter, customer, bucket of ``size_s``):
    sum, count, and the latest received as ``last``."""
    return f"""{name} AS (
    SELECT DISTINCT ON (account_id, livemode, meter_id, customer, {bucket})
           account_id, livemode, meter_id, customer, {bucket},
           sum(value) OVER k AS value_sum, count(*) OVER k AS event_count, value AS last_value,
           received_ms, receipt_batch, receipt_index
    FROM (SELECT *, event_ts - event_ts % {size_s} AS {bucket} FROM new
          WHERE meter_id <> ALL($8::text[])) raw_meters
    WINDOW k AS (PARTITION BY account_id, livemode, meter_id, customer, {bucket})
    ORDER BY account_id, livemode, meter_id, customer, {bucket}, {_RECEIPT_DESC}"""


def _coarser_rows(name: str, finer: str, finer_bucket: str, bucket: str, size_s: int) -> str:
    """CTE ``name``: the rows of the CTE ``finer`` (as :func:`_bucket_rows` gives them) added up
    per coarser bucket of ``size_s``, the latest received of them as ``last``. Far fewer rows
    than the events, so each coarser rollup costs the fold little."""
    return f"""{name} AS (
    SELECT DISTINCT ON (account_id, livemode, meter_id, customer, {bucket})
           account_id, livemode, meter_id, customer, {bucket},
           sum(value_sum) OVER k AS value_sum, sum(event_count) OVER k AS event_count,
           last_value, received_ms, receipt_batch, receipt_index
    FROM (SELECT *, {finer_bucket} - {finer_bucket} % {size_s} AS {bucket} FROM {finer}) f
    WINDOW k AS (PARTITION BY account_id, livemode, meter_id, customer, {bucket})
    ORDER BY account_id, livemode, meter_id, customer, {bucket}, {_RECEIPT_DESC}"""


def _add_to(table: str, bucket: str, rows: str) -> str:
    """Add the CTE ``rows`` to the rollup ``table``: sums and counts add, ``last`` goes to the
    latest received."""
    return f"""INSERT INTO {table} AS r
        (account_id, livemode, meter_id, customer, {bucket}, value_sum, event_count, last_value,
         last_received_ms, last_receipt_batch, last_receipt_index)
    SELECT * FROM {rows}
    ON CONFLICT (account_id, livemode, meter_id, customer, {bucket}) DO UPDATE SET
        value_sum = r.value_sum + EXCLUDED.value_sum,
        event_count = r.event_count + EXCLUDED.event_count,
        last_value = CASE WHEN {_NEWER} THEN EXCLUDED.last_value ELSE r.last_value END,
        last_received_ms = CASE WHEN {_NEWER} THEN EXCLUDED.last_received_ms
                                ELSE r.last_received_ms END,
        last_receipt_batch = CASE WHEN {_NEWER} THEN EXCLUDED.last_receipt_batch
                                  ELSE r.last_receipt_batch END,
        last_receipt_index = CASE WHEN {_NEWER} THEN EXCLUDED.last_receipt_index
                                  ELSE r.last_receipt_index END"""


_STORE_EVENTS = f"""
WITH incoming AS (
    SELECT s.account_id, s.livemode, s.meter_id, s.customer, i.identifier,
           i.value::numeric AS value, i.event_ts, i.received_ms, i.receipt_batch,
           i.receipt_index, i.series_id
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[],
                $7::int[])
         AS i(series_id, identifier, value, event_ts, received_ms, receipt_batch, receipt_index)
    JOIN event_series s USING (series_id)
), firsts AS (
    SELECT DISTINCT ON (digest) *
    FROM (SELECT *, event_digest(account_id, livemode, identifier) AS digest FROM incoming) i
    ORDER BY digest, {_RECEIPT_ASC}
), fresh AS (
    INSERT INTO event_identifiers (digest, series_id, event_ts, received_ms)
    SELECT digest, series_id, event_ts, received_ms
    FROM firsts
    ON CONFLICT DO NOTHING
    RETURNING digest
), new AS (
    SELECT f.* FROM firsts f JOIN fresh USING (digest)
), stored AS (
    INSERT INTO meter_events
        (series_id, event_ts, identifier, value, received_ms, receipt_batch, receipt_index)
    SELECT series_id, event_ts, identifier, value, received_ms, receipt_batch, receipt_index
    FROM new
), {_bucket_rows("minutes", "minute_ts", MINUTE_S)}
), rolled AS (
    {_add_to("rollups_minute", "minute_ts", "minutes")}
), {_coarser_rows("hours", "minutes", "minute_ts", "hour_ts", HOUR_S)}
), rolled_hours AS (
    {_add_to("rollups_hour", "hour_ts", "hours")}
), {_coarser_rows("days", "hours", "hour_ts", "day_ts", DAY_S)}
), rolled_days AS (
    {_add_to("rollups_day", "day_ts", "days")}
), changed AS (
    INSERT INTO usage_changes
        (account_id, livemode, meter_id, customer, first_event_ts, last_event_ts,
         last_received_ms)
    SELECT account_id, livemode, meter_id, customer, min(event_ts), max(event_ts),
           max(received_ms)
    FROM new
    GROUP BY account_id, livemode, meter_id, customer
), candidates AS (
    SELECT DISTINCT ON (account_id, livemode, meter_id, customer, event_ts - event_ts % size) n.*
    FROM new n JOIN unnest($8::text[], $9::bigint[]) AS w(meter_id, size) USING (meter_id)
    ORDER BY account_id, livemode, meter_id, customer, event_ts - event_ts % size,
             {_RECEIPT_DESC}
)
SELECT counted.new_count, c.*
FROM (SELECT count(*) AS new_count FROM new) counted LEFT JOIN candidates c ON true
"""


@dataclass(frozen=True, slots=True)
class StoredRun:
    """What storing a run did: how many events were new, and for each pre-aggregated window the
    run touched, its latest received new event (the candidate survivor)."""

    new_count: int
    candidates: list[EventRow]


async def store_events(
    conn: Conn, events: EventColumns, windows: Mapping[str, TimeWindow]
) -> StoredRun:
    """Steps 1 to 5 of the module docstring for ``events``, in the caller's transaction."""
    if not len(events):
        return StoredRun(0, [])
    meters = sorted(windows)
    sizes = [WINDOW_S[windows[m]] for m in meters]
    rows = await conn.fetch(_STORE_EVENTS, *events.arrays(), meters, sizes)
    candidates = [event_row(r) for r in rows if r["identifier"] is not None]
    return StoredRun(int(rows[0]["new_count"]), candidates)

"""What a rebuild covers, and which of a topic's records belong to it (pure: no I/O here).

A rebuild covers one account, a set of its meters and a range of whole UTC days of event time,
``[start, end)``. It reads the meter-events topic from a little before ``start`` (by the broker's
append time) to the live consumer group's stored offsets, and folds the selected events: those of
the account's chosen meters, whatever their event time, so that an identifier resent across the
range's edge is deduplicated as the live fold did it. Only rows inside the range are compared and
swapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aggregator.rollups.columns import EventColumns, Segment
from meterflow.errors import MeterflowError
from meterflow.records.meter_events import EventsRecord, MeterEventsRecord
from meterflow.rules.events import MAX_FUTURE_S
from meterflow.windows import DAY_S, day_of

# An event is dated at most MAX_FUTURE_S after ingest received it, and the broker stamps the
# record as it appends it, a few milliseconds later on a synchronised clock. Reading from an hour
# before the range covers both, with room for clocks that disagree by minutes.
READ_MARGIN_MS = 3_600_000 + MAX_FUTURE_S * 1000


class RebuildRefused(MeterflowError):
    """The rebuild cannot be done as asked (range, retention, meters, another rebuild)."""


@dataclass(frozen=True, slots=True)
class RebuildScope:
    account_id: str
    meter_ids: frozenset[str]
    start_s: int  # first UTC day of event time covered
    end_s: int  # the day after the last one covered

    @property
    def read_from_ms(self) -> int:
        """The broker append time from which the topic must still hold every record."""
        return self.start_s * 1000 - READ_MARGIN_MS


def utc_day(ts_s: int) -> str:
    return datetime.fromtimestamp(ts_s, UTC).strftime("%Y-%m-%d")


def earliest_start(now_ms: int, retention_ms: int) -> int:
    """The first whole UTC day a rebuild may start on while the topic keeps ``retention_ms``."""
    oldest_kept_s = -(-(now_ms - retention_ms + READ_MARGIN_MS) // 1000)
    return -(-oldest_kept_s // DAY_S) * DAY_S


def check_range(start_s: int, end_s: int, *, now_ms: int, retention_ms: int | None) -> None:
    """Refuse a range that is not whole UTC days, is empty, or begins before what the topic
    still holds (its ``retention.ms``, counted back from ``now_ms``)."""
    for name, ts in (("start", start_s), ("end", end_s)):
        if ts % DAY_S:
            raise RebuildRefused(
                f"the {name} of the range must be a UTC midnight (a date); "
                f"{ts} is within {utc_day(ts)}"
            )
    if end_s <= start_s:
        raise RebuildRefused(f"the range {utc_day(start_s)} to {utc_day(end_s)} is empty")
    if retention_ms is None:
        return
    first = earliest_start(now_ms, retention_ms)
    if start_s < first:
        days = retention_ms / (DAY_S * 1000)
        raise RebuildRefused(
            f"the meter-events topic keeps records for {days:g} days (retention.ms="
            f"{retention_ms}), so events of {utc_day(start_s)} may already be deleted from it "
            f"and the rebuild would be incomplete; the earliest day a rebuild can start on now "
            f"is {utc_day(first)}"
        )


def default_range(now_ms: int, retention_ms: int | None) -> tuple[int, int]:
    """Everything the topic still holds: from the earliest day allowed to the end of tomorrow
    (an event may be dated 5 minutes ahead). Without a retention limit, the last 40 days."""
    today = day_of(now_ms // 1000)
    start = earliest_start(now_ms, retention_ms) if retention_ms else today - 40 * DAY_S
    return start, today + 2 * DAY_S


def select_segments(records: Sequence[MeterEventsRecord], scope: RebuildScope) -> list[Segment]:
    """The scope's events and cancels of ``records`` as the fold takes them: runs of events in
    column form, split at each cancel. An event keeps its place in its record as its receipt
    index, so the rebuilt receipt order is the one the live fold stored."""
    out: list[Segment] = []
    pending = EventColumns()
    for record in records:
        if record.account_id != scope.account_id:
            continue
        if isinstance(record, EventsRecord):
            _add_selected(pending, record, scope.meter_ids)
            continue
        if record.meter_id not in scope.meter_ids:
            continue
        if len(pending):
            out.append(Segment(events=pending))
            pending = EventColumns()
        out.append(Segment(cancel=record))
    if len(pending):
        out.append(Segment(events=pending))
    return out


def _add_selected(columns: EventColumns, record: EventsRecord, meters: frozenset[str]) -> None:
    for index, event in enumerate(record.events):
        if event.meter_id not in meters:
            continue
        columns.account_id.append(record.account_id)
        columns.livemode.append(record.livemode)
        columns.meter_id.append(event.meter_id)
        columns.customer.append(event.customer)
        columns.identifier.append(event.identifier)
        columns.value.append(event.value)
        columns.event_ts.append(event.timestamp_s)
        columns.received_ms.append(record.received_ms)
        columns.receipt_batch.append(record.batch)
        columns.receipt_index.append(index)

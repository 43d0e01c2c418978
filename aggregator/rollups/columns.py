"""A run of accepted events in column form, as the fold statement takes them.

The fold hands PostgreSQL one array per field instead of one Python object per event: a record's
events are transposed into the columns with a few list extends, and deduplication, minute sums
and the ``last`` election happen in SQL (:mod:`aggregator.rollups.event_store`). Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from meterflow.records.meter_events import CancelRecord, EventsRecord, MeterEventsRecord
from meterflow.windows import day_of

# (account, livemode, meter, customer): one series of events, ``event_series`` in PostgreSQL.
SeriesKey = tuple[str, bool, str, str]


@dataclass(slots=True)
class EventColumns:
    """Events in receipt-stamped column form; row ``i`` is the ``i``-th event added."""

    account_id: list[str] = field(default_factory=list)
    livemode: list[bool] = field(default_factory=list)
    meter_id: list[str] = field(default_factory=list)
    customer: list[str] = field(default_factory=list)
    identifier: list[str] = field(default_factory=list)
    value: list[str] = field(default_factory=list)  # the decimal text the client sent
    event_ts: list[int] = field(default_factory=list)
    received_ms: list[int] = field(default_factory=list)
    receipt_batch: list[str] = field(default_factory=list)
    receipt_index: list[int] = field(default_factory=list)
    # Filled before the run is stored (:class:`aggregator.rollups.series.EventSeries`).
    series_id: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.identifier)

    def add(self, record: EventsRecord) -> None:
        """Append a record's events; the receipt index is the event's place in its record."""
        count = len(record.events)
        if not count:
            return
        meters, _names, identifiers, customers, values, stamps = zip(*record.events, strict=True)
        self.account_id.extend([record.account_id] * count)
        self.livemode.extend([record.livemode] * count)
        self.meter_id.extend(meters)
        self.customer.extend(customers)
        self.identifier.extend(identifiers)
        self.value.extend(values)
        self.event_ts.extend(stamps)
        self.received_ms.extend([record.received_ms] * count)
        self.receipt_batch.extend([record.batch] * count)
        self.receipt_index.extend(range(count))

    def days(self) -> set[int]:
        """Start of each UTC day of event time present: the ``meter_events`` partitions needed."""
        return {day_of(ts) for ts in self.event_ts}

    def meter_ids(self) -> set[str]:
        return set(self.meter_id)

    def series_keys(self) -> Iterator[SeriesKey]:
        """Each event's series, row by row."""
        return zip(self.account_id, self.livemode, self.meter_id, self.customer, strict=True)

    def arrays(self) -> tuple[list[int], list[str], list[str], list[int], list[int], list[str],
                              list[int]]:  # fmt: skip
        """The columns in the fold statement's parameter order ($1 … $7). The series id stands
        for the account, mode, meter and customer, which PostgreSQL reads from ``event_series``:
        four fewer arrays to encode and send for every event."""
        if len(self.series_id) != len(self):
            raise ValueError("the run's series ids are not assigned")
        return (
            self.series_id,
            self.identifier,
            self.value,
            self.event_ts,
            self.received_ms,
            self.receipt_batch,
            self.receipt_index,
        )


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of consecutive event records in column form, or a single cancel, in offset order."""

    events: EventColumns = field(default_factory=EventColumns)
    cancel: CancelRecord | None = None


def segments(records: Sequence[MeterEventsRecord]) -> list[Segment]:
    """Split a batch so every cancel is applied after the events that precede it."""
    out: list[Segment] = []
    pending = EventColumns()
    for record in records:
        if isinstance(record, EventsRecord):
            pending.add(record)
            continue
        if len(pending):
            out.append(Segment(events=pending))
            pending = EventColumns()
        out.append(Segment(cancel=record))
    if len(pending):
        out.append(Segment(events=pending))
    return out

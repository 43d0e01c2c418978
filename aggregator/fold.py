"""Pure fold logic: from decoded meter-events records to rows and rollup deltas.

Nothing here does I/O; :mod:`aggregator.rollup_store` applies the results in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from meterflow.event_records import CancelRecord, EventsRecord, MeterEventsRecord

MINUTE_S = 60
DAY_S = 86_400

Receipt = tuple[int, str, int]  # (received_ms, batch, index): meterflow's receipt order


@dataclass(frozen=True, slots=True)
class EventRow:
    """One accepted event, flattened, with its receipt position."""

    account_id: str
    livemode: bool
    meter_id: str
    customer: str
    identifier: str
    value: Decimal
    event_ts: int
    received_ms: int
    receipt_batch: str
    receipt_index: int

    @property
    def receipt(self) -> Receipt:
        return (self.received_ms, self.receipt_batch, self.receipt_index)

    @property
    def dedupe_key(self) -> tuple[str, bool, str]:
        return (self.account_id, self.livemode, self.identifier)

    @property
    def minute_key(self) -> MinuteKey:
        return (
            self.account_id,
            self.livemode,
            self.meter_id,
            self.customer,
            minute_of(self.event_ts),
        )


MinuteKey = tuple[str, bool, str, str, int]


@dataclass(slots=True)
class MinuteDelta:
    """What a set of new events adds to one (meter, customer, minute) rollup row."""

    value_sum: Decimal
    event_count: int
    last_value: Decimal
    last_receipt: Receipt


def minute_of(ts_s: int) -> int:
    return ts_s - ts_s % MINUTE_S


def day_of(ts_s: int) -> int:
    return ts_s - ts_s % DAY_S


def flatten(record: EventsRecord) -> list[EventRow]:
    return [
        EventRow(
            account_id=record.account_id,
            livemode=record.livemode,
            meter_id=e.meter_id,
            customer=e.customer,
            identifier=e.identifier,
            value=Decimal(e.value),
            event_ts=e.timestamp_s,
            received_ms=record.received_ms,
            receipt_batch=record.batch,
            receipt_index=index,
        )
        for index, e in enumerate(record.events)
    ]


def first_of_each_identifier(rows: Iterable[EventRow]) -> list[EventRow]:
    """Drop repeats of an identifier within one batch, keeping the earliest received."""
    seen: dict[tuple[str, bool, str], EventRow] = {}
    for row in sorted(rows, key=lambda r: r.receipt):
        seen.setdefault(row.dedupe_key, row)
    return list(seen.values())


def minute_deltas(rows: Iterable[EventRow]) -> dict[MinuteKey, MinuteDelta]:
    """Sum, count and latest-received value per rollup row touched by ``rows``."""
    deltas: dict[MinuteKey, MinuteDelta] = {}
    for row in rows:
        key = row.minute_key
        delta = deltas.get(key)
        if delta is None:
            deltas[key] = MinuteDelta(row.value, 1, row.value, row.receipt)
            continue
        delta.value_sum += row.value
        delta.event_count += 1
        if row.receipt > delta.last_receipt:
            delta.last_value, delta.last_receipt = row.value, row.receipt
    return deltas


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of consecutive event records, or a single cancel, in offset order."""

    events: tuple[EventRow, ...] = ()
    cancel: CancelRecord | None = None


def segments(records: Sequence[MeterEventsRecord]) -> list[Segment]:
    """Split a batch so every cancel is applied after the events that precede it."""
    out: list[Segment] = []
    pending: list[EventRow] = []
    for record in records:
        if isinstance(record, EventsRecord):
            pending.extend(flatten(record))
            continue
        if pending:
            out.append(Segment(events=tuple(pending)))
            pending = []
        out.append(Segment(cancel=record))
    if pending:
        out.append(Segment(events=tuple(pending)))
    return out

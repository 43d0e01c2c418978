"""Pure fold logic: from decoded meter-events records to rows and rollup deltas.

Nothing here does I/O; :mod:`aggregator.rollup_store` applies the results in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from meterflow.event_records import CancelRecord, EventsRecord, MeterEventsRecord

MINUTE_S = 60
DAY_S = 86_400

TimeWindow = Literal["hour", "day"]
WINDOW_S: dict[TimeWindow, int] = {"hour": 3600, "day": DAY_S}

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
# (account, livemode, meter, customer, window start): one pre-aggregation window.
WindowKey = tuple[str, bool, str, str, int]


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


def window_of(ts_s: int, window: TimeWindow) -> int:
    """Start of the UTC hour or day containing ``ts_s``: windows are ``[start, start + size)``."""
    size = WINDOW_S[window]
    return ts_s - ts_s % size


def window_key(row: EventRow, window: TimeWindow) -> WindowKey:
    return (
        row.account_id,
        row.livemode,
        row.meter_id,
        row.customer,
        window_of(row.event_ts, window),
    )


def split_by_window(
    rows: Iterable[EventRow], windows: Mapping[str, TimeWindow | None]
) -> tuple[list[EventRow], list[tuple[WindowKey, EventRow]]]:
    """Separate events of raw meters from those of pre-aggregated (hour/day) meters."""
    raw: list[EventRow] = []
    windowed: list[tuple[WindowKey, EventRow]] = []
    for row in rows:
        window = windows.get(row.meter_id)
        if window is None:
            raw.append(row)
        else:
            windowed.append((window_key(row, window), row))
    return raw, windowed


def latest_per_window(rows: Iterable[tuple[WindowKey, EventRow]]) -> dict[WindowKey, EventRow]:
    """The most recently received event of each window among ``rows``."""
    latest: dict[WindowKey, EventRow] = {}
    for key, row in rows:
        held = latest.get(key)
        if held is None or row.receipt > held.receipt:
            latest[key] = row
    return latest


@dataclass(frozen=True, slots=True)
class Overwrite:
    """A window whose surviving event changes: ``replaced`` is the previous survivor, if any."""

    key: WindowKey
    survivor: EventRow
    replaced: EventRow | None


def overwrites(
    candidates: Mapping[WindowKey, EventRow], stored: Mapping[WindowKey, EventRow]
) -> list[Overwrite]:
    """Windows where a candidate was received after the stored survivor (or none is stored).

    A candidate received before the stored survivor is a late arrival of an older event: it is
    kept as a raw event (a cancel of the survivor may bring it back) but changes nothing now.
    """
    changes: list[Overwrite] = []
    for key, candidate in candidates.items():
        held = stored.get(key)
        if held is None or candidate.receipt > held.receipt:
            changes.append(Overwrite(key, candidate, held))
    return changes


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

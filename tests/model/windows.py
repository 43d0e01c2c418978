"""A reference model of meter event summaries: raw and pre-aggregated (hour, day) meters.

It states the semantics as plainly as possible, with no storage, batching or incremental state,
so that property tests can compare every summary the pipeline answers with it:

1. Receipt order is the order of :meth:`Model.accept` calls.
2. An identifier names the first event accepted with it; later events with the same identifier
   are ignored, whatever their meter, value or timestamp.
3. A raw meter counts every event that is not cancelled.
4. A pre-aggregated meter counts, per (meter, customer, UTC window of the event's timestamp), only
   the survivor: the window's last-received event that is not cancelled.
5. ``sum``, ``count`` and ``last`` aggregate the counting events whose timestamp lies in
   ``[start, end)``; ``last`` is the value of the most recently received one (0 when none).
6. A cancel marks an event cancelled; a second cancel of it changes nothing.

Values stay :class:`~decimal.Decimal` and add up exactly, as PostgreSQL's ``numeric`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Literal

Formula = Literal["sum", "count", "last"]
TimeWindow = Literal["hour", "day"]

MINUTE_S = 60
WINDOW_S: dict[TimeWindow, int] = {"hour": 3600, "day": 86_400}

# Exact for any sum of values with at most 15 significant digits within the 35-day bounds.
_EXACT = Context(prec=1000)


@dataclass(frozen=True, slots=True)
class ModelMeter:
    id: str
    formula: Formula
    window: TimeWindow | None = None  # None: a raw meter


@dataclass(frozen=True, slots=True)
class ModelEvent:
    identifier: str
    meter: str
    customer: str
    value: Decimal
    timestamp_s: int


@dataclass(frozen=True, slots=True)
class Bucket:
    """One ``value_grouping_window`` summary: ``[start, end)`` and its aggregated value."""

    start: int
    end: int
    value: Decimal


class UnknownIdentifier(KeyError):
    """A cancel named an identifier no accepted event carries."""


def window_start(timestamp_s: int, window: TimeWindow) -> int:
    return timestamp_s - timestamp_s % WINDOW_S[window]


def aggregate(formula: Formula, received: Sequence[ModelEvent]) -> Decimal:
    """``formula`` over counting events given in receipt order."""
    if formula == "count":
        return Decimal(len(received))
    if formula == "last":
        return received[-1].value if received else Decimal(0)
    total = Decimal(0)
    for event in received:
        total = _EXACT.add(total, event.value)
    return total


def _check_aligned(start: int, end: int, step: int) -> None:
    if start % step or end % step or end <= start:
        raise ValueError(f"[{start}, {end}) is not a range aligned to {step} s")


class Model:
    def __init__(self, meters: Iterable[ModelMeter]) -> None:
        self._meters = {m.id: m for m in meters}
        self._received: list[ModelEvent] = []  # the events that count for their identifier
        self._by_identifier: dict[str, ModelEvent] = {}
        self._cancelled: set[str] = set()

    def meter(self, meter_id: str) -> ModelMeter:
        return self._meters[meter_id]

    def accept(self, event: ModelEvent) -> bool:
        """Receive ``event``; False if its identifier was taken, so it is ignored."""
        if event.meter not in self._meters:
            raise KeyError(f"no meter {event.meter!r}")
        if event.identifier in self._by_identifier:
            return False
        self._by_identifier[event.identifier] = event
        self._received.append(event)
        return True

    def event(self, identifier: str) -> ModelEvent | None:
        """The event an identifier names: the first accepted with it."""
        return self._by_identifier.get(identifier)

    def cancel(self, identifier: str) -> bool:
        """Cancel the event ``identifier`` names; False if it was already cancelled."""
        if identifier not in self._by_identifier:
            raise UnknownIdentifier(identifier)
        if identifier in self._cancelled:
            return False
        self._cancelled.add(identifier)
        return True

    def counting(self, meter_id: str, customer: str) -> list[ModelEvent]:
        """The events that count for one meter and customer, in receipt order."""
        window = self._meters[meter_id].window
        live = [
            e
            for e in self._received
            if e.meter == meter_id
            and e.customer == customer
            and e.identifier not in self._cancelled
        ]
        if window is None:
            return live
        survivors: dict[int, ModelEvent] = {}
        for event in live:  # receipt order: a later event replaces the window's earlier one
            survivors[window_start(event.timestamp_s, window)] = event
        kept = {e.identifier for e in survivors.values()}
        return [e for e in live if e.identifier in kept]

    def summary(self, meter_id: str, customer: str, start: int, end: int) -> Decimal:
        """The summary of a minute-aligned range ``[start, end)``, as one value."""
        _check_aligned(start, end, MINUTE_S)
        in_range = [e for e in self.counting(meter_id, customer) if start <= e.timestamp_s < end]
        return aggregate(self._meters[meter_id].formula, in_range)

    def buckets(
        self, meter_id: str, customer: str, start: int, end: int, window: TimeWindow
    ) -> list[Bucket]:
        """Per-``window`` summaries of aligned ``[start, end)``: non-empty ones, newest first."""
        step = WINDOW_S[window]
        _check_aligned(start, end, step)
        grouped: dict[int, list[ModelEvent]] = {}
        for event in self.counting(meter_id, customer):
            if start <= event.timestamp_s < end:
                grouped.setdefault(window_start(event.timestamp_s, window), []).append(event)
        formula = self._meters[meter_id].formula
        return [
            Bucket(bucket, bucket + step, aggregate(formula, grouped[bucket]))
            for bucket in sorted(grouped, reverse=True)
        ]

    def pairs(self) -> list[tuple[str, str]]:
        """Every (meter, customer) that received an event, counting or not."""
        return sorted({(e.meter, e.customer) for e in self._received})

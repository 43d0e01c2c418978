"""What the summaries must show after a run, from the events the server acknowledged (pure).

* Only acknowledged events count, and an identifier counts once per account, however often it
  was sent.
* Raw meters: every event counts. ``sum`` adds values, ``count`` counts events, ``last`` is the
  value of the most recently received event in the range.
* Pre-aggregated meters (``event_time_window`` hour or day): of each (meter, customer, UTC window
  of the event timestamp) only the most recently received event survives, and it keeps its own
  timestamp. ``sum`` adds survivors, ``count`` counts non-empty windows, ``last`` is the most
  recently received survivor.

"Received" order is the order in which events are acknowledged here: the generator keeps one
request in flight per (meter, customer), so that is the server's receipt order.

Events sent without a definite answer after every retry (the request timed out, or the process
serving it died) are *unconfirmed*: the server may have counted each, at most once. They are kept
apart, by series, as the room they leave above the acknowledged totals.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from meterflow.meters import Formula
from meterflow.windows import MINUTE_S, WINDOW_S
from meterflow.windows import TimeWindow as Window

MeterRef = tuple[int, str]  # (account index, event name)
SeriesKey = tuple[int, str, str]  # (account index, event name, customer)


@dataclass(frozen=True, slots=True)
class MeterShape:
    formula: Formula
    window: Window | None


@dataclass(slots=True)
class MinuteTotals:
    value_sum: Decimal
    count: int
    last_order: int
    last_value: Decimal


@dataclass(frozen=True, slots=True)
class Survivor:
    order: int
    value: Decimal
    timestamp_s: int


@dataclass(slots=True)
class Unconfirmed:
    """A series' events sent without a definite answer."""

    value_sum: Decimal = Decimal(0)
    count: int = 0


@dataclass(slots=True)
class _Tally:
    """Totals of some events, plus the most recently received one's value."""

    value_sum: Decimal = Decimal(0)
    count: int = 0
    last_order: int = -1
    last_value: Decimal = Decimal(0)

    def add(self, value_sum: Decimal, count: int, order: int, last_value: Decimal) -> None:
        self.value_sum += value_sum
        self.count += count
        if order > self.last_order:
            self.last_order, self.last_value = order, last_value

    def result(self, formula: Formula) -> Decimal:
        if formula == "sum":
            return self.value_sum
        if formula == "count":
            return Decimal(self.count)
        return self.last_value


@dataclass(slots=True)
class ExpectedTotals:
    meters: dict[MeterRef, MeterShape]
    raw: dict[SeriesKey, dict[int, MinuteTotals]] = field(default_factory=dict)
    windowed: dict[SeriesKey, dict[int, Survivor]] = field(default_factory=dict)
    identifiers: set[tuple[int, str]] = field(default_factory=set)
    unconfirmed: dict[SeriesKey, Unconfirmed] = field(default_factory=dict)
    _order: int = 0

    @classmethod
    def for_meters(cls, meters: Mapping[MeterRef, MeterShape]) -> ExpectedTotals:
        return cls(meters=dict(meters))

    def acknowledge(self, series: SeriesKey, identifier: str, value: str, ts: int) -> bool:
        """Count an acknowledged event unless its identifier already counted in the account."""
        account, event_name, _customer = series
        if (account, identifier) in self.identifiers:
            return False
        self.identifiers.add((account, identifier))
        shape = self.meters[(account, event_name)]
        key = series
        self._order += 1
        amount = Decimal(value)
        if shape.window is None:
            minute = ts - ts % MINUTE_S
            minutes = self.raw.setdefault(key, {})
            totals = minutes.get(minute)
            if totals is None:
                minutes[minute] = MinuteTotals(amount, 1, self._order, amount)
            else:
                totals.value_sum += amount
                totals.count += 1
                totals.last_order, totals.last_value = self._order, amount
        else:
            window_s = WINDOW_S[shape.window]
            self.windowed.setdefault(key, {})[ts - ts % window_s] = Survivor(
                self._order, amount, ts
            )
        return True

    def unconfirm(self, series: SeriesKey, value: str) -> None:
        """Note a new event sent without a definite answer: counted at most once, maybe not."""
        held = self.unconfirmed.setdefault(series, Unconfirmed())
        held.value_sum += Decimal(value)
        held.count += 1

    def headroom(self, key: SeriesKey) -> Decimal:
        """How far the whole-range total of a raw ``sum`` or ``count`` series may exceed
        :meth:`total` if its unconfirmed events were counted."""
        held = self.unconfirmed.get(key)
        if held is None:
            return Decimal(0)
        return held.value_sum if self._formula(key) == "sum" else Decimal(held.count)

    def series(self) -> Iterator[SeriesKey]:
        """Every (account, meter, customer) with at least one counted event."""
        yield from self.raw
        yield from self.windowed

    def total(self, key: SeriesKey, start: int, end: int) -> Decimal:
        """The summary over ``[start, end)``, as ``event_summaries`` without a window shows it."""
        tally = _Tally()
        for _bucket, minute_tally in self._minutes(key, start, end):
            tally.add(*minute_tally)
        return tally.result(self._formula(key))

    def buckets(self, key: SeriesKey, window_s: int, start: int, end: int) -> dict[int, Decimal]:
        """Non-empty ``window_s`` windows of ``[start, end)`` and their summaries."""
        tallies: dict[int, _Tally] = {}
        for minute, minute_tally in self._minutes(key, start, end):
            tallies.setdefault(minute - minute % window_s, _Tally()).add(*minute_tally)
        formula = self._formula(key)
        return {bucket: tally.result(formula) for bucket, tally in tallies.items()}

    def forget_identifiers(self) -> None:
        """Drop the identifiers once no more events will be acknowledged. They only stop an
        event from counting twice during the run; the totals are what verification reads, and
        a long run's identifiers (tens of millions) would otherwise be copied to the parent
        process with the totals."""
        self.identifiers = set()

    def merge(self, other: ExpectedTotals) -> None:
        """Add another lane's or worker's totals; their series must not overlap with these."""
        for mine, theirs in ((self.raw, other.raw), (self.windowed, other.windowed)):
            overlap = mine.keys() & theirs.keys()
            if overlap:
                raise ValueError(f"series counted by two generators: {sorted(overlap)[:3]}")
        self.meters.update(other.meters)
        self.raw.update(other.raw)
        self.windowed.update(other.windowed)
        self.identifiers |= other.identifiers
        for key, held in other.unconfirmed.items():
            mine_held = self.unconfirmed.setdefault(key, Unconfirmed())
            mine_held.value_sum += held.value_sum
            mine_held.count += held.count

    def _formula(self, key: SeriesKey) -> Formula:
        return self.meters[(key[0], key[1])].formula

    def _minutes(
        self, key: SeriesKey, start: int, end: int
    ) -> Iterable[tuple[int, tuple[Decimal, int, int, Decimal]]]:
        """(minute, (sum, count, last order, last value)) of the counted events in the range."""
        for minute, totals in self.raw.get(key, {}).items():
            if start <= minute < end:
                yield minute, (totals.value_sum, totals.count, totals.last_order, totals.last_value)
        for survivor in self.windowed.get(key, {}).values():
            minute = survivor.timestamp_s - survivor.timestamp_s % MINUTE_S
            if start <= minute < end:
                yield minute, (survivor.value, 1, survivor.order, survivor.value)

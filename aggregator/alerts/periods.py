"""Alert evaluation, the pure part: which (alert, customer, period) a batch of usage changes
concerns, and which of them fire.

Periods are by *event time*, in UTC, half-open ``[start, end)``:

- ``one_time``: a single period covering all of history (``start`` 0), so usage reported before
  the alert existed counts, and the alert fires at most once per customer;
- ``daily``: UTC days;
- ``monthly``: UTC calendar months.

An alert fires for a period when the usage there, per the meter's formula, is at least ``gte``.
Nothing here un-fires: a correction that takes usage back below the threshold leaves the firing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from meterflow.alerts import Alert, Recurrence
from meterflow.meters import Formula
from meterflow.records.usage_changes import UsageChange
from meterflow.usage.keys import UsageKey, UsageSpan, UsageTotals
from meterflow.windows import DAY_S

# The one_time period's end: past any event time a meter accepts (a bigint, as stored).
END_OF_TIME_S = 2**63 - 1

Period = tuple[int, int]  # [start_s, end_s)


@dataclass(frozen=True, slots=True)
class TouchedUsage:
    """Every change a batch holds for one (meter, customer), merged."""

    first_event_ts: int
    last_event_ts: int
    last_received_ms: int | None


def collapse(changes: Iterable[UsageChange]) -> dict[UsageKey, TouchedUsage]:
    """Distinct (account, mode, meter, customer) with their event-time spans merged."""
    merged: dict[UsageKey, TouchedUsage] = {}
    for c in changes:
        key = (c.account_id, c.livemode, c.meter_id, c.customer)
        held = merged.get(key)
        if held is None:
            merged[key] = TouchedUsage(c.first_event_ts, c.last_event_ts, c.last_received_ms)
            continue
        received = [r for r in (held.last_received_ms, c.last_received_ms) if r is not None]
        merged[key] = TouchedUsage(
            min(held.first_event_ts, c.first_event_ts),
            max(held.last_event_ts, c.last_event_ts),
            max(received) if received else None,
        )
    return merged


def _month_start(ts_s: int) -> datetime:
    moment = datetime.fromtimestamp(ts_s, tz=UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def _next_month(start: datetime) -> datetime:
    if start.month == 12:
        return datetime(start.year + 1, 1, 1, tzinfo=UTC)
    return datetime(start.year, start.month + 1, 1, tzinfo=UTC)


def period_of(recurrence: Recurrence, ts_s: int) -> Period:
    """The period of ``recurrence`` holding event time ``ts_s``."""
    if recurrence == "one_time":
        return (0, END_OF_TIME_S)
    if recurrence == "daily":
        start = ts_s - ts_s % DAY_S
        return (start, start + DAY_S)
    month = _month_start(ts_s)
    return (int(month.timestamp()), int(_next_month(month).timestamp()))


def periods_touched(
    recurrence: Recurrence, first_event_ts: int, last_event_ts: int
) -> list[Period]:
    """The periods of ``recurrence`` overlapping ``[first_event_ts, last_event_ts]``, in order."""
    periods = [period_of(recurrence, first_event_ts)]
    while periods[-1][1] <= last_event_ts:
        periods.append(period_of(recurrence, periods[-1][1]))
    return periods


@dataclass(frozen=True, slots=True)
class Watch:
    """An active alert watching one changed (meter, customer), with the meter's formula."""

    alert: Alert
    customer: str
    formula: Formula


@dataclass(frozen=True, slots=True)
class Candidate:
    """One (alert, customer, period) to evaluate."""

    watch: Watch
    period: Period

    @property
    def firing_key(self) -> FiringKey:
        return (self.watch.alert.id, self.watch.customer, self.period[0])

    @property
    def usage_key(self) -> UsageKey:
        a = self.watch.alert
        return (a.account_id, a.livemode, a.meter_id, self.watch.customer)


FiringKey = tuple[str, str, int]  # (alert, customer, period start): fires at most once


def candidates(
    watches: Iterable[Watch], touched: Mapping[UsageKey, TouchedUsage]
) -> list[Candidate]:
    """The (alert, customer, period) triples the changes in ``touched`` may have pushed over a
    threshold; each appears once."""
    out: dict[FiringKey, Candidate] = {}
    for watch in watches:
        a = watch.alert
        usage = touched.get((a.account_id, a.livemode, a.meter_id, watch.customer))
        if usage is None:
            continue
        for period in periods_touched(a.recurrence, usage.first_event_ts, usage.last_event_ts):
            candidate = Candidate(watch, period)
            out.setdefault(candidate.firing_key, candidate)
    return list(out.values())


def usage_query(candidate: Candidate) -> UsageSpan:
    return (*candidate.usage_key, *candidate.period)


@dataclass(frozen=True, slots=True)
class Firing:
    candidate: Candidate
    value: Decimal


def firings(pending: Sequence[Candidate], usage: Mapping[UsageSpan, UsageTotals]) -> list[Firing]:
    """The candidates whose period's usage reached the alert's threshold (``value >= gte``)."""
    out: list[Firing] = []
    for candidate in pending:
        value = usage.get(usage_query(candidate), UsageTotals()).value(candidate.watch.formula)
        if value >= candidate.watch.alert.gte:
            out.append(Firing(candidate, value))
    return out

"""Billing periods: the calendar arithmetic of recurring prices, in UTC.

Every boundary is computed from the billing cycle anchor, never from the previous boundary, so a
monthly anchor on the 31st falls on the last day of each shorter month and comes back to the 31st
(Jan 31, Feb 28, Mar 31, Apr 30, ...); a yearly anchor on Feb 29 falls on Feb 28 in other years.
Days and weeks are fixed lengths of 86,400 and 604,800 seconds. The anchor's time of day is kept.
Periods are half-open, ``[start, end)``, like every window in meterflow.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import Literal

from meterflow.windows import minute_of

Interval = Literal["day", "week", "month", "year"]
_FIXED_S: dict[str, int] = {"day": 86_400, "week": 7 * 86_400}
_MONTHS: dict[str, int] = {"month": 1, "year": 12}


def boundary(anchor_s: int, interval: Interval, interval_count: int, n: int) -> int:
    """The start of the ``n``-th period counted from the anchor (``n`` may be negative)."""
    if interval in _FIXED_S:
        return anchor_s + n * interval_count * _FIXED_S[interval]
    anchor = datetime.fromtimestamp(anchor_s, tz=UTC)
    months = anchor.year * 12 + (anchor.month - 1) + n * interval_count * _MONTHS[interval]
    year, month0 = divmod(months, 12)
    day = min(anchor.day, calendar.monthrange(year, month0 + 1)[1])
    return int(anchor.replace(year=year, month=month0 + 1, day=day).timestamp())


def period_index(anchor_s: int, interval: Interval, interval_count: int, at_s: int) -> int:
    """``n`` such that ``boundary(n) <= at_s < boundary(n + 1)``."""
    if interval in _FIXED_S:
        return (at_s - anchor_s) // (interval_count * _FIXED_S[interval])
    anchor = datetime.fromtimestamp(anchor_s, tz=UTC)
    at = datetime.fromtimestamp(at_s, tz=UTC)
    months = (at.year - anchor.year) * 12 + (at.month - anchor.month)
    n = months // (interval_count * _MONTHS[interval])
    # The estimate is off by at most one period either way (day of month, time of day).
    while boundary(anchor_s, interval, interval_count, n) > at_s:
        n -= 1
    while boundary(anchor_s, interval, interval_count, n + 1) <= at_s:
        n += 1
    return n


def period_containing(
    anchor_s: int, interval: Interval, interval_count: int, at_s: int
) -> tuple[int, int]:
    """The period ``[start, end)`` of the cycle anchored at ``anchor_s`` that holds ``at_s``."""
    n = period_index(anchor_s, interval, interval_count, at_s)
    return (
        boundary(anchor_s, interval, interval_count, n),
        boundary(anchor_s, interval, interval_count, n + 1),
    )


def usage_window(period: tuple[int, int]) -> tuple[int, int]:
    """The minutes of usage a period bills: usage is folded per UTC minute, so a period counts
    the minutes from the one holding its start up to the one holding its end. Consecutive periods
    tile: each minute, and so each event, belongs to exactly one of them."""
    start, end = period
    return (minute_of(start), minute_of(end))


def subscription_period(
    start_date: int, anchor_s: int, interval: Interval, interval_count: int, at_s: int
) -> tuple[int, int]:
    """A subscription's period holding ``at_s``: from its start date to the billing cycle anchor
    (when the anchor is later), then the anchor's cycle."""
    if at_s < anchor_s:
        return (start_date, anchor_s)
    return period_containing(anchor_s, interval, interval_count, at_s)

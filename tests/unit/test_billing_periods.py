"""Billing periods keep the anchor's day, falling back to the month's last day."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterflow.billing.periods import (
    Interval,
    boundary,
    period_containing,
    period_index,
    usage_window,
)


def _ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M")


def test_a_monthly_anchor_on_the_31st_falls_on_each_months_last_day() -> None:
    anchor = _ts("2027-01-31 09:30")
    starts = [_day(boundary(anchor, "month", 1, n)) for n in range(5)]
    assert starts == [
        "2027-01-31 09:30",
        "2027-02-28 09:30",
        "2027-03-31 09:30",
        "2027-04-30 09:30",
        "2027-05-31 09:30",
    ]


def test_a_yearly_anchor_on_february_29th() -> None:
    anchor = _ts("2028-02-29 00:00")
    assert [_day(boundary(anchor, "year", 1, n)) for n in (0, 1, 4)] == [
        "2028-02-29 00:00",
        "2029-02-28 00:00",
        "2032-02-29 00:00",
    ]


@pytest.mark.parametrize(
    ("interval", "count", "at", "period"),
    [
        ("month", 1, "2027-03-15 00:00", ("2027-02-28 09:30", "2027-03-31 09:30")),
        ("month", 1, "2027-03-31 09:29", ("2027-02-28 09:30", "2027-03-31 09:30")),
        ("month", 1, "2027-03-31 09:30", ("2027-03-31 09:30", "2027-04-30 09:30")),
        ("month", 3, "2027-05-01 00:00", ("2027-04-30 09:30", "2027-07-31 09:30")),
        ("week", 2, "2027-02-10 00:00", ("2027-01-31 09:30", "2027-02-14 09:30")),
        ("day", 1, "2027-01-31 09:29", ("2027-01-30 09:30", "2027-01-31 09:30")),
    ],
)
def test_the_period_holding_a_moment(
    interval: Interval, count: int, at: str, period: tuple[str, str]
) -> None:
    start, end = period_containing(_ts("2027-01-31 09:30"), interval, count, _ts(at))
    assert (_day(start), _day(end)) == period


@given(
    anchor=st.integers(_ts("2000-01-01 00:00"), _ts("2060-01-01 00:00")),
    offset=st.integers(-(10**9), 10**9),
    interval=st.sampled_from(["day", "week", "month", "year"]),
    count=st.integers(1, 36),
)
def test_every_moment_lies_in_exactly_its_period(
    anchor: int, offset: int, interval: Interval, count: int
) -> None:
    at = anchor + offset
    start, end = period_containing(anchor, interval, count, at)
    assert start <= at < end


@given(
    anchor=st.integers(_ts("2000-01-01 00:00"), _ts("2060-01-01 00:00")),
    at=st.integers(_ts("2000-01-01 00:00"), _ts("2060-01-01 00:00")),
    interval=st.sampled_from(["day", "week", "month", "year"]),
    count=st.integers(1, 12),
)
def test_each_minute_of_usage_belongs_to_exactly_one_period(
    anchor: int, at: int, interval: Interval, count: int
) -> None:
    minute = at - at % 60

    def window(k: int) -> tuple[int, int]:
        return usage_window(
            (boundary(anchor, interval, count, k), boundary(anchor, interval, count, k + 1))
        )

    n = period_index(anchor, interval, count, at)
    owners = [k for k in range(n - 2, n + 3) if window(k)[0] <= minute < window(k)[1]]
    assert len(owners) == 1

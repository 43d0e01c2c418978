"""Alert periods and the firing decision, without a database."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from aggregator.alerts.periods import (
    END_OF_TIME_S,
    Candidate,
    TouchedUsage,
    Watch,
    candidates,
    collapse,
    firings,
    period_of,
    periods_touched,
    usage_query,
)
from meterflow.alerts import Alert, Recurrence
from meterflow.meters import Formula
from meterflow.records.usage_changes import UsageChange
from meterflow.usage.keys import UsageTotals as Usage


def ts(text: str) -> int:
    """Unix seconds of a UTC ``YYYY-MM-DD[THH:MM:SS]``."""
    moment = datetime.fromisoformat(text)
    return int(moment.replace(tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    ("recurrence", "at", "period"),
    [
        ("one_time", "2026-03-10T12:00:00", (0, END_OF_TIME_S)),
        ("daily", "2026-03-10T00:00:00", ("2026-03-10", "2026-03-11")),
        ("daily", "2026-03-10T23:59:59", ("2026-03-10", "2026-03-11")),
        ("daily", "2026-12-31T23:59:59", ("2026-12-31", "2027-01-01")),
        ("daily", "2028-02-29T10:00:00", ("2028-02-29", "2028-03-01")),
        ("monthly", "2026-01-31T23:59:59", ("2026-01-01", "2026-02-01")),
        ("monthly", "2026-02-15T00:00:00", ("2026-02-01", "2026-03-01")),  # 28 days
        ("monthly", "2028-02-29T23:59:59", ("2028-02-01", "2028-03-01")),  # leap: 29 days
        ("monthly", "2026-04-30T12:00:00", ("2026-04-01", "2026-05-01")),  # 30 days
        ("monthly", "2026-12-31T23:59:59", ("2026-12-01", "2027-01-01")),  # year boundary
        ("monthly", "2027-01-01T00:00:00", ("2027-01-01", "2027-02-01")),
    ],
)
def test_period_of_an_event_time(
    recurrence: Recurrence, at: str, period: tuple[int, int] | tuple[str, str]
) -> None:
    start, end = period
    expected = (ts(start), ts(end)) if isinstance(start, str) and isinstance(end, str) else period
    assert period_of(recurrence, ts(at)) == expected


@pytest.mark.parametrize(
    ("recurrence", "first", "last", "starts"),
    [
        ("one_time", "2026-01-01", "2026-06-30", [0]),
        ("daily", "2026-03-10T08:00:00", "2026-03-10T09:00:00", ["2026-03-10"]),
        (
            "daily",
            "2026-12-30T23:00:00",
            "2027-01-01T01:00:00",
            ["2026-12-30", "2026-12-31", "2027-01-01"],
        ),
        ("daily", "2026-03-10T23:59:59", "2026-03-11T00:00:00", ["2026-03-10", "2026-03-11"]),
        (
            "monthly",
            "2028-01-31T23:00:00",
            "2028-03-01T00:00:00",
            [
                "2028-01-01",
                "2028-02-01",
                "2028-03-01",
            ],
        ),
        ("monthly", "2026-11-15", "2027-01-02", ["2026-11-01", "2026-12-01", "2027-01-01"]),
        ("monthly", "2026-05-31T23:59:59", "2026-05-31T23:59:59", ["2026-05-01"]),
    ],
)
def test_periods_touched_by_a_span_of_event_times(
    recurrence: Recurrence, first: str, last: str, starts: list[str | int]
) -> None:
    periods = periods_touched(recurrence, ts(first), ts(last))
    assert [p[0] for p in periods] == [s if isinstance(s, int) else ts(s) for s in starts]
    # Consecutive, half-open, and each holds its own start.
    for (_, end), (start, _) in itertools.pairwise(periods):
        assert end == start
    assert periods[0][0] <= ts(first) < periods[0][1]
    assert periods[-1][0] <= ts(last) < periods[-1][1]


def _change(
    customer: str, first: int, last: int, received: int | None, meter: str = "mtr_1"
) -> UsageChange:
    return UsageChange("acct_1", False, meter, customer, first, last, received)


def test_collapse_merges_spans_and_keeps_the_latest_receipt() -> None:
    touched = collapse(
        [
            _change("cus_1", 100, 200, 5_000),
            _change("cus_2", 50, 60, None),
            _change("cus_1", 20, 150, 4_000),
            _change("cus_1", 300, 300, None),
            _change("cus_1", 10, 10, 1, meter="mtr_2"),
        ]
    )
    assert touched == {
        ("acct_1", False, "mtr_1", "cus_1"): TouchedUsage(20, 300, 5_000),
        ("acct_1", False, "mtr_1", "cus_2"): TouchedUsage(50, 60, None),
        ("acct_1", False, "mtr_2", "cus_1"): TouchedUsage(10, 10, 1),
    }


def _alert(
    alert_id: str, recurrence: Recurrence, gte: int = 10, customer: str | None = None
) -> Alert:
    return Alert(
        id=alert_id, account_id="acct_1", livemode=False, alert_type="usage_threshold",
        title="t", meter_id="mtr_1", customer=customer, gte=gte, recurrence=recurrence,
        status="active", created=0,
    )  # fmt: skip


def test_candidates_expand_each_watch_into_its_periods_once() -> None:
    key = ("acct_1", False, "mtr_1", "cus_1")
    touched = {key: TouchedUsage(ts("2026-03-10T23:00:00"), ts("2026-03-11T01:00:00"), None)}
    daily = Watch(_alert("alrt_d", "daily"), "cus_1", "sum")
    once = Watch(_alert("alrt_o", "one_time"), "cus_1", "sum")
    elsewhere = Watch(_alert("alrt_x", "daily"), "cus_9", "sum")  # not among the changes
    found = candidates([daily, once, daily, elsewhere], touched)
    assert sorted(c.firing_key for c in found) == [
        ("alrt_d", "cus_1", ts("2026-03-10")),
        ("alrt_d", "cus_1", ts("2026-03-11")),
        ("alrt_o", "cus_1", 0),
    ]
    assert {c.usage_key for c in found} == {key}


@pytest.mark.parametrize(
    ("formula", "usage", "expected"),
    [
        ("sum", Usage(Decimal("12.5"), 3, Decimal(1)), Decimal("12.5")),
        ("count", Usage(Decimal("12.5"), 3, Decimal(1)), Decimal(3)),
        ("last", Usage(Decimal("12.5"), 3, Decimal(1)), Decimal(1)),
        ("last", Usage(), Decimal(0)),
        ("sum", Usage(), Decimal(0)),
    ],
)
def test_usage_follows_the_meter_formula(formula: Formula, usage: Usage, expected: Decimal) -> None:
    assert usage.value(formula) == expected


@pytest.mark.parametrize(
    ("gte", "value_sum", "fires"),
    [(10, Decimal("9.999"), False), (10, Decimal(10), True), (10, Decimal("10.5"), True)],
)
def test_an_alert_fires_when_usage_reaches_the_threshold(
    gte: int, value_sum: Decimal, fires: bool
) -> None:
    candidate = Candidate(Watch(_alert("alrt_1", "one_time", gte=gte), "cus_1", "sum"), (0, 10))
    fired = firings([candidate], {usage_query(candidate): Usage(value_sum, 1, value_sum)})
    assert [(f.candidate, f.value) for f in fired] == ([(candidate, value_sum)] if fires else [])


def test_a_period_without_usage_never_fires() -> None:
    candidate = Candidate(Watch(_alert("alrt_1", "daily", gte=1), "cus_1", "count"), (0, 86_400))
    assert firings([candidate], {}) == []

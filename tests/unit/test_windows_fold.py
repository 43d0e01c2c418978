"""Window assignment and survivor election for pre-aggregated meters (pure)."""

from decimal import Decimal

import pytest

from aggregator.rollups.fold import (
    EventRow,
    keyed_by_window,
    latest_per_window,
    overwrites,
    window_key,
)
from meterflow.records.meter_events import ReceiptClock
from meterflow.windows import TimeWindow, window_of

HOUR_START = 1_717_243_200  # 2024-06-01T12:00:00Z, a day start plus 12 hours
DAY_START = HOUR_START - 12 * 3600


def _row(identifier: str, ts: int, received_ms: int, *, meter: str = "mtr_h",
         customer: str = "cus_1", index: int = 0, value: str = "1") -> EventRow:  # fmt: skip
    return EventRow("acct_1", False, meter, customer, identifier, Decimal(value), ts,
                    received_ms, "b", index)  # fmt: skip


@pytest.mark.parametrize(
    ("ts", "window", "start"),
    [
        (HOUR_START, "hour", HOUR_START),
        (HOUR_START + 3599, "hour", HOUR_START),
        (HOUR_START + 3600, "hour", HOUR_START + 3600),
        (HOUR_START - 1, "hour", HOUR_START - 3600),
        (HOUR_START, "day", DAY_START),
        (DAY_START + 86_399, "day", DAY_START),
        (DAY_START + 86_400, "day", DAY_START + 86_400),
        (DAY_START - 1, "day", DAY_START - 86_400),
    ],
)
def test_windows_are_half_open_utc_hours_and_days(ts: int, window: TimeWindow, start: int) -> None:
    assert window_of(ts, window) == start


def test_raw_meters_and_unknown_meters_are_not_windowed() -> None:
    rows = [
        _row("a", HOUR_START, 1, meter="mtr_raw"),
        _row("b", HOUR_START, 2),
        _row("c", HOUR_START, 3, meter="mtr_gone"),
        _row("d", HOUR_START, 4, meter="mtr_d"),
    ]
    windowed = keyed_by_window(rows, {"mtr_raw": None, "mtr_h": "hour", "mtr_d": "day"})
    assert [(k[4], r.identifier) for k, r in windowed] == [(HOUR_START, "b"), (DAY_START, "d")]


def test_latest_received_event_of_a_window_wins_whatever_its_timestamp() -> None:
    early_ts_late_receipt = _row("late", HOUR_START + 5, 900)
    late_ts_early_receipt = _row("early", HOUR_START + 3000, 100)
    next_hour = _row("next", HOUR_START + 3600, 50)
    rows = [early_ts_late_receipt, late_ts_early_receipt, next_hour]
    latest = latest_per_window((window_key(r, "hour"), r) for r in rows)
    assert {k[4]: r.identifier for k, r in latest.items()} == {
        HOUR_START: "late",
        HOUR_START + 3600: "next",
    }


def test_receipt_ties_within_a_millisecond_break_on_the_index() -> None:
    first, second = _row("x", HOUR_START, 7, index=0), _row("y", HOUR_START, 7, index=1)
    latest = latest_per_window([(window_key(r, "hour"), r) for r in (second, first)])
    assert [r.identifier for r in latest.values()] == ["y"]


def test_only_candidates_received_after_the_stored_survivor_overwrite() -> None:
    stored = _row("stored", HOUR_START + 60, 500)
    newer = _row("newer", HOUR_START + 10, 600)
    older = _row("older", HOUR_START + 3600 + 10, 400)
    stored_next = _row("stored_next", HOUR_START + 3600, 450)
    fresh_window = _row("fresh", HOUR_START + 7200, 1)
    key = window_key
    changes = overwrites(
        {key(newer, "hour"): newer, key(older, "hour"): older,
         key(fresh_window, "hour"): fresh_window},
        {key(stored, "hour"): stored, key(stored_next, "hour"): stored_next},
    )  # fmt: skip
    assert [(c.survivor.identifier, c.replaced.identifier if c.replaced else None)
            for c in changes] == [("newer", "stored"), ("fresh", None)]  # fmt: skip


def test_receipt_clock_orders_stamps_of_one_millisecond_and_never_goes_back() -> None:
    times = iter([10.0, 10.0, 9.5, 10.002])
    clock = ReceiptClock(lambda: next(times))
    stamps = [clock.stamp() for _ in range(4)]
    assert [ms for ms, _ in stamps] == [10_000, 10_000, 10_000, 10_002]
    assert stamps == sorted(stamps)
    assert len({batch for _, batch in stamps}) == 4
    assert {len(batch) for _, batch in stamps} == {32}
    other = ReceiptClock(lambda: 10.0).stamp()
    assert other[1][:16] != stamps[0][1][:16]  # another process: another prefix

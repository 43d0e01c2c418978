"""What a rebuild covers: whole UTC days the topic still holds, and the scope's records with each
event's receipt position as the live fold stored it."""

from __future__ import annotations

import pytest

from aggregator.replay.scope import (
    READ_MARGIN_MS,
    RebuildRefused,
    RebuildScope,
    check_range,
    default_range,
    earliest_start,
    select_segments,
)
from aggregator.replay.shadow_fold import touched_keys
from meterflow.records.meter_events import (
    AcceptedEvent,
    CancelRecord,
    EventsRecord,
    MeterEventsRecord,
)
from meterflow.windows import DAY_S

DAY_MS = DAY_S * 1000
FORTY_DAYS_MS = 40 * DAY_MS
NOW_MS = 1_796_400_000_000  # 2026-12-04 16:00 UTC
TODAY = NOW_MS // 1000 // DAY_S * DAY_S


@pytest.mark.parametrize(
    ("start", "end", "wrong"),
    [
        (TODAY + 60, TODAY + DAY_S, "UTC midnight"),
        (TODAY, TODAY + DAY_S + 1, "UTC midnight"),
        (TODAY, TODAY, "empty"),
        (TODAY + DAY_S, TODAY, "empty"),
    ],
)
def test_a_range_is_whole_days_and_not_empty(start: int, end: int, wrong: str) -> None:
    with pytest.raises(RebuildRefused, match=wrong):
        check_range(start, end, now_ms=NOW_MS, retention_ms=FORTY_DAYS_MS)


def test_a_range_older_than_the_topic_keeps_is_refused_with_the_first_day_allowed() -> None:
    first = earliest_start(NOW_MS, FORTY_DAYS_MS)
    # The first day allowed starts at least the read margin after the oldest record kept.
    assert first * 1000 - READ_MARGIN_MS >= NOW_MS - FORTY_DAYS_MS
    assert (first - DAY_S) * 1000 - READ_MARGIN_MS < NOW_MS - FORTY_DAYS_MS
    check_range(first, TODAY + DAY_S, now_ms=NOW_MS, retention_ms=FORTY_DAYS_MS)
    with pytest.raises(RebuildRefused, match=r"keeps records for 40 days.*earliest day") as info:
        check_range(first - DAY_S, TODAY + DAY_S, now_ms=NOW_MS, retention_ms=FORTY_DAYS_MS)
    assert "2026-10-26" in str(info.value)  # the first day allowed, named


def test_without_a_retention_limit_any_past_day_may_be_rebuilt() -> None:
    check_range(TODAY - 400 * DAY_S, TODAY, now_ms=NOW_MS, retention_ms=None)


def test_the_default_range_is_everything_the_topic_holds_up_to_tomorrow() -> None:
    start, end = default_range(NOW_MS, FORTY_DAYS_MS)
    assert start == earliest_start(NOW_MS, FORTY_DAYS_MS)
    assert end == TODAY + 2 * DAY_S
    check_range(start, end, now_ms=NOW_MS, retention_ms=FORTY_DAYS_MS)


def _event(meter: str, identifier: str, value: str = "1") -> AcceptedEvent:
    return AcceptedEvent(meter, "tokens", identifier, "cus_1", value, TODAY)


def test_selection_keeps_the_scope_and_each_event_keeps_its_receipt_index() -> None:
    scope = RebuildScope("acct_1", frozenset({"mtr_a"}), TODAY, TODAY + DAY_S)
    mixed = EventsRecord(
        "acct_1",
        False,
        1000,
        "b1",
        (_event("mtr_b", "x1"), _event("mtr_a", "a1", "5"), _event("mtr_b", "x2"),
         _event("mtr_a", "a2", "7")),
    )  # fmt: skip
    other_account = EventsRecord("acct_2", False, 1001, "b2", (_event("mtr_a", "o1"),))
    cancel_in = CancelRecord("acct_1", False, 1002, "b3", "mtr_a", "tokens", "a1", "cus_1")
    cancel_out = CancelRecord("acct_1", False, 1003, "b4", "mtr_b", "tokens", "x1", "cus_1")
    later = EventsRecord("acct_1", True, 1004, "b5", (_event("mtr_a", "a3"),))

    segments = select_segments([mixed, other_account, cancel_in, cancel_out, later], scope)

    assert [s.cancel for s in segments] == [None, cancel_in, None]
    first, last = segments[0].events, segments[2].events
    assert first.identifier == ["a1", "a2"]
    assert first.receipt_index == [1, 3]  # their places in the record, as the live fold saw it
    assert first.receipt_batch == ["b1", "b1"]
    assert first.value == ["5", "7"]
    assert last.identifier == ["a3"]
    assert last.livemode == [True]
    assert last.receipt_index == [0]


def test_a_record_with_nothing_of_the_scope_adds_no_segment() -> None:
    scope = RebuildScope("acct_1", frozenset({"mtr_a"}), TODAY, TODAY + DAY_S)
    records = [EventsRecord("acct_1", False, 1, "b", (_event("mtr_b", "x"),))]
    assert select_segments(records, scope) == []


def test_the_hand_over_rechecks_each_events_day_and_a_cancels_whole_customer() -> None:
    scope = RebuildScope("acct_1", frozenset({"mtr_a"}), TODAY, TODAY + DAY_S)
    late = AcceptedEvent("mtr_a", "tokens", "a2", "cus_2", "1", TODAY - 3 * DAY_S + 5)
    records: list[MeterEventsRecord] = [
        EventsRecord("acct_1", False, 1, "b1", (_event("mtr_a", "a1"), late)),
        CancelRecord("acct_1", True, 2, "b2", "mtr_a", "tokens", "a0", "cus_3"),
    ]
    assert touched_keys(select_segments(records, scope)) == {
        (False, "mtr_a", "cus_1", TODAY),
        (False, "mtr_a", "cus_2", TODAY - 3 * DAY_S),
        (True, "mtr_a", "cus_3", None),
    }

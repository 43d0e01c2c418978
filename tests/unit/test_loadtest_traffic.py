"""The load generator's pure parts: the traffic it plans and the totals it expects to see."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.expected_totals import ExpectedTotals, MeterShape
from loadtest.plan import (
    AccountPlan,
    MeterCounts,
    MeterPlan,
    RunSetup,
    TrafficMix,
    customer_id,
    meter_shapes,
)
from loadtest.traffic import LaneTraffic, lane_customers
from meterflow.meters import Formula
from meterflow.windows import DAY_S, HOUR_S
from meterflow.windows import TimeWindow as Window

T0 = 1_717_243_200  # 2024-06-01T12:00:00Z, an hour and day boundary
CUS = "cus_a"


def totals(formula: Formula, window: Window | None) -> ExpectedTotals:
    return ExpectedTotals.for_meters({(0, "m"): MeterShape(formula, window)})


def ack(model: ExpectedTotals, identifier: str, value: str, ts: int, account: int = 0) -> bool:
    return model.acknowledge((account, "m", CUS), identifier, value, ts)


# -- expected totals: raw meters -------------------------------------------------------------


def test_an_identifier_counts_once_per_account() -> None:
    model = ExpectedTotals.for_meters(
        {(0, "m"): MeterShape("count", None), (1, "m"): MeterShape("count", None)}
    )
    assert ack(model, "id-1", "5", T0)
    assert not ack(model, "id-1", "7", T0 + 60)  # a resend, even with another value
    assert ack(model, "id-1", "5", T0, account=1)  # the same identifier in another account
    assert model.total((0, "m", CUS), T0 - DAY_S, T0 + DAY_S) == 1
    assert model.total((1, "m", CUS), T0 - DAY_S, T0 + DAY_S) == 1


def test_forgetting_the_identifiers_keeps_the_totals() -> None:
    model = totals("sum", None)
    assert ack(model, "id-1", "5", T0)
    assert ack(model, "id-2", "2", T0 + 60)
    before = model.total((0, "m", CUS), T0 - DAY_S, T0 + DAY_S)
    model.forget_identifiers()
    assert model.identifiers == set()
    assert model.total((0, "m", CUS), T0 - DAY_S, T0 + DAY_S) == before == Decimal(7)


def test_raw_sum_count_and_last_over_a_range() -> None:
    cases: list[tuple[Formula, Decimal]] = [
        ("sum", Decimal("18.5")),
        ("count", Decimal(3)),
        ("last", Decimal(3)),
    ]
    for formula, want in cases:
        model = totals(formula, None)
        ack(model, "a", "10", T0 + 30)
        ack(model, "b", "5.5", T0 + 7200)
        ack(model, "c", "3", T0 - 600)  # received last, though its timestamp is the earliest
        assert model.total((0, "m", CUS), T0 - DAY_S, T0 + DAY_S) == want, formula


def test_ranges_are_half_open_and_by_event_minute() -> None:
    model = totals("sum", None)
    ack(model, "a", "1", T0 + 59)  # minute T0
    ack(model, "b", "2", T0 + 60)  # minute T0 + 60
    assert model.total((0, "m", CUS), T0, T0 + 60) == 1
    assert model.total((0, "m", CUS), T0 + 60, T0 + 120) == 2


def test_raw_buckets_per_hour_and_day() -> None:
    model = totals("count", None)
    for n, ts in enumerate((T0, T0 + 10, T0 + HOUR_S, T0 + DAY_S + 5)):
        ack(model, f"e{n}", "1", ts)
    key = (0, "m", CUS)
    assert model.buckets(key, HOUR_S, T0 - DAY_S, T0 + 2 * DAY_S) == {
        T0: 2,
        T0 + HOUR_S: 1,
        T0 + DAY_S: 1,
    }
    assert model.buckets(key, DAY_S, T0 - DAY_S, T0 + 2 * DAY_S) == {
        T0 - T0 % DAY_S: 3,
        T0 - T0 % DAY_S + DAY_S: 1,
    }


def test_a_customer_without_events_expects_zero() -> None:
    model = totals("last", None)
    assert model.total((0, "m", "cus_none"), T0, T0 + DAY_S) == 0
    assert model.buckets((0, "m", "cus_none"), HOUR_S, T0, T0 + DAY_S) == {}


# -- expected totals: pre-aggregated meters --------------------------------------------------


def test_the_last_received_event_of_a_window_survives() -> None:
    model = totals("sum", "hour")
    ack(model, "a", "10", T0 + 1800)
    ack(model, "b", "4", T0 + 60)  # received later, earlier timestamp: still overwrites
    ack(model, "c", "7", T0 + HOUR_S + 5)  # next hour: a window of its own
    key = (0, "m", CUS)
    assert model.total(key, T0 - DAY_S, T0 + DAY_S) == 11
    assert model.buckets(key, HOUR_S, T0 - DAY_S, T0 + DAY_S) == {T0: 4, T0 + HOUR_S: 7}


def test_count_of_a_pre_aggregated_meter_counts_non_empty_windows() -> None:
    model = totals("count", "day")
    for n in range(5):
        ack(model, f"today{n}", "1", T0 + n * HOUR_S)
    ack(model, "yesterday", "1", T0 - DAY_S)
    assert model.total((0, "m", CUS), T0 - 2 * DAY_S, T0 + DAY_S) == 2


def test_a_day_window_survivor_keeps_its_own_hour() -> None:
    model = totals("last", "day")
    ack(model, "a", "1", T0 + 3 * HOUR_S)
    ack(model, "b", "2", T0 + 5 * HOUR_S + 10)
    key = (0, "m", CUS)
    assert model.buckets(key, HOUR_S, T0 - DAY_S, T0 + DAY_S) == {T0 + 5 * HOUR_S: 2}
    assert model.total(key, T0, T0 + 5 * HOUR_S) == 0  # the survivor lies outside this range


def test_a_resent_identifier_does_not_overwrite_the_window() -> None:
    model = totals("sum", "hour")
    ack(model, "a", "10", T0)
    ack(model, "b", "3", T0 + 10)
    assert not ack(model, "a", "10", T0)  # a duplicate of the first is dropped, not a new last
    assert model.total((0, "m", CUS), T0, T0 + HOUR_S) == 3


Event = tuple[int, int, int]  # (identifier number, value, seconds after T0)


@given(
    formula=st.sampled_from(["sum", "count", "last"]),
    window=st.sampled_from([None, "hour", "day"]),
    events=st.lists(
        st.tuples(st.integers(0, 30), st.integers(1, 100), st.integers(0, 3 * DAY_S)),
        max_size=40,
    ),
)
def test_totals_match_a_brute_force_replay(
    formula: Formula, window: Window | None, events: list[Event]
) -> None:
    model = totals(formula, window)
    for number, value, offset in events:
        ack(model, f"id{number}", str(value), T0 + offset)
    # Reference: first occurrence of each identifier, in order received; then, for
    # pre-aggregated meters, only the last received of each window.
    seen: set[int] = set()
    counted: list[tuple[int, int, int]] = []  # (order received, value, timestamp)
    for order, (number, value, offset) in enumerate(events):
        if number not in seen:
            seen.add(number)
            counted.append((order, value, T0 + offset))
    if window is not None:
        size = HOUR_S if window == "hour" else DAY_S
        survivors = {ts - ts % size: (order, value, ts) for order, value, ts in counted}
        counted = sorted(survivors.values())
    if formula == "sum":
        want = Decimal(sum(value for _, value, _ in counted))
    elif formula == "count":
        want = Decimal(len(counted))
    else:
        want = Decimal(counted[-1][1]) if counted else Decimal(0)
    assert model.total((0, "m", CUS), T0 - DAY_S, T0 + 4 * DAY_S) == want


def test_merge_joins_disjoint_series_and_refuses_overlap() -> None:
    left, right = totals("sum", None), totals("sum", None)
    left.acknowledge((0, "m", "cus_a"), "a", "1", T0)
    right.acknowledge((0, "m", "cus_b"), "b", "2", T0)
    left.merge(right)
    assert sorted(left.series()) == [(0, "m", "cus_a"), (0, "m", "cus_b")]
    other = totals("sum", None)
    other.acknowledge((0, "m", "cus_a"), "c", "3", T0)
    with pytest.raises(ValueError, match="two generators"):
        left.merge(other)


def test_unconfirmed_events_leave_headroom_apart_from_the_acknowledged_totals() -> None:
    cases: list[tuple[Formula, Decimal]] = [("sum", Decimal("9.5")), ("count", Decimal(2))]
    for formula, headroom in cases:
        left, right = totals(formula, None), totals(formula, None)
        left.acknowledge((0, "m", CUS), "a", "4", T0)
        left.unconfirm((0, "m", CUS), "2.5")
        right.unconfirm((0, "m", CUS), "7")
        left.merge(right)
        assert left.total((0, "m", CUS), T0 - DAY_S, T0 + DAY_S) == Decimal(
            4 if formula == "sum" else 1
        )
        assert left.headroom((0, "m", CUS)) == headroom
        assert left.headroom((0, "m", "cus_other")) == 0


# -- traffic ---------------------------------------------------------------------------------


def setup_with(meters: MeterCounts, customers: int = 10, accounts: int = 2) -> RunSetup:
    plans = tuple(
        MeterPlan(f"ev{i}", formula, window, f"mtr_{i}")
        for i, (formula, window) in enumerate(meter_shapes(meters))
    )
    return RunSetup(
        "r1",
        "http://127.0.0.1:1",
        tuple(AccountPlan(f"a{n}", f"sk_test_{n}", plans) for n in range(accounts)),
        customers,
    )


def test_meter_shapes_cover_every_formula_raw_and_windowed() -> None:
    shapes = meter_shapes(MeterCounts(raw=3, windowed=2))
    assert shapes == [
        ("count", None),
        ("sum", None),
        ("last", None),
        ("sum", "hour"),
        ("count", "day"),
    ]


def test_lanes_split_customers_without_overlap() -> None:
    setup = setup_with(MeterCounts(), customers=10)
    lanes = [set(lane_customers(setup, lane, 3)) for lane in range(3)]
    assert set.union(*lanes) == {customer_id("r1", n) for n in range(10)}
    assert sum(len(lane) for lane in lanes) == 10
    with pytest.raises(ValueError, match="no customers"):
        LaneTraffic(setup, TrafficMix(), lane=10, lanes=11, seed=1)


def test_new_events_stay_on_the_lane_and_within_35_days() -> None:
    setup = setup_with(MeterCounts())
    mix = TrafficMix(late_ratio=0.5)
    traffic = LaneTraffic(setup, mix, lane=1, lanes=3, seed=4)
    events = [traffic.next_event(T0) for _ in range(500)]
    assert {e.kind for e in events} == {"new"}
    assert {e.customer for e in events} <= set(traffic.customers)
    assert len({e.identifier for e in events}) == 500
    late = [e for e in events if e.timestamp_s < T0]
    assert 150 < len(late) < 350
    assert all(mix.min_late_s <= T0 - e.timestamp_s <= mix.max_late_s for e in late)


def test_duplicates_repeat_only_acknowledged_events_of_the_same_account() -> None:
    traffic = LaneTraffic(
        setup_with(MeterCounts()), TrafficMix(duplicate_ratio=0.5), lane=0, lanes=1, seed=2
    )
    first = [traffic.next_event(T0, account=0) for _ in range(20)]
    assert all(e.kind == "new" for e in first)  # nothing acknowledged yet: nothing to repeat
    for event in first[:3]:
        traffic.acknowledged(event)
    later = [traffic.next_event(T0, account=0) for _ in range(200)]
    duplicates = [e for e in later if e.kind == "duplicate"]
    assert duplicates
    originals = {e.identifier: e for e in first[:3]}
    for duplicate in duplicates:
        original = originals[duplicate.identifier]
        assert (duplicate.value, duplicate.timestamp_s, duplicate.customer) == (
            original.value,
            original.timestamp_s,
            original.customer,
        )
    assert all(e.kind == "new" for e in (traffic.next_event(T0, account=1) for _ in range(50)))


def test_invalid_events_break_one_rule_each() -> None:
    traffic = LaneTraffic(
        setup_with(MeterCounts()), TrafficMix(invalid_ratio=1.0), lane=0, lanes=1, seed=3
    )
    events = [traffic.next_event(T0) for _ in range(300)]
    assert all(e.kind == "invalid" for e in events)
    reasons = {e.invalid_reason for e in events}
    assert reasons == {"no_meter", "no_customer", "bad_value", "too_old", "in_future"}
    for event in events:
        if event.invalid_reason == "no_customer":
            assert "stripe_customer_id" not in event.payload()
        if event.invalid_reason == "too_old":
            assert event.timestamp_s < T0 - 35 * DAY_S
        if event.invalid_reason == "in_future":
            assert event.timestamp_s > T0 + 300


def test_a_stream_batch_belongs_to_one_account_and_is_reproducible() -> None:
    setup = setup_with(MeterCounts(), accounts=3)
    mix = TrafficMix(duplicate_ratio=0.1, invalid_ratio=0.1)
    one = LaneTraffic(setup, mix, lane=0, lanes=2, seed=9).next_batch(T0, 100)
    two = LaneTraffic(setup, mix, lane=0, lanes=2, seed=9).next_batch(T0, 100)
    assert one == two
    assert len({e.account for e in one}) == 1


def test_mix_and_meter_counts_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="ratios"):
        TrafficMix(duplicate_ratio=0.7, invalid_ratio=0.4)
    with pytest.raises(ValueError, match="35 days"):
        TrafficMix(max_late_s=36 * DAY_S)
    with pytest.raises(ValueError, match="at least one meter"):
        MeterCounts(raw=0, windowed=0)

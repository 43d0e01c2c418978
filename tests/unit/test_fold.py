from decimal import Decimal

from aggregator.fold import first_of_each_identifier, flatten, minute_deltas, minute_of, segments
from meterflow.event_records import (
    AcceptedEvent,
    CancelRecord,
    EventsRecord,
    RecordDecodeError,
    decode,
    encode,
    partition_key,
)


def _event(identifier: str, value: str, ts: int, customer: str = "cus_1") -> AcceptedEvent:
    return AcceptedEvent("mtr_1", "tokens", identifier, customer, value, ts)


def _record(received_ms: int, batch: str, *events: AcceptedEvent) -> EventsRecord:
    return EventsRecord("acct_1", False, received_ms, batch, tuple(events))


def test_records_round_trip_and_reject_junk() -> None:
    events = _record(1000, "b1", _event("a", "1.5", 120), _event("b", "-2", 130))
    cancel = CancelRecord("acct_1", True, 2000, "b2", "mtr_1", "tokens", "a", "cus_1")
    assert decode(encode(events)) == events
    assert decode(encode(cancel)) == cancel
    for junk in (b"", b"{}", b'{"v": 2}', b'{"v": 1, "kind": "other", "account": "a", '
                 b'"live": false, "received_ms": 1, "batch": "b"}', b"[1]"):  # fmt: skip
        try:
            decode(junk)
        except RecordDecodeError:
            continue
        raise AssertionError(f"decoded junk {junk!r}")


def test_partition_key_separates_accounts_modes_and_customers() -> None:
    keys = {
        partition_key("acct_1", False, "cus_1"),
        partition_key("acct_1", True, "cus_1"),
        partition_key("acct_2", False, "cus_1"),
        partition_key("acct_1", False, "cus_2"),
    }
    assert len(keys) == 4


def test_minute_deltas_sum_count_and_last_by_receipt_not_timestamp() -> None:
    rows = flatten(_record(1000, "b", _event("a", "1", 125), _event("b", "2", 61)))
    rows += flatten(_record(900, "z", _event("c", "10", 179)))  # received earlier, later ts
    deltas = minute_deltas(rows)
    assert set(deltas) == {
        ("acct_1", False, "mtr_1", "cus_1", 60),
        ("acct_1", False, "mtr_1", "cus_1", 120),
    }
    first = deltas[("acct_1", False, "mtr_1", "cus_1", 60)]
    assert (first.value_sum, first.event_count) == (Decimal(2), 1)
    second = deltas[("acct_1", False, "mtr_1", "cus_1", 120)]
    assert (second.value_sum, second.event_count, second.last_value) == (Decimal(11), 2, Decimal(1))
    assert second.last_receipt == (1000, "b", 0)


def test_same_millisecond_ties_break_on_batch_then_index() -> None:
    rows = flatten(_record(5, "b", _event("x", "1", 0), _event("y", "2", 0)))
    rows += flatten(_record(5, "a", _event("z", "3", 0)))
    assert minute_deltas(rows)[("acct_1", False, "mtr_1", "cus_1", 0)].last_value == Decimal(2)


def test_repeated_identifiers_keep_the_first_received() -> None:
    rows = flatten(_record(2000, "b", _event("dup", "5", 0)))
    rows += flatten(_record(1000, "a", _event("dup", "7", 0), _event("other", "1", 0)))
    kept = first_of_each_identifier(rows)
    assert sorted((r.identifier, r.value) for r in kept) == [
        ("dup", Decimal(7)),
        ("other", Decimal(1)),
    ]


def test_segments_keep_cancels_after_the_events_before_them() -> None:
    cancel = CancelRecord("acct_1", False, 3, "c", "mtr_1", "tokens", "a", "cus_1")
    split = segments(
        [_record(1, "x", _event("a", "1", 0)), cancel, _record(4, "y", _event("b", "1", 0))]
    )
    assert [len(s.events) for s in split] == [1, 0, 1]
    assert split[1].cancel == cancel


def test_minute_of_floors_to_the_utc_minute() -> None:
    assert [minute_of(t) for t in (0, 59, 60, 1717243259)] == [0, 0, 60, 1717243200]

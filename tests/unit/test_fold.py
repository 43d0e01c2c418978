import pytest

from aggregator.rollups.columns import EventColumns, segments
from meterflow.records.meter_events import (
    AcceptedEvent,
    CancelRecord,
    EventsRecord,
    RecordDecodeError,
    decode,
    encode,
    partition_key,
)
from meterflow.windows import minute_of


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


def test_segments_keep_cancels_after_the_events_before_them() -> None:
    cancel = CancelRecord("acct_1", False, 3, "c", "mtr_1", "tokens", "a", "cus_1")
    split = segments(
        [_record(1, "x", _event("a", "1", 0)), cancel, _record(4, "y", _event("b", "1", 0))]
    )
    assert [len(s.events) for s in split] == [1, 0, 1]
    assert split[1].cancel == cancel


def test_minute_of_floors_to_the_utc_minute() -> None:
    assert [minute_of(t) for t in (0, 59, 60, 1717243259)] == [0, 0, 60, 1717243200]


def test_columns_transpose_records_with_each_events_place_in_its_record() -> None:
    columns = EventColumns()
    columns.add(_record(1000, "b1", _event("a", "1.5", 86_399), _event("b", "-2", 86_400, "cus_2")))
    columns.add(_record(1001, "b2"))  # an empty record adds nothing
    columns.add(_record(1002, "b3", _event("c", "7", 10)))
    assert len(columns) == 3
    with pytest.raises(ValueError, match="series ids"):
        columns.arrays()
    assert list(columns.series_keys()) == [
        ("acct_1", False, "mtr_1", "cus_1"),
        ("acct_1", False, "mtr_1", "cus_2"),
        ("acct_1", False, "mtr_1", "cus_1"),
    ]
    columns.series_id = [7, 8, 7]
    assert columns.arrays() == (
        [7, 8, 7],
        ["a", "b", "c"],
        ["1.5", "-2", "7"],
        [86_399, 86_400, 10],
        [1000, 1000, 1002],
        ["b1", "b1", "b3"],
        [0, 1, 0],
    )
    assert columns.days() == {0, 86_400}
    assert columns.meter_ids() == {"mtr_1"}

"""Error reports, the pure part: windows, tallies, grouping, the event's data and summary text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.error_reports.reports import (
    ERROR_REPORT_TRIGGERED,
    MAX_SAMPLES,
    NO_METER_FOUND,
    Sample,
    StoredTally,
    WindowCode,
    developer_message_summary,
    group_reports,
    meter_reference,
    report_data,
    report_event,
    tally_rejections,
    window_start,
)
from aggregator.webhooks.core_events import new_event_id, thin_notification
from ingest.core_events.api import EventQuery, PageToken, decode_page, encode_page, parse_list_query
from ingest.edge.errors import InvalidRequest
from ingest.edge.forms import decode_urlencoded
from ingest.edge.params import Params
from meterflow.records.rejected import RejectedRecord, Rejection

T0 = 1_724_878_440_000  # 2024-08-28T20:54:00.000Z, a multiple of 10 s


def _rejection(code: str, meter: str | None, n: int) -> Rejection:
    return Rejection(
        code=code,
        message=f"{code} #{n}",
        meter_id=meter,
        event_name="tokens",
        identifier=f"id-{n}",
        event={"event_name": "tokens", "payload": {}},
    )


def _record(received_ms: int, *rejections: Rejection, account: str = "acct_1") -> RejectedRecord:
    return RejectedRecord(account, False, received_ms, tuple(rejections))


@pytest.mark.parametrize(
    ("received_ms", "start"),
    [(T0, T0), (T0 + 9_999, T0), (T0 + 10_000, T0 + 10_000), (T0 - 1, T0 - 10_000), (0, 0)],
)
def test_windows_are_epoch_aligned_and_half_open(received_ms: int, start: int) -> None:
    assert window_start(received_ms, 10_000) == start


@given(st.integers(min_value=0, max_value=2**50), st.integers(min_value=1, max_value=10**7))
def test_a_time_lies_in_its_window(received_ms: int, window_ms: int) -> None:
    start = window_start(received_ms, window_ms)
    assert start <= received_ms < start + window_ms
    assert start % window_ms == 0


def test_tallies_count_per_window_meter_and_code_and_keep_the_first_samples() -> None:
    invalid = [_rejection("meter_event_invalid_value", "mtr_a", n) for n in range(7)]
    records = [
        _record(T0 + 1, *invalid[:4], _rejection("no_meter", None, 100)),
        _record(T0 + 2, *invalid[4:], _rejection("archived_meter", "mtr_b", 200)),
        _record(T0 + 10_000, _rejection("meter_event_invalid_value", "mtr_a", 300)),
        _record(T0 + 3, _rejection("no_meter", None, 400), account="acct_2"),
    ]
    tallies = tally_rejections(records, 10_000)
    first = tallies[WindowCode("acct_1", False, "mtr_a", T0, "meter_event_invalid_value")]
    assert first.error_count == 7
    assert first.window_end_ms == T0 + 10_000
    assert first.samples == [Sample(f"meter_event_invalid_value #{n}", f"id-{n}") for n in range(5)]
    assert tallies[WindowCode("acct_1", False, "", T0, "no_meter")].error_count == 1
    assert tallies[WindowCode("acct_1", False, "mtr_b", T0, "archived_meter")].error_count == 1
    later = WindowCode("acct_1", False, "mtr_a", T0 + 10_000, "meter_event_invalid_value")
    assert tallies[later].error_count == 1
    assert tallies[WindowCode("acct_2", False, "", T0, "no_meter")].error_count == 1
    assert len(tallies) == 5


def test_no_meter_rejections_belong_to_no_meter_even_if_one_is_named() -> None:
    tallies = tally_rejections([_record(T0, _rejection("no_meter", "mtr_x", 1))], 10_000)
    assert list(tallies) == [WindowCode("acct_1", False, "", T0, "no_meter")]


def _stored(seq: int, meter: str, code: str, count: int, start: int = T0) -> StoredTally:
    samples = tuple(Sample(f"{code} #{n}", f"id-{n}") for n in range(min(count, MAX_SAMPLES)))
    return StoredTally(
        seq, WindowCode("acct_1", False, meter, start, code), start + 10_000, count, samples
    )


def test_one_report_per_meter_and_window_with_the_biggest_codes_first() -> None:
    reports = group_reports(
        [
            _stored(7, "mtr_a", "timestamp_in_future", 2),
            _stored(3, "mtr_a", "meter_event_invalid_value", 9),
            _stored(4, "", "no_meter", 1),
            _stored(5, "mtr_a", "archived_meter", 2),
            _stored(6, "mtr_a", "timestamp_in_future", 1, start=T0 + 10_000),
        ]
    )
    assert [(r.meter_id, r.window_start_ms) for r in reports] == [
        ("", T0),
        ("mtr_a", T0),
        ("mtr_a", T0 + 10_000),
    ]
    no_meter, meter_a, later = reports
    assert no_meter.event_type == NO_METER_FOUND
    assert meter_a.event_type == ERROR_REPORT_TRIGGERED
    assert [t.key.code for t in meter_a.tallies] == [
        "meter_event_invalid_value",
        "archived_meter",
        "timestamp_in_future",
    ]
    assert meter_a.error_count == 13
    assert meter_a.first_seq == 3
    assert later.first_seq == 6
    assert len({r.source_key for r in reports}) == 3


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (1, "There is 1 invalid event"),
        (2, "There are 2 invalid events"),
        (3, "There are 3 invalid events"),
    ],
)
def test_summary_text(count: int, text: str) -> None:
    assert developer_message_summary(count) == text


def test_report_data_is_shaped_as_stripes_example() -> None:
    (report,) = group_reports([_stored(1, "mtr_a", "meter_event_no_customer_defined", 1)])
    assert report_data(report) == {
        "developer_message_summary": "There is 1 invalid event",
        "reason": {
            "error_count": 1,
            "error_types": [
                {
                    "code": "meter_event_no_customer_defined",
                    "error_count": 1,
                    "sample_errors": [
                        {
                            "error_message": "meter_event_no_customer_defined #0",
                            "request": {"identifier": "id-0"},
                        }
                    ],
                }
            ],
        },
        "validation_end": "2024-08-28T20:54:10.000Z",
        "validation_start": "2024-08-28T20:54:00.000Z",
    }


def test_a_count_can_exceed_its_samples() -> None:
    (report,) = group_reports([_stored(1, "mtr_a", "meter_event_invalid_value", 12)])
    (error_type,) = report_data(report)["reason"]["error_types"]
    assert error_type["error_count"] == 12
    assert len(error_type["sample_errors"]) == MAX_SAMPLES


def test_events_name_the_meter_or_nothing() -> None:
    meter_report, no_meter_report = group_reports(
        [_stored(1, "mtr_a", "archived_meter", 1), _stored(2, "", "no_meter", 3)]
    )[::-1]
    event = report_event(meter_report, event_id="evt_test_1", created_ms=T0 + 15_051)
    assert event.type == ERROR_REPORT_TRIGGERED
    assert event.related_object == {
        "id": "mtr_a",
        "type": "billing.meter",
        "url": "/v1/billing/meters/mtr_a",
    }
    assert meter_reference("") is None
    no_meter = report_event(no_meter_report, event_id="evt_test_2", created_ms=T0 + 15_051)
    assert no_meter.type == NO_METER_FOUND
    assert no_meter.related_object is None
    assert no_meter.data["developer_message_summary"] == "There are 3 invalid events"
    assert thin_notification(event) == {
        "id": "evt_test_1",
        "object": "v2.core.event",
        "type": ERROR_REPORT_TRIGGERED,
        "created": "2024-08-28T20:54:15.051Z",
        "livemode": False,
        "related_object": event.related_object,
    }


def test_event_ids_name_their_mode() -> None:
    test_id, live_id = new_event_id(False), new_event_id(True)
    assert test_id.startswith("evt_test_")
    assert live_id.startswith("evt_live_")
    assert len(test_id) == len("evt_test_") + 46
    assert new_event_id(False) != test_id


# -- the events API's list -----------------------------------------------------------------------


def test_page_tokens_round_trip_and_junk_is_a_400() -> None:
    for token in (PageToken("after", 1), PageToken("before", 2**40)):
        assert decode_page(encode_page(token)) == token
    for junk in ("", "abc", encode_page(PageToken("after", 1))[:-2] + "!!", "eyJkIjoieCIsInMiOjF9"):
        with pytest.raises(InvalidRequest):
            decode_page(junk)


def test_page_urls_carry_the_filters() -> None:
    query = parse_list_query(Params({"limit": "2", "object_id": "mtr_1", "types": ["a.b", "c.d"]}))
    url = query.url(PageToken("after", 7))
    assert url.startswith("/v2/core/events?limit=2&object_id=mtr_1&types%5B0%5D=a.b&")
    again = parse_list_query(Params(decode_urlencoded(url.partition("?")[2].encode())))
    assert again == EventQuery(2, "mtr_1", ("a.b", "c.d"), PageToken("after", 7))
    assert parse_list_query(Params({})) == EventQuery(20, None, (), None)
    with pytest.raises(InvalidRequest):
        parse_list_query(Params({"limit": "101"}))
    with pytest.raises(InvalidRequest):
        parse_list_query(Params({"created": "1"}))

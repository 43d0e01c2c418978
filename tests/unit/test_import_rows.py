"""Import lines are checked as the API checks a request, with the API's codes; an event without
an identifier gets one derived from the import and the line."""

from __future__ import annotations

import pytest

from meterflow.imports.rows import (
    ImportRefused,
    RowChecker,
    RowError,
    csv_layout,
    generated_identifier,
    reject_line,
)
from meterflow.meters import Meter
from meterflow.records.meter_events import AcceptedEvent

NOW_S = 1_796_400_000
HEADER = ["event_name", "timestamp", "identifier", "payload.stripe_customer_id", "payload.value"]


def _meter() -> Meter:
    return Meter(
        seq=1, id="mtr_1", livemode=False, event_name="tokens", display_name="Tokens",
        formula="sum", customer_key="stripe_customer_id", value_key="value",
        event_time_window=None, status="active", created=0, updated=0, deactivated_at=None,
    )  # fmt: skip


CHECKER = RowChecker("imp_1", {"tokens": _meter()}, NOW_S)
LAYOUT = csv_layout(HEADER)


@pytest.mark.parametrize(
    ("header", "wrong"),
    [
        (["timestamp", "payload.value"], "no event_name"),
        (["event_name", "customer"], "unknown column"),
        (["event_name", "event_name"], "twice"),
        (["event_name", *(f"payload.k{n}" for n in range(51))], "at most 50"),
    ],
)
def test_a_header_that_cannot_be_read_refuses_the_import(header: list[str], wrong: str) -> None:
    with pytest.raises(ImportRefused, match=wrong):
        csv_layout(header)


def test_a_good_csv_line_becomes_the_event_the_api_would_accept() -> None:
    row = ["tokens", str(NOW_S - 60), "req_1", "cus_1", "2.5"]
    assert CHECKER.csv_row(row, LAYOUT, 2) == AcceptedEvent(
        "mtr_1", "tokens", "req_1", "cus_1", "2.5", NOW_S - 60
    )


def test_a_line_without_identifier_or_timestamp_gets_a_stable_identifier_and_now() -> None:
    event = CHECKER.csv_row(["tokens", "", "", "cus_1", "1"], LAYOUT, 7)
    assert isinstance(event, AcceptedEvent)
    assert event.identifier == generated_identifier("imp_1", 7)
    assert event.identifier != generated_identifier("imp_1", 8)
    assert event.identifier != generated_identifier("imp_2", 7)
    assert event.timestamp_s == NOW_S


@pytest.mark.parametrize(
    ("row", "code", "param"),
    [
        (["", "", "", "cus_1", "1"], "parameter_missing", "event_name"),
        (["x" * 101, "", "", "cus_1", "1"], "string_too_long", "event_name"),
        (["tokens", "", "i" * 101, "cus_1", "1"], "string_too_long", "identifier"),
        (["tokens", "", "", "cus_1", "v" * 501], "string_too_long", "payload[value]"),
        (["tokens", "", "id\x01", "cus_1", "1"], "parameter_invalid", "identifier"),
        (["tokens", "", "", "cus\x00", "1"], "parameter_invalid", "payload[stripe_customer_id]"),
        (["tokens", "yesterday", "", "cus_1", "1"], "parameter_invalid", "timestamp"),
        (["nope", "", "", "cus_1", "1"], "no_meter", "event_name"),
        (["tokens", "", "", "", "1"], "payload_no_customer_defined", None),
        (["tokens", "", "", "cus_1", ""], "payload_no_value_defined", None),
        (["tokens", "", "", "cus_1", "1e3"], "payload_invalid_value", "payload[value]"),
        (["tokens", str(NOW_S - 36 * 86_400), "", "cus_1", "1"], "timestamp_too_far_in_past",
         "timestamp"),
        (["tokens", str(NOW_S + 600), "", "cus_1", "1"], "timestamp_in_future", "timestamp"),
        (["tokens", "", "", "cus_1"], "parameter_invalid", None),
    ],
)  # fmt: skip
def test_a_bad_csv_line_gets_the_apis_code(row: list[str], code: str, param: str | None) -> None:
    outcome = CHECKER.csv_row(row, LAYOUT, 3)
    assert isinstance(outcome, RowError), outcome
    assert (outcome.line, outcome.code) == (3, code)
    if param is not None:
        assert outcome.param == param


def test_json_lines_take_strings_and_integer_or_rfc_3339_timestamps() -> None:
    line = (
        b'{"event_name": "tokens", "timestamp": "2026-12-04T15:59:00Z", '
        b'"payload": {"stripe_customer_id": "cus_1", "value": "3"}}'
    )
    event = CHECKER.json_line(line, 4)
    assert isinstance(event, AcceptedEvent)
    assert event.timestamp_s == NOW_S - 60
    assert event.identifier == generated_identifier("imp_1", 4)
    numeric = CHECKER.json_line(
        b'{"event_name": "tokens", "timestamp": %d, "identifier": "a", '
        b'"payload": {"stripe_customer_id": "cus_1", "value": "3"}}' % (NOW_S - 5),
        5,
    )
    assert isinstance(numeric, AcceptedEvent)
    assert numeric.timestamp_s == NOW_S - 5


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"not json", "parameter_invalid"),
        (b"[1, 2]", "parameter_invalid"),
        (b'{"event_name": "tokens"}', "parameter_missing"),
        (b'{"event_name": "tokens", "payload": {"value": 3}}', "parameter_invalid"),
        (b'{"event_name": 5, "payload": {}}', "parameter_invalid"),
        (b'{"event_name": "tokens", "payload": {}, "extra": 1}', "parameter_unknown"),
        (b'{"event_name": "tokens", "timestamp": true, "payload": {}}', "parameter_invalid"),
    ],
)
def test_a_bad_json_line_gets_the_apis_code(raw: bytes, code: str) -> None:
    outcome = CHECKER.json_line(raw, 9)
    assert isinstance(outcome, RowError)
    assert outcome.code == code


def test_a_reject_line_names_the_line_the_code_and_the_source_even_if_not_utf8() -> None:
    error = RowError(12, "no_meter", "No meter", "event_name")
    assert reject_line(error, ["nope", "\udcff"]) == (
        b'{"line":12,"code":"no_meter","message":"No meter","param":"event_name",'
        b'"source":["nope","\xef\xbf\xbd"]}\n'
    )
    bad_bytes = CHECKER.csv_row(["tokens", "", "", "cus_\udcff", "1"], LAYOUT, 2)
    assert isinstance(bad_bytes, RowError)
    assert bad_bytes.code == "parameter_invalid"

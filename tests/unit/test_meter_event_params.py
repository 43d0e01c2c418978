from dataclasses import replace
from typing import Any

import pytest

from ingest.edge.errors import ApiError, InvalidRequest, ResourceMissing
from ingest.edge.params import Params
from ingest.events.identifiers import ProcessedEvent
from ingest.events.objects import (
    v1_cancel_adjustment,
    v1_meter_event,
    v2_cancel_adjustment,
    v2_meter_event,
)
from ingest.events.params import (
    CANCEL_WINDOW_MS,
    CancelRequest,
    MeterEventRequest,
    accept_event,
    check_cancel,
    duplicate_event,
    parse_cancel,
    parse_meter_event_v1,
    parse_meter_event_v2,
)
from meterflow.meters import Meter
from meterflow.records.meter_events import AcceptedEvent

NOW_S = 1_780_000_000
PAYLOAD = {"stripe_customer_id": "cus_1", "value": "25"}
METER = Meter(
    seq=1,
    id="mtr_test_1",
    livemode=False,
    event_name="tokens",
    display_name="Tokens",
    formula="sum",
    customer_key="stripe_customer_id",
    value_key="value",
    event_time_window=None,
    status="active",
    created=NOW_S,
    updated=NOW_S,
    deactivated_at=None,
)


def _error(exc: pytest.ExceptionInfo[ApiError]) -> tuple[int, str | None, str | None]:
    return exc.value.status, exc.value.code, exc.value.param


def test_v1_reads_every_field() -> None:
    event = parse_meter_event_v1(
        Params(
            {
                "event_name": "tokens",
                "payload": PAYLOAD,
                "identifier": "id-1",
                "timestamp": str(NOW_S),
                "expand": [],
            }
        )
    )
    assert event == MeterEventRequest("tokens", PAYLOAD, "id-1", NOW_S)


def test_v2_reads_rfc3339_timestamps_and_defaults() -> None:
    event = parse_meter_event_v2(
        Params({"event_name": "tokens", "payload": PAYLOAD, "timestamp": "2026-05-28T20:26:40Z"})
    )
    assert event.timestamp_s == NOW_S
    bare = parse_meter_event_v2(Params({"event_name": "tokens", "payload": PAYLOAD}))
    assert (bare.identifier, bare.timestamp_s) == (None, None)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"payload": PAYLOAD}, ("parameter_missing", "event_name")),
        ({"event_name": "tokens"}, ("parameter_missing", "payload")),
        ({"event_name": "e" * 101, "payload": PAYLOAD}, ("string_too_long", "event_name")),
        ({"event_name": "tokens", "payload": PAYLOAD, "identifier": "i" * 101},
         ("string_too_long", "identifier")),
        ({"event_name": "tokens", "payload": PAYLOAD, "identifier": ""},
         ("parameter_invalid_empty", "identifier")),
        ({"event_name": "tokens", "payload": "value=1"}, ("parameter_invalid", "payload")),
        ({"event_name": "tokens", "payload": ["a"]}, ("parameter_invalid", "payload")),
        ({"event_name": "tokens", "payload": {**PAYLOAD, "value": 25}},
         ("parameter_invalid", "payload[value]")),
        ({"event_name": "tokens", "payload": {**PAYLOAD, "n": None}},
         ("parameter_invalid", "payload[n]")),
        ({"event_name": "tokens", "payload": {**PAYLOAD, "nested": {"a": "b"}}},
         ("parameter_invalid", "payload[nested]")),
        ({"event_name": "tokens", "payload": {f"k{i}": "v" for i in range(51)}},
         ("parameter_invalid", "payload")),
        ({"event_name": "tokens", "payload": {"k" * 101: "v"}}, ("string_too_long", "payload")),
        ({"event_name": "tokens", "payload": {"": "v"}}, ("parameter_invalid", "payload")),
        ({"event_name": "tokens", "payload": {"k": "v" * 501}},
         ("string_too_long", "payload[k]")),
        ({"event_name": "tokens", "payload": PAYLOAD, "colour": "red"},
         ("parameter_unknown", "colour")),
    ],
)  # fmt: skip
def test_shape_errors_name_the_parameter(values: dict[str, Any], expected: tuple[str, str]) -> None:
    for parse in (parse_meter_event_v1, parse_meter_event_v2):
        with pytest.raises(InvalidRequest) as exc:
            parse(Params(values))
        assert _error(exc) == (400, *expected), parse.__name__


def test_payload_limits_are_inclusive() -> None:
    payload = {f"k{i:0>99}": "v" * 500 for i in range(50)}
    assert parse_meter_event_v1(Params({"event_name": "e", "payload": payload})).payload == payload


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"timestamp": "soon"}, ("parameter_invalid_integer", "timestamp")),
        ({"timestamp": "1.5"}, ("parameter_invalid_integer", "timestamp")),
        ({"expand": ["payload"]}, ("parameter_invalid", "expand")),
    ],
)
def test_v1_only_errors(values: dict[str, Any], expected: tuple[str, str]) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_meter_event_v1(Params({"event_name": "e", "payload": PAYLOAD, **values}))
    assert _error(exc) == (400, *expected)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"timestamp": NOW_S}, ("parameter_invalid", "timestamp")),
        ({"timestamp": "2026-05-28 20:26:40"}, ("parameter_invalid", "timestamp")),
        ({"timestamp": "2026-13-28T20:26:40Z"}, ("parameter_invalid", "timestamp")),
        ({"timestamp": "yesterday"}, ("parameter_invalid", "timestamp")),
        ({"expand": ["payload"]}, ("parameter_unknown", "expand")),
    ],
)
def test_v2_only_errors(values: dict[str, Any], expected: tuple[str, str]) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_meter_event_v2(Params({"event_name": "e", "payload": PAYLOAD, **values}))
    assert _error(exc) == (400, *expected)
    if expected[1] == "timestamp":
        assert "timestamp" in exc.value.message


def _event(**changes: Any) -> MeterEventRequest:
    return replace(MeterEventRequest("tokens", PAYLOAD, None, None), **changes)


def test_accepts_an_event_with_defaults() -> None:
    accepted = accept_event(_event(), METER, identifier="gen-1", now_s=NOW_S)
    assert accepted == AcceptedEvent("mtr_test_1", "tokens", "gen-1", "cus_1", "25", NOW_S)


def test_uses_the_meters_payload_keys() -> None:
    meter = replace(METER, customer_key="account", value_key="gb")
    accepted = accept_event(
        _event(payload={"account": "cus_9", "gb": "-1.5"}, timestamp_s=NOW_S - 60),
        meter,
        identifier="i",
        now_s=NOW_S,
    )
    assert (accepted.customer, accepted.value, accepted.timestamp_s) == (
        "cus_9",
        "-1.5",
        NOW_S - 60,
    )


@pytest.mark.parametrize(
    ("event", "meter", "expected"),
    [
        (_event(), None, ("no_meter", "event_name")),
        (_event(), replace(METER, status="inactive"), ("archived_meter", "event_name")),
        (_event(payload={"value": "1"}), METER,
         ("payload_no_customer_defined", "payload[stripe_customer_id]")),
        (_event(payload={"stripe_customer_id": "c"}), METER,
         ("payload_no_value_defined", "payload[value]")),
        (_event(payload={**PAYLOAD, "value": "abc"}), METER,
         ("payload_invalid_value", "payload[value]")),
        (_event(payload={**PAYLOAD, "value": "1e3"}), METER,
         ("payload_invalid_value", "payload[value]")),
        (_event(payload={**PAYLOAD, "value": "NaN"}), METER,
         ("payload_invalid_value", "payload[value]")),
        (_event(payload={**PAYLOAD, "value": "1" * 16}), METER,
         ("payload_invalid_value", "payload[value]")),
        (_event(timestamp_s=NOW_S - 36 * 86400), METER, ("timestamp_too_far_in_past", "timestamp")),
        (_event(timestamp_s=NOW_S + 600), METER, ("timestamp_in_future", "timestamp")),
    ],
)  # fmt: skip
def test_rejects_events_breaking_stripes_rules(
    event: MeterEventRequest, meter: Meter | None, expected: tuple[str, str]
) -> None:
    with pytest.raises(InvalidRequest) as exc:
        accept_event(event, meter, identifier="i", now_s=NOW_S)
    assert _error(exc) == (400, *expected)


def test_duplicate_is_final() -> None:
    error = duplicate_event("abc")
    assert (error.status, error.code) == (400, "duplicate_meter_event")
    assert error.message == "An event already exists with identifier abc."
    assert error.headers == {"Stripe-Should-Retry": "false"}


CANCEL = {"event_name": "tokens", "type": "cancel", "cancel": {"identifier": "id-1"}}


def test_parses_a_cancel() -> None:
    assert parse_cancel(Params(CANCEL), expandable=True) == CancelRequest("tokens", "id-1")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({**CANCEL, "type": None}, ("parameter_missing", "type")),
        ({**CANCEL, "type": "refund"}, ("parameter_invalid", "type")),
        ({**CANCEL, "cancel": None}, ("parameter_missing", "cancel")),
        ({**CANCEL, "cancel": {}}, ("parameter_missing", "cancel[identifier]")),
        ({**CANCEL, "cancel": {"identifier": "i" * 101}},
         ("string_too_long", "cancel[identifier]")),
        ({**CANCEL, "event_name": None}, ("parameter_missing", "event_name")),
        ({**CANCEL, "cancel": {"identifier": "i", "x": "1"}}, ("parameter_unknown", "cancel[x]")),
    ],
)  # fmt: skip
def test_cancel_parameter_errors(values: dict[str, Any], expected: tuple[str, str]) -> None:
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises(InvalidRequest) as exc:
        parse_cancel(Params(values), expandable=True)
    assert _error(exc) == (400, *expected)


NOW_MS = NOW_S * 1000
PROCESSED = ProcessedEvent("id-1", "mtr_test_1", "tokens", "cus_1", NOW_MS - 1000)


def test_check_cancel() -> None:
    cancel = CancelRequest("tokens", "id-1")
    assert check_cancel(cancel, PROCESSED, now_ms=NOW_MS) is PROCESSED
    edge = replace(PROCESSED, received_ms=NOW_MS - CANCEL_WINDOW_MS)
    assert check_cancel(cancel, edge, now_ms=NOW_MS) is edge

    with pytest.raises(ResourceMissing) as missing:
        check_cancel(cancel, None, now_ms=NOW_MS)
    assert _error(missing) == (404, "resource_missing", "cancel[identifier]")
    assert "processed" in missing.value.message

    with pytest.raises(InvalidRequest) as wrong:
        check_cancel(CancelRequest("other", "id-1"), PROCESSED, now_ms=NOW_MS)
    assert _error(wrong) == (400, "invalid_cancel_configuration", "event_name")

    old = replace(PROCESSED, received_ms=NOW_MS - CANCEL_WINDOW_MS - 1)
    with pytest.raises(InvalidRequest) as expired:
        check_cancel(cancel, old, now_ms=NOW_MS)
    assert _error(expired) == (400, "cancel_window_expired", "cancel[identifier]")
    assert "24 hours" in expired.value.message


def test_objects_are_shaped_like_stripes() -> None:
    fields: dict[str, Any] = {
        "event_name": "tokens",
        "identifier": "id-1",
        "livemode": False,
        "payload": PAYLOAD,
        "timestamp_s": NOW_S - 60,
        "received_ms": NOW_MS + 123,
    }
    assert v1_meter_event(**fields) == {
        "object": "billing.meter_event",
        "created": NOW_S,
        "event_name": "tokens",
        "identifier": "id-1",
        "livemode": False,
        "payload": PAYLOAD,
        "timestamp": NOW_S - 60,
    }
    v2 = v2_meter_event(**fields)
    assert v2["object"] == "v2.billing.meter_event"
    assert (v2["created"], v2["timestamp"]) == (
        "2026-05-28T20:26:40.123Z",
        "2026-05-28T20:25:40.000Z",
    )
    assert "id" not in v2
    assert v1_cancel_adjustment(event_name="tokens", identifier="id-1", livemode=True) == {
        "object": "billing.meter_event_adjustment",
        "livemode": True,
        "status": "pending",
        "event_name": "tokens",
        "type": "cancel",
        "cancel": {"identifier": "id-1"},
    }
    adjustment = v2_cancel_adjustment(
        adjustment_id="mtr_event_adj_1",
        event_name="tokens",
        identifier="id-1",
        livemode=False,
        received_ms=NOW_MS,
    )
    assert adjustment == {
        "id": "mtr_event_adj_1",
        "object": "v2.billing.meter_event_adjustment",
        "cancel": {"identifier": "id-1"},
        "created": "2026-05-28T20:26:40.000Z",
        "event_name": "tokens",
        "livemode": False,
        "status": "pending",
        "type": "cancel",
    }

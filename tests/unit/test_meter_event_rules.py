"""The per-event rules engine, and the synchronous and stream adapters built on it (pure)."""

from dataclasses import replace
from typing import NamedTuple

import pytest

from ingest.edge.errors import InvalidRequest
from ingest.events.params import MeterEventRequest, accept_event
from ingest.stream.events import StreamEvent, check_stream_event
from meterflow.meters import Meter
from meterflow.records.meter_events import AcceptedEvent
from meterflow.records.rejected import Rejection
from meterflow.rules.events import MAX_FUTURE_S, MAX_PAST_S, EventRuleBroken, EventRuleFailure
from meterflow.rules.meter_events import (
    STREAM_WORDING,
    SYNC_WORDING,
    MeterRuleWording,
    apply_event_rules,
)

NOW_S = 1_780_000_000
METER = Meter(seq=1, id="mtr_1", livemode=False, event_name="tokens", display_name="Tokens",
              formula="sum", customer_key="cust", value_key="gb", event_time_window=None,
              status="active", created=NOW_S, updated=NOW_S, deactivated_at=None)  # fmt: skip
INACTIVE = replace(METER, status="inactive")
GOOD = {"cust": "cus_1", "gb": "25"}


class Case(NamedTuple):
    meter: Meter | None
    payload: dict[str, str]
    timestamp_s: int | None
    # (sync code, async code, sync param) of the first broken rule; None: accepted
    expected: tuple[str, str, str] | None


CASES: dict[str, Case] = {
    "good": Case(METER, GOOD, None, None),
    "good, back-dated": Case(METER, GOOD, NOW_S - 60, None),
    "oldest allowed": Case(METER, GOOD, NOW_S - MAX_PAST_S, None),
    "latest allowed": Case(METER, GOOD, NOW_S + MAX_FUTURE_S, None),
    "negative fraction": Case(METER, {**GOOD, "gb": "-1.5"}, None, None),
    "15 digits": Case(METER, {**GOOD, "gb": "1" * 15}, None, None),
    "extra payload keys": Case(METER, {**GOOD, "other": "x"}, None, None),
    "no meter": Case(None, GOOD, None, ("no_meter", "no_meter", "event_name")),
    "inactive meter": Case(INACTIVE, GOOD, None,
                           ("archived_meter", "archived_meter", "event_name")),
    "no customer": Case(METER, {"gb": "1"}, None,
                        ("payload_no_customer_defined", "meter_event_no_customer_defined",
                         "payload[cust]")),
    "empty customer": Case(METER, {**GOOD, "cust": ""}, None,
                           ("payload_no_customer_defined", "meter_event_no_customer_defined",
                            "payload[cust]")),
    "no value": Case(METER, {"cust": "c"}, None,
                     ("payload_no_value_defined", "meter_event_value_not_found", "payload[gb]")),
    "empty value": Case(METER, {**GOOD, "gb": ""}, None,
                        ("payload_no_value_defined", "meter_event_value_not_found",
                         "payload[gb]")),
    "exponent": Case(METER, {**GOOD, "gb": "1e3"}, None,
                     ("payload_invalid_value", "meter_event_invalid_value", "payload[gb]")),
    "NaN": Case(METER, {**GOOD, "gb": "NaN"}, None,
                ("payload_invalid_value", "meter_event_invalid_value", "payload[gb]")),
    "16 digits": Case(METER, {**GOOD, "gb": "1" * 16}, None,
                      ("payload_invalid_value", "meter_event_value_too_many_digits",
                       "payload[gb]")),
    "too old": Case(METER, GOOD, NOW_S - MAX_PAST_S - 1,
                    ("timestamp_too_far_in_past", "timestamp_too_far_in_past", "timestamp")),
    "too new": Case(METER, GOOD, NOW_S + MAX_FUTURE_S + 1,
                    ("timestamp_in_future", "timestamp_in_future", "timestamp")),
    # Several rules broken: the first in the engine's order is the one reported.
    "inactive and empty": Case(INACTIVE, {}, NOW_S - MAX_PAST_S - 1,
                               ("archived_meter", "archived_meter", "event_name")),
    "no customer, bad value": Case(METER, {"gb": "x"}, None,
                                   ("payload_no_customer_defined",
                                    "meter_event_no_customer_defined", "payload[cust]")),
    "bad value, too old": Case(METER, {**GOOD, "gb": "x"}, NOW_S - MAX_PAST_S - 1,
                               ("payload_invalid_value", "meter_event_invalid_value",
                                "payload[gb]")),
}  # fmt: skip


def _apply(case: Case, wording: MeterRuleWording) -> AcceptedEvent | EventRuleFailure:
    return apply_event_rules(
        case.meter, "tokens", case.payload, "id-1", case.timestamp_s, now_s=NOW_S, wording=wording
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_engine_applies_stripes_rules_in_order(case: Case) -> None:
    outcome = _apply(case, SYNC_WORDING)
    if case.expected is None:
        timestamp_s = NOW_S if case.timestamp_s is None else case.timestamp_s
        assert isinstance(outcome, AcceptedEvent)
        assert outcome == AcceptedEvent(
            "mtr_1", "tokens", "id-1", case.payload["cust"], case.payload["gb"], timestamp_s
        )
    else:
        assert isinstance(outcome, EventRuleFailure)
        assert (outcome.sync_code, outcome.async_code, outcome.param) == case.expected


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_only_the_meter_rules_are_worded_per_path(case: Case) -> None:
    sync, stream = _apply(case, SYNC_WORDING), _apply(case, STREAM_WORDING)
    meter_rule = case.expected is not None and case.expected[0] in {"no_meter", "archived_meter"}
    if meter_rule:
        assert isinstance(sync, EventRuleFailure)
        assert isinstance(stream, EventRuleFailure)
        assert sync.message != stream.message
        assert sync._replace(message="") == stream._replace(message="")
    else:
        assert sync == stream


def test_meter_rule_texts() -> None:
    assert SYNC_WORDING.no_meter("tokens") == (
        "No meter exists for event_name 'tokens'. A meter must exist, in this account and mode, "
        "before it can receive events."
    )
    assert SYNC_WORDING.archived_meter("tokens", "mtr_1") == (
        "The meter mtr_1 for event_name 'tokens' is inactive. A meter must be active to receive "
        "events; reactivate it first."
    )
    assert STREAM_WORDING.no_meter("tokens") == "No meter was found matching event_name tokens."
    assert STREAM_WORDING.archived_meter("tokens", "mtr_1") == (
        "The meter mtr_1 is inactive; it does not accept events."
    )


def test_a_failure_raises_as_the_rule_error() -> None:
    failure = EventRuleFailure("payload_invalid_value", "meter_event_invalid_value", "m", "p")
    error = failure.error()
    assert isinstance(error, EventRuleBroken)
    assert (error.sync_code, error.async_code, error.message, error.param) == failure


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_sync_and_stream_adapters_agree(case: Case) -> None:
    """Both paths accept the same events and reject the same ones for the same rule, each with
    its own one of Stripe's two codes for it."""
    original = {"event_name": "tokens", "payload": case.payload}
    stream = check_stream_event(
        StreamEvent("tokens", case.payload, "id-1", True, case.timestamp_s, original),
        case.meter,
        now_s=NOW_S,
    )
    request = MeterEventRequest("tokens", case.payload, "id-1", case.timestamp_s)
    if case.expected is None:
        assert accept_event(request, case.meter, identifier="id-1", now_s=NOW_S) == stream
        assert isinstance(stream, AcceptedEvent)
        return
    with pytest.raises(InvalidRequest) as raised:
        accept_event(request, case.meter, identifier="id-1", now_s=NOW_S)
    assert isinstance(stream, Rejection)
    sync_code, async_code, param = case.expected
    assert (raised.value.status, raised.value.code, raised.value.param) == (400, sync_code, param)
    assert isinstance(raised.value.__cause__, EventRuleBroken)
    assert raised.value.__cause__.async_code == stream.code == async_code
    failure = _apply(case, STREAM_WORDING)
    assert isinstance(failure, EventRuleFailure)
    assert stream == Rejection(
        code=async_code,
        message=failure.message,
        meter_id=None if case.meter is None else case.meter.id,
        event_name="tokens",
        identifier="id-1",
        event=original,
    )


def test_a_count_meters_event_needs_no_value() -> None:
    counting = replace(METER, formula="count")
    accepted = apply_event_rules(
        counting, "api_call", {"cust": "cus_1", "endpoint": "/v1/x"}, "id-1", None,
        now_s=NOW_S, wording=SYNC_WORDING,
    )  # fmt: skip
    assert isinstance(accepted, AcceptedEvent)
    assert (accepted.customer, accepted.value) == ("cus_1", "1")
    # A value, when given, is still checked; and other formulas still need one.
    bad = apply_event_rules(
        counting, "api_call", {"cust": "cus_1", "gb": "abc"}, "id-2", None,
        now_s=NOW_S, wording=SYNC_WORDING,
    )  # fmt: skip
    assert isinstance(bad, EventRuleFailure)
    assert bad.sync_code == "payload_invalid_value"
    missing = apply_event_rules(
        METER, "api_call", {"cust": "cus_1"}, "id-3", None, now_s=NOW_S, wording=SYNC_WORDING
    )
    assert isinstance(missing, EventRuleFailure)
    assert missing.sync_code == "payload_no_value_defined"

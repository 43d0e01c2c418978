"""Re-driving a rejected event: which rejections a filter takes, and how each is checked again
with its original identifier and timestamp."""

from __future__ import annotations

from typing import Any

from meterflow.meters import Meter
from meterflow.records.meter_events import AcceptedEvent
from meterflow.records.rejected import RejectedRecord, Rejection
from meterflow.replay.rejections import (
    RedriveFilter,
    check_again,
    event_time,
    rejected_again,
)
from meterflow.rules.events import EventRuleFailure, format_rfc3339

NOW_S = 1_796_400_000
RECEIVED_MS = (NOW_S - 3600) * 1000


def _meter(status: str = "active") -> Meter:
    return Meter(
        seq=1, id="mtr_1", livemode=False, event_name="tokens", display_name="Tokens",
        formula="sum", customer_key="stripe_customer_id", value_key="value",
        event_time_window=None, status=status,  # type: ignore[arg-type]
        created=0, updated=0, deactivated_at=None,
    )  # fmt: skip


def _rejection(code: str = "no_meter", **event: Any) -> Rejection:
    sent = {
        "event_name": "tokens",
        "payload": {"stripe_customer_id": "cus_1", "value": "5"},
        **event,
    }
    return Rejection(code, "message", None, "tokens", "id_1", sent)


def test_a_filter_takes_records_by_account_mode_and_time_and_rejections_by_the_rest() -> None:
    record = RejectedRecord("acct_1", False, RECEIVED_MS, (_rejection(),))
    assert RedriveFilter().takes_record(record)
    assert RedriveFilter(account_id="acct_1", livemode=False).takes_record(record)
    assert not RedriveFilter(account_id="acct_2").takes_record(record)
    assert not RedriveFilter(livemode=True).takes_record(record)
    assert RedriveFilter(rejected_from_ms=RECEIVED_MS).takes_record(record)
    assert not RedriveFilter(rejected_from_ms=RECEIVED_MS + 1).takes_record(record)
    assert not RedriveFilter(rejected_until_ms=RECEIVED_MS).takes_record(record)
    rejection = _rejection()
    assert RedriveFilter(codes=frozenset({"no_meter"})).takes(rejection)
    assert not RedriveFilter(codes=frozenset({"archived_meter"})).takes(rejection)
    assert RedriveFilter(event_names=frozenset({"tokens"})).takes(rejection)
    assert not RedriveFilter(meter_ids=frozenset({"mtr_1"})).takes(rejection)  # no meter had it


def test_the_original_timestamp_is_kept_or_the_request_time_when_there_was_none() -> None:
    stamped = _rejection(timestamp=format_rfc3339((NOW_S - 7200) * 1000))
    assert event_time(stamped, RECEIVED_MS) == NOW_S - 7200
    assert event_time(_rejection(), RECEIVED_MS) == RECEIVED_MS // 1000


def test_an_event_for_a_meter_created_since_is_accepted_with_its_identifier_and_time() -> None:
    outcome = check_again(_rejection(), RECEIVED_MS, _meter(), now_s=NOW_S)
    assert outcome == AcceptedEvent("mtr_1", "tokens", "id_1", "cus_1", "5", RECEIVED_MS // 1000)


def test_an_event_that_fails_again_carries_the_new_code_and_keeps_identifier_and_time() -> None:
    still_missing = check_again(_rejection(), RECEIVED_MS, None, now_s=NOW_S)
    assert isinstance(still_missing, EventRuleFailure)
    assert still_missing.async_code == "no_meter"
    inactive = check_again(_rejection(), RECEIVED_MS, _meter("inactive"), now_s=NOW_S)
    assert isinstance(inactive, EventRuleFailure)
    assert inactive.async_code == "archived_meter"
    again = rejected_again(_rejection(), RECEIVED_MS, inactive, _meter("inactive"))
    assert again.code == "archived_meter"
    assert again.meter_id == "mtr_1"
    assert again.identifier == "id_1"
    assert again.event["identifier"] == "id_1"
    assert again.event["timestamp"] == format_rfc3339(RECEIVED_MS // 1000 * 1000)
    # Re-driven once more later, it keeps the same time.
    assert event_time(again, RECEIVED_MS + 10 * 86_400_000) == RECEIVED_MS // 1000


def test_an_event_now_more_than_35_days_old_is_too_old() -> None:
    old = _rejection(timestamp=format_rfc3339((NOW_S - 36 * 86_400) * 1000))
    outcome = check_again(old, RECEIVED_MS, _meter(), now_s=NOW_S)
    assert isinstance(outcome, EventRuleFailure)
    assert outcome.async_code == "timestamp_too_far_in_past"


def test_a_wrong_payload_key_is_rejected_with_the_streams_code() -> None:
    wrong = _rejection("meter_event_value_not_found", payload={"stripe_customer_id": "cus_1"})
    outcome = check_again(wrong, RECEIVED_MS, _meter(), now_s=NOW_S)
    assert isinstance(outcome, EventRuleFailure)
    assert outcome.async_code == "meter_event_value_not_found"

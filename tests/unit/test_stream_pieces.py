"""Session tokens, token buckets and stream-event checks (pure)."""

from dataclasses import replace
from typing import Any, cast

import pytest

from ingest.edge.errors import AuthenticationFailed, InvalidRequest, RateLimited, SessionExpired
from ingest.edge.rate_limits import AccountLimiter, TokenBucket
from ingest.stream.events import check_stream_event, parse_stream_body
from ingest.stream.tokens import SessionClaims, UnknownSigningKey, read_claims, sign, verify
from meterflow.meters import Meter
from meterflow.meters import MeterStatus as Status
from meterflow.records.meter_events import AcceptedEvent
from meterflow.records.rejected import (
    RejectedRecord,
    Rejection,
    decode_rejected,
    encode_rejected,
)

CLAIMS = SessionClaims("acct_1", False, "mes_1", 1_000, 901_000, "k1")


def test_tokens_verify_only_with_their_key_and_before_expiry() -> None:
    token = sign(CLAIMS, b"secret")
    assert verify(token, {"k1": b"secret"}, now_ms=900_999) == CLAIMS
    with pytest.raises(SessionExpired):
        verify(token, {"k1": b"secret"}, now_ms=901_000)
    with pytest.raises(UnknownSigningKey):
        verify(token, {"k2": b"secret"}, now_ms=2_000)
    with pytest.raises(AuthenticationFailed):
        verify(token, {"k1": b"other"}, now_ms=2_000)
    claims_part = token.split(".")[0]
    other = sign(SessionClaims("acct_2", False, "mes_1", 1_000, 901_000, "k1"), b"x")
    with pytest.raises(AuthenticationFailed):  # someone else's claims with this signature
        verify(other.split(".")[0] + "." + token.split(".")[1], {"k1": b"secret"}, now_ms=2_000)
    assert read_claims(token)[1] == claims_part.removeprefix("mes_")
    for junk in ("", "mes_", "mes_a.b.c", "sk_test_x", "mes_!!!.x"):
        with pytest.raises(AuthenticationFailed):
            verify(junk, {"k1": b"secret"}, now_ms=2_000)


def test_token_bucket_refills_at_its_rate_and_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=10, burst=10, tokens=10, updated_s=0)
    assert bucket.take(10, 0) == 0
    assert bucket.take(5, 0) == pytest.approx(0.5)
    assert bucket.take(5, 0.5) == 0
    assert bucket.take(1, 0.5) == pytest.approx(0.1)


def test_account_limiter_keeps_accounts_and_modes_apart() -> None:
    now = [0.0]
    limiter = AccountLimiter("events", 2, clock=lambda: now[0])
    limiter.check("a", False, 2)
    with pytest.raises(RateLimited) as raised:
        limiter.check("a", False)
    assert raised.value.headers == {"Retry-After": "1"}
    limiter.check("a", True, 2)
    limiter.check("b", False, 2)
    now[0] = 0.5
    limiter.check("a", False)
    AccountLimiter("off", 0).check("a", False, 1e9)


METER = Meter(seq=1, id="mtr_1", livemode=False, event_name="tokens",
              display_name="T", formula="sum", customer_key="stripe_customer_id",
              value_key="value", event_time_window=None, status="active", created=0, updated=0,
              deactivated_at=None)  # fmt: skip
NOW = 1_717_243_200


def _event(**fields: Any) -> dict[str, Any]:
    return {"event_name": "tokens", "payload": {"stripe_customer_id": "c", "value": "3"}, **fields}


def test_stream_events_parse_and_get_identifiers() -> None:
    events = parse_stream_body({"events": [_event(identifier="x"), _event()]}, "idem")
    assert [e.identifier_given for e in events] == [True, False]
    again = parse_stream_body({"events": [_event(identifier="x"), _event()]}, "idem")
    assert events[1].identifier == again[1].identifier  # a retry regenerates the same one
    fresh = parse_stream_body({"events": [_event(), _event()]}, None)
    assert fresh[0].identifier != fresh[1].identifier
    with pytest.raises(InvalidRequest):
        parse_stream_body({"events": [_event(timestamp="2024-06-01")]})


@pytest.mark.parametrize(
    ("event", "meter_status", "code"),
    [
        (_event(event_name="other"), None, "no_meter"),
        (_event(), "inactive", "archived_meter"),
        (_event(payload={"value": "1"}), "active", "meter_event_no_customer_defined"),
        (_event(payload={"stripe_customer_id": "c"}), "active", "meter_event_value_not_found"),
        (_event(payload={"stripe_customer_id": "c", "value": "1e3"}), "active",
         "meter_event_invalid_value"),
        (_event(timestamp="2024-04-01T00:00:00Z"), "active", "timestamp_too_far_in_past"),
        (_event(timestamp="2024-06-01T12:06:00Z"), "active", "timestamp_in_future"),
    ],
)  # fmt: skip
def test_stream_event_rejections_carry_stripe_async_codes(
    event: dict[str, Any], meter_status: str | None, code: str
) -> None:
    (parsed,) = parse_stream_body({"events": [event]})
    meter = None if meter_status is None else replace(METER, status=cast(Status, meter_status))
    outcome = check_stream_event(parsed, meter, now_s=NOW)
    assert isinstance(outcome, Rejection)
    assert outcome.code == code
    assert outcome.event == event


def test_valid_stream_events_are_accepted_and_rejections_round_trip() -> None:
    (parsed,) = parse_stream_body({"events": [_event(identifier="i")]})
    accepted = check_stream_event(parsed, METER, now_s=NOW)
    assert accepted == AcceptedEvent("mtr_1", "tokens", "i", "c", "3", NOW)
    record = RejectedRecord("acct_1", True, 5, (Rejection("no_meter", "m", None, "n", "i", {}),))
    assert decode_rejected(encode_rejected(record)) == record

"""Webhooks, the pure part: signatures Stripe's SDK accepts, retry schedule, fairness, the wire
request, and endpoint parameters."""

from __future__ import annotations

from typing import Any

import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st

from aggregator.webhooks.http import DeliveryFailed, request_bytes, status_of
from aggregator.webhooks.policy import (
    AttemptResult,
    DueDelivery,
    RetryPolicy,
    after_attempt,
    pick_fairly,
    signature_header,
    wants,
)
from ingest.edge.errors import InvalidRequest
from ingest.edge.params import Params
from ingest.webhooks.api import (
    parse_changes,
    parse_enabled_events,
    parse_new_endpoint,
    parse_url,
)
from ingest.webhooks.store import new_secret

BODY = b'{"id":"evt_test_1","object":"v2.core.event","type":"v1.billing.meter.no_meter_found"}'


def test_stripe_sdk_verifies_the_signature() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    header = signature_header(secret, BODY, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    stripe.WebhookSignature.verify_header(BODY, header, secret, tolerance=None)
    assert header == stripe.WebhookSignature.generate_signature_header(
        BODY.decode(), secret, timestamp=1_700_000_000
    )


def test_stripe_sdk_rejects_a_wrong_secret_or_a_changed_body() -> None:
    secret = new_secret()
    header = signature_header(secret, BODY, 1_700_000_000)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(BODY, header, new_secret(), tolerance=None)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(BODY + b" ", header, secret, tolerance=None)


def test_non_ascii_bodies_are_signed_as_utf8() -> None:
    secret = new_secret()
    body = '{"message":"No meter was found matching event_name \u00e9v\u00e9nement"}'.encode()
    header = signature_header(secret, body, 1_700_000_000)
    stripe.WebhookSignature.verify_header(body, header, secret, tolerance=None)


def test_endpoints_receive_what_they_enabled() -> None:
    assert wants(["*"], "v1.billing.meter.no_meter_found")
    assert wants(
        ["billing.alert.triggered", "v1.billing.meter.no_meter_found"],
        "v1.billing.meter.no_meter_found",
    )
    assert not wants(["billing.alert.triggered"], "v1.billing.meter.no_meter_found")
    assert not wants([], "billing.alert.triggered")


POLICY = RetryPolicy(max_attempts=5, backoff_base_ms=30_000, backoff_max_ms=100_000)


def _result(attempt: int, error: str | None) -> AttemptResult:
    return AttemptResult(1, attempt, 0, 10, None if error else 200, error)


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    assert [POLICY.delay_ms(a) for a in range(1, 7)] == [
        30_000,
        60_000,
        100_000,
        100_000,
        100_000,
        100_000,
    ]
    assert POLICY.delay_ms(10_000) == 100_000


@given(st.integers(min_value=1, max_value=10**6))
def test_backoff_never_exceeds_the_cap(attempt: int) -> None:
    assert 30_000 <= POLICY.delay_ms(attempt) <= 100_000


def test_a_delivery_retries_until_its_last_attempt() -> None:
    assert after_attempt(_result(1, None), POLICY, 1000).outcome == "succeeded"
    retry = after_attempt(_result(2, "HTTP 500"), POLICY, 1000)
    assert (retry.outcome, retry.next_attempt_ms) == ("retrying", 61_000)
    last = after_attempt(_result(5, "connection refused"), POLICY, 1000)
    assert (last.outcome, last.next_attempt_ms) == ("failed", None)
    assert after_attempt(_result(5, None), POLICY, 1000).outcome == "succeeded"


def _due(*endpoints: str) -> list[DueDelivery]:
    return [DueDelivery(i, e) for i, e in enumerate(endpoints)]


def test_fair_picking_takes_endpoints_in_turn() -> None:
    due = _due("dead", "dead", "dead", "dead", "ok", "other")
    picked = pick_fairly(due, free_slots=3, in_flight={}, per_endpoint=4)
    assert [d.endpoint_id for d in picked] == ["dead", "ok", "other"]


def test_fair_picking_respects_the_per_endpoint_cap_and_what_is_in_flight() -> None:
    due = _due("dead", "dead", "dead", "ok", "ok")
    picked = pick_fairly(due, free_slots=10, in_flight={"dead": 1}, per_endpoint=2)
    assert sorted(d.delivery_id for d in picked) == [0, 3, 4]
    assert pick_fairly(due, free_slots=0, in_flight={}, per_endpoint=2) == []
    assert pick_fairly([], free_slots=5, in_flight={}, per_endpoint=2) == []


def test_the_request_on_the_wire() -> None:
    raw = request_bytes("http://127.0.0.1:8000/hooks?x=1", BODY, {"Stripe-Signature": "t=1,v1=a"})
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /hooks?x=1 HTTP/1.1"
    assert "Host: 127.0.0.1:8000" in lines
    assert f"Content-Length: {len(BODY)}" in lines
    assert "Connection: close" in lines
    assert "Stripe-Signature: t=1,v1=a" in lines
    assert body == BODY
    assert request_bytes("https://example.com", b"", {}).startswith(b"POST / HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("line", "status"),
    [(b"HTTP/1.1 200 OK\r\n", 200), (b"HTTP/1.0 500 Oops\r\n", 500), (b"HTTP/1.1 204\r\n", 204)],
)
def test_status_lines(line: bytes, status: int) -> None:
    assert status_of(line) == status


@pytest.mark.parametrize("line", [b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 2000 OK\r\n", b"\r\n"])
def test_junk_status_lines_fail_the_attempt(line: bytes) -> None:
    with pytest.raises(DeliveryFailed):
        status_of(line)


# -- endpoint parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9000/hook", "https://hooks.example.com/stripe", "http://[::1]:80/x"],
)
def test_http_urls_are_accepted(url: str) -> None:
    assert parse_url(Params({"url": url}), required=True) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "example.com/hook",
        "http:///nohost",
        "http://exa mple.com/",
        "http://example.com/\r\nX: y",
        "http://example.com:99999/",
        "javascript:alert(1)",
        "http://example.com/caf\u00e9",
    ],
)
def test_other_urls_are_rejected(url: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_url(Params({"url": url}), required=True)
    assert caught.value.param == "url"


def test_enabled_events_are_known_types_or_star() -> None:
    events = ["*", "v1.billing.meter.no_meter_found", "*"]
    assert parse_enabled_events(Params({"enabled_events": events}), required=True) == [
        "*",
        "v1.billing.meter.no_meter_found",
    ]
    with pytest.raises(InvalidRequest) as caught:
        parse_enabled_events(Params({"enabled_events": ["charge.succeeded"]}), required=True)
    assert caught.value.param == "enabled_events[0]"
    with pytest.raises(InvalidRequest) as missing:
        parse_enabled_events(Params({}), required=True)
    assert missing.value.code == "parameter_missing"
    assert parse_enabled_events(Params({}), required=False) is None


def test_create_and_update_parameters() -> None:
    new = parse_new_endpoint(
        {"url": "http://127.0.0.1/h", "enabled_events": ["*"], "metadata": {"team": "billing"}}
    )
    assert (new.url, new.enabled_events, new.description, new.metadata) == (
        "http://127.0.0.1/h",
        ["*"],
        None,
        {"team": "billing"},
    )
    changes = parse_changes(
        {"disabled": "true", "description": "", "metadata": {"a": "", "b": "1"}}
    )
    assert changes.status == "disabled"
    assert changes.unset_description
    assert (changes.metadata_set, changes.metadata_unset) == ({"b": "1"}, ["a"])
    assert parse_changes({"disabled": False}).status == "enabled"
    assert parse_changes({}).status is None
    bad: list[dict[str, Any]] = [{"disabled": "yes"}, {"connect": "true"}, {"secret": "x"}]
    for params in bad:
        with pytest.raises(InvalidRequest):
            parse_changes(params)

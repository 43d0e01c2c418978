"""Request bytes the generator sends: valid HTTP/1.1 with the body the API expects."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

import httptools
import orjson
import pytest

from loadtest.client import HttpClient, HttpResponse
from loadtest.plan import AccountPlan, RunSetup
from loadtest.stream_sessions import StreamSessions, StreamUnavailable, session_from
from loadtest.traffic import PlannedEvent
from loadtest.wire import RequestEncoder, rfc3339

EVENT = PlannedEvent("new", 0, "tokens", "cus_1", "12.50", 1_717_243_200, "run-0-1")


class _Capture:
    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.complete = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete += 1


def parse(request: bytes) -> _Capture:
    capture = _Capture()
    httptools.HttpRequestParser(capture).feed_data(request)
    assert capture.complete == 1
    return capture


def test_v2_event_is_json_with_an_rfc3339_timestamp() -> None:
    sent = parse(RequestEncoder("http://127.0.0.1:8080").v2_event("sk_test_k", EVENT))
    assert sent.url == b"/v2/billing/meter_events"
    assert sent.headers[b"authorization"] == b"Bearer sk_test_k"
    assert sent.headers[b"content-type"] == b"application/json"
    assert sent.headers[b"host"] == b"127.0.0.1:8080"
    assert orjson.loads(sent.body) == {
        "event_name": "tokens",
        "payload": {"value": "12.50", "stripe_customer_id": "cus_1"},
        "identifier": "run-0-1",
        "timestamp": "2024-06-01T12:00:00Z",
    }


def test_v1_event_is_a_stripe_form() -> None:
    sent = parse(RequestEncoder("http://127.0.0.1:8080").v1_event("sk_test_k", EVENT))
    assert sent.url == b"/v1/billing/meter_events"
    assert sent.headers[b"content-type"] == b"application/x-www-form-urlencoded"
    assert dict(parse_qsl(sent.body.decode(), strict_parsing=True)) == {
        "event_name": "tokens",
        "identifier": "run-0-1",
        "timestamp": "1717243200",
        "payload[value]": "12.50",
        "payload[stripe_customer_id]": "cus_1",
    }


def test_invalid_values_survive_form_encoding() -> None:
    odd = PlannedEvent("invalid", 0, "tokens", None, " 7", 1, "x", "bad_value")
    sent = parse(RequestEncoder("http://h:1").v1_event("k", odd))
    assert dict(parse_qsl(sent.body.decode(), keep_blank_values=True))["payload[value]"] == " 7"


def test_stream_batch_uses_the_session_token() -> None:
    encoder = RequestEncoder("http://127.0.0.1:8080")
    sent = parse(encoder.stream_batch("tok_123", [EVENT, EVENT]))
    assert sent.url == b"/v2/billing/meter_event_stream"
    assert sent.headers[b"authorization"] == b"Bearer tok_123"
    assert [e["identifier"] for e in orjson.loads(sent.body)["events"]] == ["run-0-1"] * 2


def test_consecutive_requests_parse_on_one_connection() -> None:
    encoder = RequestEncoder("http://127.0.0.1:8080")
    capture = _Capture()
    parser = httptools.HttpRequestParser(capture)
    parser.feed_data(encoder.v2_event("k", EVENT) + encoder.get("/v1/x", "k", {"a": "b c"}))
    assert capture.complete == 2
    assert capture.url.endswith(b"/v1/x?a=b+c")


def test_rfc3339_is_utc_seconds() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"


def test_a_404_session_means_no_stream() -> None:
    with pytest.raises(StreamUnavailable, match="stream endpoint not available"):
        session_from(HttpResponse(404, b'{"error":{"code":"not_found"}}'), 0.0)


def test_a_session_answer_gives_token_and_expiry() -> None:
    body = b'{"authentication_token":"tok","expires_at":"2024-06-01T12:15:00.000Z"}'
    assert session_from(HttpResponse(200, body), 0.0) == ("tok", 1_717_244_100.0)


class _SessionServer(HttpClient):
    """Answers session requests in memory, one at a time like a real connection."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 9)
        self.issued = 0
        self.busy = False

    async def request(self, data: bytes) -> HttpResponse:
        assert not self.busy, "two requests at once on one connection"
        self.busy = True
        await asyncio.sleep(0.01)
        self.busy = False
        self.issued += 1
        body = b'{"authentication_token":"tok%d","expires_at":"2099-01-01T00:00:00Z"}'
        return HttpResponse(200, body % self.issued)


async def test_lanes_renewing_together_share_one_new_session() -> None:
    setup = RunSetup("r", "http://127.0.0.1:9", (AccountPlan("a", "sk_test_a", ()),), 1)
    server = _SessionServer()
    sessions = StreamSessions(setup, RequestEncoder(setup.base_url), server)
    first = await sessions.token(0)
    renewed = await asyncio.gather(*(sessions.renew(0, stale=first) for _ in range(5)))
    assert first == "tok1"
    assert set(renewed) == {"tok2"}
    assert server.issued == 2

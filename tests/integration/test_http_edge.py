"""The HTTP edge under hostile clients: limits on the request head, deadlines, a connection limit.

Each refusal must be an answer in Stripe's error shape with ``Connection: close`` (or, when the
client is still sending, at least a prompt close), counted in ``meterflow_http_refusals_total``;
and ingest keeps serving everyone else meanwhile. Timeouts are short here so that the tests are;
every wait has a deadline a little past the configured one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deploy.ports import free_port
from meterflow.settings import Settings
from tests.fixtures.hostile_http import RawResponse, metric_samples
from tests.fixtures.ingest_server import running_ingest
from tests.fixtures.meter_events import wait_until
from tests.fixtures.raw_clients import RawConnection, connected, connections, head

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 1.5
KEEP_ALIVE_S = 1
MARGIN_S = 1.5  # scheduling slack on a busy 2-core machine; far below any unbounded wait
DEFAULTS = Settings().ingest
METERS = "/v1/billing/meters"
V2_EVENTS = "/v2/core/events"
SLOWLORIS_CONNECTIONS = 200


@pytest.fixture
def edge_url(ingest_settings: Settings) -> Iterator[str]:
    settings = ingest_settings.with_overrides(
        header_timeout_s=HEADER_TIMEOUT_S,
        body_timeout_s=BODY_TIMEOUT_S,
        keep_alive_timeout_s=KEEP_ALIVE_S,
    )
    with running_ingest(settings) as url:
        yield url


def stripe_error(path: str, answer: RawResponse | None, status: int) -> dict[str, Any]:
    """The answer's error, checked: ``status``, JSON in the shape of the path's API version,
    a request id, and the connection closing."""
    assert answer is not None, "closed without an answer"
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers["content-type"] == "application/json", answer.headers
    assert answer.headers["connection"] == "close", answer.headers
    assert answer.headers["request-id"].startswith("req_"), answer.headers
    error: dict[str, Any] = answer.json()["error"]
    assert error["message"], error
    if path.startswith("/v2/"):
        assert set(error) == {"type", "code", "message"}, error
    return error


async def refusals(url: str) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
        text = (await http.get("/metrics")).text
    return {
        labels["reason"]: value
        for labels, value in metric_samples(text, "meterflow_http_refusals_total")
    }


async def test_a_request_line_over_the_limit_is_414_in_stripe_shape(edge_url: str) -> None:
    limit = DEFAULTS.max_request_line_bytes
    for path in (METERS, V2_EVENTS):
        # One byte over, and the line of over 64 KB (a plain-text 400 before).
        for length in (limit + 1, 70_000):
            async with connected(edge_url) as connection:
                target = f"{path}?q=" + "a" * (length - len(path) - 3)
                assert await connection.send(head("GET", target))
                error = stripe_error(path, await connection.answer(5), 414)
                if path.startswith("/v2/"):
                    assert error["code"] == "request_line_too_long"
                assert await connection.closed(5)
    # At the limit the request reaches the API, which wants a key.
    async with connected(edge_url) as connection:
        target = f"{METERS}?q=" + "a" * (limit - len(METERS) - 3)
        assert await connection.send(head("GET", target))
        answer = await connection.answer(5)
        assert answer is not None
        assert answer.status == 401, answer
    assert (await refusals(edge_url))["request_line_too_long"] == 4


async def test_request_headers_over_the_limits_are_431_in_stripe_shape(edge_url: str) -> None:
    size, count = DEFAULTS.max_header_bytes, DEFAULTS.max_header_count
    too_large = {
        "one large header": {"X-Large": "a" * (size + 1)},
        "many headers, too many bytes together": {f"X-{i}": "a" * 400 for i in range(50)},
        "one header too many": {f"X-{i}": "1" for i in range(count)},  # with Host: count + 1
    }
    for case, headers in too_large.items():
        for path in (METERS, V2_EVENTS):
            async with connected(edge_url) as connection:
                assert await connection.send(head("GET", path, headers))
                error = stripe_error(path, await connection.answer(5), 431)
                assert "header" in error["message"], (case, error)
                if path.startswith("/v2/"):
                    assert error["code"] == "request_headers_too_large"
                assert await connection.closed(5), case
    # Exactly the number allowed (Host included), and just under the byte limit: served.
    at_limit = {f"X-{i}": "a" * (size // count - 12) for i in range(count - 1)}
    async with connected(edge_url) as connection:
        assert await connection.send(head("GET", "/healthz", at_limit))
        answer = await connection.answer(5)
        assert answer is not None
        assert answer.status == 200, answer
    counted = await refusals(edge_url)
    assert counted["headers_too_large"] == 4
    assert counted["too_many_headers"] == 2


async def test_100000_headers_are_refused_after_the_first_few_kilobytes(edge_url: str) -> None:
    """The issue's 100,000 headers (11 MB), sent without waiting: refused at the limit."""
    value = b"v" * 90
    lines = b"".join(b"X-Header-%06d: %s\r\n" % (i, value) for i in range(100_000))
    started = time.monotonic()
    sent = 0
    async with connected(edge_url) as connection:
        if await connection.send(head("GET", METERS, finished=False)):
            for offset in range(0, len(lines), 65_536):
                if not await connection.send(lines[offset : offset + 65_536]):
                    break
                sent += 65_536
        # The 431 may be lost to the reset of a connection with unread data; what matters is
        # the close, long before the 11 MB were read (what was sent lies in socket buffers).
        answer = await connection.answer(5)
        if answer is not None:
            stripe_error(METERS, answer, 431)
        assert await connection.closed(5)
    assert time.monotonic() - started < 5
    assert sent < len(lines) // 2, f"{sent} of {len(lines)} bytes of headers were taken"
    counted = await refusals(edge_url)
    assert counted.get("too_many_headers", 0) + counted.get("headers_too_large", 0) == 1


async def test_slowloris_connections_are_closed_within_the_header_timeout(edge_url: str) -> None:
    async def slowloris(connection_index: int, connection: RawConnection) -> float:
        assert await connection.send(head("GET", f"{METERS}?c={connection_index}", finished=False))
        started = time.monotonic()
        while time.monotonic() - started < HEADER_TIMEOUT_S + MARGIN_S:
            # A header line every quarter second: never idle, never finished.
            if not await connection.send(b"X-Drip: 1\r\n") or await connection.closed(0.25):
                return time.monotonic() - started
        return float("inf")

    async with (
        connections(edge_url, SLOWLORIS_CONNECTIONS) as held,
        httpx.AsyncClient(base_url=edge_url, timeout=5.0) as http,
    ):
        attack = asyncio.gather(*(slowloris(i, c) for i, c in enumerate(held)))
        # Everyone else is served meanwhile.
        await asyncio.sleep(HEADER_TIMEOUT_S / 2)
        assert (await http.get("/healthz")).status_code == 200
        closed_after = await attack
    # Each deadline runs from its connection, opened before the attack's clock started.
    assert max(closed_after) <= HEADER_TIMEOUT_S + MARGIN_S, max(closed_after)
    assert (await refusals(edge_url))["header_timeout"] == SLOWLORIS_CONNECTIONS


async def test_an_unfinished_head_is_answered_408_and_a_silent_connection_closed(
    edge_url: str,
) -> None:
    for path in (METERS, V2_EVENTS):
        async with connected(edge_url) as connection:
            assert await connection.send(head("GET", path, finished=False))
            error = stripe_error(path, await connection.answer(HEADER_TIMEOUT_S + MARGIN_S), 408)
            if path.startswith("/v2/"):
                assert error["code"] == "request_timeout"
            assert await connection.closed(1)
    async with connected(edge_url) as silent:
        started = time.monotonic()
        assert await silent.answer(HEADER_TIMEOUT_S + MARGIN_S) is None
        assert time.monotonic() - started >= HEADER_TIMEOUT_S - 0.5


async def test_a_body_that_stops_or_drips_is_answered_408(edge_url: str) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "200"}
    for path in ("/v1/billing/meter_events", "/v2/billing/meter_events"):
        # Stops after 20 of 200 bytes.
        async with connected(edge_url) as connection:
            assert await connection.send(head("POST", path, form) + b"event_name=x&payload")
            stripe_error(path, await connection.answer(BODY_TIMEOUT_S + MARGIN_S), 408)
            assert await connection.closed(1)
    # Drips a byte every 0.2 s: the deadline is for the whole body, not between bytes.
    async with connected(edge_url) as connection:
        started = time.monotonic()
        assert await connection.send(head("POST", "/v1/billing/meter_events", form))
        while time.monotonic() - started < BODY_TIMEOUT_S + MARGIN_S:
            if not await connection.send(b"a") or await connection.closed(0.2):
                break
        assert time.monotonic() - started < BODY_TIMEOUT_S + MARGIN_S
    assert (await refusals(edge_url))["body_timeout"] == 3


async def test_an_idle_keep_alive_connection_is_closed(edge_url: str) -> None:
    async with connected(edge_url) as connection:
        assert await connection.send(head("GET", "/healthz"))
        answer = await connection.answer(5)
        assert answer is not None
        assert answer.status == 200
        assert "connection" not in answer.headers  # kept alive
        started = time.monotonic()
        assert await connection.closed(KEEP_ALIVE_S + MARGIN_S)
        assert time.monotonic() - started >= KEEP_ALIVE_S - 0.5


async def test_an_unparsable_request_is_400_in_stripe_shape(edge_url: str) -> None:
    for raw in (
        b"GET /v1/billing/meters HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 a TLS hello\r\n\r\n",
        b"GET /v1/billing/meters HTTP/9.9\r\n\r\n",
    ):
        async with connected(edge_url) as connection:
            assert await connection.send(raw)
            error = stripe_error(METERS, await connection.answer(5), 400)
            assert error["type"] == "invalid_request_error"
            assert await connection.closed(1)
    assert (await refusals(edge_url))["malformed"] == 3


async def test_connections_past_the_limit_get_503_with_retry_after(
    ingest_settings: Settings,
) -> None:
    limit = 10
    settings = ingest_settings.with_overrides(
        http_port=free_port(), max_connections=limit, header_timeout_s=30.0
    )
    with running_ingest(settings) as url:
        async with connections(url, limit) as held:
            # Each held connection is accepted before the next one's turn.
            for connection in held:
                assert await connection.send(head("GET", "/healthz"))
                assert (await connection.answer(5)) is not None
            for path in (METERS, V2_EVENTS):
                async with connected(url) as refused:
                    assert await refused.send(head("GET", path))
                    answer = await refused.answer(5)
                    error = stripe_error(path, answer, 503)
                    assert error["type"] == "api_error"
                    assert "too many open connections" in error["message"]
                    assert answer is not None
                    assert answer.headers["retry-after"] == "1"
                    assert await refused.closed(1)

        async def served() -> bool:
            async with connected(url) as connection:
                assert await connection.send(head("GET", "/healthz"))
                answer = await connection.answer(5)
                return answer is not None and answer.status == 200

        # Once the held connections are gone, new ones are served again.
        await wait_until(served, 5, "a connection under the limit to be served")
        assert (await refusals(url))["connection_limit"] == 2

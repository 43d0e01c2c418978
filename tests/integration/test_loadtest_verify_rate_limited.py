"""The load test's verification against a server that rate limits it: it waits out each 429 as
``Retry-After`` asks instead of counting the check as a mismatch. A bare HTTP server on loopback
stands in for ingest: 429 for the first second, then empty summaries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from deploy.ports import LOOPBACK
from loadtest.expected_totals import ExpectedTotals, MeterShape
from loadtest.plan import new_run_id
from loadtest.provision import noop_setup
from loadtest.verify import verify_run

pytestmark = pytest.mark.integration

_LIMITED_S = 1.0
_RATE_LIMITED = orjson.dumps(
    {"error": {"type": "rate_limit_error", "code": "rate_limit", "message": "Too many requests"}}
)
_EMPTY_SUMMARY = orjson.dumps(
    {"object": "list", "data": [{"aggregated_value": 0}], "has_more": False}
)


class _LimitedServer:
    """Answers every request 429 with ``Retry-After: 1`` until ``_LIMITED_S`` after starting."""

    def __init__(self) -> None:
        self.limited_until = time.monotonic() + _LIMITED_S
        self.refused = 0
        self.answered = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")  # GET requests: no body
                if time.monotonic() < self.limited_until:
                    self.refused += 1
                    status, extra, body = (
                        b"429 Too Many Requests",
                        b"Retry-After: 1\r\n",
                        _RATE_LIMITED,
                    )
                else:
                    self.answered += 1
                    status, extra, body = b"200 OK", b"", _EMPTY_SUMMARY
                writer.write(
                    b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    b"%s\r\n%s" % (status, len(body), extra, body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def limited_server() -> AsyncIterator[tuple[str, _LimitedServer]]:
    state = _LimitedServer()
    server = await asyncio.start_server(state.handle, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://{LOOPBACK}:{port}", state
    finally:
        server.close()
        await server.wait_closed()


async def test_verification_waits_out_429s_instead_of_failing(
    limited_server: tuple[str, _LimitedServer],
) -> None:
    base_url, server = limited_server
    setup = noop_setup(base_url, new_run_id(), customers=3)
    expected = ExpectedTotals.for_meters(
        {
            (index, meter.event_name): MeterShape(meter.formula, meter.window)
            for index, account in enumerate(setup.accounts)
            for meter in account.meters
        }
    )

    # A deadline shorter than the limited second: only waiting out the 429s can pass.
    verification = await verify_run(setup, expected, timeout_s=0.1, window_sample=0, connections=2)

    assert verification.ok, verification.text()
    assert verification.matched == verification.checks == 3 * len(setup.accounts[0].meters)
    assert server.refused >= 1
    assert server.answered == verification.checks

"""The load test's verification against a server that rate limits it: it waits out each 429 as
``Retry-After`` asks instead of counting the check as a mismatch. A bare HTTP server on loopback
stands in for ingest: 429 for the first second, then empty summaries."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson
import pytest

from loadtest.expected_totals import ExpectedTotals, MeterShape
from loadtest.plan import new_run_id
from loadtest.provision import noop_setup
from loadtest.verify import verify_run
from tests.fixtures.summary_stand_in import Answer, summary_stand_in

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

    def answer(self, head: bytes) -> Answer:
        if time.monotonic() < self.limited_until:
            self.refused += 1
            return b"429 Too Many Requests", b"Retry-After: 1\r\n", _RATE_LIMITED
        self.answered += 1
        return b"200 OK", b"", _EMPTY_SUMMARY


@pytest.fixture
async def limited_server() -> AsyncIterator[tuple[str, _LimitedServer]]:
    state = _LimitedServer()
    async with summary_stand_in(state.answer) as url:
        yield url, state


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

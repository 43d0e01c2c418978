"""The load test's verification of series with unresolved events (sent, never answered: counted by
the server at most once, maybe not): a raw ``sum`` or ``count`` total must lie between what was
acknowledged and that plus the unresolved events; other meters' series are left out. A bare HTTP
server on loopback stands in for ingest, answering each (meter, customer) with a chosen total."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from loadtest.expected_totals import ExpectedTotals, MeterShape
from loadtest.plan import RunSetup, customer_id, new_run_id
from loadtest.provision import noop_setup
from loadtest.verify import verify_run
from tests.fixtures.summary_stand_in import Answer, summary_stand_in

pytestmark = pytest.mark.integration


class _SummaryServer:
    """``event_summaries`` answering ``totals[(meter id, customer)]``, 0 for the rest."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], float] = {}

    def answer(self, head: bytes) -> Answer:
        target = urlsplit(head.split(b" ", 2)[1].decode())
        meter_id = target.path.split("/")[4]
        customer = parse_qs(target.query)["customer"][0]
        value = self.totals.get((meter_id, customer), 0.0)
        body = orjson.dumps(
            {"object": "list", "data": [{"aggregated_value": value}], "has_more": False}
        )
        return b"200 OK", b"", body


@pytest.fixture
async def summaries() -> AsyncIterator[tuple[str, _SummaryServer]]:
    state = _SummaryServer()
    async with summary_stand_in(state.answer) as url:
        yield url, state


def _expected(setup: RunSetup) -> ExpectedTotals:
    return ExpectedTotals.for_meters(
        {
            (index, meter.event_name): MeterShape(meter.formula, meter.window)
            for index, account in enumerate(setup.accounts)
            for meter in account.meters
        }
    )


async def test_unresolved_events_count_at_most_once_and_acknowledged_ones_exactly_once(
    summaries: tuple[str, _SummaryServer],
) -> None:
    base_url, server = summaries
    setup = noop_setup(base_url, new_run_id(), customers=3)
    count, total, windowed = setup.accounts[0].meters[:3]
    assert (count.formula, total.formula, count.window, total.window) == (
        "count",
        "sum",
        None,
        None,
    )
    assert windowed.window is not None
    first, second, third = (customer_id(setup.run_id, n) for n in range(3))
    expected = _expected(setup)
    now = int(time.time())
    for n, (meter, customer, value) in enumerate(
        [(count, first, "1"), (count, first, "1"), (count, second, "1"), (total, first, "5")]
    ):
        expected.acknowledge((0, meter.event_name, customer), f"ack-{n}", value, now)
    for meter, customer, value in [
        (count, first, "1"),
        (count, second, "1"),
        (count, third, "1"),
        (total, first, "7"),
        (windowed, first, "3"),
    ]:
        expected.unconfirm((0, meter.event_name, customer), value)

    def shown(meter_id: str, customer: str, value: float) -> None:
        server.totals[(meter_id, customer)] = value

    # Each unresolved event either counted once or not at all: everything within bounds.
    shown(count.meter_id, first, 3)
    shown(count.meter_id, second, 1)
    shown(count.meter_id, third, 0)
    shown(total.meter_id, first, 12)
    checked = await verify_run(setup, expected, timeout_s=0.1, window_sample=0, connections=2)
    assert checked.ok, checked.text()
    assert (checked.ranged_series, checked.excluded_series) == (4, 1)
    assert checked.checks == 3 * 4 - 1

    # Counted twice (one more than every unresolved event), an acknowledged event missing, a sum
    # below what was acknowledged: each is caught.
    shown(count.meter_id, third, 2)
    shown(count.meter_id, second, 0)
    shown(total.meter_id, first, 4.5)
    checked = await verify_run(setup, expected, timeout_s=0.1, window_sample=0, connections=2)
    assert not checked.ok
    assert (checked.doubled, checked.lost, checked.short, checked.excess) == (1, 1, 2, 1)
    assert checked.mismatched == 3

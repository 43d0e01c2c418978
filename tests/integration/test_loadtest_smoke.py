"""The load generator against real ingest, Kafka, aggregator and PostgreSQL, then verification.

A small bounded run (duplicates, invalid and back-dated events, raw and pre-aggregated meters of
every formula) must end with the summaries showing exactly what was acknowledged. A server
without the stream endpoint must be reported as such.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from deploy.ports import LOOPBACK
from loadtest.generator import run_load
from loadtest.plan import (
    Bounds,
    LoadConfig,
    MeterCounts,
    Mode,
    TrafficMix,
    meter_shapes,
    new_run_id,
)
from loadtest.provision import noop_setup, provision
from loadtest.stream_sessions import StreamUnavailable
from loadtest.verify import verify_run
from tests.conftest import AccountFactory

pytestmark = pytest.mark.integration

EVENTS = 300
MIX = TrafficMix(duplicate_ratio=0.1, invalid_ratio=0.1, late_ratio=0.2)


@pytest.mark.parametrize("mode", ["v2", "v1", "stream"])
@pytest.mark.usefixtures("aggregator")
async def test_summaries_show_exactly_what_was_acknowledged(
    mode: Mode, ingest_url: str, make_account: AccountFactory
) -> None:
    accounts = [await make_account("loadtest-a"), await make_account("loadtest-b")]
    setup = await provision(
        ingest_url,
        [a.secret_key for a in accounts],
        meter_shapes(MeterCounts(raw=3, windowed=3)),
        customers=12,
        run_id=new_run_id(),
    )
    config = LoadConfig(
        bounds=Bounds(count=EVENTS, duration_s=60.0),
        mode=mode,
        workers=0,
        connections=4,
        batch_size=20,
        mix=MIX,
    )

    result = await run_load(config, setup, label=f"smoke-{mode}", out=None)

    report = result.report
    assert report["events"] == EVENTS
    assert report["problems"] == {}, report["samples"]
    outcomes = report["outcomes"]
    assert outcomes["accepted"] > EVENTS // 2
    if mode == "stream":
        assert outcomes["invalid_sent"] > 0
        assert outcomes["duplicate_sent"] > 0
    else:
        assert outcomes["invalid_rejected"] > 0
        assert outcomes.get("duplicate_accepted", 0) + outcomes.get("duplicate_rejected", 0) > 0
    assert result.expected is not None
    assert any(key in result.expected.windowed for key in result.expected.series())

    verification = await verify_run(
        setup, result.expected, unresolved=result.unresolved, timeout_s=60.0, window_sample=6
    )

    assert verification.lost == 0, verification.text()
    assert verification.doubled == 0, verification.text()
    assert verification.ok, verification.text()
    assert verification.excluded_series == 0


@pytest.fixture
async def server_without_stream() -> AsyncIterator[str]:
    """A server that answers every request 404, as meterflow did before it had the stream."""
    not_found = b'{"error":{"type":"invalid_request_error","code":"not_found","message":"no"}}'

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length:")),
            0,
        )  # fmt: skip
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(not_found), not_found)
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://{LOOPBACK}:{port}"


async def test_a_missing_stream_endpoint_is_reported_not_pretended(
    server_without_stream: str,
) -> None:
    setup = noop_setup(server_without_stream, new_run_id(), customers=4)
    config = LoadConfig(bounds=Bounds(count=10), mode="stream", workers=0, connections=1)
    with pytest.raises(StreamUnavailable, match=r"stream endpoint not available.*404"):
        await run_load(config, setup, out=None)

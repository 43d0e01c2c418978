"""Unfinished requests with huge headers cannot grow ingest's memory.

The issue's attack: ten connections, no API key, each sending 20 MB of header bytes and never
finishing the head. Before the header limits, ingest buffered all of it (51 MB to 278 MB of
RSS). Now each connection is refused after the first read past the limit, so the resident set
of a real ``meterflow ingest`` process, and its peak during the attack (``VmHWM``, reset just
before), stay within a few MB.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from meterflow.settings import Settings
from tests.fixtures.ingest_process import ingest_process
from tests.fixtures.raw_clients import connected, head

pytestmark = pytest.mark.integration

CONNECTIONS = 10
HEADER_BYTES = 20 * 1024 * 1024
PIECE = 64 * 1024
ALLOWED_GROWTH_KIB = 6 * 1024
ATTACK_TIMEOUT_S = 30.0


async def _huge_unfinished_head(url: str) -> int:
    """Send up to 20 MB of one header's value, never ending the head; return the bytes taken
    before ingest closed the connection."""
    sent = 0
    async with connected(url) as connection:
        if not await connection.send(head("GET", "/v1/billing/meters", finished=False)):
            return sent
        if not await connection.send(b"X-Filler: "):
            return sent
        piece = b"a" * PIECE
        while sent < HEADER_BYTES:
            if not await connection.send(piece):
                break
            sent += PIECE
        # Unfinished: wait for ingest to close it (or the attack's deadline).
        await connection.closed(ATTACK_TIMEOUT_S)
    return sent


@pytest.mark.timeout(120)
async def test_ten_unfinished_requests_with_huge_headers_keep_rss_flat(
    ingest_settings: Settings, tmp_path: Path
) -> None:
    async with ingest_process(ingest_settings, tmp_path / "ingest.log") as ingest:
        async with httpx.AsyncClient(base_url=ingest.url, timeout=5.0) as http:
            for _ in range(50):  # warm up: the first requests allocate for good
                assert (await http.get("/healthz")).status_code == 200
        ingest.reset_peak()
        rss_before, peak_before = ingest.memory_kib()
        started = time.monotonic()
        sent = await asyncio.wait_for(
            asyncio.gather(*(_huge_unfinished_head(ingest.url) for _ in range(CONNECTIONS))),
            ATTACK_TIMEOUT_S + 10,
        )
        elapsed = time.monotonic() - started
        rss_after, peak_after = ingest.memory_kib()
        async with httpx.AsyncClient(base_url=ingest.url, timeout=5.0) as http:
            assert (await http.get("/healthz")).status_code == 200
    growth = {"rss": rss_after - rss_before, "peak": peak_after - max(peak_before, rss_before)}
    # ``sent`` is what the sockets' buffers took before the reset, not what ingest read.
    assert max(growth.values()) < ALLOWED_GROWTH_KIB, (growth, sent, elapsed)
    assert elapsed < 10, elapsed

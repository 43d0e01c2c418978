"""Several ingest processes on one port (``METERFLOW_HTTP_REUSE_PORT``): both bind it and stay up,
and when one is SIGKILLed the other goes on answering every new connection."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import httpx
import pytest

from meterflow.settings import Settings
from tests.fixtures.ingest_process import ingest_process
from tests.fixtures.meter_events import wait_until

pytestmark = pytest.mark.integration

_CONNECTIONS = 50


def _shared(settings: Settings) -> Settings:
    return settings.with_overrides(reuse_port=True)


def _gone(pid: int) -> bool:
    """Exited: no process, or a zombie its parent has not reaped yet."""
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" in status.read_text()


async def _answered_on_fresh_connections(url: str) -> int:
    """How many of ``_CONNECTIONS`` requests, each on a new connection, got a 200."""
    answered = 0
    for _ in range(_CONNECTIONS):
        async with httpx.AsyncClient(base_url=url, timeout=2.0) as http:
            with contextlib.suppress(httpx.TransportError):
                answered += (await http.get("/healthz")).status_code == 200
    return answered


async def test_two_processes_share_the_port_and_one_survives_the_others_death(
    ingest_settings: Settings, tmp_path: Path
) -> None:
    settings = _shared(ingest_settings)
    async with (
        ingest_process(settings, tmp_path / "first.log") as first,
        ingest_process(settings, tmp_path / "second.log") as second,
    ):
        assert first.pid != second.pid
        assert await _answered_on_fresh_connections(first.url) == _CONNECTIONS
        # Without SO_REUSEPORT the second would have exited on its bind by now.
        assert not _gone(first.pid)
        assert not _gone(second.pid)
        os.kill(first.pid, signal.SIGKILL)

        async def first_gone() -> bool:
            return _gone(first.pid)

        await wait_until(first_gone, 10.0, "the killed ingest to exit", 0.05)
        assert await _answered_on_fresh_connections(second.url) == _CONNECTIONS

"""``meterflow up`` with ``METERFLOW_INGEST_PROCESSES=2``: two ingest children on the API port,
each with its own metrics port and supervised alone. A SIGKILLed one is restarted while the other
answers every new connection, including while the restarted one is starting."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest

from deploy.ports import LOOPBACK, free_port
from deploy.processes import is_running
from tests.fixtures.launcher import meterflow_up, stack_env, stack_ports
from tests.fixtures.meter_events import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

_RESTART_S = 60.0


def _consecutive_free_ports(taken: set[int]) -> int:
    """A port that, like the next one, was free a moment ago and is not in ``taken``."""
    while True:
        port = free_port()
        if {port, port + 1} & taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port + 1))
            except OSError:
                continue
        return port


async def _status(url: str) -> str:
    """The status of a GET on a connection of its own, or the error instead."""
    async with httpx.AsyncClient(timeout=2.0) as http:
        try:
            return str((await http.get(url)).status_code)
        except httpx.HTTPError as exc:
            return repr(exc)


async def _poll(url: str, until: asyncio.Event) -> list[str]:
    seen: list[str] = []
    while not until.is_set():
        seen.append(await _status(url))
        await asyncio.sleep(0.02)
    return seen


async def test_two_ingest_processes_share_the_port_and_a_killed_one_comes_back(
    tmp_path: Path,
) -> None:
    ports = stack_ports()
    first = _consecutive_free_ports(set(ports.values()))
    own = [f"http://127.0.0.1:{first + n}" for n in range(2)]
    env = stack_env(tmp_path / "data", ports) | {
        "METERFLOW_INGEST_PROCESSES": "2",
        "METERFLOW_INGEST_METRICS_PORT": str(first),
    }
    async with meterflow_up(env, tmp_path / "up.log") as stack:
        text = stack.output.text()
        for n, url in enumerate(own, start=1):
            assert f"metrics:    {url}/metrics (ingest {n})" in text
            assert await _status(f"{url}/readyz") == "200"
        started = await stack.output.expect(r"ingest 1 started \(pid (\d+)\)", 5)
        pid = int(started.group(1))

        os.kill(pid, signal.SIGKILL)

        async def gone() -> bool:
            return not is_running(pid)

        await wait_until(gone, 10.0, "the killed ingest to exit", 0.05)
        mark = len(stack.output.lines)
        back = asyncio.Event()
        polling = asyncio.create_task(_poll(f"{stack.url}/readyz", back))
        death = await stack.output.expect(r"ingest 1 \(pid (\d+)\) (.*); restarting it", 10)
        assert death.groups() == (str(pid), "was killed by SIGKILL")
        again = await stack.output.expect(r"ingest 1 started \(pid (\d+)\)", _RESTART_S, mark)
        assert int(again.group(1)) != pid

        async def ready() -> bool:
            return await _status(f"{own[0]}/readyz") == "200"

        await wait_until(ready, _RESTART_S, "the restarted ingest 1 to be ready")
        back.set()
        statuses = await polling
        assert len(statuses) > 5
        # The other process answered everything meanwhile; the restarted one took no connection
        # before it could serve it.
        assert set(statuses) == {"200"}, statuses

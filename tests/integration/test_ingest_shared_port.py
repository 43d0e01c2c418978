"""Several ingest processes on one port (``METERFLOW_HTTP_REUSE_PORT``): both serve requests on it,
each counts its own in the metrics on its own port (``METERFLOW_INGEST_METRICS_PORT``), the HTTP
edge's limits hold on the shared socket, and when one is SIGKILLed the other answers every new
connection. A process joins the port's listeners only once it can serve."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.ports import free_port
from deploy.processes import is_running
from ingest.server import shared_socket
from meterflow.settings import Settings
from tests.fixtures.ingest_process import IngestProcess, ingest_process
from tests.fixtures.meter_events import wait_until

pytestmark = pytest.mark.integration

_CONNECTIONS = 50


async def _answered_on_fresh_connections(url: str, headers: dict[str, str] | None = None) -> int:
    """How many of ``_CONNECTIONS`` requests for ``/healthz``, each on a new connection (so the
    kernel picks a process for each), got a 200."""
    answered = 0
    for _ in range(_CONNECTIONS):
        async with httpx.AsyncClient(base_url=url, timeout=2.0, headers=headers) as http:
            with contextlib.suppress(httpx.TransportError):
                answered += (await http.get("/healthz")).status_code == 200
    return answered


async def _counted(process: IngestProcess, name: str, labels: dict[str, str]) -> int:
    """A counter's value on this process's own metrics port."""
    assert process.own_url is not None
    async with httpx.AsyncClient(timeout=2.0) as http:
        page = (await http.get(f"{process.own_url}/metrics")).text
    return sum(
        int(sample.value)
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == name and sample.labels == labels
    )


async def _served(process: IngestProcess) -> int:
    """``/healthz`` requests this process answered 200."""
    labels = {"route": "/healthz", "method": "GET", "status": "200"}
    return await _counted(process, "meterflow_http_requests_total", labels)


async def _refused_headers(process: IngestProcess) -> int:
    """Requests this process's HTTP edge refused for their headers' size (431)."""
    labels = {"reason": "headers_too_large"}
    return await _counted(process, "meterflow_http_refusals_total", labels)


async def test_two_processes_share_the_port_and_one_survives_the_others_death(
    ingest_settings: Settings, tmp_path: Path
) -> None:
    shared = ingest_settings.with_overrides(reuse_port=True)
    first_port = free_port()
    second_port = next(port for port in iter(free_port, None) if port != first_port)
    async with (
        ingest_process(
            shared.with_overrides(ingest_metrics_port=first_port), tmp_path / "first.log"
        ) as first,
        ingest_process(
            shared.with_overrides(ingest_metrics_port=second_port), tmp_path / "second.log"
        ) as second,
    ):
        assert first.pid != second.pid
        assert await _answered_on_fresh_connections(first.url) == _CONNECTIONS
        served = {first.pid: await _served(first), second.pid: await _served(second)}
        # The kernel spread the connections: each process answered some, together all of them.
        assert all(n > 0 for n in served.values()), served
        assert sum(served.values()) == _CONNECTIONS

        # The edge's limits and deadlines come with the shared socket: a head past
        # METERFLOW_MAX_HEADER_BYTES is 431 from whichever process gets it.
        oversized = {"x-padding": "a" * (shared.ingest.max_header_bytes + 1)}
        assert await _answered_on_fresh_connections(first.url, oversized) == 0
        refused = await _refused_headers(first) + await _refused_headers(second)
        assert refused == _CONNECTIONS

        os.kill(first.pid, signal.SIGKILL)

        async def first_gone() -> bool:
            return not is_running(first.pid)

        await wait_until(first_gone, 10.0, "the killed ingest to exit", 0.05)
        assert await _answered_on_fresh_connections(second.url) == _CONNECTIONS
        assert await _served(second) == served[second.pid] + _CONNECTIONS


def test_a_shared_socket_takes_no_connection_until_the_server_listens_on_it() -> None:
    port = free_port()
    with shared_socket("127.0.0.1", port) as starting, shared_socket("127.0.0.1", port) as other:
        # Bound, both (SO_REUSEPORT), but not listening: the kernel hands this port's new
        # connections only to listening sockets, so none waits on a process still starting.
        assert starting.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        with socket.socket() as client:
            assert client.connect_ex(("127.0.0.1", port)) != 0
        other.listen()
        other.settimeout(2.0)
        for _ in range(20):  # each is accepted by the listening one (else accept times out)
            with socket.create_connection(("127.0.0.1", port), timeout=2.0):
                other.accept()[0].close()

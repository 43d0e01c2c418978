"""`meterflow up` with nothing configured: starts PostgreSQL and Kafka, serves, stops cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deploy.ports import free_port
from tests.fixtures.meter_events import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

_START_DEADLINE_S = 180.0
_STOP_DEADLINE_S = 60.0


@dataclass
class RunningStack:
    url: str
    key: str
    process: asyncio.subprocess.Process


def _stack_env(data_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    env.update(
        METERFLOW_DATA_DIR=str(data_dir),
        METERFLOW_HTTP_PORT=str(ports["http"]),
        METERFLOW_LOCAL_POSTGRES_PORT=str(ports["postgres"]),
        METERFLOW_LOCAL_KAFKA_PORT=str(ports["kafka"]),
        METERFLOW_LOCAL_KAFKA_CONTROLLER_PORT=str(ports["controller"]),
        METERFLOW_AGGREGATOR_METRICS_PORT=str(ports["aggregator"]),
        METERFLOW_ALERTS_METRICS_PORT=str(ports["alerts"]),
    )
    return env


@contextlib.asynccontextmanager
async def _up(env: dict[str, str], log: Path) -> AsyncIterator[RunningStack]:
    with log.open("ab") as errors:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "deploy.cli",
            "up",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
        )
        assert process.stdout is not None
        url = key = ""
        seen: list[str] = []
        try:
            async with asyncio.timeout(_START_DEADLINE_S):
                while not key:
                    line = (await process.stdout.readline()).decode()
                    if not line:
                        pytest.fail(f"meterflow up exited early:\n{''.join(seen)}")
                    seen.append(line)
                    if found := re.search(r"API:\s+(\S+)", line):
                        url = found.group(1)
                    if found := re.search(r"test key:\s+(sk_test_\w+)", line):
                        key = found.group(1)
            drain = asyncio.create_task(process.stdout.read())
            yield RunningStack(url, key, process)
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(_STOP_DEADLINE_S):
                assert await process.wait() == 0
                await drain
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def test_up_starts_everything_survives_restart_and_stops(tmp_path: Path) -> None:
    ports = {
        n: free_port() for n in ("http", "postgres", "kafka", "controller", "aggregator", "alerts")
    }
    env = _stack_env(tmp_path / "data", ports)
    log = tmp_path / "up.log"

    async with _up(env, log) as stack, httpx.AsyncClient(base_url=stack.url) as http:
        created = await http.post(
            "/v1/billing/meters",
            auth=(stack.key, ""),
            data={
                "display_name": "Alpaca AI tokens",
                "event_name": "alpaca_ai_tokens",
                "default_aggregation[formula]": "sum",
            },
        )
        assert created.status_code == 200, created.text
        meter_id = created.json()["id"]
        first_key = stack.key
        now = int(time.time())
        sent = await http.post(
            "/v1/billing/meter_events",
            auth=(stack.key, ""),
            data={
                "event_name": "alpaca_ai_tokens",
                "payload[stripe_customer_id]": "cus_1",
                "payload[value]": "25",
                "timestamp": str(now),
            },
        )
        assert sent.status_code == 200, sent.text
        window: dict[str, str | int] = {
            "customer": "cus_1",
            "start_time": now // 60 * 60,
            "end_time": now // 60 * 60 + 60,
        }

        async def folded() -> bool:
            summary = await http.get(
                f"/v1/billing/meters/{meter_id}/event_summaries",
                params=window,
                auth=(stack.key, ""),
            )
            return bool(summary.json()["data"][0]["aggregated_value"] == 25.0)

        await wait_until(folded, 30, "the event to show in summaries")
        metrics = (await http.get("/metrics")).text
        assert "meterflow_http_requests_total" in metrics

    for name, port in ports.items():
        assert _port_closed(port), f"{name} port still open after stop"

    # Second start on the same data: the meter and the first key are still there.
    async with _up(env, log) as stack, httpx.AsyncClient(base_url=stack.url) as http:
        assert stack.key != first_key
        for key in (first_key, stack.key):
            fetched = await http.get(f"/v1/billing/meters/{meter_id}", auth=(key, ""))
            assert fetched.status_code == 200, fetched.text
            assert fetched.json()["display_name"] == "Alpaca AI tokens"

"""What real processes log: with --log-format json every line is one JSON object; by default
a start line and a stop line, no library chatter (aiokafka or uvicorn INFO)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx
import orjson
import pytest

from deploy.ports import free_port
from tests.fixtures.meter_events import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

_ROLES = {
    "ingest": ("METERFLOW_HTTP_PORT", "/readyz"),
    "aggregator": ("METERFLOW_AGGREGATOR_METRICS_PORT", "/readyz"),
    "alerts": ("METERFLOW_ALERTS_METRICS_PORT", "/readyz"),
}


async def _run_until_ready_then_stop(
    command: str, env: dict[str, str], log_format: str
) -> list[str]:
    """Start ``meterflow <command>``, wait until ready, stop it; what it wrote to stderr."""
    variable, ready_path = _ROLES[command]
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy.cli",
        command,
        "--log-format",
        log_format,
        env={**env, variable: str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    stderr = asyncio.create_task(process.stderr.read())

    async def ready() -> bool:
        if process.returncode is not None:
            raise AssertionError((await stderr).decode())
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                response = await http.get(f"http://127.0.0.1:{port}{ready_path}")
                return response.status_code == 200
        except httpx.TransportError:
            return False

    try:
        await wait_until(ready, 60, f"{command} ready")
        await asyncio.sleep(1.0)  # let anything said just after readiness come out
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
    text = (await stderr).decode()
    assert process.returncode == 0, text
    return text.splitlines()


@pytest.fixture
def service_env(database_url: str, kafka_bootstrap: str, topic_prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "METERFLOW_TOPIC_PREFIX": topic_prefix,
        "METERFLOW_LOG_LEVEL": "INFO",
    }


@pytest.mark.parametrize("command", list(_ROLES))
async def test_json_log_lines_parse(command: str, service_env: dict[str, str]) -> None:
    lines = await _run_until_ready_then_stop(command, service_env, "json")
    assert lines
    records = [orjson.loads(line) for line in lines]
    for record in records:
        assert {"time", "level", "logger", "message", "process", "pid"} <= set(record)
        assert record["process"] == command
        assert not record["logger"].startswith(("aiokafka", "uvicorn")) or record["level"] in (
            "WARNING",
            "ERROR",
            "CRITICAL",
        )


@pytest.mark.parametrize("command", list(_ROLES))
async def test_default_logs_are_quiet(command: str, service_env: dict[str, str]) -> None:
    lines = await _run_until_ready_then_stop(command, service_env, "text")
    chatter = [line for line in lines if " INFO aiokafka" in line or " INFO uvicorn" in line]
    assert chatter == []
    assert not [line for line in lines if line.startswith("INFO:")]  # uvicorn's own handler
    # A start line and a stop line, a few more at most (Kafka connected, partitions assigned).
    assert 2 <= len(lines) <= 8, "\n".join(lines)

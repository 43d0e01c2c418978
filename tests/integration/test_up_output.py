"""What `meterflow up` shows and leaves behind, run as a new user would, with nothing set: its
own start lines, no library chatter, the URL and key banner last once everything is ready, a
progress line while events flow; and the record of where it listens, which `meterflow accounts`
finds, gone once it stopped."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from deploy.ports import free_port
from tests.fixtures.meter_events import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

_START_DEADLINE_S = 180.0
_BANNER_END = "Ctrl-C stops everything."
_CHATTER = re.compile(r" (INFO|DEBUG) (aiokafka|uvicorn|kafka)|^INFO: |^DEBUG:")


def _env(data_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS") and not k.startswith("METERFLOW_")
    }
    ports = {free_port() for _ in range(12)}
    http, postgres, kafka, controller, aggregator, alerts = sorted(ports)[:6]
    return {
        **env,
        "METERFLOW_DATA_DIR": str(data_dir),
        "METERFLOW_HTTP_PORT": str(http),
        "METERFLOW_LOCAL_POSTGRES_PORT": str(postgres),
        "METERFLOW_LOCAL_KAFKA_PORT": str(kafka),
        "METERFLOW_LOCAL_KAFKA_CONTROLLER_PORT": str(controller),
        "METERFLOW_AGGREGATOR_METRICS_PORT": str(aggregator),
        "METERFLOW_ALERTS_METRICS_PORT": str(alerts),
        "METERFLOW_PROGRESS_INTERVAL_S": "1",
    }


class Output:
    """Every line `meterflow up` and its children wrote (stdout and stderr, in order)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ended = False

    async def read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line.decode().rstrip("\n"))
        self.ended = True

    async def wait_for(self, pattern: str, timeout_s: float, since: int = 0) -> int:
        """The index of the first line from ``since`` on that matches ``pattern``."""

        async def printed() -> bool:
            if self.ended:
                pytest.fail(f"meterflow up ended early:\n{self.text()}")
            return any(re.search(pattern, line) for line in self.lines[since:])

        await wait_until(printed, timeout_s, f"{pattern!r} in:\n{self.text()}")
        return next(
            i for i, line in enumerate(self.lines) if i >= since and re.search(pattern, line)
        )

    def text(self) -> str:
        return "\n".join(self.lines)


async def _meterflow(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_up_is_quiet_ends_with_the_banner_and_is_found_by_other_commands(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path / "data")
    record = tmp_path / "data" / "stack.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy.cli",
        "up",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = Output()
    reading = asyncio.create_task(output.read(process.stdout))
    try:
        banner_end = await output.wait_for(re.escape(_BANNER_END), _START_DEADLINE_S)
        api = re.search(r"API:\s+(\S+)", output.text())
        assert api is not None

        # Ready and idle: the banner stays the last thing printed.
        await asyncio.sleep(4)
        assert output.lines[banner_end + 1 :] in ([], [""]), output.text()

        # Where the stack listens, for the other commands: private to its owner.
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        recorded = orjson.loads(record.read_bytes())
        assert recorded["api_url"] == api.group(1)
        assert recorded["database_url"].startswith("postgresql://")
        assert (
            recorded["kafka_bootstrap_servers"] == f"127.0.0.1:{env['METERFLOW_LOCAL_KAFKA_PORT']}"
        )

        # A new user's next step, with nothing set but where the data lives.
        code, out = await _meterflow(
            {k: v for k, v in env.items() if k != "METERFLOW_PROGRESS_INTERVAL_S"},
            "accounts",
            "create",
            "--name",
            "new-user",
        )
        assert code == 0, out
        key = re.search(r"secret key: (sk_test_\w+)", out)
        assert key is not None

        # Traffic: a progress line with events per second and lag.
        before = len(output.lines)
        async with httpx.AsyncClient(base_url=api.group(1), auth=(key.group(1), "")) as http:
            meter = await http.post(
                "/v1/billing/meters",
                data={
                    "display_name": "tokens",
                    "event_name": "tokens",
                    "default_aggregation[formula]": "sum",
                },
            )
            assert meter.status_code == 200, meter.text
            for i in range(50):
                sent = await http.post(
                    "/v1/billing/meter_events",
                    data={
                        "event_name": "tokens",
                        "payload[stripe_customer_id]": "cus_1",
                        "payload[value]": "1",
                        "identifier": f"e{i}",
                    },
                )
                assert sent.status_code == 200, sent.text
        progress = await output.wait_for(r"[1-9][\d,]* events/s accepted, .*; lag \d", 20, before)
        assert output.lines[progress].startswith("meterflow up: ")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await asyncio.wait_for(reading, 10)

    assert process.returncode == 0, output.text()
    assert not record.exists()
    chatter = [line for line in output.lines if _CHATTER.search(line)]
    assert chatter == [], output.text()

"""``meterflow up`` keeps its stack up: a dead child is restarted while the others serve, a
crash-looping one stops the stack cleanly, a killed launcher leaves nothing running, and a
PostgreSQL or Kafka left by an earlier launcher is replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from deploy.kafka_broker import LocalKafkaBroker
from deploy.postgres_server import LocalPostgresServer
from deploy.processes import is_running
from deploy.stack import kafka_config, postgres_config
from meterflow.settings import load_settings
from tests.fixtures.launcher import (
    STOP_DEADLINE_S,
    descendants,
    exit_status,
    meterflow_up,
    port_closed,
    stack_env,
    stack_ports,
    wait_all_gone,
)
from tests.fixtures.meter_events import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

_RESTART_S = 60.0


async def _create_meter(http: httpx.AsyncClient, key: str) -> str:
    created = await http.post(
        "/v1/billing/meters",
        auth=(key, ""),
        data={
            "display_name": "Alpaca AI tokens",
            "event_name": "alpaca_ai_tokens",
            "default_aggregation[formula]": "sum",
        },
    )
    assert created.status_code == 200, created.text
    meter_id: str = created.json()["id"]
    return meter_id


async def _send_event(http: httpx.AsyncClient, key: str, now: int) -> None:
    sent = await http.post(
        "/v1/billing/meter_events",
        auth=(key, ""),
        data={
            "event_name": "alpaca_ai_tokens",
            "payload[stripe_customer_id]": "cus_1",
            "payload[value]": "25",
            "timestamp": str(now),
        },
    )
    assert sent.status_code == 200, sent.text


async def _wait_folded(http: httpx.AsyncClient, key: str, meter_id: str, now: int) -> None:
    start = now // 60 * 60
    window: dict[str, str | int] = {
        "customer": "cus_1",
        "start_time": start,
        "end_time": start + 60,
    }

    async def folded() -> bool:
        summary = await http.get(
            f"/v1/billing/meters/{meter_id}/event_summaries", params=window, auth=(key, "")
        )
        data = summary.json()["data"]
        return bool(data and data[0]["aggregated_value"] == 25.0)

    await wait_until(folded, _RESTART_S, "the event to be folded by the restarted aggregator")


async def _poll_api(http: httpx.AsyncClient, until: asyncio.Event) -> list[str]:
    """GET /readyz every 50 ms until ``until``: the status of each, or the error instead."""
    seen: list[str] = []
    while not until.is_set():
        try:
            seen.append(str((await http.get("/readyz", timeout=2.0)).status_code))
        except httpx.HTTPError as exc:
            seen.append(repr(exc))
        await asyncio.sleep(0.05)
    return seen


async def _answers(url: str) -> bool:
    async with httpx.AsyncClient() as client:
        try:
            return (await client.get(url, timeout=1.0)).status_code == 200
        except httpx.HTTPError:
            return False


async def test_a_killed_aggregator_is_restarted_while_the_api_answers_then_a_crash_loop_stops_up(
    tmp_path: Path,
) -> None:
    ports = stack_ports()
    env = stack_env(tmp_path / "data", ports)
    metrics = f"http://127.0.0.1:{ports['aggregator']}/metrics"
    async with (
        meterflow_up(env, tmp_path / "up.log") as stack,
        httpx.AsyncClient(base_url=stack.url) as http,
    ):
        meter_id = await _create_meter(http, stack.key)
        ingest_pid = await stack.pid_of("ingest")
        pid = await stack.pid_of("aggregator")
        stack_pids = descendants(stack.process.pid)
        assert {ingest_pid, pid} <= stack_pids

        # 1. SIGKILL the aggregator: the API keeps answering, events are still accepted, and the
        #    aggregator comes back and folds them.
        restarted = asyncio.Event()
        polling = asyncio.create_task(_poll_api(http, restarted))
        mark = len(stack.output.lines)
        os.kill(pid, signal.SIGKILL)
        now = int(time.time())
        await _send_event(http, stack.key, now)
        death = await stack.output.expect(r"aggregator \(pid (\d+)\) (.*); restarting it", 10, mark)
        assert death.groups() == (str(pid), "was killed by SIGKILL")
        new_pid = await stack.pid_of("aggregator", other_than=pid)

        async def metrics_answer() -> bool:
            return await _answers(metrics)

        await wait_until(metrics_answer, _RESTART_S, "the restarted aggregator's metrics")
        restarted.set()
        statuses = await polling
        assert len(statuses) > 5
        assert set(statuses) == {"200"}, statuses
        await _wait_folded(http, stack.key, meter_id, now)
        assert is_running(ingest_pid)

        # 2. Kill it each time it comes back: the fifth death within 60 s is a crash loop, and
        #    up says why and stops everything.
        for _ in range(4):
            mark = len(stack.output.lines)
            os.kill(new_pid, signal.SIGKILL)
            line = await stack.output.expect(r"aggregator \(pid \d+\) .*", _RESTART_S, mark)
            if "crash-looping" in line.group(0):
                break
            new_pid = await stack.pid_of("aggregator", other_than=new_pid)
        assert await exit_status(stack.process, STOP_DEADLINE_S) == 1
        await stack.output.expect(
            r"aggregator \(pid \d+\) was killed by SIGKILL.*; it died 5 times within 60s, so it is "
            "crash-looping; not restarting it, stopping the stack",
            5,
        )
        await stack.output.expect(r"stopped the stack: aggregator died 5 times within 60s", 5)
        await stack.output.expect(r"aggregator was restarted 4 time\(s\) \(", 5)
    await wait_all_gone(stack_pids, 30, "every process of the stack to end")
    for name, port in ports.items():
        assert port_closed(port), f"{name} port still open after the crash loop stopped up"


async def test_a_killed_launcher_leaves_no_process_running(tmp_path: Path) -> None:
    ports = stack_ports()
    env = stack_env(tmp_path / "data", ports)
    async with meterflow_up(env, tmp_path / "up.log") as stack:
        named = {
            name: await stack.pid_of(name)
            for name in ("PostgreSQL", "Kafka", "ingest", "aggregator", "alerts")
        }
        started = descendants(stack.process.pid)
        assert set(named.values()) <= started, (named, started)
        assert len(started) > len(named)  # PostgreSQL's own processes too
        stack.process.send_signal(signal.SIGKILL)
        await exit_status(stack.process, 10)
        await wait_all_gone(started, STOP_DEADLINE_S, "every process of a killed launcher to end")
    for name, port in ports.items():
        assert port_closed(port), f"{name} port still open after the launcher was killed"


async def test_up_replaces_a_postgres_and_a_kafka_left_running(tmp_path: Path) -> None:
    """As after an older launcher was SIGKILLed: both servers still run on up's data dir and
    ports, without a parent-death signal (started from a worker thread)."""
    ports = stack_ports()
    env = stack_env(tmp_path / "data", ports)
    settings = load_settings(env)
    postgres = LocalPostgresServer(postgres_config(settings))
    kafka = LocalKafkaBroker(kafka_config(settings))
    try:
        await asyncio.to_thread(postgres.start)
        await asyncio.to_thread(kafka.start)
        leftovers = {"PostgreSQL": postgres.pid, "Kafka": kafka.pid}
        async with (
            meterflow_up(env, tmp_path / "up.log") as stack,
            httpx.AsyncClient(base_url=stack.url) as http,
        ):
            for name, pid in leftovers.items():
                assert pid is not None
                await stack.output.expect(
                    rf"{name} from an earlier run \(pid {pid}\) is still running on "
                    r"\S+; stopping it to start it afresh",
                    5,
                )
                assert not is_running(pid)
                assert await stack.pid_of(name) != pid
            await _create_meter(http, stack.key)
            assert "kill -" not in stack.output.text()
    finally:
        kafka.stop()  # reap the replaced processes
        postgres.stop()

"""Readiness of the consumers and of the consumer processes against real Kafka and PostgreSQL:
a consumer is ready once it holds partitions or is idle in its group; the aggregator and alert
evaluator processes answer /healthz and /readyz on their metrics port."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from deploy.ports import free_port
from meterflow.kafka.consumer import Batch, StoredOffsetConsumer
from meterflow.kafka.topics import TopicSpec, ensure_topics
from meterflow.settings import Settings
from tests.fixtures.meter_events import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class IdleFold(StoredOffsetConsumer):
    """A consumer group member that folds nothing: only its readiness is under test."""

    async def fold(self, batch: Batch) -> None:
        pass


def _member(settings: Settings, pool: asyncpg.Pool, topic: str, group: str) -> IdleFold:
    registry = CollectorRegistry()
    return IdleFold(
        settings,
        pool,
        registry,
        topic=topic,
        group=group,
        batch_max=10,
        fenced=Counter("fenced", "", registry=registry),
        failures=Counter("failures", "", registry=registry),
        name="idle-fold",
    )


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def test_members_are_ready_holding_a_partition_or_idle_in_the_group(
    pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    topic = f"health-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, [TopicSpec(topic, 1, {})])
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap).with_overrides(
        consumer_session_timeout_ms=6000
    )
    group = f"{topic}-group"
    first, second = _member(settings, pool, topic, group), _member(settings, pool, topic, group)
    assert not first.ready()  # not started

    running: list[asyncio.Task[None]] = []
    try:
        for member in (first, second):
            await member.start()
            assert not member.ready()  # started, not yet assigned
            running.append(asyncio.create_task(member.run()))

        async def both_ready() -> bool:
            return first.ready() and second.ready()

        await wait_until(both_ready, 60, "both members ready")
        # One partition, two members: one holds it, the other is idle and ready all the same.
        held = sorted(len(m._consumer.assignment()) for m in (first, second))
        assert held == [0, 1]
    finally:
        for member in (first, second):
            member.request_stop()
        assert not first.ready()
        assert not second.ready()
        await asyncio.gather(*running)
        for member in (first, second):
            await member.stop()


async def _ready(url: str, process: asyncio.subprocess.Process) -> bool:
    assert process.returncode is None, "the process exited"
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(url)).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize(
    ("command", "port_variable"),
    [
        ("aggregator", "METERFLOW_AGGREGATOR_METRICS_PORT"),
        ("alerts", "METERFLOW_ALERTS_METRICS_PORT"),
    ],
)
async def test_consumer_processes_serve_health_and_readiness(
    command: str, port_variable: str, database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "METERFLOW_TOPIC_PREFIX": topic_prefix,
        port_variable: str(port),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy.cli",
        command,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        ready_url = f"{base}/readyz"
        await wait_until(lambda: _ready(ready_url, process), 60, f"{command} ready")
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            assert (await http.get("/readyz")).json() == {"status": "ready"}
            metrics = (await http.get("/metrics")).text
        ready_lines = [
            line for line in metrics.splitlines() if "meterflow_component_ready{" in line
        ]
        assert ready_lines
        assert all(line.endswith(" 1.0") for line in ready_lines)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == 0

"""Kafka killed in the middle of ingest, then restarted: nothing acknowledged is lost or doubled.

A dedicated broker (never the session's) serves ingest and the aggregator. Several clients send
events with unique identifiers without pause while the broker is SIGKILLed and restarted on the
same data directory and ports. While it is down, requests get 503 with ``Retry-After`` and never
a 2xx. Once it is back, ingest accepts again, every unconfirmed event is retried with its own
identifier, and the rollups must hold every event exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry

from aggregator.rollups.consumer import RollupConsumer
from deploy.kafka_broker import KafkaBrokerConfig, LocalKafkaBroker
from deploy.ports import free_port
from meterflow.kafka.topics import ensure_topics, topic_specs
from meterflow.settings import Settings, load_settings
from tests.conftest import AccountFactory
from tests.fixtures.ingest_server import running_ingest
from tests.fixtures.meter_events import customer_totals, wait_until
from tests.fixtures.meter_events_http import EVENT_NAME, auth, create_meter

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("java") is None, reason="the local Kafka broker needs java"),
]

CLIENTS = 4
PUBLISH_TIMEOUT_S = 2.0
V1_EVENTS = "/v1/billing/meter_events"
V2_EVENTS = "/v2/billing/meter_events"


@dataclass(frozen=True, slots=True)
class Event:
    identifier: str
    customer: str
    value: int
    path: str  # v1 (form) or v2 (JSON); a retry goes to the same endpoint

    def request(self) -> dict[str, Any]:
        """httpx keyword arguments for this event's body."""
        payload = {"stripe_customer_id": self.customer, "value": str(self.value)}
        if self.path == V1_EVENTS:
            form = {f"payload[{k}]": v for k, v in payload.items()}
            return {"data": {"event_name": EVENT_NAME, "identifier": self.identifier, **form}}
        return {
            "json": {"event_name": EVENT_NAME, "identifier": self.identifier, "payload": payload}
        }


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request for one event, and how it was answered (``status`` None: no answer)."""

    event: Event
    started: float
    finished: float
    status: int | None
    retry_after: str | None
    code: str | None


def _broker_config(data_dir: Path) -> KafkaBrokerConfig:
    defaults = load_settings()
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    return KafkaBrokerConfig(
        version=defaults.launcher.kafka_version,
        cache_dir=defaults.launcher.cache_dir,
        data_dir=data_dir,
        port=port,
        controller_port=controller_port,
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafkaBroker]:
    """A broker of this test's own, not started; it can be killed and started again."""
    broker = LocalKafkaBroker(_broker_config(tmp_path / "kafka"))
    yield broker
    broker.stop()


@contextlib.asynccontextmanager
async def _running_aggregator(settings: Settings) -> AsyncIterator[RollupConsumer]:
    assert settings.database_url is not None
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    consumer = RollupConsumer(settings, pool, CollectorRegistry())
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.request_stop()
        try:
            # Bounded: a consumer stuck in a rebalance would otherwise hold the test forever.
            await asyncio.wait_for(task, 15)
            await asyncio.wait_for(consumer.stop(), 15)
        finally:
            await pool.close()


async def _send(http: httpx.AsyncClient, headers: dict[str, str], event: Event) -> Attempt:
    started = time.monotonic()
    status: int | None = None
    retry_after: str | None = None
    code: str | None = None
    try:
        response = await http.post(event.path, headers=headers, **event.request())
        status, retry_after = response.status_code, response.headers.get("retry-after")
        if status >= 400:
            code = response.json()["error"].get("code")
    except httpx.TransportError:
        pass  # unanswered: unconfirmed, like a 503
    return Attempt(event, started, time.monotonic(), status, retry_after, code)


async def _client(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    index: int,
    attempts: list[Attempt],
    stop: asyncio.Event,
) -> None:
    """Send events one after another until ``stop``; v1 and v2 in turn."""
    sequence = 0
    while not stop.is_set():
        sequence += 1
        path = V1_EVENTS if sequence % 2 else V2_EVENTS
        event = Event(f"c{index}-{sequence}", f"cus_{index}", sequence % 7 + 1, path)
        attempts.append(await _send(http, headers, event))
        await asyncio.sleep(0.01)  # pacing only: four clients must not starve the broker's JVM


def _each_client_acked(
    attempts: list[Attempt], since: float, at_least: int
) -> Callable[[], Awaitable[bool]]:
    """Whether each client had ``at_least`` events acknowledged among those sent after ``since``."""

    async def check() -> bool:
        acked: dict[str, int] = {}
        for attempt in attempts:
            if attempt.started > since and attempt.status == 200:
                customer = attempt.event.customer
                acked[customer] = acked.get(customer, 0) + 1
        return len(acked) == CLIENTS and min(acked.values()) >= at_least

    return check


def _unavailable(
    attempts: list[Attempt], since: float, at_least: int
) -> Callable[[], Awaitable[bool]]:
    """Whether ``at_least`` requests sent after ``since`` got 503."""

    async def check() -> bool:
        return sum(1 for a in attempts if a.started > since and a.status == 503) >= at_least

    return check


def _every_customer_folded(database_url: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(await customer_totals(database_url)) == CLIENTS

    return check


async def _confirm(
    http: httpx.AsyncClient, headers: dict[str, str], unconfirmed: list[Attempt]
) -> None:
    """Retry each unconfirmed event with its own identifier until ingest confirms it."""
    for first in unconfirmed:
        attempt = first
        deadline = time.monotonic() + 15
        while attempt.status != 200:
            if attempt.code == "duplicate_meter_event":
                break  # the first attempt landed and is folded already
            assert attempt.status in (None, 503), attempt
            assert time.monotonic() < deadline, f"never confirmed: {attempt}"
            attempt = await _send(http, headers, first.event)


@pytest.mark.timeout(60)
async def test_acknowledged_events_survive_a_broker_kill_exactly_once(
    broker: LocalKafkaBroker, database_url: str, make_account: AccountFactory
) -> None:
    await asyncio.to_thread(broker.start)
    prefix = f"outage_{os.getpid()}_{time.monotonic_ns()}."
    await ensure_topics(broker.bootstrap_servers, topic_specs(prefix))
    settings = Settings().with_overrides(
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=prefix,
        http_port=free_port(),
        db_pool_max=6,
        auth_cache_ttl_s=30,
        meter_cache_ttl_s=30,
        publish_timeout_s=PUBLISH_TIMEOUT_S,
        consumer_group=f"g-{prefix}",
    )
    account = await make_account()
    headers = auth(account.secret_key)
    attempts: list[Attempt] = []
    stop = asyncio.Event()

    with running_ingest(settings) as url:
        async with (
            httpx.AsyncClient(base_url=url, timeout=15.0) as http,
            _running_aggregator(settings),
        ):
            await create_meter(http, account.secret_key)
            clients = [
                asyncio.create_task(_client(http, headers, i, attempts, stop))
                for i in range(CLIENTS)
            ]
            try:
                # 1. Kafka up: every client gets events acknowledged, and the aggregator, past its
                # first group join, folds them. (A kill during that join can leave aiokafka's
                # consumer deadlocked; that is the aggregator's problem, not the one tested here.)
                await wait_until(_each_client_acked(attempts, 0.0, 3), 20, "acks before the kill")
                await wait_until(_every_customer_folded(database_url), 20, "the first folds")
                # 2. SIGKILL: no clean shutdown; what the broker had not written is gone.
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGKILL)
                await asyncio.to_thread(broker.stop)  # reaps the process
                killed_at = time.monotonic()
                await wait_until(_unavailable(attempts, killed_at, CLIENTS), 20, "503s while down")
                # 3. The same broker again: same data directory, same ports.
                restarting_at = time.monotonic()
                await asyncio.to_thread(broker.start)
                restarted_at = time.monotonic()
                # 4. Ingest recovers by itself: every client gets acknowledgements again.
                await wait_until(
                    _each_client_acked(attempts, restarted_at, 3), 30, "acks after the restart"
                )
            finally:
                stop.set()
                await asyncio.gather(*clients)

            down = [a for a in attempts if killed_at < a.started and a.finished < restarting_at]
            assert down, "no request was made while the broker was down"
            assert [a for a in down if a.status == 200] == []
            unavailable = [a for a in attempts if a.status == 503]
            assert all(a.retry_after == "1" for a in unavailable), unavailable[:3]
            assert {a.status for a in attempts} <= {200, 503, None}, attempts

            # 5. Retry everything unconfirmed with its own identifier; then every event sent is
            # in the rollups exactly once, whether or not its first attempt had landed.
            await _confirm(http, headers, [a for a in attempts if a.status != 200])
            events = [a.event for a in attempts]
            assert len({e.identifier for e in events}) == len(events)
            expected: dict[str, tuple[Decimal, int]] = {}
            for event in events:
                total, count = expected.get(event.customer, (Decimal(0), 0))
                expected[event.customer] = (total + event.value, count + 1)

            async def folded_exactly() -> bool:
                return await customer_totals(database_url) == expected

            await wait_until(folded_exactly, 30, f"rollups to equal {expected}", interval_s=0.2)

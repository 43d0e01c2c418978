"""``/readyz`` follows Kafka's reachability, not only the producer's connection.

A broker of this test's own is paused with SIGSTOP: its connections stay open, so the producer
still counts as connected, but nothing answers. Readiness must turn 503 while it is paused (event
requests get 503 then too) and 200 again once it is resumed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from deploy.kafka_broker import KafkaBrokerConfig, LocalKafkaBroker
from deploy.ports import free_port
from meterflow.kafka.topics import ensure_topics, topic_specs
from meterflow.settings import Settings, load_settings
from tests.conftest import AccountFactory
from tests.fixtures.ingest_server import running_ingest
from tests.fixtures.meter_events import wait_until
from tests.fixtures.meter_events_http import auth, create_meter, event_form

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("java") is None, reason="the local Kafka broker needs java"),
]

READY_WITHIN_S = 60.0  # a freshly started broker electing leaders on a busy machine
PAUSE_NOTICED_WITHIN_S = 10.0  # readiness probes answer within 2 s, cached for 1 s


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[LocalKafkaBroker]:
    """A broker of this test's own, running; resumed and stopped at the end whatever happens."""
    port, controller_port = free_port(), free_port()
    while controller_port == port:
        controller_port = free_port()
    defaults = load_settings()
    broker = LocalKafkaBroker(
        KafkaBrokerConfig(
            version=defaults.launcher.kafka_version,
            cache_dir=defaults.launcher.cache_dir,
            data_dir=tmp_path / "kafka",
            port=port,
            controller_port=controller_port,
        )
    )
    await asyncio.to_thread(broker.start)
    try:
        yield broker
    finally:
        if broker.pid is not None:
            os.kill(broker.pid, signal.SIGCONT)
        await asyncio.to_thread(broker.stop)


@pytest.mark.timeout(180)
async def test_readyz_is_503_while_kafka_is_paused_and_200_after(
    broker: LocalKafkaBroker, ingest_settings: Settings, make_account: AccountFactory
) -> None:
    await ensure_topics(broker.bootstrap_servers, topic_specs(ingest_settings.topic_prefix))
    settings = ingest_settings.with_overrides(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        http_port=free_port(),
        publish_timeout_s=2.0,
    )
    account = await make_account()
    with running_ingest(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
            await create_meter(http, account.secret_key)

            async def status() -> int:
                return (await http.get("/readyz")).status_code

            async def ready() -> bool:
                return await status() == 200

            async def not_ready() -> bool:
                return await status() == 503

            await wait_until(ready, READY_WITHIN_S, "ingest to be ready", 0.2)
            accepted = await http.post(
                "/v1/billing/meter_events", data=event_form(), headers=auth(account.secret_key)
            )
            assert accepted.status_code == 200, accepted.text

            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                await wait_until(not_ready, PAUSE_NOTICED_WITHIN_S, "/readyz to report Kafka", 0.2)
                answer = await http.get("/readyz")
                error = answer.json()["error"]
                assert "Kafka is not reachable" in error["message"], error
                assert error["type"] == "api_error"
                refused = await http.post(
                    "/v1/billing/meter_events", data=event_form(), headers=auth(account.secret_key)
                )
                assert refused.status_code == 503, refused.text
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            await wait_until(ready, READY_WITHIN_S, "/readyz to recover with Kafka", 0.2)

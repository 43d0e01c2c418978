"""Shared fixtures: real PostgreSQL and Kafka per session, a fresh database and topics per test.

Services come from the environment when DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS are set, else from
testcontainers when a Docker engine answers, else from the project's native launchers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry

from aggregator.rollups.consumer import RollupConsumer
from deploy.ports import free_port
from meterflow.kafka.topics import ensure_topics, topic_specs
from meterflow.settings import Settings
from meterflow.store.accounts import NewAccount, create_account
from meterflow.store.migrations import migrate
from tests.fixtures.ingest_server import running_ingest
from tests.fixtures.kafka import kafka_service
from tests.fixtures.postgres import create_fresh_database, drop_database, postgres_service


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def services_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def pg_admin_dsn(services_root: Path) -> Iterator[str]:
    with postgres_service(services_root / "postgres") as dsn:
        yield dsn


@pytest.fixture(scope="session")
async def template_database(pg_admin_dsn: str) -> str:
    """A database migrated once; each test clones it instead of migrating again."""
    name = _unique("mf_template")
    await migrate(await create_fresh_database(pg_admin_dsn, name))
    return name


@pytest.fixture
async def database_url(pg_admin_dsn: str, template_database: str) -> AsyncIterator[str]:
    name = _unique("mf_test")
    dsn = await create_fresh_database(pg_admin_dsn, name, template=template_database)
    yield dsn
    await drop_database(pg_admin_dsn, name)


@pytest.fixture(scope="session")
def kafka_bootstrap(services_root: Path) -> Iterator[str]:
    with kafka_service(services_root / "kafka") as bootstrap:
        yield bootstrap


@pytest.fixture
async def topic_prefix(kafka_bootstrap: str) -> str:
    """A fresh set of meterflow topics for this test."""
    prefix = f"{_unique('t')}."
    await ensure_topics(kafka_bootstrap, topic_specs(prefix))
    return prefix


AccountFactory = Callable[..., Awaitable[NewAccount]]


@pytest.fixture
def make_account(database_url: str) -> AccountFactory:
    async def make(name: str = "test", *, livemode: bool = False) -> NewAccount:
        conn = await asyncpg.connect(database_url)
        try:
            return await create_account(conn, name, livemode=livemode)
        finally:
            await conn.close()

    return make


@pytest.fixture
def ingest_settings(database_url: str, kafka_bootstrap: str, topic_prefix: str) -> Settings:
    return Settings().with_overrides(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        http_port=free_port(),
        db_pool_max=4,
        auth_cache_ttl_s=0.5,
        meter_cache_ttl_s=0.2,
        # Tests register and deliver webhooks to receivers on 127.0.0.1 (a development setup);
        # tests of the address rules turn it off.
        webhook_allow_private_targets=True,
        # Tests create objects and try bad keys in tight loops, faster than the general limit
        # (25/s in test mode) and the failed-authentication limit allow: both off (0), as the
        # bench has them; tests/integration/test_rate_limits.py turns them on.
        rate_limit_api_live_per_s=0,
        rate_limit_api_test_per_s=0,
        rate_limit_auth_failures=0,
    )


@pytest.fixture
def ingest_url(ingest_settings: Settings) -> Iterator[str]:
    """A real ingest server (uvicorn, httptools, uvloop) on a free port, in a thread."""
    with running_ingest(ingest_settings) as url:
        yield url


@pytest.fixture
async def http(ingest_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ingest_url, timeout=10.0) as client:
        yield client


@pytest.fixture
async def aggregator(ingest_settings: Settings) -> AsyncIterator[None]:
    """The real rollup consumer, in process, on the same database and topics as ingest."""
    settings = ingest_settings.with_overrides(consumer_group=f"g-{ingest_settings.topic_prefix}")
    assert settings.database_url is not None
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    consumer = RollupConsumer(settings, pool, CollectorRegistry())
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    yield
    consumer.request_stop()
    await asyncio.wait_for(task, 10)
    await consumer.stop()
    await pool.close()

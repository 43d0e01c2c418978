"""The usage-changes relay against real Kafka and PostgreSQL: what a fold changed reaches the
topic and leaves the outbox; a failed produce leaves it in place."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from aggregator.alerts.periods import TouchedUsage, collapse
from aggregator.usage_feed.relay import UsageRelay
from meterflow.kafka.producer import PublishFailed
from meterflow.kafka.topics import USAGE_CHANGES_PARTITIONS, meter_events_topic, usage_changes_topic
from meterflow.records.usage_changes import UsageChange, decode_usage_change, usage_change_key
from meterflow.settings import Settings
from tests.fixtures.alerts import RefusingProducer, RelayingAggregator, read_topic
from tests.fixtures.meter_events import events_record, fold_records, wait_until

pytestmark = pytest.mark.integration

NOW = int(time.time()) // 60 * 60


async def _changes_on_topic(settings: Settings) -> list[tuple[bytes | None, UsageChange]]:
    assert settings.kafka_bootstrap_servers is not None
    records = await read_topic(
        settings.kafka_bootstrap_servers,
        usage_changes_topic(settings.topic_prefix),
        USAGE_CHANGES_PARTITIONS,
    )
    return [(r.key, decode_usage_change(r.value)) for r in records]


async def _outbox(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM usage_changes"))
    finally:
        await conn.close()


def _customer(change: UsageChange) -> str:
    return change.customer


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    yield pool
    await pool.close()


async def _seed(pool: asyncpg.Pool, customers: int) -> list[UsageChange]:
    changes = [
        UsageChange("acct_1", False, "mtr_1", f"cus_{i}", NOW - i, NOW, 1_000 + i)
        for i in range(customers)
    ]
    await pool.executemany(
        """INSERT INTO usage_changes (account_id, livemode, meter_id, customer, first_event_ts,
               last_event_ts, last_received_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [
            (c.account_id, c.livemode, c.meter_id, c.customer, c.first_event_ts, c.last_event_ts,
             c.last_received_ms)
            for c in changes
        ],
    )  # fmt: skip
    return changes


async def test_a_fold_is_relayed_to_the_topic_and_leaves_the_outbox(
    ingest_settings: Settings, database_url: str, kafka_bootstrap: str
) -> None:
    topic = meter_events_topic(ingest_settings.topic_prefix)
    # A poll interval of a minute: only the fold's wake-up can move the rows in time.
    async with RelayingAggregator(ingest_settings, relay_poll_interval_s=60) as aggregator:
        await fold_records(database_url, kafka_bootstrap, topic, [
            events_record(1_000, "a", [("e1", "cus_1", "2", NOW), ("e2", "cus_1", "3", NOW + 5)]),
            events_record(2_000, "b", [("e3", "cus_2", "1", NOW - 3600)]),
            events_record(3_000, "c", [("e1", "cus_1", "9", NOW + 30)]),  # a duplicate: no change
        ])  # fmt: skip

        async def relayed() -> bool:
            return aggregator.relayed() >= 1 and await _outbox(database_url) == 0

        await wait_until(relayed, 10, "the changes to leave the outbox")
        on_topic = await _changes_on_topic(ingest_settings)
    assert all(key == usage_change_key(change) for key, change in on_topic)
    assert collapse(change for _, change in on_topic) == {
        ("acct_1", False, "mtr_1", "cus_1"): TouchedUsage(NOW, NOW + 5, 1_000),
        ("acct_1", False, "mtr_1", "cus_2"): TouchedUsage(NOW - 3600, NOW - 3600, 2_000),
    }
    assert aggregator.relayed() == len(on_topic)


async def test_a_failed_produce_leaves_the_rows_for_a_later_pass(
    ingest_settings: Settings, database_url: str, pool: asyncpg.Pool
) -> None:
    seeded = await _seed(pool, 3)
    registry = CollectorRegistry()
    refused = UsageRelay(
        ingest_settings, pool, registry, producer_factory=RefusingProducer, poll_interval_s=0.05
    )
    await refused.start()
    with pytest.raises(PublishFailed):
        await refused.relay_once()
    assert await _outbox(database_url) == 3

    # The loop keeps retrying with backoff, and keeps the rows meanwhile.
    task = asyncio.create_task(refused.run())

    async def retried() -> bool:
        return (registry.get_sample_value("meterflow_usage_relay_failures_total") or 0) >= 2

    await wait_until(retried, 10, "the relay to fail twice")
    refused.request_stop()
    await asyncio.wait_for(task, 10)
    await refused.stop()
    assert await _outbox(database_url) == 3
    assert await _changes_on_topic(ingest_settings) == []

    relay = UsageRelay(ingest_settings, pool, CollectorRegistry())
    await relay.start()
    try:
        assert await relay.relay_once() == 3
    finally:
        await relay.stop()
    assert await _outbox(database_url) == 0
    on_topic = await _changes_on_topic(ingest_settings)
    assert sorted((c for _, c in on_topic), key=_customer) == seeded


async def test_two_relays_share_the_outbox_without_sending_a_row_twice(
    ingest_settings: Settings, database_url: str, pool: asyncpg.Pool
) -> None:
    seeded = await _seed(pool, 40)
    relays = [UsageRelay(ingest_settings, pool, CollectorRegistry(), batch_max=7) for _ in "ab"]

    async def drain(relay: UsageRelay) -> int:
        moved = 0
        while relayed := await relay.relay_once():
            moved += relayed
        return moved

    for relay in relays:
        await relay.start()
    try:
        moved = await asyncio.gather(*(drain(r) for r in relays))
    finally:
        for relay in relays:
            await relay.stop()
    assert sum(moved) == 40
    assert await _outbox(database_url) == 0
    on_topic = [c for _, c in await _changes_on_topic(ingest_settings)]
    assert sorted(on_topic, key=_customer) == sorted(seeded, key=_customer)

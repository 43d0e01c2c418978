"""The rollup consumer against real Kafka and PostgreSQL: formulas, dedupe, cancels, offsets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from aggregator.rollups.columns import segments
from aggregator.rollups.consumer import RollupConsumer
from aggregator.rollups.meter_windows import MeterWindows
from aggregator.rollups.series import EventSeries
from aggregator.rollups.store import apply_batch, ensure_event_partitions, event_days
from meterflow.kafka.offsets import OffsetFenced, PartitionSpan
from meterflow.kafka.topics import meter_events_topic
from meterflow.records.meter_events import CancelRecord
from meterflow.settings import Settings
from tests.fixtures.meter_events import (
    customer_totals,
    events_record,
    fold_records,
)

pytestmark = pytest.mark.integration

NOW = int(time.time()) // 60 * 60


@pytest.fixture
async def folding(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> AsyncIterator[RollupConsumer]:
    settings = Settings().with_overrides(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        consumer_group=f"g-{topic_prefix}",
    )
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    consumer = RollupConsumer(settings, pool, CollectorRegistry())
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    yield consumer
    consumer.request_stop()
    await asyncio.wait_for(task, 10)
    await consumer.stop()
    await pool.close()


async def test_sum_count_last_and_dedupe(
    folding: RollupConsumer, database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = meter_events_topic(topic_prefix)
    await fold_records(database_url, kafka_bootstrap, topic, [
        events_record(1000, "a", [("e1", "cus_1", "1.5", NOW), ("e2", "cus_1", "2", NOW + 5),
                                  ("e1", "cus_1", "99", NOW + 6)]),  # repeat within a record
        events_record(1001, "b", [("e3", "cus_2", "-1", NOW + 70)]),
    ])  # fmt: skip
    # A client resend and a late duplicate in another record count nothing.
    await fold_records(database_url, kafka_bootstrap, topic, [
        events_record(2000, "c", [("e1", "cus_1", "1.5", NOW)]),
        events_record(2001, "d", [("e2", "cus_1", "2", NOW + 5), ("e4", "cus_1", "10", NOW + 1)]),
    ])  # fmt: skip
    assert await customer_totals(database_url) == {
        "cus_1": (Decimal("13.5"), 3),
        "cus_2": (Decimal(-1), 1),
    }
    conn = await asyncpg.connect(database_url)
    try:
        last = await conn.fetchval(
            "SELECT last_value FROM rollups_minute WHERE customer = 'cus_1' AND minute_ts = $1",
            NOW,
        )
        stored = await conn.fetchval("SELECT count(*) FROM meter_events")
    finally:
        await conn.close()
    assert last == Decimal(10)  # e4 was received last, though its timestamp is earlier
    assert stored == 4


async def test_cancel_recomputes_the_minute_and_last_falls_back(
    folding: RollupConsumer, database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = meter_events_topic(topic_prefix)
    await fold_records(database_url, kafka_bootstrap, topic, [
        events_record(1000, "a", [("e1", "cus_1", "5", NOW)]),
        events_record(2000, "b", [("e2", "cus_1", "7", NOW + 1)]),
        CancelRecord("acct_1", False, 3000, "c", "mtr_1", "tokens", "e2", "cus_1"),
        CancelRecord("acct_1", False, 3001, "d", "mtr_1", "tokens", "never-seen", "cus_1"),
    ])  # fmt: skip
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT value_sum, event_count, last_value FROM rollups_minute")
        assert row is not None
        assert tuple(row) == (Decimal(5), 1, Decimal(5))
        # Cancelling the remaining event empties the minute.
        await fold_records(database_url, kafka_bootstrap, topic, [
            CancelRecord("acct_1", False, 4000, "e", "mtr_1", "tokens", "e1", "cus_1"),
            CancelRecord("acct_1", False, 4001, "f", "mtr_1", "tokens", "e1", "cus_1"),
        ])  # fmt: skip
        assert await conn.fetchval("SELECT count(*) FROM rollups_minute") == 0
    finally:
        await conn.close()
    samples = next(iter(folding.metrics.cancels.collect())).samples
    applied = [
        s.value for s in samples if s.name.endswith("_total") and s.labels == {"outcome": "applied"}
    ]
    unmatched = [
        s.value
        for s in samples
        if s.name.endswith("_total") and s.labels == {"outcome": "unmatched"}
    ]
    assert (applied, unmatched) == ([2.0], [2.0])


async def test_a_stale_consumer_is_fenced_and_applies_nothing(database_url: str) -> None:
    """A batch that does not start at the stored offset (a zombie after a rebalance, or a
    consumer that missed a commit) rolls back entirely."""
    rows = segments([events_record(1, "a", [("z1", "cus_1", "5", NOW)])])
    conn = await asyncpg.connect(database_url)
    try:
        await ensure_event_partitions(conn, event_days(rows))
        first = await apply_batch(
            conn, group="g", topic="t", spans=[PartitionSpan(0, 0, 1)], segments=rows,
            meter_windows=MeterWindows(), series=EventSeries(),
        )  # fmt: skip
        assert first.events_new == 1
        again = segments([events_record(2, "b", [("z2", "cus_1", "7", NOW)])])
        with pytest.raises(OffsetFenced):  # stored offset is 1, this batch claims to start at 0
            await apply_batch(
                conn, group="g", topic="t", spans=[PartitionSpan(0, 0, 1)], segments=again,
                meter_windows=MeterWindows(), series=EventSeries(),
            )  # fmt: skip
        assert await conn.fetchval("SELECT next_offset FROM consumer_offsets") == 1
        assert await conn.fetchval("SELECT count(*) FROM event_identifiers") == 1
    finally:
        await conn.close()
    assert await customer_totals(database_url) == {"cus_1": (Decimal(5), 1)}

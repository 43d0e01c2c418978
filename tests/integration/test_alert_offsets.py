"""The alert evaluator's offsets live in ``consumer_offsets``, committed with its firings; a batch
that does not start at the stored offset is fenced and records nothing."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from aggregator.alerts.evaluator import AlertEvaluator
from meterflow.kafka.offsets import OffsetFenced
from meterflow.kafka.topics import USAGE_CHANGES_PARTITIONS, usage_changes_topic
from meterflow.settings import Settings
from tests.conftest import AccountFactory
from tests.fixtures.alerts import (
    PipelineProbe,
    RefusingProducer,
    RelayingAggregator,
    RunningEvaluator,
    firings,
    insert_alert,
    read_topic,
)
from tests.fixtures.meter_events_http import auth, create_meter, event_form

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def _stored(database_url: str, group: str, topic: str) -> dict[int, int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT partition, next_offset FROM consumer_offsets
               WHERE group_id = $1 AND topic = $2""",
            group,
            topic,
        )
    finally:
        await conn.close()
    return {r["partition"]: r["next_offset"] for r in rows}


async def test_offsets_are_stored_with_the_firings_and_a_stale_batch_is_fenced(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    ingest_settings: Settings,
    database_url: str,
    kafka_bootstrap: str,
) -> None:
    account = await make_account()
    meter = await create_meter(http, account.secret_key)
    await insert_alert(database_url, account_id=account.account_id, meter_id=meter["id"], gte=10)
    group = f"alerts-{ingest_settings.topic_prefix}"
    topic = usage_changes_topic(ingest_settings.topic_prefix)
    async with (
        RelayingAggregator(ingest_settings),
        PipelineProbe(ingest_settings) as probe,
        RunningEvaluator(ingest_settings, group),
    ):
        for customer in ("cus_1", "cus_2"):
            sent = await http.post(
                "/v1/billing/meter_events",
                data=event_form(customer, "10"),
                headers=auth(account.secret_key),
            )
            assert sent.status_code == 200, sent.text
        await probe.settled([group])
    assert len(await firings(database_url)) == 2

    # Every record read is accounted for in PostgreSQL, partition by partition.
    records = await read_topic(kafka_bootstrap, topic, USAGE_CHANGES_PARTITIONS)
    ends: dict[int, int] = {}
    for r in records:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    stored = await _stored(database_url, group, topic)
    assert stored == ends

    # A zombie evaluating the first record again (as after a rebalance) is fenced: the alert
    # created since would fire for that customer, but nothing is recorded and no offset moves.
    await insert_alert(database_url, account_id=account.account_id, meter_id=meter["id"], gte=1)
    first = min(records, key=lambda r: (r.partition, r.offset))
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    zombie = AlertEvaluator(
        ingest_settings.with_overrides(alerts_consumer_group=group),
        pool,
        CollectorRegistry(),
        producer_factory=RefusingProducer,
    )
    try:
        with pytest.raises(OffsetFenced):
            await zombie.fold({TopicPartition(topic, first.partition): [first]})
    finally:
        await zombie.stop()
        await pool.close()
    assert len(await firings(database_url)) == 2
    assert await _stored(database_url, group, topic) == stored


async def test_a_group_whose_offsets_were_in_kafka_adopts_them_once(
    ingest_settings: Settings, database_url: str, kafka_bootstrap: str
) -> None:
    group = f"alerts-adopting-{ingest_settings.topic_prefix}"
    topic = usage_changes_topic(ingest_settings.topic_prefix)

    async def commit_in_kafka(offset: int) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 3)])
            await consumer.commit({TopicPartition(topic, 3): offset})
        finally:
            await consumer.stop()

    async def start_and_stop_an_evaluator() -> None:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        evaluator = AlertEvaluator(
            ingest_settings.with_overrides(alerts_consumer_group=group),
            pool,
            CollectorRegistry(),
            producer_factory=RefusingProducer,
        )
        try:
            await evaluator.start()
        finally:
            await evaluator.stop()
            await pool.close()

    # An evaluator from before stored offsets left its position in Kafka only.
    await commit_in_kafka(7)
    await start_and_stop_an_evaluator()
    assert await _stored(database_url, group, topic) == {3: 7}
    # Once stored, PostgreSQL is the truth: Kafka's (advisory) commits are not adopted again.
    await commit_in_kafka(9)
    await start_and_stop_an_evaluator()
    assert await _stored(database_url, group, topic) == {3: 7}

"""A real broker: explicit topic creation, an idempotent acks=all round trip, no auto-creation.

``kafka_bootstrap`` (one broker per session, from tests.fixtures.kafka.kafka_service) and
``topic_prefix`` (fresh, already created topics per test) come from tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import UnknownTopicOrPartitionError

from meterflow.kafka.topics import ensure_topics, meter_events_topic, topic_specs

pytestmark = pytest.mark.integration

LOG_APPEND_TIME = 1  # Kafka's timestamp type id for broker-assigned timestamps


async def _topic_configs(bootstrap_servers: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    (resource,) = responses[0].resources
    return {entry[0]: entry[1] for entry in resource[4]}


async def _list_topics(bootstrap_servers: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        topics: list[str] = await admin.list_topics()
    finally:
        await admin.close()
    return topics


async def test_ensure_topics_creates_once(kafka_bootstrap: str) -> None:
    topic_prefix = f"t_{uuid.uuid4().hex[:12]}."  # not the fixture's: those exist already
    specs = topic_specs(topic_prefix)

    created = await ensure_topics(kafka_bootstrap, specs)
    again = await ensure_topics(kafka_bootstrap, specs)

    assert sorted(created) == sorted(spec.name for spec in specs)
    assert again == []
    configs = await _topic_configs(kafka_bootstrap, meter_events_topic(topic_prefix))
    assert configs["message.timestamp.type"] == "LogAppendTime"
    assert configs["retention.ms"] == specs[0].configs["retention.ms"]


async def test_idempotent_producer_round_trip(kafka_bootstrap: str, topic_prefix: str) -> None:
    await ensure_topics(kafka_bootstrap, topic_specs(topic_prefix))
    topic = meter_events_topic(topic_prefix)
    sent = {f"event-{i}".encode(): f"customer-{i % 4}".encode() for i in range(50)}

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        # Enqueue everything, then await the acks: one batch, not fifty round trips.
        futures = [await producer.send(topic, value, key=key) for value, key in sent.items()]
        acks = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert all(ack.timestamp_type == LOG_APPEND_TIME for ack in acks)

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    received: dict[bytes, tuple[bytes, int]] = {}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(received) < len(sent) and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    assert record.value is not None
                    assert record.key is not None
                    received[record.value] = (record.key, record.partition)
    finally:
        await consumer.stop()

    assert {value: key for value, (key, _) in received.items()} == sent
    partitions_by_key: dict[bytes, set[int]] = {}
    for key, partition in received.values():
        partitions_by_key.setdefault(key, set()).add(partition)
    assert all(len(partitions) == 1 for partitions in partitions_by_key.values())


async def test_unknown_topic_is_not_auto_created(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = f"{topic_prefix}never-created"
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=2000,  # also bounds the wait for the topic's metadata
    )
    await producer.start()
    try:
        # aiokafka 0.14 gives up waiting for the topic's metadata with this error, not a timeout.
        with pytest.raises(UnknownTopicOrPartitionError):
            await producer.send_and_wait(topic, b"lost")
    finally:
        await producer.stop()

    assert topic not in await _list_topics(kafka_bootstrap)

"""Where a topic's records are: offsets by partition, offsets by time, what the topic keeps, and
reading offset ranges back.

The replay tools (rebuild, re-drive of rejected events, consumer resets) read topics outside any
consumer group: :func:`reading_consumer` is assigned partitions by hand, and
:func:`read_ranges` yields what lies in ``[start, stop)`` of each partition, nothing beyond.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from aiokafka.structs import ConsumerRecord

from meterflow.errors import MeterflowError
from meterflow.kafka.security import PLAINTEXT, client_security
from meterflow.settings.roles import KafkaSecuritySettings

# Bytes fetched per partition and request: replays read whole partitions back to back.
_FETCH_PARTITION_BYTES = 4 * 1024 * 1024
_POLL_MS = 200
_REQUEST_TIMEOUT_S = 30.0

Ranges = Mapping[int, tuple[int, int]]  # partition -> [start, stop)


class TopicUnavailable(MeterflowError):
    """The topic or its metadata could not be read from Kafka."""

    retriable = True


class TopicAccessDenied(MeterflowError):
    """Kafka refused this user's read of the topic (an ACL is missing); retrying cannot help."""

    retriable = False

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"Kafka refused to let this user read {topic}: grant it Read on the topic "
            "(see the README's Kafka ACL table)"
        )


def reading_consumer(
    bootstrap_servers: str, security: KafkaSecuritySettings = PLAINTEXT
) -> AIOKafkaConsumer:
    """A consumer outside every group: committed records only, never commits, positioned by hand.
    ``security`` is the process's ``settings.kafka`` (TLS, SASL)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=_FETCH_PARTITION_BYTES,
        fetch_max_bytes=4 * _FETCH_PARTITION_BYTES,
        fetch_max_wait_ms=_POLL_MS,
        **client_security(security),
    )


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions, in order; :class:`TopicUnavailable` if it does not exist."""
    # The consumer holds metadata only of topics it was assigned or subscribed to: ask Kafka.
    try:
        cluster = await consumer._client.fetch_all_metadata()
    except KafkaError as exc:
        raise TopicUnavailable(f"cannot read Kafka's metadata: {exc!r}") from exc
    numbers = cluster.partitions_for_topic(topic)
    if not numbers:
        raise TopicUnavailable(f"topic {topic} does not exist (run `meterflow topics`)")
    return [TopicPartition(topic, p) for p in sorted(numbers)]


async def end_offsets(consumer: AIOKafkaConsumer, topic: str) -> dict[int, int]:
    """Each partition's high watermark: the offset the next record will get."""
    tps = await partitions_of(consumer, topic)
    ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
    return {tp.partition: ends[tp] for tp in tps}


async def beginning_offsets(consumer: AIOKafkaConsumer, topic: str) -> dict[int, int]:
    """Each partition's first offset still held (later than 0 once retention deleted some)."""
    tps = await partitions_of(consumer, topic)
    starts: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
    return {tp.partition: starts[tp] for tp in tps}


async def offsets_at(consumer: AIOKafkaConsumer, topic: str, time_ms: int) -> dict[int, int]:
    """Each partition's first offset whose record was appended at or after ``time_ms`` (the
    broker's append time); the high watermark where none was."""
    tps = await partitions_of(consumer, topic)
    found = await consumer.offsets_for_times(dict.fromkeys(tps, max(0, time_ms)))
    ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
    return {tp.partition: ends[tp] if found[tp] is None else found[tp].offset for tp in tps}


@dataclass(frozen=True, slots=True)
class Retention:
    """How long, and how much, a topic keeps (``None``: without limit)."""

    retention_ms: int | None
    retention_bytes: int | None


async def topic_retention(
    bootstrap_servers: str, topic: str, security: KafkaSecuritySettings = PLAINTEXT
) -> Retention:
    """The topic's ``retention.ms`` and ``retention.bytes`` as the broker applies them."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="meterflow-replay",
        request_timeout_ms=int(_REQUEST_TIMEOUT_S * 1000),
        **client_security(security),
    )
    wanted = {"retention.ms": None, "retention.bytes": None}
    try:
        async with asyncio.timeout(_REQUEST_TIMEOUT_S):
            await admin.start()
            answers = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, wanted)]
            )
    except (KafkaError, TimeoutError) as exc:
        raise TopicUnavailable(f"cannot read the configuration of {topic}: {exc!r}") from exc
    finally:
        await admin.close()
    values: dict[str, str] = {}
    for answer in answers:
        for code, message, _kind, _name, entries in answer.resources:
            if code != 0:
                raise TopicUnavailable(f"cannot read the configuration of {topic}: {message}")
            values.update({entry[0]: entry[1] for entry in entries})
    return Retention(_limit(values.get("retention.ms")), _limit(values.get("retention.bytes")))


def _limit(raw: str | None) -> int | None:
    value = None if raw is None else int(raw)
    return None if value is None or value < 0 else value


async def read_ranges(
    consumer: AIOKafkaConsumer, topic: str, ranges: Ranges, *, max_records: int
) -> AsyncIterator[dict[int, list[ConsumerRecord]]]:
    """Yield ``{partition: records}`` batches holding exactly the records in each partition's
    ``[start, stop)``, in offset order per partition, until every range is read."""
    todo = {p: (start, stop) for p, (start, stop) in ranges.items() if start < stop}
    if not todo:
        return
    tps = {p: TopicPartition(topic, p) for p in todo}
    consumer.assign(list(tps.values()))
    for p, (start, _stop) in todo.items():
        consumer.seek(tps[p], start)
    while todo:
        try:
            fetched = await consumer.getmany(
                *tps.values(), timeout_ms=_POLL_MS, max_records=max_records
            )
        except TopicAuthorizationFailedError as exc:
            raise TopicAccessDenied(topic) from exc
        batch: dict[int, list[ConsumerRecord]] = {}
        for tp, records in fetched.items():
            if tp.partition not in todo:
                continue
            stop = todo[tp.partition][1]
            kept = [r for r in records if r.offset < stop]
            if kept:
                batch[tp.partition] = kept
        if batch:
            yield batch
        for p in list(todo):
            # The position passes stop once the range is read (also across offsets that hold
            # no record, such as transaction markers).
            if await consumer.position(tps[p]) >= todo[p][1]:
                consumer.pause(tps[p])
                del todo[p]
                del tps[p]
    # The partitions stay assigned, paused: unassigning them just before the consumer stops
    # races its fetcher's shutdown in aiokafka 0.14, which can then wait for ever.

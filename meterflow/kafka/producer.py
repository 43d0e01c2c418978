"""Producing from the aggregator and the alert evaluator: enqueue a whole batch, then await every
ack, so a batch costs one round of broker round trips rather than one per record."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

LINGER_MS = 2  # records of one batch are enqueued together; a short linger only merges them
ACK_TIMEOUT_S = 10.0

KeyedValue = tuple[bytes, bytes]  # (key, value)


class Producer(Protocol):
    """The part of :class:`aiokafka.AIOKafkaProducer` used here (a seam for fault injection)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(
        self, topic: str, value: bytes, key: bytes, partition: int | None = None
    ) -> asyncio.Future[Any]: ...


class PublishFailed(Exception):
    """Kafka did not acknowledge every record of a batch; some may have landed anyway."""


def idempotent_producer(bootstrap_servers: str, client_id: str) -> Producer:
    """An ``acks=all`` idempotent producer: a retried send never duplicates a record."""
    producer: Producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=LINGER_MS,
        request_timeout_ms=int(ACK_TIMEOUT_S * 1000),
        retry_backoff_ms=100,
        # No compression: records are small JSON and the codecs need optional native packages.
        compression_type=None,
    )
    return producer


async def produce_all(
    producer: Producer,
    topic: str,
    records: Sequence[KeyedValue],
    timeout_s: float = ACK_TIMEOUT_S,
    partition_of: Callable[[bytes], int] | None = None,
) -> None:
    """Send ``records`` and wait until Kafka acknowledged all of them, or raise
    :class:`PublishFailed`. ``partition_of`` (e.g. a memoised
    :class:`~meterflow.kafka.partitions.PartitionMap`) saves the producer hashing every key."""
    try:
        async with asyncio.timeout(timeout_s):
            futures = [
                await producer.send(
                    topic,
                    value,
                    key=key,
                    partition=None if partition_of is None else partition_of(key),
                )
                for key, value in records
            ]
            await asyncio.gather(*futures)
    except (KafkaError, TimeoutError) as exc:
        raise PublishFailed(f"{topic}: {exc!r}") from exc

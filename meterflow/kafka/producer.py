"""Producing to Kafka: the one producer factory and the :class:`Producer` seam every process uses.

Every producer is idempotent with ``acks="all"``: a retried send never duplicates a record, and an
ack means every in-sync replica has it. Users differ only in tuning, passed to
:func:`idempotent_producer`: ingest lingers a few ms to batch records of concurrent requests and
bounds a broker request by its publish timeout; the aggregator's relay and the alert evaluator
enqueue a whole batch, then await every ack (:func:`produce_all`), so a batch costs one round of
broker round trips rather than one per record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from meterflow.errors import MeterflowError
from meterflow.kafka.security import PLAINTEXT, client_security
from meterflow.settings.roles import KafkaSecuritySettings

LINGER_MS = 2  # records of one batch are enqueued together; a short linger only merges them
MAX_BATCH_BYTES = 16 * 1024  # per partition; aiokafka's default
ACK_TIMEOUT_S = 10.0
# Producing for HTTP requests (ingest): a few ms of batching across concurrent requests, small
# next to the broker's ack; a record is well under 1 KiB, so the batch size is rarely the limit.
REQUEST_LINGER_MS = 5
REQUEST_MAX_BATCH_BYTES = 128 * 1024

KeyedValue = tuple[bytes, bytes]  # (key, value)


class Producer(Protocol):
    """The part of :class:`aiokafka.AIOKafkaProducer` meterflow uses (a seam for fakes in tests
    and for fault injection)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def flush(self) -> None: ...

    async def send(
        self, topic: str, value: bytes, key: bytes, partition: int | None = None
    ) -> asyncio.Future[Any]: ...


class PublishFailed(MeterflowError):
    """Kafka did not acknowledge every record of a batch; some may have landed anyway."""

    retriable = True


def idempotent_producer(
    bootstrap_servers: str,
    client_id: str,
    *,
    linger_ms: int = LINGER_MS,
    max_batch_bytes: int = MAX_BATCH_BYTES,
    request_timeout_s: float = ACK_TIMEOUT_S,
    security: KafkaSecuritySettings = PLAINTEXT,
) -> Producer:
    """An ``acks=all`` idempotent producer: a retried send never duplicates a record.
    ``security`` is the process's ``settings.kafka`` (TLS, SASL)."""
    producer: Producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=max_batch_bytes,
        # Bounds one broker request and how long a batch may wait for a partition leader; past
        # it nobody waits for the answer anyway.
        request_timeout_ms=max(1000, int(request_timeout_s * 1000)),
        retry_backoff_ms=100,
        # No compression: records are small JSON and the codecs need optional native packages.
        compression_type=None,
        **client_security(security),
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

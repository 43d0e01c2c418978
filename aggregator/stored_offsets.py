"""Kafka consumers whose offsets live in PostgreSQL: the plumbing every folding consumer shares.

Each consumer group's next offsets are stored in ``consumer_offsets`` in the same transaction as
what the batch produced. On every partition assignment the consumer seeks to them; Kafka's own
commits are advisory, so standard tooling can show the group's lag.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from aggregator.rollup_store import stored_offsets
from meterflow.settings import Settings

log = logging.getLogger("meterflow.aggregator")

POLL_TIMEOUT_MS = 100

Batch = Mapping[TopicPartition, list[ConsumerRecord]]


def folding_consumer(settings: Settings, group: str) -> AIOKafkaConsumer:
    """A consumer that never commits on its own and reads only committed records."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=POLL_TIMEOUT_MS,
        max_poll_interval_ms=300_000,
        # How long a crashed member keeps its partitions before the group reassigns them.
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=max(1000, settings.consumer_session_timeout_ms // 3),
    )


async def seek_to_stored(
    consumer: AIOKafkaConsumer,
    pool: asyncpg.Pool,
    group: str,
    topic: str,
    assigned: list[TopicPartition],
) -> dict[int, int]:
    """Seek each assigned partition to its stored offset (0 when none); return the positions."""
    async with pool.acquire() as conn:
        stored = await stored_offsets(conn, group, topic, [tp.partition for tp in assigned])
    positions: dict[int, int] = {}
    for tp in assigned:
        # Never seek_to_beginning here: it awaits the group coordinator, which a rebalance
        # callback cannot wait for while the broker is away. An offset 0 already deleted by
        # retention is handled by auto_offset_reset="earliest".
        positions[tp.partition] = stored.get(tp.partition, 0)
        consumer.seek(tp, positions[tp.partition])
    log.info("%s: partitions of %s assigned at %s", group, topic, stored)
    return positions


class SeekOnAssign(ConsumerRebalanceListener):  # type: ignore[misc]
    """Calls ``seek`` with the partitions of every new assignment."""

    def __init__(self, seek: Callable[[list[TopicPartition]], Awaitable[object]]) -> None:
        self._seek = seek

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._seek(assigned)


def batch_offsets(batch: Batch) -> dict[int, tuple[int, int]]:
    """``{partition: (first offset, last offset)}`` of a fetched batch."""
    return {tp.partition: (m[0].offset, m[-1].offset) for tp, m in batch.items()}


async def commit_advisory(
    consumer: AIOKafkaConsumer, topic: str, offsets: Mapping[int, tuple[int, int]]
) -> None:
    """Tell Kafka how far the group got, for lag tooling only; failures are logged, not raised."""
    try:
        await consumer.commit(
            {TopicPartition(topic, p): last + 1 for p, (_, last) in offsets.items()}
        )
    except KafkaError as exc:
        log.warning("advisory Kafka commit failed: %s", exc)


DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
_RETRY_PAUSE_S = 1.0


async def reseek_until_done(seek: Callable[[], Awaitable[object]], stopping: asyncio.Event) -> None:
    """Seek back to the stored offsets, waiting out a database that does not answer."""
    while not stopping.is_set():
        try:
            await seek()
        except DATABASE_ERRORS:
            log.exception("cannot read the stored offsets; retrying")
            await asyncio.sleep(_RETRY_PAUSE_S)
        else:
            return

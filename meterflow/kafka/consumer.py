"""The stored-offset consumer base every consumer group shares (rollups, error reports, alerts).

Each group's next offsets live in PostgreSQL (:mod:`meterflow.kafka.offsets`), written in the same
transaction as what the batch produced. On every partition assignment the consumer seeks to them;
a fenced or failed batch is read again from them. Kafka's own commits are advisory, so standard
tooling can show the group's lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry, Counter

from meterflow.kafka.lag import track_lag
from meterflow.kafka.offsets import OffsetFenced, adopt_offsets, stored_offsets
from meterflow.kafka.security import client_security
from meterflow.lifecycle.reconnect import DatabaseRetry
from meterflow.settings import Settings
from meterflow.store.outages import DATABASE_ERRORS

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
        session_timeout_ms=settings.consumers.consumer_session_timeout_ms,
        heartbeat_interval_ms=max(1000, settings.consumers.consumer_session_timeout_ms // 3),
        **client_security(settings.kafka),
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
    """Calls ``seek`` with the partitions of every new assignment (an empty one too: the member is
    then idle in its group), and ``on_revoked`` when a rebalance takes them away."""

    def __init__(
        self,
        seek: Callable[[list[TopicPartition]], Awaitable[object]],
        on_revoked: Callable[[], None] = lambda: None,
    ) -> None:
        self._seek = seek
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._on_revoked()
        if revoked:
            log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._seek(assigned)


def lane_partitions(
    assigned: Iterable[TopicPartition], lane: int, lanes: int
) -> list[TopicPartition]:
    """The assigned partitions lane ``lane`` of ``lanes`` folds: those whose number is ``lane``
    modulo ``lanes``. A partition stays in its lane across rebalances, so no two lanes of a
    process ever fold the same partition."""
    if not 0 <= lane < lanes:
        raise ValueError(f"lane {lane} is not one of {lanes} lanes")
    return sorted(tp for tp in assigned if tp.partition % lanes == lane)


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


async def reseek_until_done(
    seek: Callable[[], Awaitable[object]], stopping: asyncio.Event, retry: DatabaseRetry
) -> None:
    """Seek back to the stored offsets, waiting out a database that does not answer.

    A seek only reads, so it does not end an outage: with a full disk reads work while every
    batch fails. The next batch that commits does (``retry.succeeded()``), which keeps one
    warning per outage and the backoff growing across its failed batches.
    """
    while not stopping.is_set():
        try:
            await seek()
        except DATABASE_ERRORS as exc:
            await retry.pause(exc, stopping)
        else:
            return


class StoredOffsetConsumer:
    """A consumer group whose offsets live in PostgreSQL; subclasses implement :meth:`fold`.

    On every partition assignment it seeks to the stored offsets. ``run()`` hands each fetched
    batch to :meth:`fold`, which fences and advances the batch's offsets
    (:mod:`meterflow.kafka.offsets`) in its own transaction, then calls :meth:`folded`; a batch
    that is fenced (:class:`OffsetFenced`) or fails on the database is read again from the
    stored offsets. Lag is reported through :func:`~meterflow.kafka.lag.track_lag`.

    With ``lanes`` above 1, that loop runs once per lane, concurrently: each lane fetches and
    folds only its own partitions (:func:`lane_partitions`), so while one lane's batch is in
    PostgreSQL another decodes or waits on its own commit, and no lane waits for another.
    """

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        registry: CollectorRegistry,
        *,
        topic: str,
        group: str,
        batch_max: int,
        fenced: Counter,
        failures: Counter,
        name: str,
        # Partitions of the topic whose offsets a group that kept them in Kafka adopts.
        adopt_kafka_commits: int = 0,
        lanes: int = 1,
    ) -> None:
        if lanes < 1:
            raise ValueError("a consumer needs at least one lane")
        self.name = name
        self._lanes = lanes
        # Lanes to seek back to their stored offsets before their next fetch: after one lane is
        # fenced (the stored offsets moved: a reset or a rebalance), every lane is.
        self._reseek: set[int] = set()
        self._adopt_kafka_commits = adopt_kafka_commits
        self._started = False
        # Whether the last rebalance assigned this member its partitions (maybe none) and the
        # seek to their stored offsets succeeded; false from a revocation until then.
        self._in_group = False
        self._pool = pool
        self._topic = topic
        self._group = group
        self._batch_max = batch_max
        self._fenced = fenced
        self._failures = failures
        self._stopping = asyncio.Event()
        self._consumer = folding_consumer(settings, group)
        self._lag = track_lag(registry, group, self._consumer)
        self._retry = DatabaseRetry(name, registry)

    async def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        positions = await seek_to_stored(
            self._consumer, self._pool, self._group, self._topic, assigned
        )
        self._lag.folded_up_to(positions)
        self._in_group = True

    def _revoked(self) -> None:
        self._in_group = False

    async def start(self) -> None:
        await self._consumer.start()
        if self._adopt_kafka_commits:
            await self._adopt_kafka_commits_once(self._adopt_kafka_commits)
        self._consumer.subscribe(
            [self._topic], listener=SeekOnAssign(self.seek_to_stored, self._revoked)
        )
        self._started = True

    def ready(self) -> bool:
        """Started, not stopping, and a member of its group: holding partitions positioned at
        their stored offsets, or idle (the group has more members than partitions)."""
        return self._started and self._in_group and not self._stopping.is_set()

    async def _adopt_kafka_commits_once(self, partitions: int) -> None:
        """For a group that kept its offsets in Kafka before they moved to PostgreSQL: store the
        offsets Kafka holds for it on the topic's ``partitions``, once, so it continues where it
        stopped instead of reading the topic again. A group with stored offsets is left alone."""
        committed: dict[int, int] = {}
        for partition in range(partitions):
            offset = await self._consumer.committed(TopicPartition(self._topic, partition))
            if offset is not None:
                committed[partition] = offset
        if committed:
            async with self._pool.acquire() as conn:
                if await adopt_offsets(conn, self._group, self._topic, committed):
                    log.info("%s: adopted Kafka's committed offsets %s", self._group, committed)

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def run(self) -> None:
        """Fold until asked to stop; each batch commits fully or not at all. With several lanes,
        the first lane to fail stops the others."""
        if self._lanes == 1:
            await self._run_lane(0)
            return
        tasks = [asyncio.create_task(self._run_lane(lane)) for lane in range(self._lanes)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _partitions(self, lane: int) -> list[TopicPartition]:
        """Lane ``lane``'s assigned partitions (all of them with one lane)."""
        return lane_partitions(self._consumer.assignment(), lane, self._lanes)

    async def _idle(self) -> None:
        """A lane without partitions waits a poll interval (or until asked to stop)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), POLL_TIMEOUT_MS / 1000)

    async def _run_lane(self, lane: int) -> None:
        """Fetch and fold lane ``lane``'s partitions until asked to stop; a batch that fails is
        read again from its partitions' stored offsets."""
        while not self._stopping.is_set():
            if lane in self._reseek:
                self._reseek.discard(lane)
                await self._seek_back(lane)
                continue
            if partitions := self._partitions(lane):
                batch = await self._consumer.getmany(
                    *partitions, timeout_ms=POLL_TIMEOUT_MS, max_records=self._batch_max
                )
            else:
                await self._idle()
                continue
            if not batch:
                continue
            try:
                await self.fold(batch)
            except OffsetFenced as exc:
                self._fenced.inc()
                log.warning("%s: batch rolled back, re-seeking: %s", self._group, exc)
                self._reseek.update(other for other in range(self._lanes) if other != lane)
            except DATABASE_ERRORS as exc:
                # Rolled back: wait out the database, then read the batch again.
                self._failures.inc()
                await self._retry.pause(exc, self._stopping)
            else:
                self._retry.succeeded()
                continue
            await self._seek_back(lane)

    async def _seek_back(self, lane: int) -> None:
        """Seek lane ``lane``'s partitions back to their stored offsets."""
        await reseek_until_done(
            lambda: self.seek_to_stored(self._partitions(lane)), self._stopping, self._retry
        )

    async def fold(self, batch: Batch) -> None:
        """Apply one batch in one transaction: fence its offsets, write, advance its offsets."""
        raise NotImplementedError

    async def folded(self, offsets: Mapping[int, tuple[int, int]]) -> None:
        """After a batch committed: record its positions for lag, tell Kafka (advisory)."""
        self._lag.folded_up_to({p: last + 1 for p, (_, last) in offsets.items()})
        await commit_advisory(self._consumer, self._topic, offsets)

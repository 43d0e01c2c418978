"""The rollup consumer: reads meter-events records and folds them into PostgreSQL exactly once.

Offsets live in PostgreSQL (``consumer_offsets``), written in the fold's transaction. On every
partition assignment the consumer seeks to them; Kafka's own committed offsets are only advisory
(for lag tooling). Any number of processes may run in one consumer group.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aggregator.fold import segments as split_segments
from aggregator.meter_windows import MeterWindows
from aggregator.rollup_store import (
    OffsetFenced,
    apply_batch,
    ensure_event_partitions,
    event_days,
    spans_of,
    stored_offsets,
)
from meterflow.event_records import MeterEventsRecord, RecordDecodeError, decode
from meterflow.settings import Settings
from meterflow.topics import meter_events_topic

log = logging.getLogger("meterflow.aggregator")

_POLL_TIMEOUT_MS = 100


class FoldMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "meterflow_fold_events_total",
            "Events read by the aggregator, by outcome (new, duplicate, undecodable).",
            ["outcome"],
            registry=registry,
        )
        self.cancels = Counter(
            "meterflow_fold_cancels_total",
            "Cancel records applied or finding no event to cancel.",
            ["outcome"],
            registry=registry,
        )
        self.batch_records = Histogram(
            "meterflow_fold_batch_records",
            "Kafka records per folded batch.",
            buckets=(1, 10, 50, 100, 500, 1000, 5000, 20000),
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "meterflow_fold_batch_seconds",
            "Time to fold one batch into PostgreSQL, transaction included.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.fenced = Counter(
            "meterflow_fold_fenced_total",
            "Batches rolled back because the stored offset moved (rebalance or restart).",
            registry=registry,
        )


@dataclass(eq=False)  # collectors are registered by identity
class LagCollector(Collector):
    """Consumer lag per partition: the broker's high watermark minus the next offset to fold.

    Computed when scraped, from the watermarks the consumer last fetched and the positions this
    process recorded after each committed batch or seek.
    """

    group: str
    topic: str
    consumer: AIOKafkaConsumer | None = None
    positions: dict[int, int] = field(default_factory=dict)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "meterflow_consumer_lag_records",
            "Records between the next offset to fold and the partition's high watermark.",
            labels=["group", "topic", "partition"],
        )
        if self.consumer is not None:
            for tp in self.consumer.assignment():
                highwater = self.consumer.highwater(tp)
                position = self.positions.get(tp.partition)
                if highwater is not None and position is not None:
                    lag = max(0, highwater - position)
                    family.add_metric([self.group, tp.topic, str(tp.partition)], lag)
        yield family


class _SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: RollupConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._owner.seek_to_stored(assigned)


class RollupConsumer:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, registry: CollectorRegistry) -> None:
        if not settings.kafka_bootstrap_servers:
            raise ValueError("the aggregator needs KAFKA_BOOTSTRAP_SERVERS")
        self._settings = settings
        self._pool = pool
        self._topic = meter_events_topic(settings.topic_prefix)
        self._group = settings.consumer_group
        self.metrics = FoldMetrics(registry)
        self._lag = LagCollector(group=self._group, topic=self._topic)
        registry.register(self._lag)
        self._known_days: set[int] = set()
        self._meter_windows = MeterWindows()
        self._stopping = asyncio.Event()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=self._group,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=_POLL_TIMEOUT_MS,
            max_poll_interval_ms=300_000,
            # How long a crashed member keeps its partitions before the group reassigns them.
            session_timeout_ms=settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=max(1000, settings.consumer_session_timeout_ms // 3),
        )
        self._lag.consumer = self._consumer

    async def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        async with self._pool.acquire() as conn:
            offsets = await stored_offsets(
                conn, self._group, self._topic, [tp.partition for tp in assigned]
            )
        for tp in assigned:
            stored = offsets.get(tp.partition)
            if stored is None:
                # Not seek_to_beginning: it awaits the group coordinator, which a rebalance
                # callback cannot wait for while the broker is away. Offset 0 past retention is
                # handled by auto_offset_reset="earliest".
                self._consumer.seek(tp, 0)
                self._lag.positions.pop(tp.partition, None)
            else:
                self._consumer.seek(tp, stored)
                self._lag.positions[tp.partition] = stored
        log.info(
            "partitions assigned: %s", {tp.partition: offsets.get(tp.partition) for tp in assigned}
        )

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe([self._topic], listener=_SeekToStoredOffsets(self))

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def run(self) -> None:
        """Fold until asked to stop; each batch commits fully or not at all."""
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(
                timeout_ms=_POLL_TIMEOUT_MS, max_records=self._settings.fold_batch_max
            )
            if not batch:
                continue
            try:
                await self._fold(batch)
            except OffsetFenced as exc:
                self.metrics.fenced.inc()
                log.warning("batch rolled back, re-seeking: %s", exc)
                await self.seek_to_stored(list(self._consumer.assignment()))

    async def _fold(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        started = time.perf_counter()
        records: list[MeterEventsRecord] = []
        offsets: dict[int, tuple[int, int]] = {}
        for tp, messages in batch.items():
            offsets[tp.partition] = (messages[0].offset, messages[-1].offset)
            for message in messages:
                try:
                    records.append(decode(message.value))
                except RecordDecodeError:
                    # Never produced by meterflow; skipping keeps the partition moving.
                    self.metrics.events.labels("undecodable").inc()
                    log.exception("skipping undecodable record at %s@%s", tp, message.offset)
        segments = split_segments(records)
        days = event_days(segments) - self._known_days
        async with self._pool.acquire() as conn:
            if days:
                await ensure_event_partitions(conn, days)
                self._known_days |= days
            outcome = await apply_batch(
                conn, group=self._group, topic=self._topic, spans=spans_of(offsets),
                segments=segments, meter_windows=self._meter_windows,
            )  # fmt: skip
        self.metrics.events.labels("new").inc(outcome.events_new)
        self.metrics.events.labels("duplicate").inc(outcome.events_duplicate)
        self.metrics.cancels.labels("applied").inc(outcome.cancels_applied)
        self.metrics.cancels.labels("unmatched").inc(outcome.cancels_unmatched)
        for partition, (_, last) in offsets.items():
            self._lag.positions[partition] = last + 1
        self.metrics.batch_records.observe(sum(len(m) for m in batch.values()))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        try:
            # Advisory only: lets standard Kafka tooling show this group's lag.
            await self._consumer.commit({TopicPartition(self._topic, p): last + 1
                                         for p, (_, last) in offsets.items()})  # fmt: skip
        except KafkaError as exc:
            log.warning("advisory Kafka commit failed: %s", exc)

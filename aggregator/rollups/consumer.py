"""The rollup consumer: reads meter-events records and folds them into PostgreSQL exactly once.

A :class:`~meterflow.kafka.consumer.StoredOffsetConsumer`: offsets live in PostgreSQL
(``consumer_offsets``), written in the fold's transaction. On every partition assignment the
consumer seeks to them; Kafka's own committed offsets are only advisory (for lag tooling). Any
number of processes may run in one consumer group, and each folds its partitions in
``METERFLOW_FOLD_LANES`` concurrent lanes, one transaction per lane's batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Histogram

from aggregator.rollups.columns import segments as split_segments
from aggregator.rollups.meter_windows import MeterWindows
from aggregator.rollups.series import EventSeries
from aggregator.rollups.store import apply_batch, ensure_event_partitions, event_days
from meterflow.kafka.consumer import Batch, StoredOffsetConsumer, batch_offsets
from meterflow.kafka.offsets import spans_of
from meterflow.kafka.topics import meter_events_topic
from meterflow.records.meter_events import MeterEventsRecord, RecordDecodeError, decode
from meterflow.settings import Settings

log = logging.getLogger("meterflow.aggregator")


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
        self.failures = Counter(
            "meterflow_fold_failures_total",
            "Batches that failed on a database error and were read again.",
            registry=registry,
        )
        self.fenced = Counter(
            "meterflow_fold_fenced_total",
            "Batches rolled back because the stored offset moved (rebalance or restart).",
            registry=registry,
        )
        self.freshness = Histogram(
            "meterflow_fold_freshness_seconds",
            "From ingest accepting a record's events (their receipt time) to the commit that "
            "makes them visible in summaries, per folded record of events.",
            buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300),
            registry=registry,
        )

    def observe_freshness(self, records: Iterable[MeterEventsRecord], committed_ms: int) -> None:
        """One observation per record of events. Offsets commit with the fold, so a record is
        folded, and observed, once: replays after a crash re-read only uncommitted records."""
        for record in records:
            if record.kind == "events":
                self.freshness.observe(max(0, committed_ms - record.received_ms) / 1000)


class RollupConsumer(StoredOffsetConsumer):
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        registry: CollectorRegistry,
        on_fold: Callable[[], None] | None = None,
    ) -> None:
        if not settings.kafka_bootstrap_servers:
            raise ValueError("the aggregator needs KAFKA_BOOTSTRAP_SERVERS")
        if settings.aggregator.fold_lanes < 1:
            raise ValueError("METERFLOW_FOLD_LANES must be at least 1")
        self.metrics = FoldMetrics(registry)
        super().__init__(
            settings,
            pool,
            registry,
            topic=meter_events_topic(settings.topic_prefix),
            group=settings.aggregator.consumer_group,
            batch_max=settings.aggregator.fold_batch_max,
            fenced=self.metrics.fenced,
            failures=self.metrics.failures,
            name="rollups",
            lanes=settings.aggregator.fold_lanes,
        )
        self._known_days: set[int] = set()
        self._meter_windows = MeterWindows()
        self._series = EventSeries()
        # Told after each commit that changed usage (the usage relay wakes on it).
        self._on_fold = on_fold

    async def fold(self, batch: Batch) -> None:
        """Fold one lane's batch in one transaction on its own connection."""
        started = time.perf_counter()
        records: list[MeterEventsRecord] = []
        offsets = batch_offsets(batch)
        for tp, messages in batch.items():
            for message in messages:
                try:
                    records.append(decode(message.value))
                except RecordDecodeError:
                    # Never produced by meterflow; skipping keeps the partition moving.
                    self.metrics.events.labels("undecodable").inc()
                    log.exception("skipping undecodable record at %s@%s", tp, message.offset)
        segments = split_segments(records)
        async with self._pool.acquire() as conn:
            days = event_days(segments) - self._known_days
            if days:
                await ensure_event_partitions(conn, days)
                self._known_days |= days
            outcome = await apply_batch(
                conn, group=self._group, topic=self._topic, spans=spans_of(offsets),
                segments=segments, meter_windows=self._meter_windows, series=self._series,
            )  # fmt: skip
        # Both clocks are wall clocks (ingest's stamp, ours now): skew between hosts shows here.
        self.metrics.observe_freshness(records, int(time.time() * 1000))
        if self._on_fold is not None and (outcome.events_new or outcome.cancels_applied):
            self._on_fold()
        await self.folded(offsets)
        self.metrics.batch_records.observe(sum(len(m) for m in batch.values()))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.events.labels("new").inc(outcome.events_new)
        self.metrics.events.labels("duplicate").inc(outcome.events_duplicate)
        self.metrics.cancels.labels("applied").inc(outcome.cancels_applied)
        self.metrics.cancels.labels("unmatched").inc(outcome.cancels_unmatched)

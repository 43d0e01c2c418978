"""The alert evaluator: reads the usage-changes topic and fires billing alerts exactly once.

Offsets are Kafka's (committed after each batch): evaluation is idempotent, so a batch read twice
after a crash or a rebalance fires nothing twice. Any number of evaluators may run, in one
consumer group or in several: the firing's primary key decides which one records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import asyncpg
from prometheus_client import CollectorRegistry

from aggregator.alerts.metrics import AlertMetrics
from aggregator.alerts.periods import TouchedUsage, candidates, collapse, firings, usage_query
from aggregator.alerts.store import (
    RecordedFiring,
    StoredEvent,
    fired_already,
    record_firings,
    usage_totals,
    watching_alerts,
)
from aggregator.alerts.v1_events import V1EventPublisher
from meterflow.alerts import encode_v1_event
from meterflow.errors import ConfigurationError
from meterflow.kafka.consumer import (
    DATABASE_ERRORS,
    POLL_TIMEOUT_MS,
    Batch,
    batch_offsets,
    commit_advisory,
    folding_consumer,
)
from meterflow.kafka.lag import track_lag
from meterflow.kafka.producer import Producer, idempotent_producer
from meterflow.kafka.topics import usage_changes_topic, v1_events_topic
from meterflow.records.meter_events import RecordDecodeError
from meterflow.records.usage_changes import UsageChange, decode_usage_change
from meterflow.settings import Settings
from meterflow.usage.keys import UsageKey

log = logging.getLogger("meterflow.alerts")

BATCH_MAX = 2000
_RETRY_PAUSE_S = 1.0


class AlertEvaluator:
    """``start()``, then ``run()`` until ``request_stop()``, then ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        registry: CollectorRegistry,
        *,
        producer_factory: Callable[[], Producer] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        bootstrap = settings.kafka_bootstrap_servers
        if not bootstrap:
            raise ConfigurationError("the alert evaluator needs KAFKA_BOOTSTRAP_SERVERS")
        self._pool = pool
        self._clock = clock
        self._topic = usage_changes_topic(settings.topic_prefix)
        self._group = settings.alerts.alerts_consumer_group
        self.metrics = AlertMetrics(registry)
        self._consumer = folding_consumer(settings, self._group)
        self._lag = track_lag(registry, self._group, self._consumer)
        producer = (
            producer_factory()
            if producer_factory is not None
            else idempotent_producer(bootstrap, "meterflow-alerts")
        )
        self.publisher = V1EventPublisher(
            producer, v1_events_topic(settings.topic_prefix), pool, self.metrics, clock=clock
        )
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self.publisher.start()
        await self._consumer.start()
        self._consumer.subscribe([self._topic])

    def request_stop(self) -> None:
        self._stopping.set()
        self.publisher.request_stop()

    async def stop(self) -> None:
        """Leave the consumer group, then close the producer."""
        try:
            await self._consumer.stop()
        finally:
            await self.publisher.stop()

    async def run(self) -> None:
        """Evaluate batches and sweep unpublished events until asked to stop; the batch in hand
        finishes."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.publisher.run_sweeps(), name="alert-event-sweep")
            group.create_task(self._consume(), name="alert-evaluation")

    async def _consume(self) -> None:
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=BATCH_MAX)
            if not batch:
                continue
            try:
                await self.evaluate(batch)
            except DATABASE_ERRORS:
                self.metrics.failures.inc()
                log.exception("evaluating a batch failed; reading it again")
                self._rewind(batch)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), _RETRY_PAUSE_S)

    def _rewind(self, batch: Batch) -> None:
        """Read the batch again: its offsets were not committed."""
        assigned = self._consumer.assignment()
        for tp, messages in batch.items():
            if tp in assigned:
                self._consumer.seek(tp, messages[0].offset)

    def _decode(self, batch: Batch) -> list[UsageChange]:
        changes: list[UsageChange] = []
        for tp, messages in batch.items():
            for message in messages:
                try:
                    changes.append(decode_usage_change(message.value))
                except RecordDecodeError:
                    # Never produced by meterflow; skipping keeps the partition moving.
                    self.metrics.undecodable.inc()
                    log.exception("skipping undecodable record at %s@%s", tp, message.offset)
        return changes

    async def evaluate(self, batch: Batch) -> list[RecordedFiring]:
        """Evaluate one fetched batch, then publish what fired and commit the offsets.

        1. Collapse the records to distinct (meter, customer) with merged event-time spans.
        2. Find the active alerts watching them, with their meters' formulas (one query).
        3. Expand each into its periods; drop the (alert, customer, period) that fired before.
        4. Read the usage of the remaining periods from the minute rollups (one query).
        5. In one transaction, record the firings whose key is new, with their events and
           webhook deliveries.
        6. After the commit, put the events on the events topic and mark them published.
        7. Commit the Kafka offsets.
        """
        started = time.perf_counter()
        offsets = batch_offsets(batch)
        touched = collapse(self._decode(batch))
        recorded: list[RecordedFiring] = []
        async with self._pool.acquire() as conn:
            watches = await watching_alerts(conn, list(touched))
            pending = candidates(watches, touched)
            done = await fired_already(conn, [c.firing_key for c in pending])
            pending = [c for c in pending if c.firing_key not in done]
            usage = await usage_totals(conn, list({usage_query(c): None for c in pending}))
            fired = firings(pending, usage)
            if fired:
                async with conn.transaction():
                    recorded = await record_firings(conn, fired, now_ms=int(self._clock() * 1000))
        self._observe(batch, recorded, touched, started)
        await self.publisher.publish([_stored(r) for r in recorded])
        self._lag.folded_up_to({p: last + 1 for p, (_, last) in offsets.items()})
        await commit_advisory(self._consumer, self._topic, offsets)
        return recorded

    def _observe(
        self,
        batch: Batch,
        recorded: Sequence[RecordedFiring],
        touched: dict[UsageKey, TouchedUsage],
        started: float,
    ) -> None:
        committed_ms = int(self._clock() * 1000)
        for r in recorded:
            self.metrics.firings.labels(r.firing.candidate.watch.alert.recurrence).inc()
            received_ms = touched[r.firing.candidate.usage_key].last_received_ms
            if received_ms is not None:
                latency_s = max(0, committed_ms - received_ms) / 1000
                self.metrics.notification_latency.observe(latency_s)
        records = sum(len(m) for m in batch.values())
        self.metrics.records.inc(records)
        self.metrics.batches.inc()
        self.metrics.batch_records.observe(records)
        self.metrics.evaluation_seconds.observe(time.perf_counter() - started)


def _stored(recorded: RecordedFiring) -> StoredEvent:
    return StoredEvent(
        recorded.event_id, recorded.account_id, recorded.livemode, encode_v1_event(recorded.event)
    )

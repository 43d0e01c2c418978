"""The alert evaluator: reads the usage-changes topic and fires billing alerts exactly once.

A :class:`~meterflow.kafka.consumer.StoredOffsetConsumer` like every other consumer group: the
offsets live in ``consumer_offsets``, written in the same transaction as the firings the batch
records, and every partition assignment seeks to them. Within one group the offset fence decides
which evaluator evaluates a batch; across groups the firing's primary key decides which one records
it, so any number of evaluators may run, in one consumer group or in several.

Each batch also evaluates the credit balance alerts of the customers whose usage it changed
(:mod:`aggregator.alerts.credit`), and a sweep beside the consumer evaluates the customers whose
credit ledger or grants changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import asyncpg
from prometheus_client import CollectorRegistry

from aggregator.alerts.credit.evaluation import (
    SWEEP_INTERVAL_S,
    RecheckSweep,
    evaluate_credit_alerts,
    observe,
)
from aggregator.alerts.credit.metrics import CreditAlertMetrics
from aggregator.alerts.credit.rules import CustomerKey, customers_of
from aggregator.alerts.metrics import AlertMetrics
from aggregator.alerts.periods import TouchedUsage, candidates, collapse, firings, usage_query
from aggregator.alerts.store import (
    RecordedFiring,
    StoredEvent,
    fired_already,
    record_firings,
    watching_alerts,
)
from aggregator.alerts.v1_events import V1EventPublisher
from meterflow.errors import ConfigurationError
from meterflow.kafka.consumer import Batch, StoredOffsetConsumer, batch_offsets
from meterflow.kafka.offsets import advance_offsets, fence_offsets, spans_of
from meterflow.kafka.producer import Producer, idempotent_producer
from meterflow.kafka.topics import USAGE_CHANGES_PARTITIONS, usage_changes_topic, v1_events_topic
from meterflow.lifecycle.reconnect import DatabaseRetry
from meterflow.records.meter_events import RecordDecodeError
from meterflow.records.usage_changes import UsageChange, decode_usage_change
from meterflow.settings import Settings
from meterflow.usage.keys import UsageKey
from meterflow.usage.reader import usage_totals
from meterflow.v1_events import encode_v1_event

log = logging.getLogger("meterflow.alerts")

BATCH_MAX = 2000


class AlertEvaluator(StoredOffsetConsumer):
    """``start()``, then ``run()`` until ``request_stop()``, then ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        registry: CollectorRegistry,
        *,
        producer_factory: Callable[[], Producer] | None = None,
        clock: Callable[[], float] = time.time,
        credit_sweep_interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        bootstrap = settings.kafka_bootstrap_servers
        if not bootstrap:
            raise ConfigurationError("the alert evaluator needs KAFKA_BOOTSTRAP_SERVERS")
        self.metrics = AlertMetrics(registry)
        self.credit_metrics = CreditAlertMetrics(registry)
        super().__init__(
            settings,
            pool,
            registry,
            topic=usage_changes_topic(settings.topic_prefix),
            group=settings.alerts.alerts_consumer_group,
            batch_max=BATCH_MAX,
            fenced=self.metrics.fenced,
            failures=self.metrics.failures,
            name="alert-evaluator",
            # Its offsets were Kafka's before they moved to PostgreSQL.
            adopt_kafka_commits=USAGE_CHANGES_PARTITIONS,
        )
        self._clock = clock
        producer = (
            producer_factory()
            if producer_factory is not None
            else idempotent_producer(bootstrap, "meterflow-alerts", security=settings.kafka)
        )
        self.publisher = V1EventPublisher(
            producer, v1_events_topic(settings.topic_prefix), pool, self.metrics, clock=clock,
            retry=DatabaseRetry("alert-event-sweep", registry),
        )  # fmt: skip
        self.credit_sweep = RecheckSweep(
            pool, self.publisher, self.credit_metrics, clock=clock,
            interval_s=credit_sweep_interval_s,
            retry=DatabaseRetry("credit-alert-rechecks", registry),
        )  # fmt: skip

    async def start(self) -> None:
        await self.publisher.start()
        await super().start()

    def request_stop(self) -> None:
        super().request_stop()
        self.publisher.request_stop()
        self.credit_sweep.request_stop()

    async def stop(self) -> None:
        """Leave the consumer group, then close the producer."""
        try:
            await super().stop()
        finally:
            await self.publisher.stop()

    async def run(self) -> None:
        """Evaluate batches, sweep credit alert rechecks and unpublished events until asked to
        stop; the batch in hand finishes."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.publisher.run_sweeps(), name="alert-event-sweep")
            group.create_task(self.credit_sweep.run(), name="credit-alert-rechecks")
            group.create_task(super().run(), name="alert-evaluation")

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

    async def fold(self, batch: Batch) -> None:
        """Evaluate one fetched batch exactly once, then publish what fired.

        1. Collapse the records to distinct (meter, customer) with merged event-time spans.
        2. Lock the offset rows of the batch's partitions and check that each continues exactly
           where the last committed batch ended; otherwise roll back
           (:class:`~meterflow.kafka.offsets.OffsetFenced`).
        3. Find the active alerts watching them, with their meters' formulas (one query).
        4. Expand each into its periods; drop the (alert, customer, period) that fired before.
        5. Read the usage of the remaining periods from the minute rollups (one query).
        6. Record the firings whose key is new, with their events and webhook deliveries.
        7. Evaluate the credit balance alerts of the batch's customers: lock their states (one
           query for the batch), read each such customer's balance, record firings, (re-)arm.
        8. Advance the stored offsets past the batch. Steps 2 to 8 commit together or not at all.
        9. After the commit, put the events on the events topic and mark them published; the
           publisher's sweep covers a crash or a Kafka failure in between.
        10. Record the positions for lag and tell Kafka (advisory).
        """
        started = time.perf_counter()
        offsets = batch_offsets(batch)
        spans = spans_of(offsets)
        touched = collapse(self._decode(batch))
        now_ms = int(self._clock() * 1000)
        async with self._pool.acquire() as conn, conn.transaction():
            await fence_offsets(conn, self._group, self._topic, spans)
            watches = await watching_alerts(conn, list(touched))
            pending = candidates(watches, touched)
            done = await fired_already(conn, [c.firing_key for c in pending])
            pending = [c for c in pending if c.firing_key not in done]
            usage = await usage_totals(conn, list({usage_query(c): None for c in pending}))
            fired = firings(pending, usage)
            recorded = await record_firings(conn, fired, now_ms=now_ms)
            credit = await evaluate_credit_alerts(conn, customers_of(touched), now_ms=now_ms)
            await advance_offsets(conn, self._group, self._topic, spans)
        self._observe(batch, recorded, touched, started)
        observe(
            self.credit_metrics,
            "usage",
            credit,
            received_ms=_received_by_customer(touched),
            committed_ms=int(self._clock() * 1000),
        )
        await self.publisher.publish(
            [_stored(r) for r in recorded] + [r.stored() for r in credit.recorded]
        )
        await self.folded(offsets)

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


def _received_by_customer(touched: dict[UsageKey, TouchedUsage]) -> dict[CustomerKey, int]:
    """Per customer, the receipt of the latest event behind the batch's changes."""
    received: dict[CustomerKey, int] = {}
    for (account_id, livemode, _, customer), usage in touched.items():
        if usage.last_received_ms is not None:
            key = (account_id, livemode, customer)
            received[key] = max(received.get(key, 0), usage.last_received_ms)
    return received


def _stored(recorded: RecordedFiring) -> StoredEvent:
    return StoredEvent(
        recorded.event_id, recorded.account_id, recorded.livemode, encode_v1_event(recorded.event)
    )

"""Putting v1 events (``billing.alert.triggered``) on the events topic after their commit.

An event is committed in PostgreSQL first (``v1_events``, ``published = false``), then produced
and marked published. A crash or a Kafka failure in between leaves it unpublished; a sweep in
every evaluator publishes such events once they are a few seconds old. The topic therefore gets
every event at least once; a repeat carries the same event id.
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
from aggregator.alerts.store import StoredEvent, mark_published, unpublished_events
from meterflow.kafka.producer import Producer, PublishFailed, produce_all
from meterflow.lifecycle.reconnect import DatabaseRetry
from meterflow.store.outages import DATABASE_ERRORS
from meterflow.v1_events import v1_event_key

log = logging.getLogger("meterflow.alerts")

SWEEP_INTERVAL_S = 2.0
# Younger unpublished events are still in the hands of the evaluator that created them.
SWEEP_MIN_AGE_S = 5
SWEEP_BATCH = 500


class V1EventPublisher:
    def __init__(
        self,
        producer: Producer,
        topic: str,
        pool: asyncpg.Pool,
        metrics: AlertMetrics,
        *,
        clock: Callable[[], float] = time.time,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        retry: DatabaseRetry | None = None,
    ) -> None:
        self._retry = retry or DatabaseRetry("alert-event-sweep", CollectorRegistry())
        self._producer = producer
        self._topic = topic
        self._pool = pool
        self._metrics = metrics
        self._clock = clock
        self._sweep_interval_s = sweep_interval_s
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self._producer.start()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        await self._producer.stop()

    async def _produce(self, events: Sequence[StoredEvent]) -> None:
        await produce_all(
            self._producer,
            self._topic,
            [(v1_event_key(e.account_id, e.livemode), e.body) for e in events],
        )

    async def publish(self, events: Sequence[StoredEvent]) -> bool:
        """Produce freshly committed events and mark them published; on failure leave them to
        the sweep. Never raises for Kafka or database trouble."""
        if not events:
            return True
        try:
            await self._produce(events)
        except PublishFailed:
            self._metrics.publish_failures.inc()
            log.warning("publishing %d alert event(s) failed; the sweep retries", len(events))
            return False
        self._metrics.published.labels("direct").inc(len(events))
        try:
            async with self._pool.acquire() as conn:
                await mark_published(conn, [e.id for e in events])
        except DATABASE_ERRORS:
            # On the topic already; the sweep will send them again, under the same ids.
            log.exception("marking alert events published failed")
        return True

    async def sweep_once(self) -> int:
        """Publish events left unpublished (a crash or a Kafka failure after their commit)."""
        created_before_s = int(self._clock()) - SWEEP_MIN_AGE_S
        async with self._pool.acquire() as conn, conn.transaction():
            events = await unpublished_events(
                conn, created_before_s=created_before_s, limit=SWEEP_BATCH
            )
            if not events:
                return 0
            await self._produce(events)
            await mark_published(conn, [e.id for e in events])
        self._metrics.published.labels("sweep").inc(len(events))
        log.info("sweep published %d alert event(s) left unpublished", len(events))
        return len(events)

    async def run_sweeps(self) -> None:
        """Sweep every ``sweep_interval_s`` until asked to stop."""
        while not self._stopping.is_set():
            try:
                swept = await self.sweep_once()
            except PublishFailed:
                self._metrics.publish_failures.inc()
                log.warning("sweep could not publish alert events; retrying later")
                swept = 0
            except DATABASE_ERRORS as exc:
                # The database is away: the next pass starts over once it is back.
                await self._retry.pause(exc, self._stopping)
                continue
            except Exception:
                # The sweep must outlive a bad pass; the next pass starts over.
                log.exception("sweep of unpublished alert events failed")
                swept = 0
            else:
                self._retry.succeeded()
            if swept < SWEEP_BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._sweep_interval_s)

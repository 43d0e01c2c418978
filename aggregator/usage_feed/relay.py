"""The usage-changes relay: moves ``usage_changes`` rows (the fold's outbox) to Kafka.

Each pass claims the oldest rows in one transaction (``FOR UPDATE SKIP LOCKED``, so relays in
other aggregators take other rows), produces them, awaits every ack, deletes them and commits.
A produce failure rolls back: the rows stay and the pass is retried with backoff. A crash after
the acks and before the commit sends the rows again, which is harmless: evaluation reads current
totals and records each firing under a unique key.

The rollup consumer wakes the relay after each fold commit, so a change normally reaches the
topic within milliseconds; a periodic poll picks up rows of folds in other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
from prometheus_client import CollectorRegistry, Counter

from meterflow.errors import ConfigurationError
from meterflow.kafka.partitions import PartitionMap
from meterflow.kafka.producer import Producer, PublishFailed, idempotent_producer, produce_all
from meterflow.kafka.topics import USAGE_CHANGES_PARTITIONS, usage_changes_topic
from meterflow.lifecycle.reconnect import DatabaseRetry
from meterflow.records.usage_changes import UsageChange, encode_usage_change, usage_change_key
from meterflow.settings import Settings
from meterflow.store.outages import DATABASE_ERRORS

log = logging.getLogger("meterflow.aggregator.usage_relay")

BATCH_MAX = 1000
POLL_INTERVAL_S = 1.0


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "meterflow_usage_relay_records_total",
            "Usage changes relayed from PostgreSQL to the usage-changes topic.",
            registry=registry,
        )
        self.failures = Counter(
            "meterflow_usage_relay_failures_total",
            "Relay passes rolled back on a Kafka or database error (the rows stay, retried).",
            registry=registry,
        )


class UsageRelay:
    """Moves the outbox to Kafka (a :class:`~meterflow.lifecycle.component.Component`)."""

    name = "usage-relay"

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        registry: CollectorRegistry,
        *,
        producer_factory: Callable[[], Producer] | None = None,
        batch_max: int = BATCH_MAX,
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        bootstrap = settings.kafka_bootstrap_servers
        if not bootstrap:
            raise ConfigurationError("the usage relay needs KAFKA_BOOTSTRAP_SERVERS")
        self._pool = pool
        self._topic = usage_changes_topic(settings.topic_prefix)
        self._partition_of = PartitionMap(USAGE_CHANGES_PARTITIONS)
        self._producer = (
            producer_factory()
            if producer_factory is not None
            else idempotent_producer(bootstrap, "meterflow-usage-relay", security=settings.kafka)
        )
        self._batch_max = batch_max
        self._poll_interval_s = poll_interval_s
        self.metrics = RelayMetrics(registry)
        self._retry = DatabaseRetry(self.name, registry)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._started = False

    async def start(self) -> None:
        await self._producer.start()
        self._started = True

    def ready(self) -> bool:
        return self._started and not self._stopping.is_set()

    def notify(self) -> None:
        """Relay now rather than at the next poll: a fold just committed changes."""
        self._wake.set()

    def request_stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def stop(self) -> None:
        await self._producer.stop()

    async def run(self) -> None:
        """Relay until asked to stop: full batches back to back, then wait for a wake-up."""
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                relayed = await self.relay_once()
            except (PublishFailed, *DATABASE_ERRORS) as exc:
                # Rolled back: the rows stay for the next pass, after a backoff.
                self.metrics.failures.inc()
                await self._retry.pause(exc, self._stopping)
                continue
            self._retry.succeeded()
            if relayed < self._batch_max:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)

    async def relay_once(self) -> int:
        """Move up to ``batch_max`` of the oldest rows to the topic; return how many moved."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT seq, account_id, livemode, meter_id, customer, first_event_ts,
                          last_event_ts, last_received_ms
                   FROM usage_changes ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self._batch_max,
            )
            if not rows:
                return 0
            changes = [
                UsageChange(
                    account_id=r["account_id"],
                    livemode=r["livemode"],
                    meter_id=r["meter_id"],
                    customer=r["customer"],
                    first_event_ts=r["first_event_ts"],
                    last_event_ts=r["last_event_ts"],
                    last_received_ms=r["last_received_ms"],
                )
                for r in rows
            ]
            await produce_all(
                self._producer,
                self._topic,
                [(usage_change_key(c), encode_usage_change(c)) for c in changes],
                partition_of=self._partition_of,
            )
            await conn.execute(
                "DELETE FROM usage_changes WHERE seq = ANY($1::bigint[])", [r["seq"] for r in rows]
            )
        self.metrics.records.inc(len(rows))
        return len(rows)

"""The error-report consumer: reads the rejected-events topic in its own consumer group and folds
the rejections into per-window tallies in PostgreSQL, exactly once.

As with the rollup consumer, offsets live in ``consumer_offsets`` and are written in the fold's
transaction; every partition assignment seeks to them, and Kafka's commits are only advisory.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, Counter

from aggregator.consumer_lag import track_lag
from aggregator.error_report_store import apply_tallies
from aggregator.error_reports import tally_rejections
from aggregator.rollup_store import OffsetFenced, spans_of
from aggregator.stored_offsets import (
    DATABASE_ERRORS,
    POLL_TIMEOUT_MS,
    Batch,
    SeekOnAssign,
    batch_offsets,
    commit_advisory,
    folding_consumer,
    reseek_until_done,
    seek_to_stored,
)
from meterflow.errors import ConfigurationError
from meterflow.event_records import RecordDecodeError
from meterflow.rejected_records import RejectedRecord, decode_rejected
from meterflow.settings import Settings
from meterflow.topics import meter_events_rejected_topic

log = logging.getLogger("meterflow.aggregator.error_reports")

_BATCH_MAX = 1000


def error_report_group(settings: Settings) -> str:
    """The consumer group of the rejected-events topic, beside the rollup consumer's."""
    return f"{settings.consumer_group}-error-reports"


class ErrorReportMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rejections = Counter(
            "meterflow_error_report_rejections_total",
            "Rejected stream events folded into error-report windows, by code.",
            ["code"],
            registry=registry,
        )
        self.undecodable = Counter(
            "meterflow_error_report_undecodable_records_total",
            "Records on the rejected-events topic that could not be decoded and were skipped.",
            registry=registry,
        )
        self.fenced = Counter(
            "meterflow_error_report_fenced_total",
            "Rejection batches rolled back because the stored offset moved.",
            registry=registry,
        )
        self.failures = Counter(
            "meterflow_error_report_fold_failures_total",
            "Rejection batches that failed on a database error and were read again.",
            registry=registry,
        )


class ErrorReportConsumer:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, registry: CollectorRegistry) -> None:
        if not settings.kafka_bootstrap_servers:
            raise ConfigurationError("error reports need KAFKA_BOOTSTRAP_SERVERS")
        if settings.error_report_window_s <= 0:
            raise ConfigurationError("METERFLOW_ERROR_REPORT_WINDOW_S must be positive")
        self._pool = pool
        self._topic = meter_events_rejected_topic(settings.topic_prefix)
        self._group = error_report_group(settings)
        self._window_ms = int(settings.error_report_window_s * 1000)
        self.metrics = ErrorReportMetrics(registry)
        self._stopping = asyncio.Event()
        self._consumer = folding_consumer(settings, self._group)
        self._lag = track_lag(registry, self._group, self._consumer)

    async def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        positions = await seek_to_stored(
            self._consumer, self._pool, self._group, self._topic, assigned
        )
        self._lag.folded_up_to(positions)

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe([self._topic], listener=SeekOnAssign(self.seek_to_stored))

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def run(self) -> None:
        """Fold until asked to stop; each batch commits fully or not at all."""
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=_BATCH_MAX)
            if not batch:
                continue
            try:
                await self._fold(batch)
            except OffsetFenced as exc:
                self.metrics.fenced.inc()
                log.warning("rejection batch rolled back, re-seeking: %s", exc)
                await self._reseek()
            except DATABASE_ERRORS:
                self.metrics.failures.inc()
                log.exception("folding rejections failed; reading them again")
                await self._reseek()

    async def _reseek(self) -> None:
        await reseek_until_done(
            lambda: self.seek_to_stored(list(self._consumer.assignment())), self._stopping
        )

    async def _fold(self, batch: Batch) -> None:
        records: list[RejectedRecord] = []
        offsets = batch_offsets(batch)
        for tp, messages in batch.items():
            for message in messages:
                try:
                    records.append(decode_rejected(message.value))
                except RecordDecodeError:
                    # Never produced by meterflow; skipping keeps the partition moving.
                    self.metrics.undecodable.inc()
                    log.exception("skipping undecodable record at %s@%s", tp, message.offset)
        tallies = tally_rejections(records, self._window_ms)
        async with self._pool.acquire() as conn:
            await apply_tallies(
                conn,
                group=self._group,
                topic=self._topic,
                spans=spans_of(offsets),
                tallies=tallies,
            )
        codes: dict[str, int] = {}
        for key, tally in tallies.items():
            codes[key.code] = codes.get(key.code, 0) + tally.error_count
        for code, count in codes.items():
            self.metrics.rejections.labels(code).inc(count)
        self._lag.folded_up_to({p: last + 1 for p, (_, last) in offsets.items()})
        await commit_advisory(self._consumer, self._topic, offsets)

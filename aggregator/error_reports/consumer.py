"""The error-report consumer: reads the rejected-events topic in its own consumer group and folds
the rejections into per-window tallies in PostgreSQL, exactly once.

A :class:`~meterflow.kafka.consumer.StoredOffsetConsumer` like the rollup consumer: offsets live
in ``consumer_offsets`` and are written in the fold's transaction; every partition assignment
seeks to them, and Kafka's commits are only advisory.
"""

from __future__ import annotations

import logging

import asyncpg
from prometheus_client import CollectorRegistry, Counter

from aggregator.error_reports.reports import tally_rejections
from aggregator.error_reports.store import apply_tallies
from meterflow.errors import ConfigurationError
from meterflow.kafka.consumer import Batch, StoredOffsetConsumer, batch_offsets
from meterflow.kafka.offsets import spans_of
from meterflow.kafka.topics import meter_events_rejected_topic
from meterflow.records.meter_events import RecordDecodeError
from meterflow.records.rejected import RejectedRecord, decode_rejected
from meterflow.settings import Settings

log = logging.getLogger("meterflow.aggregator.error_reports")

_BATCH_MAX = 1000


def error_report_group(settings: Settings) -> str:
    """The consumer group of the rejected-events topic, beside the rollup consumer's."""
    return f"{settings.aggregator.consumer_group}-error-reports"


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


class ErrorReportConsumer(StoredOffsetConsumer):
    def __init__(self, settings: Settings, pool: asyncpg.Pool, registry: CollectorRegistry) -> None:
        if not settings.kafka_bootstrap_servers:
            raise ConfigurationError("error reports need KAFKA_BOOTSTRAP_SERVERS")
        if settings.aggregator.error_report_window_s <= 0:
            raise ConfigurationError("METERFLOW_ERROR_REPORT_WINDOW_S must be positive")
        self.metrics = ErrorReportMetrics(registry)
        super().__init__(
            settings,
            pool,
            registry,
            topic=meter_events_rejected_topic(settings.topic_prefix),
            group=error_report_group(settings),
            batch_max=_BATCH_MAX,
            fenced=self.metrics.fenced,
            failures=self.metrics.failures,
            name="error-reports",
        )
        self._window_ms = int(settings.aggregator.error_report_window_s * 1000)

    async def fold(self, batch: Batch) -> None:
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
        await self.folded(offsets)

"""The error-report consumer: reads the rejected-events topic in its own consumer group and folds
the rejections into per-window tallies in PostgreSQL, exactly once.

As with the rollup consumer, offsets live in ``consumer_offsets`` and are written in the fold's
transaction; every partition assignment seeks to them, and Kafka's commits are only advisory.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry, Counter

from aggregator.error_report_store import apply_tallies
from aggregator.error_reports import tally_rejections
from aggregator.rollup_store import OffsetFenced, spans_of, stored_offsets
from meterflow.errors import ConfigurationError
from meterflow.event_records import RecordDecodeError
from meterflow.rejected_records import RejectedRecord, decode_rejected
from meterflow.settings import Settings
from meterflow.topics import meter_events_rejected_topic

log = logging.getLogger("meterflow.aggregator.error_reports")

_POLL_TIMEOUT_MS = 100
_BATCH_MAX = 1000
_RETRY_PAUSE_S = 1.0


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


class _SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: ErrorReportConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        log.info("rejected-events partitions revoked: %s", sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._owner.seek_to_stored(assigned)


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
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=self._group,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=_POLL_TIMEOUT_MS,
            max_poll_interval_ms=300_000,
            session_timeout_ms=settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=max(1000, settings.consumer_session_timeout_ms // 3),
        )

    async def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        async with self._pool.acquire() as conn:
            offsets = await stored_offsets(
                conn, self._group, self._topic, [tp.partition for tp in assigned]
            )
        for tp in assigned:
            stored = offsets.get(tp.partition)
            if stored is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, stored)
        log.info(
            "rejected-events partitions assigned: %s",
            {tp.partition: offsets.get(tp.partition) for tp in assigned},
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
                timeout_ms=_POLL_TIMEOUT_MS, max_records=_BATCH_MAX
            )
            if not batch:
                continue
            try:
                await self._fold(batch)
            except OffsetFenced as exc:
                self.metrics.fenced.inc()
                log.warning("rejection batch rolled back, re-seeking: %s", exc)
                await self._reseek()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                self.metrics.failures.inc()
                log.exception("folding rejections failed; reading them again")
                await self._reseek()

    async def _reseek(self) -> None:
        """Go back to the stored offsets, waiting out a database that does not answer."""
        while not self._stopping.is_set():
            try:
                await self.seek_to_stored(list(self._consumer.assignment()))
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                log.exception("cannot read the stored offsets; retrying")
                await asyncio.sleep(_RETRY_PAUSE_S)
            else:
                return

    async def _fold(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        records: list[RejectedRecord] = []
        offsets: dict[int, tuple[int, int]] = {}
        for tp, messages in batch.items():
            offsets[tp.partition] = (messages[0].offset, messages[-1].offset)
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
        try:
            # Advisory only: lets standard Kafka tooling show this group's lag.
            await self._consumer.commit(
                {TopicPartition(self._topic, p): last + 1 for p, (_, last) in offsets.items()}
            )
        except KafkaError as exc:
            log.warning("advisory Kafka commit failed: %s", exc)

"""Publishing meter-event records to Kafka: enqueue every record, then await every ack.

A request is answered 2xx only after Kafka acknowledged all of its records (``acks="all"``,
idempotent producer). When the ack does not come within ``publish_timeout_s``, or Kafka reports
an error, the caller gets a 503 saying the event is not confirmed: the record may still land, so
the client must retry with the same identifier, which the aggregator deduplicates.

The producer (:func:`meterflow.kafka.producer.idempotent_producer`, tuned for requests) connects
in the background: a broker that is still starting (or down) never stops ingest from serving;
event endpoints answer 503 and ``/readyz`` reports it until it connects, and whenever the broker
stops answering (:meth:`EventPublisher.reachable`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from prometheus_client import CollectorRegistry

from ingest.edge.errors import ServiceUnavailable
from ingest.edge.metrics import ProducerCollector, PublisherMetrics, PublishFailureReason
from meterflow.kafka.producer import (
    REQUEST_LINGER_MS,
    REQUEST_MAX_BATCH_BYTES,
    Producer,
    idempotent_producer,
)
from meterflow.kafka.security import PLAINTEXT
from meterflow.settings.roles import KafkaSecuritySettings

log = logging.getLogger("meterflow.ingest.producer")

# Errors after which an idempotent producer is never accepted again (its id, epoch or sequence
# is unknown to the broker, e.g. after a broker restart that lost the producer state).
PRODUCER_STATE_LOST = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
    InvalidProducerIdMapping,
)

_CONNECT_ATTEMPT_S = 10.0
_CLOSE_ATTEMPT_S = 2.0
_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 5.0
_PROBE_TTL_S = 1.0
RETRY_AFTER = {"Retry-After": "1"}


class OutgoingRecord(NamedTuple):
    topic: str
    key: bytes
    value: bytes
    # Known already (the stream groups events by partition): saves the producer hashing the key.
    partition: int | None = None


class RecordPublisher(Protocol):
    @property
    def connected(self) -> bool: ...

    async def publish_many(self, records: Sequence[OutgoingRecord]) -> None: ...


class EventPublisher:
    """Owns the Kafka producer: background connect, publish with a deadline, bounded stop."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        publish_timeout_s: float,
        registry: CollectorRegistry,
        producer_factory: Callable[[], Producer] | None = None,
        security: KafkaSecuritySettings = PLAINTEXT,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._publish_timeout_s = publish_timeout_s
        self._factory = producer_factory or (
            lambda: idempotent_producer(
                bootstrap_servers,
                "meterflow-ingest",
                linger_ms=REQUEST_LINGER_MS,
                max_batch_bytes=REQUEST_MAX_BATCH_BYTES,
                # Past the publish timeout no client waits for a broker request's answer.
                request_timeout_s=publish_timeout_s,
                security=security,
            )
        )
        self._metrics = PublisherMetrics(registry)
        registry.register(ProducerCollector(lambda: self.connected))
        self._producer: Producer | None = None
        self._connector: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[bool] | None = None
        self._probed_at = float("-inf")
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def reachable(self, timeout_s: float) -> bool:
        """Whether Kafka answers a metadata request within ``timeout_s`` (for ``/readyz``).

        A paused or partitioned broker keeps the producer's connections open, so being connected
        says little. The request goes through the producer's own client, the way records go.
        Probes are shared: callers within a second of a probe, or during one, get its answer.
        """
        producer = self._producer
        if producer is None:
            return False
        loop = asyncio.get_running_loop()
        probe = self._probe
        if probe is None or (probe.done() and loop.time() - self._probed_at > _PROBE_TTL_S):
            self._probed_at = loop.time()
            probe = self._probe = asyncio.create_task(_answers_metadata(producer, timeout_s))
        return await asyncio.shield(probe)

    async def start(self, wait_s: float) -> bool:
        """Begin connecting and wait up to ``wait_s`` for it; later retries run in the background.

        Returns whether the producer is connected. Never raises for an unreachable broker.
        """
        if self._connector is None:
            self._connector = asyncio.create_task(self._connect(), name="kafka-producer-connect")
            self._connector.add_done_callback(_log_connect_failure)
        await asyncio.wait([self._connector], timeout=wait_s)
        if not self.connected:
            log.warning(
                "Kafka (%s) not reachable within %.1fs; event endpoints answer 503 until the "
                "producer connects (retrying in the background)",
                self._bootstrap_servers,
                wait_s,
            )
        return self.connected

    async def stop(self, deadline_s: float) -> None:
        """Stop connecting; flush what is queued, then close, within ``deadline_s``."""
        connector, self._connector = self._connector, None
        probe, self._probe = self._probe, None
        for task in (connector, probe):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task])
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            async with asyncio.timeout(deadline_s):
                await producer.flush()
                await producer.stop()
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning("Kafka producer did not flush and close within %.1fs: %r", deadline_s, exc)

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        await self.publish_many([OutgoingRecord(topic, key, value)])

    async def publish_many(self, records: Sequence[OutgoingRecord]) -> None:
        """Enqueue all records, then await all acks: one broker round trip for the request.

        Raises :class:`ServiceUnavailable` (503, ``Retry-After``) unless Kafka acknowledged every
        record within the publish timeout. Records enqueued before a failure may still land.
        """
        if not records:
            return
        producer = self._producer
        if producer is None:
            raise self._failure("not_connected", "meterflow is not connected to Kafka")
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._publish_timeout_s
        acks: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout_at(deadline):
                for record in records:
                    ack = await producer.send(
                        record.topic, record.value, key=record.key, partition=record.partition
                    )
                    ack.add_done_callback(_retrieve_outcome)
                    acks.append(ack)
            done, pending = await asyncio.wait(acks, timeout=max(0.0, deadline - loop.time()))
        except (TimeoutError, KafkaTimeoutError) as exc:
            raise self._timed_out() from exc
        except KafkaError as exc:
            raise self._kafka_failure(exc, producer) from exc
        if pending:
            raise self._timed_out()
        for ack in done:
            error = ack.exception()
            if isinstance(error, KafkaTimeoutError):
                raise self._timed_out() from error
            if isinstance(error, KafkaError):
                raise self._kafka_failure(error, producer) from error
            if error is not None:
                raise error
        self._metrics.latency.observe(loop.time() - started)
        self._metrics.records.inc(len(records))

    def _timed_out(self) -> ServiceUnavailable:
        return self._failure(
            "timeout", f"Kafka did not acknowledge it within {self._publish_timeout_s:g}s"
        )

    def _kafka_failure(self, exc: Any, producer: Producer) -> ServiceUnavailable:
        # Classified by the error's type and its class-level ``retriable`` flag, never its text.
        reason: PublishFailureReason = "retriable_error" if exc.retriable else "fatal_error"
        if isinstance(exc, PRODUCER_STATE_LOST):
            log.error("Kafka lost the producer's state (%r); replacing the producer", exc)
            self._replace(producer)
        elif reason == "fatal_error":
            log.error("Kafka refused a publish: %r", exc)
        else:
            log.warning("Kafka publish failed (retriable): %r", exc)
        return self._failure(reason, "Kafka is unavailable")

    def _failure(self, reason: PublishFailureReason, why: str) -> ServiceUnavailable:
        self._metrics.failures.labels(reason).inc()
        return ServiceUnavailable(
            f"The event is not confirmed as recorded ({why}). Retry the request with the same "
            "identifier; an event that was recorded already is not counted twice.",
            headers=dict(RETRY_AFTER),
        )

    def _replace(self, producer: Producer) -> None:
        """Retire a producer Kafka no longer accepts (an idempotent producer whose sequence the
        broker lost, after a broker restart, fails every later send with
        ``OutOfOrderSequenceNumber``) and connect a new one in the background. Requests answer
        503 meanwhile; their retries, with the same identifiers, are deduplicated downstream."""
        if self._producer is not producer:
            return  # replaced already by a concurrent failure
        self._producer = None
        retired = asyncio.create_task(_close_quietly(producer), name="kafka-producer-retire")
        self._retiring.add(retired)
        retired.add_done_callback(self._retiring.discard)
        self._connector = asyncio.create_task(self._connect(), name="kafka-producer-connect")
        self._connector.add_done_callback(_log_connect_failure)

    async def _connect(self) -> None:
        backoff_s = _BACKOFF_MIN_S
        while True:
            producer = self._factory()
            try:
                async with asyncio.timeout(_CONNECT_ATTEMPT_S):
                    await producer.start()
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning(
                    "Kafka producer cannot connect to %s (%r); retrying in %.1fs",
                    self._bootstrap_servers,
                    exc,
                    backoff_s,
                )
                await _close_quietly(producer)
            except asyncio.CancelledError:
                await _close_quietly(producer)
                raise
            else:
                self._producer = producer
                log.info("Kafka producer connected to %s", self._bootstrap_servers)
                return
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, _BACKOFF_MAX_S)


class UnconfiguredPublisher:
    """Stands in when no Kafka is configured: every publish is a 503."""

    connected = False

    async def publish_many(self, records: Sequence[OutgoingRecord]) -> None:
        raise ServiceUnavailable(
            "This meterflow process has no Kafka configured (KAFKA_BOOTSTRAP_SERVERS), so it "
            "cannot accept meter events.",
            headers=dict(RETRY_AFTER),
        )


def _log_connect_failure(task: asyncio.Task[None]) -> None:
    # Only an unexpected error ends the connect loop early; say so rather than go quiet.
    if not task.cancelled() and task.exception() is not None:
        log.error("Kafka producer stopped connecting", exc_info=task.exception())


def _retrieve_outcome(ack: asyncio.Future[Any]) -> None:
    # An ack nobody awaits any more (after a timeout) must not log "exception never retrieved".
    if not ack.cancelled():
        ack.exception()


async def _answers_metadata(producer: Producer, timeout_s: float) -> bool:
    # AIOKafkaProducer's client; a stand-in without one (tests) is judged by its connection.
    client = getattr(producer, "client", None)
    if client is None:
        return True
    try:
        async with asyncio.timeout(timeout_s):
            await client.fetch_all_metadata()
    except (KafkaError, OSError, TimeoutError):
        return False
    return True


async def _close_quietly(producer: Producer) -> None:
    try:
        async with asyncio.timeout(_CLOSE_ATTEMPT_S):
            await producer.stop()
    except (KafkaError, OSError, TimeoutError) as exc:
        log.debug("closing a producer failed: %r", exc)

"""EventPublisher against a fake producer: acks, deadlines, error classification, start and stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NotEnoughReplicasError,
    OutOfOrderSequenceNumber,
    RecordTooLargeError,
)
from prometheus_client import CollectorRegistry

from ingest.edge.errors import ServiceUnavailable
from ingest.events.publisher import EventPublisher, OutgoingRecord, UnconfiguredPublisher
from meterflow.kafka.producer import Producer

Ack = Literal["ok", "never", "error"]
RECORDS = [OutgoingRecord("t", b"k1", b"v1"), OutgoingRecord("t", b"k2", b"v2")]


class FakeProducer:
    def __init__(
        self,
        *,
        ack: Ack = "ok",
        error: Exception | None = None,
        start_error: Exception | None = None,
    ) -> None:
        self.ack = ack
        self.error = error
        self.start_error = start_error
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.partitions: list[int | None] = []
        self.pending: list[asyncio.Future[Any]] = []
        self.started = self.stopped = self.flushed = False

    async def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def flush(self) -> None:
        self.flushed = True

    async def send(
        self, topic: str, value: bytes, key: bytes, partition: int | None = None
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value))
        self.partitions.append(partition)
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.ack == "ok":
            ack.set_result(None)
        elif self.ack == "error":
            ack.set_exception(self.error or NotEnoughReplicasError())
        else:
            self.pending.append(ack)
        return ack


def _factory(*producers: FakeProducer) -> Callable[[], Producer]:
    queue = list(producers)
    return lambda: queue.pop(0)


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def _started(producer: FakeProducer, timeout_s: float = 0.3) -> tuple[EventPublisher, Any]:
    registry = CollectorRegistry()
    publisher = EventPublisher(
        "kafka:9092",
        publish_timeout_s=timeout_s,
        registry=registry,
        producer_factory=_factory(producer),
    )
    assert await publisher.start(wait_s=1.0)
    return publisher, registry


async def test_publishes_all_records_and_counts_them() -> None:
    fake = FakeProducer()
    publisher, registry = await _started(fake)
    await publisher.publish_many(RECORDS)
    await publisher.publish("t", b"k3", b"v3")
    await publisher.publish_many([OutgoingRecord("t", b"k4", b"v4", partition=7)])
    assert fake.sent == [
        ("t", b"k1", b"v1"),
        ("t", b"k2", b"v2"),
        ("t", b"k3", b"v3"),
        ("t", b"k4", b"v4"),
    ]
    # A partition chosen by the caller reaches the producer; otherwise the key decides.
    assert fake.partitions == [None, None, None, 7]
    assert _sample(registry, "meterflow_kafka_records_published_total") == 4
    assert _sample(registry, "meterflow_kafka_publish_duration_seconds_count") == 3
    assert _sample(registry, "meterflow_kafka_producer_connected") == 1
    await publisher.stop(1.0)
    assert (fake.flushed, fake.stopped, publisher.connected) == (True, True, False)


async def test_missing_ack_is_a_503_within_the_timeout() -> None:
    fake = FakeProducer(ack="never")
    publisher, registry = await _started(fake, timeout_s=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ServiceUnavailable) as exc:
        await publisher.publish_many(RECORDS)
    assert 0.15 < loop.time() - started < 1.0
    assert exc.value.status == 503
    assert exc.value.headers == {"Retry-After": "1"}
    assert "same identifier" in exc.value.message
    assert _sample(registry, "meterflow_kafka_publish_failures_total", reason="timeout") == 1
    assert _sample(registry, "meterflow_kafka_records_published_total") == 0
    # A late failure of an abandoned ack is retrieved, not logged as "never retrieved".
    fake.pending[0].set_exception(KafkaConnectionError())
    await asyncio.sleep(0)
    await publisher.stop(1.0)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (NotEnoughReplicasError(), "retriable_error"),
        (KafkaConnectionError(), "retriable_error"),
        (RecordTooLargeError(), "fatal_error"),
        (KafkaTimeoutError(), "timeout"),
    ],
)
async def test_kafka_errors_are_classified_by_type(error: Exception, reason: str) -> None:
    publisher, registry = await _started(FakeProducer(ack="error", error=error))
    with pytest.raises(ServiceUnavailable) as exc:
        await publisher.publish_many(RECORDS)
    assert exc.value.__cause__ is not None
    assert exc.value.headers == {"Retry-After": "1"}
    assert _sample(registry, "meterflow_kafka_publish_failures_total", reason=reason) == 1
    await publisher.stop(1.0)


async def test_a_producer_whose_state_kafka_lost_is_replaced() -> None:
    # After a broker restart that lost the producer's sequence, every send of the old producer
    # fails; the publisher answers 503 and connects a new producer.
    poisoned = FakeProducer(ack="error", error=OutOfOrderSequenceNumber())
    fresh = FakeProducer()
    registry = CollectorRegistry()
    publisher = EventPublisher(
        "kafka:9092", publish_timeout_s=0.3, registry=registry,
        producer_factory=_factory(poisoned, fresh),
    )  # fmt: skip
    assert await publisher.start(wait_s=1.0)
    with pytest.raises(ServiceUnavailable):
        await publisher.publish_many(RECORDS)
    for _ in range(100):
        if publisher.connected:
            break
        await asyncio.sleep(0.01)
    await publisher.publish_many(RECORDS)
    assert (poisoned.stopped, fresh.sent) == (True, [("t", b"k1", b"v1"), ("t", b"k2", b"v2")])
    await publisher.stop(1.0)


async def test_not_connected_is_a_503_at_once() -> None:
    registry = CollectorRegistry()
    publisher = EventPublisher(
        "kafka:9092", publish_timeout_s=5.0, registry=registry, producer_factory=_factory()
    )
    with pytest.raises(ServiceUnavailable):
        await publisher.publish_many(RECORDS)
    assert _sample(registry, "meterflow_kafka_publish_failures_total", reason="not_connected") == 1
    assert _sample(registry, "meterflow_kafka_producer_connected") == 0
    with pytest.raises(ServiceUnavailable):
        await UnconfiguredPublisher().publish_many(RECORDS)


async def test_start_retries_in_the_background_and_closes_failed_attempts() -> None:
    failed = FakeProducer(start_error=KafkaConnectionError())
    good = FakeProducer()
    publisher = EventPublisher(
        "kafka:9092",
        publish_timeout_s=1.0,
        registry=CollectorRegistry(),
        producer_factory=_factory(failed, good),
    )
    assert not await publisher.start(wait_s=0.01)
    assert failed.stopped
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while not publisher.connected:
        assert loop.time() < deadline, "publisher never connected"
        await asyncio.sleep(0.01)
    assert good.started
    await publisher.publish_many(RECORDS)
    await publisher.stop(1.0)
    assert good.stopped


async def test_stop_cancels_connecting_and_closes_every_attempt() -> None:
    created: list[FakeProducer] = []

    def refused() -> Producer:
        created.append(FakeProducer(start_error=OSError("connection refused")))
        return created[-1]

    publisher = EventPublisher(
        "kafka:9092", publish_timeout_s=1.0, registry=CollectorRegistry(), producer_factory=refused
    )
    assert not await publisher.start(wait_s=0.3)  # the first retry comes after 0.2 s
    await publisher.stop(1.0)
    assert not publisher.connected
    assert created
    assert all(p.stopped for p in created)

"""Kafka over SASL_SSL with SCRAM-SHA-512: meterflow's producer factory, its consumer and its
topic creation work through a broker that takes nothing else, configured the way an operator
does it (``METERFLOW_KAFKA_*``); a client without credentials, or with wrong ones, is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from meterflow.errors import ConfigurationError
from meterflow.kafka.consumer import folding_consumer
from meterflow.kafka.producer import idempotent_producer, produce_all
from meterflow.kafka.security import client_security
from meterflow.kafka.topics import ensure_topics, meter_events_topic, topic_specs
from meterflow.settings import Settings, load_settings
from tests.fixtures.kafka_sasl import SaslBroker, sasl_ssl_broker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    with sasl_ssl_broker(tmp_path_factory.mktemp("sasl-kafka")) as running:
        yield running


def _settings(broker: SaslBroker, *, password: str | None = None) -> Settings:
    return load_settings(broker.client_environment(password=password))


async def test_producer_topics_and_consumer_work_through_sasl_ssl(broker: SaslBroker) -> None:
    settings = _settings(broker)
    assert settings.masked()["kafka_sasl_password"] == "***"
    bootstrap = broker.bootstrap_servers
    prefix = f"sasl_{uuid.uuid4().hex[:8]}."
    await ensure_topics(bootstrap, topic_specs(prefix), security=settings.kafka)
    topic = meter_events_topic(prefix)

    producer = idempotent_producer(bootstrap, "test-sasl", security=settings.kafka)
    await producer.start()
    try:
        await produce_all(
            producer, topic, [(b"acct_1", b'{"value": 25}')], partition_of=lambda _: 0
        )
    finally:
        await producer.stop()

    consumer = folding_consumer(settings, f"test-sasl-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        batch = await consumer.getmany(partition, timeout_ms=15_000)
    finally:
        await consumer.stop()
    assert [(r.key, r.value) for r in batch[partition]] == [(b"acct_1", b'{"value": 25}')]


async def _producer_starts(bootstrap: str, **options: object) -> bool:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000, **options)
    try:
        await producer.start()
    except KafkaError:
        await producer.stop()
        return False
    await producer.stop()
    return True


async def test_a_producer_without_credentials_is_refused(broker: SaslBroker) -> None:
    assert not await _producer_starts(broker.bootstrap_servers)  # PLAINTEXT to a TLS port
    wrong = _settings(broker, password="not-the-password")
    assert not await _producer_starts(broker.bootstrap_servers, **client_security(wrong.kafka))
    # The same client with the right password is let in: the refusals above are authentication.
    right = _settings(broker)
    assert await _producer_starts(broker.bootstrap_servers, **client_security(right.kafka))


def test_sasl_without_credentials_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="METERFLOW_KAFKA_SASL_USERNAME"):
        load_settings({"METERFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(ConfigurationError, match="METERFLOW_KAFKA_SSL_CAFILE"):
        load_settings(
            {
                "METERFLOW_KAFKA_SECURITY_PROTOCOL": "SSL",
                "METERFLOW_KAFKA_SSL_CAFILE": str(tmp_path / "missing.pem"),
            }
        )

"""Without a reachable Kafka, event endpoints answer 503 (never 2xx) and /readyz says so."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from deploy.ports import free_port
from meterflow.kafka.topics import (
    METER_EVENTS_PARTITIONS,
    TopicSpec,
    ensure_topics,
    meter_events_topic,
)
from meterflow.settings import Settings
from tests.conftest import AccountFactory
from tests.fixtures.ingest_server import running_ingest
from tests.fixtures.meter_events_http import (
    EVENT_NAME,
    auth,
    create_meter,
    event_form,
    v1_error,
    v2_error,
)
from tests.fixtures.meter_events_topic import MeterEventsReader

pytestmark = pytest.mark.integration


@pytest.mark.timeout(60)
async def test_kafka_unreachable_is_503_never_2xx(
    ingest_settings: Settings, make_account: AccountFactory
) -> None:
    account = await make_account()
    headers = auth(account.secret_key)
    closed = f"127.0.0.1:{free_port()}"
    settings = ingest_settings.with_overrides(
        kafka_bootstrap_servers=closed, http_port=free_port(), publish_timeout_s=1.0
    )
    with running_ingest(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert "Kafka" in ready.json()["error"]["message"]
            # Meters need only PostgreSQL.
            await create_meter(http, account.secret_key)
            started = time.monotonic()
            v1 = await http.post("/v1/billing/meter_events", data=event_form(), headers=headers)
            assert time.monotonic() - started < settings.ingest.publish_timeout_s + 1.0
            error = v1_error(v1, 503)
            assert error["type"] == "api_error"
            assert "same identifier" in error["message"]
            assert v1.headers["retry-after"] == "1"
            v2 = await http.post(
                "/v2/billing/meter_events",
                json={
                    "event_name": EVENT_NAME,
                    "payload": {"stripe_customer_id": "c", "value": "1"},
                },
                headers=headers,
            )
            assert v2_error(v2, 503)["code"] == "service_unavailable"
            assert v2.headers["retry-after"] == "1"
            # Validation still answers 400 first.
            invalid = await http.post(
                "/v1/billing/meter_events", data=event_form(value="x"), headers=headers
            )
            v1_error(invalid, 400)
            metrics = (await http.get("/metrics")).text
            assert 'meterflow_kafka_publish_failures_total{reason="not_connected"} 2.0' in metrics
            assert "meterflow_kafka_producer_connected 0.0" in metrics
            assert "meterflow_kafka_records_published_total 0.0" in metrics


@pytest.mark.timeout(60)
async def test_broker_refusing_the_record_is_503(
    ingest_settings: Settings, make_account: AccountFactory, kafka_bootstrap: str
) -> None:
    """A real broker refusal: the topic takes no record as large as a meter event."""
    prefix = f"t_refuse_{uuid.uuid4().hex[:10]}."
    topic = meter_events_topic(prefix)
    spec = TopicSpec(topic, METER_EVENTS_PARTITIONS, {"max.message.bytes": "64"})
    await ensure_topics(kafka_bootstrap, [spec])
    account = await make_account()
    headers = auth(account.secret_key)
    settings = ingest_settings.with_overrides(
        topic_prefix=prefix, http_port=free_port(), publish_timeout_s=2.0
    )
    with running_ingest(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
            assert (await http.get("/readyz")).status_code == 200
            await create_meter(http, account.secret_key)
            started = time.monotonic()
            response = await http.post(
                "/v1/billing/meter_events", data=event_form(identifier="e-1"), headers=headers
            )
            assert time.monotonic() - started < settings.ingest.publish_timeout_s + 1.0
            error = v1_error(response, 503)
            assert "Identifier: e-1" in error["message"]
            assert response.headers["retry-after"] == "1"
            metrics = (await http.get("/metrics")).text
            assert 'meterflow_kafka_publish_failures_total{reason="fatal_error"} 1.0' in metrics
            assert "meterflow_kafka_records_published_total 0.0" in metrics
    async with MeterEventsReader(kafka_bootstrap, prefix) as reader:
        assert await reader.record_count() == 0


async def test_without_kafka_configured_events_are_503(
    ingest_settings: Settings, make_account: AccountFactory
) -> None:
    account = await make_account()
    settings = ingest_settings.with_overrides(kafka_bootstrap_servers=None, http_port=free_port())
    with running_ingest(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
            await create_meter(http, account.secret_key)
            response = await http.post(
                "/v1/billing/meter_events", data=event_form(), headers=auth(account.secret_key)
            )
            assert "no Kafka configured" in v1_error(response, 503)["message"]
            assert (await http.get("/readyz")).status_code == 200

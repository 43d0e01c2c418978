"""Every loop of the aggregator and the alert evaluator waits out a database outage with backoff
and carries on: the rollup consumer, the usage relay, the error-report closer, webhook delivery,
maintenance, the invoice closer, and the alert evaluator's event and credit recheck sweeps.

Each loop's pass is replaced by one that fails with every error an outage brings (one of them
the ``InternalClientError`` that once ended the usage relay, and with it the aggregator), then
works; the loop must still be running, count the errors and one reconnect, and stop when asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, cast

import asyncpg
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from aggregator.alerts.credit.evaluation import RecheckSweep
from aggregator.alerts.credit.metrics import CreditAlertMetrics
from aggregator.alerts.metrics import AlertMetrics
from aggregator.alerts.v1_events import V1EventPublisher
from aggregator.error_reports.closer import ErrorReportCloser
from aggregator.invoicing.closer import InvoiceCloser
from aggregator.maintenance.retention import MaintenanceLoop
from aggregator.rollups.consumer import RollupConsumer
from aggregator.usage_feed.relay import UsageRelay
from aggregator.webhooks.worker import WebhookDeliveryWorker
from meterflow.kafka.consumer import Batch
from meterflow.lifecycle import reconnect
from meterflow.lifecycle.reconnect import DatabaseRetry
from meterflow.settings import Settings

NO_POOL = cast(asyncpg.Pool, object())  # every pass that would use it is replaced


def outage_errors() -> list[Exception]:
    return [
        asyncpg.InternalClientError("unexpected exchange after the connection was cut"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        ConnectionRefusedError(111, "Connection refused"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.InterfaceError("connection is closed"),
    ]


@pytest.fixture(autouse=True)
def short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconnect, "BACKOFF_MIN_S", 0.001)
    monkeypatch.setattr(reconnect, "BACKOFF_MAX_S", 0.004)


@pytest.fixture
def settings() -> Settings:
    return Settings().with_overrides(
        database_url="postgresql://unused/unused",
        kafka_bootstrap_servers="127.0.0.1:9",
        maintenance_interval_s=3600,
        invoice_tick_s=3600,
    )


class FlakyPass:
    """A pass that fails with each outage error in turn, then works (returning ``result``)."""

    def __init__(self, result: object = 0) -> None:
        self.errors = outage_errors()
        self.failures = len(self.errors)
        self.result = result
        self.calls = 0
        self.worked = asyncio.Event()

    async def __call__(self, *_args: object) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.worked.set()
        return self.result


def _sample(registry: CollectorRegistry, name: str, component: str) -> float:
    return registry.get_sample_value(name, {"component": component}) or 0.0


async def _outlives_the_outage(
    run: Coroutine[Any, Any, None],
    request_stop: Callable[[], None],
    flaky: FlakyPass,
    registry: CollectorRegistry,
    component: str,
) -> None:
    task = asyncio.create_task(run)
    try:
        await asyncio.wait_for(flaky.worked.wait(), 5)
        await asyncio.sleep(0.01)
        assert not task.done(), task
    finally:
        request_stop()
        await asyncio.wait_for(task, 5)  # re-raises what ended it
    assert flaky.calls >= flaky.failures + 1
    errors = _sample(registry, "meterflow_database_outage_errors_total", component)
    assert errors == flaky.failures
    assert _sample(registry, "meterflow_database_reconnects_total", component) == 1


class NoProducer:
    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def send(
        self, topic: str, value: bytes, key: bytes, partition: int | None = None
    ) -> asyncio.Future[Any]:
        raise AssertionError("nothing is produced here")


async def test_the_usage_relay_outlives_an_internal_client_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    relay = UsageRelay(settings, NO_POOL, registry, producer_factory=NoProducer)
    flaky = FlakyPass(result=0)
    monkeypatch.setattr(relay, "relay_once", flaky)
    await _outlives_the_outage(relay.run(), relay.request_stop, flaky, registry, "usage-relay")
    assert registry.get_sample_value("meterflow_usage_relay_failures_total") == flaky.failures


async def test_the_invoice_closer_outlives_an_outage(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    closer = InvoiceCloser(settings, NO_POOL, registry)
    flaky = FlakyPass(result=None)
    monkeypatch.setattr(closer, "run_once", flaky)
    await _outlives_the_outage(closer.run(), closer.request_stop, flaky, registry, "invoice-closer")


async def test_maintenance_retries_with_backoff_not_after_its_interval(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    loop = MaintenanceLoop(settings, NO_POOL, registry)
    flaky = FlakyPass(result=None)
    monkeypatch.setattr(loop, "run_once", flaky)
    # The interval is an hour: only the backoff can bring the passes that follow the failures.
    await _outlives_the_outage(loop.run(), loop.request_stop, flaky, registry, "maintenance")


async def test_webhook_delivery_outlives_an_outage(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    worker = WebhookDeliveryWorker(settings, NO_POOL, registry, poll_interval_s=3600)
    flaky = FlakyPass(result=None)
    monkeypatch.setattr(worker, "run_once", flaky)
    await _outlives_the_outage(
        worker.run(), worker.request_stop, flaky, registry, "webhook-delivery"
    )


async def test_the_error_report_closer_outlives_an_outage(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    closer = ErrorReportCloser(settings, NO_POOL, registry)
    flaky = FlakyPass(result=[])
    monkeypatch.setattr(closer, "run_once", flaky)
    await _outlives_the_outage(
        closer.run(), closer.request_stop, flaky, registry, "error-report-closer"
    )


async def test_the_alert_event_sweep_outlives_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = CollectorRegistry()
    publisher = V1EventPublisher(
        NoProducer(),
        "events",
        NO_POOL,
        AlertMetrics(registry),
        sweep_interval_s=3600,
        retry=DatabaseRetry("alert-event-sweep", registry),
    )
    flaky = FlakyPass(result=0)
    monkeypatch.setattr(publisher, "sweep_once", flaky)
    await _outlives_the_outage(
        publisher.run_sweeps(), publisher.request_stop, flaky, registry, "alert-event-sweep"
    )


async def test_the_credit_alert_recheck_sweep_outlives_an_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = CollectorRegistry()
    publisher = V1EventPublisher(NoProducer(), "events", NO_POOL, AlertMetrics(registry))
    sweep = RecheckSweep(
        NO_POOL,
        publisher,
        CreditAlertMetrics(registry),
        interval_s=3600,
        retry=DatabaseRetry("credit-alert-rechecks", registry),
    )
    flaky = FlakyPass(result=0)
    monkeypatch.setattr(sweep, "sweep_once", flaky)
    await _outlives_the_outage(
        sweep.run(), sweep.request_stop, flaky, registry, "credit-alert-rechecks"
    )


class OnePartition:
    """The part of a Kafka consumer the consume loop uses: one partition, one record a fetch
    (none for a lane fetching other partitions)."""

    def __init__(self) -> None:
        self.tp = TopicPartition("meter-events", 0)
        self.fetches = 0

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int
    ) -> Batch:
        await asyncio.sleep(0)
        if partitions and self.tp not in partitions:
            return {}
        self.fetches += 1
        return {self.tp: [cast(Any, object())]}

    def assignment(self) -> set[TopicPartition]:
        return {self.tp}


class FlakySeek:
    """Re-seeking fails once on the outage too, then works."""

    def __init__(self) -> None:
        self.calls: list[list[TopicPartition]] = []

    async def __call__(self, assigned: list[TopicPartition]) -> None:
        self.calls.append(assigned)
        if len(self.calls) == 1:
            raise ConnectionRefusedError(111, "Connection refused")


async def test_the_rollup_consumer_reads_the_batch_again_after_an_outage(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    rollups = RollupConsumer(settings, NO_POOL, registry)  # never started: no connection
    await rollups.stop()  # closes the real Kafka consumer, which the fake stands in for
    kafka = OnePartition()
    monkeypatch.setattr(rollups, "_consumer", kafka)
    flaky = FlakyPass(result=None)
    seek = FlakySeek()
    monkeypatch.setattr(rollups, "fold", flaky)
    monkeypatch.setattr(rollups, "seek_to_stored", seek)
    task = asyncio.create_task(rollups.run())
    try:
        await asyncio.wait_for(flaky.worked.wait(), 5)
        assert not task.done(), task
    finally:
        rollups.request_stop()
        await asyncio.wait_for(task, 5)
    # Every failed batch was followed by a seek back to the stored offsets (the first of them
    # failed as well, and was retried).
    assert len(seek.calls) == flaky.failures + 1
    assert all(call == [kafka.tp] for call in seek.calls)
    errors = _sample(registry, "meterflow_database_outage_errors_total", "rollups")
    assert errors == flaky.failures + 1
    assert _sample(registry, "meterflow_database_reconnects_total", "rollups") >= 1
    assert registry.get_sample_value("meterflow_fold_failures_total") == flaky.failures

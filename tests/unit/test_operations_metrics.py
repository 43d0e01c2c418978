"""The metrics the dashboards and alert rules read that no other test covers: freshness of folded
events, the webhook backlog, the last maintenance pass, meter event refusals by code, Kafka publish
failures from zero."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from aggregator.maintenance.retention import MaintenanceMetrics, MaintenanceReport
from aggregator.rollups.consumer import FoldMetrics
from aggregator.webhooks.store import PendingBacklog
from aggregator.webhooks.worker import DeliveryMetrics
from ingest.edge.metrics import MeterEventMetrics, PublisherMetrics
from meterflow.records.meter_events import AcceptedEvent, CancelRecord, EventsRecord


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _events(received_ms: int) -> EventsRecord:
    event = AcceptedEvent("mtr_1", "tokens", "id-1", "cus_1", "1", received_ms // 1000)
    return EventsRecord("acct_1", False, received_ms, "b" * 32, (event,))


def test_freshness_is_observed_once_per_record_of_events_from_its_receipt() -> None:
    registry = CollectorRegistry()
    metrics = FoldMetrics(registry)
    cancel = CancelRecord("acct_1", False, 1_000, "c" * 32, "mtr_1", "tokens", "id-1", "cus_1")
    skewed = _events(3_000)  # stamped by an ingest clock ahead of ours: counts as 0
    metrics.observe_freshness([_events(1_000), _events(2_600), cancel, skewed], committed_ms=2_700)

    def sample(suffix: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"meterflow_fold_freshness_seconds{suffix}", labels)

    assert sample("_count") == 3
    assert sample("_sum") == pytest.approx(1.7 + 0.1)
    assert sample("_bucket", le="0.1") == 2
    assert sample("_bucket", le="1.5") == 2
    assert sample("_bucket", le="2.0") == 3


def test_the_webhook_backlog_and_the_age_of_its_oldest_delivery() -> None:
    registry = CollectorRegistry()
    clock = Clock(1_000.0)
    metrics = DeliveryMetrics(registry, clock)

    def sample(name: str) -> float | None:
        return registry.get_sample_value(f"meterflow_webhook_{name}")

    assert sample("oldest_pending_age_seconds") == 0.0  # never counted yet
    metrics.record_backlog(PendingBacklog(pending=3, retrying=1, oldest_created_ms=940_500))
    assert (sample("deliveries_pending"), sample("deliveries_retrying")) == (3, 1)
    assert sample("oldest_pending_age_seconds") == pytest.approx(59.5)
    clock.now = 1_100.0  # no new count: the age grows at each scrape all the same
    assert sample("oldest_pending_age_seconds") == pytest.approx(159.5)
    metrics.record_backlog(PendingBacklog(pending=0, retrying=0, oldest_created_ms=None))
    assert sample("oldest_pending_age_seconds") == 0.0


def test_the_last_maintenance_pass_starts_at_the_process_start() -> None:
    registry = CollectorRegistry()
    metrics = MaintenanceMetrics(registry, started_s=1_700_000_000.0)

    def last_done() -> float | None:
        return registry.get_sample_value("meterflow_maintenance_last_done_timestamp_seconds")

    assert last_done() == 1_700_000_000.0
    metrics.passes.labels("skipped").inc()  # another process ran it: ours stays
    assert last_done() == 1_700_000_000.0
    metrics.record(MaintenanceReport(), now_s=1_700_000_300.0)
    assert last_done() == 1_700_000_300.0


def test_refused_meter_events_count_by_outcome_and_by_code() -> None:
    registry = CollectorRegistry()
    metrics = MeterEventMetrics(registry)
    endpoint = "/v1/billing/meter_events"
    metrics.reject(endpoint, "payload_invalid_value")
    metrics.reject(endpoint, "payload_invalid_value")
    metrics.reject(endpoint, "duplicate_meter_event")

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"endpoint": endpoint, **labels})

    assert sample("meterflow_meter_event_requests_total", outcome="invalid") == 2
    assert sample("meterflow_meter_event_requests_total", outcome="duplicate") == 1
    assert sample("meterflow_meter_event_rejections_total", code="payload_invalid_value") == 2
    assert sample("meterflow_meter_event_rejections_total", code="duplicate_meter_event") == 1


def test_every_kafka_publish_failure_reason_starts_at_zero() -> None:
    registry = CollectorRegistry()
    PublisherMetrics(registry)
    for reason in ("not_connected", "timeout", "retriable_error", "fatal_error"):
        labels = {"reason": reason}
        assert registry.get_sample_value("meterflow_kafka_publish_failures_total", labels) == 0

"""The alert evaluator's Prometheus metrics (registry injected)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.firings = Counter(
            "meterflow_alert_firings_total",
            "Alert firings recorded (each with its billing.alert.triggered event), by recurrence.",
            ["recurrence"],
            registry=registry,
        )
        self.records = Counter(
            "meterflow_alert_usage_changes_total",
            "Usage-change records read by the alert evaluator.",
            registry=registry,
        )
        self.undecodable = Counter(
            "meterflow_alert_undecodable_records_total",
            "Records on the usage-changes topic that could not be decoded and were skipped.",
            registry=registry,
        )
        self.batches = Counter(
            "meterflow_alert_batches_total",
            "Batches of usage changes evaluated.",
            registry=registry,
        )
        self.batch_records = Histogram(
            "meterflow_alert_batch_records",
            "Usage-change records per evaluated batch.",
            buckets=(1, 10, 50, 100, 500, 1000, 2000),
            registry=registry,
        )
        self.evaluation_seconds = Histogram(
            "meterflow_alert_evaluation_seconds",
            "Time to evaluate one batch: alerts, usage, firings and their transaction.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.failures = Counter(
            "meterflow_alert_evaluation_failures_total",
            "Batches that failed on a database error and were read again.",
            registry=registry,
        )
        self.fenced = Counter(
            "meterflow_alert_evaluation_fenced_total",
            "Batches rolled back because the stored offset moved (rebalance or restart).",
            registry=registry,
        )
        self.notification_latency = Histogram(
            "meterflow_alert_notification_latency_seconds",
            "From the receipt of the latest event behind a firing to its event's commit.",
            buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
            registry=registry,
        )
        self.published = Counter(
            "meterflow_alert_events_published_total",
            "billing.alert.triggered events acknowledged by the events topic, by path "
            "(direct after the firing, or sweep of events left unpublished).",
            ["path"],
            registry=registry,
        )
        self.publish_failures = Counter(
            "meterflow_alert_publish_failures_total",
            "Attempts to put events on the events topic that failed (the sweep retries them).",
            registry=registry,
        )

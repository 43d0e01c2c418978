"""Credit balance alerts' Prometheus metrics (registry injected), labelled by what triggered the
evaluation: ``usage`` (a batch of usage changes) or ``recheck`` (the sweep of ledger changes,
new and reactivated alerts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

TRIGGERS = ("usage", "recheck")


class CreditAlertMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.evaluations = Counter(
            "meterflow_credit_alert_evaluations_total",
            "Credit balance alerts evaluated against their customer's available balance.",
            ["trigger"],
            registry=registry,
        )
        self.firings = Counter(
            "meterflow_credit_alert_firings_total",
            "Credit balance alert firings recorded (each with its billing.alert.triggered event).",
            ["trigger"],
            registry=registry,
        )
        self.rearms = Counter(
            "meterflow_credit_alert_rearms_total",
            "Credit balance alerts armed again after their balance rose above their value.",
            ["trigger"],
            registry=registry,
        )
        self.evaluation_seconds = Histogram(
            "meterflow_credit_alert_evaluation_seconds",
            "Time to evaluate the credit balance alerts of one batch or sweep: locking their "
            "states, reading the balances, recording firings.",
            ["trigger"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.rechecked_customers = Counter(
            "meterflow_credit_alert_rechecked_customers_total",
            "Customers the sweep took from credit_alert_rechecks (ledger or grant changes, new "
            "and reactivated alerts).",
            registry=registry,
        )
        self.sweep_failures = Counter(
            "meterflow_credit_alert_sweep_failures_total",
            "Recheck sweeps that failed and were rolled back (their rows are taken again).",
            registry=registry,
        )
        self.notification_latency = Histogram(
            "meterflow_credit_alert_notification_latency_seconds",
            "From the receipt of the latest event behind a usage-triggered firing to its commit.",
            buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
            registry=registry,
        )
        for trigger in TRIGGERS:  # every series exists from the start, at 0
            for family in (self.evaluations, self.firings, self.rearms):
                family.labels(trigger)

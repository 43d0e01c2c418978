"""The invoice closer's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class CloserMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.periods = Counter(
            "meterflow_invoice_periods_total",
            "Subscription periods handled by the closer, by outcome: scheduled (its end "
            "recorded), invoiced (invoiced and renewed), canceled (invoiced and ended, cancelled "
            "at period end), skipped (another closer held it).",
            ["outcome"],
            registry=registry,
        )
        self.thresholds = Counter(
            "meterflow_invoice_thresholds_total",
            "Threshold invoices created when a period's unbilled amount reached the "
            "subscription's billing_thresholds.amount_gte.",
            registry=registry,
        )
        self.finalized = Counter(
            "meterflow_invoices_finalized_total",
            "Invoices finalized once their grace period was over.",
            registry=registry,
        )
        self.credits_expired = Counter(
            "meterflow_credits_expired_minor_units_total",
            "Credit left on grants past their expires_at, debited by the closer (minor units, "
            "all currencies).",
            registry=registry,
        )
        self.passes = Counter(
            "meterflow_invoice_closer_passes_total",
            "Closer passes, by outcome: done, failed (the database was unreachable).",
            ["outcome"],
            registry=registry,
        )

"""Prometheus metrics of the HTTP edge; the registry is passed in, never global."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "meterflow_http_requests_total",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "meterflow_http_request_duration_seconds",
            "Time from receiving a request to sending its response, by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.in_flight = Gauge(
            "meterflow_http_requests_in_flight",
            "Requests being handled right now.",
            registry=registry,
        )
        self.auth_failures = Counter(
            "meterflow_auth_failures_total",
            "Requests refused for a missing or unknown API key.",
            registry=registry,
        )
        self.rate_limited = Counter(
            "meterflow_rate_limited_total",
            "Requests answered 429, by endpoint class (api, meter_events, stream) and reason: "
            "account (over its account's limit) or address (too many failed authentications "
            "from the client's address).",
            ["endpoint_class", "reason"],
            registry=registry,
        )
        self.errors = Counter(
            "meterflow_http_server_errors_total",
            "Requests that failed inside meterflow (answered 500); should stay at zero.",
            ["route"],
            registry=registry,
        )


class EdgeMetrics:
    """The HTTP edge below the application: refusals by the connection protocol, and open
    connections, counted at scrape time."""

    def __init__(self, registry: CollectorRegistry, open_connections: Callable[[], int]) -> None:
        self.refusals = Counter(
            "meterflow_http_refusals_total",
            "Requests and connections refused by the HTTP edge before reaching the application "
            "(limits on the request head, head and body deadlines, the connection limit, "
            "unparsable requests), by reason.",
            ["reason"],
            registry=registry,
        )
        registry.register(_ConnectionsCollector(open_connections))


class _ConnectionsCollector(Collector):
    def __init__(self, open_connections: Callable[[], int]) -> None:
        self._open_connections = open_connections

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "meterflow_http_connections",
            "Open HTTP connections.",
            value=self._open_connections(),
        )


class PoolCollector(Collector):
    """Reads database pool occupancy at scrape time."""

    def __init__(self, sizes: Callable[[], tuple[int, int, int]]) -> None:
        self._sizes = sizes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size, idle, maximum = self._sizes()
        family = GaugeMetricFamily(
            "meterflow_db_pool_connections", "Database pool connections by state.", labels=["state"]
        )
        family.add_metric(["open"], size)
        family.add_metric(["idle"], idle)
        family.add_metric(["max"], maximum)
        yield family


PublishFailureReason = Literal["not_connected", "timeout", "retriable_error", "fatal_error"]
MeterEventOutcome = Literal["accepted", "invalid", "duplicate", "unavailable"]


class PublisherMetrics:
    """Kafka publishing as ingest sees it: ack latency, records acknowledged, failures."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "meterflow_kafka_publish_duration_seconds",
            "Time from enqueueing a request's records to Kafka acknowledging all of them.",
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.records = Counter(
            "meterflow_kafka_records_published_total",
            "Records acknowledged by Kafka (each holds accepted events or one cancel).",
            registry=registry,
        )
        self.failures = Counter(
            "meterflow_kafka_publish_failures_total",
            "Publish calls answered 503 because Kafka did not acknowledge, by reason.",
            ["reason"],
            registry=registry,
        )
        # Every reason's series exists from the start, at 0, so a first failure is an increase.
        for reason in get_args(PublishFailureReason):
            self.failures.labels(reason)


class ProducerCollector(Collector):
    """Whether the Kafka producer is connected, read at scrape time."""

    def __init__(self, connected: Callable[[], bool]) -> None:
        self._connected = connected

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "meterflow_kafka_producer_connected",
            "1 when the Kafka producer is connected and event endpoints can accept events.",
            value=1 if self._connected() else 0,
        )


class MeterEventMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "meterflow_meter_event_requests_total",
            "Meter event and adjustment requests, by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.rejections = Counter(
            "meterflow_meter_event_rejections_total",
            "Meter event and adjustment requests refused (outcomes invalid and duplicate), by "
            "endpoint and Stripe error code.",
            ["endpoint", "code"],
            registry=registry,
        )

    def count(self, endpoint: str, outcome: MeterEventOutcome) -> None:
        self.requests.labels(endpoint, outcome).inc()

    def reject(self, endpoint: str, code: str) -> None:
        """Count one refusal: outcome ``duplicate`` or ``invalid``, and its code."""
        duplicate = code == "duplicate_meter_event"
        self.requests.labels(endpoint, "duplicate" if duplicate else "invalid").inc()
        self.rejections.labels(endpoint, code).inc()


IdempotencyOutcome = Literal["stored", "not_stored", "replayed", "mismatched", "in_progress"]


class IdempotencyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "meterflow_idempotent_requests_total",
            "POST requests with an Idempotency-Key, by outcome: stored (ran, response kept), "
            "not_stored (ran, response not kept), replayed, mismatched (400), in_progress (409).",
            ["outcome"],
            registry=registry,
        )

    def count(self, outcome: IdempotencyOutcome) -> None:
        self.requests.labels(outcome).inc()

"""The aggregator process: the rollup consumer, the usage-changes relay, error reports and webhook
delivery, retention maintenance, their database pool and the metrics endpoint."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import uvloop
from prometheus_client import CollectorRegistry

from aggregator.invoicing.closer import InvoiceCloser
from aggregator.maintenance.retention import MaintenanceLoop
from aggregator.notifications import EventNotifications
from aggregator.rollups.consumer import RollupConsumer
from aggregator.usage_feed.relay import UsageRelay
from meterflow.errors import ConfigurationError
from meterflow.lifecycle.component import Component
from meterflow.lifecycle.driver import drive
from meterflow.lifecycle.health import HealthServer
from meterflow.settings import Settings

log = logging.getLogger("meterflow.aggregator")


async def serve_aggregator(settings: Settings) -> None:
    """Fold, relay, report and prune until SIGTERM/SIGINT or until one part fails, then stop each
    part in reverse order within the shutdown deadline (rows the relay has not moved stay in
    ``usage_changes`` for the next relay), close the pool; a failed part then raises
    :class:`~meterflow.lifecycle.supervision.BackgroundTaskFailed` (exit status 2)."""
    if not settings.database_url or not settings.kafka_bootstrap_servers:
        raise ConfigurationError("the aggregator needs DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS")
    registry = CollectorRegistry()
    metrics_port = settings.aggregator.aggregator_metrics_port
    # /metrics, /healthz and /readyz (every part ready: the consumers hold their partitions).
    health = HealthServer(settings.http_host, metrics_port, registry)
    health.start()
    # The fold, the relay, the error-report consumer, its window closer, the webhook worker,
    # maintenance and the invoice closer's workers each hold a connection briefly.
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=1, max_size=max(10, settings.db_pool_min)
    )
    relay = UsageRelay(settings, pool, registry)
    parts: list[Component] = [
        RollupConsumer(settings, pool, registry, on_fold=relay.notify),
        relay,
        EventNotifications(settings, pool, registry),
        MaintenanceLoop(settings, pool, registry),
        InvoiceCloser(settings, pool, registry),
    ]
    health.watch(parts)
    try:
        await drive(
            parts,
            deadline_s=settings.shutdown_deadline_s,
            registry=registry,
            on_running=lambda: log.info(
                "aggregator folding; metrics on http://%s:%d/metrics",
                settings.http_host,
                metrics_port,
            ),
        )
    finally:
        await asyncio.wait_for(pool.close(), settings.shutdown_deadline_s)
        health.stop(settings.shutdown_deadline_s)
    log.info("aggregator stopped")


def run_aggregator(settings: Settings) -> None:
    logging.getLogger("meterflow").setLevel(settings.log_level.upper())
    uvloop.run(serve_aggregator(settings))

"""The alert evaluator process (``meterflow alerts``): the evaluator, its database pool and the
metrics endpoint."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import uvloop
from prometheus_client import CollectorRegistry

from aggregator.alerts.evaluator import AlertEvaluator
from meterflow.errors import ConfigurationError
from meterflow.lifecycle.driver import drive
from meterflow.lifecycle.health import HealthServer
from meterflow.settings import Settings

log = logging.getLogger("meterflow.alerts")


async def serve_alerts(settings: Settings) -> None:
    """Evaluate until SIGTERM/SIGINT, then: stop fetching, finish the batch in hand, leave the
    group, close the producer and the pool, each within the shutdown deadline."""
    if not settings.database_url or not settings.kafka_bootstrap_servers:
        raise ConfigurationError(
            "the alert evaluator needs DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS"
        )
    registry = CollectorRegistry()
    # /metrics, /healthz and /readyz (ready while the evaluator is a member of its group).
    health = HealthServer(settings.http_host, settings.alerts.alerts_metrics_port, registry)
    health.start()
    # The evaluation, the credit alert rechecks and the event sweep each hold a connection
    # briefly; one more lets the publisher mark events published meanwhile.
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    evaluator = AlertEvaluator(settings, pool, registry)
    health.watch([evaluator])
    try:
        await drive(
            [evaluator],
            deadline_s=settings.shutdown_deadline_s,
            registry=registry,
            on_running=lambda: log.info(
                "alert evaluator running; metrics on http://%s:%d/metrics",
                settings.http_host,
                settings.alerts.alerts_metrics_port,
            ),
        )
    finally:
        await asyncio.wait_for(pool.close(), settings.shutdown_deadline_s)
        health.stop(settings.shutdown_deadline_s)
    log.info("alert evaluator stopped")


def run_alerts(settings: Settings) -> None:
    logging.getLogger("meterflow").setLevel(settings.log_level.upper())
    uvloop.run(serve_alerts(settings))

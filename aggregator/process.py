"""The aggregator process: the rollup consumer, the usage-changes relay, error reports and webhook
delivery, retention maintenance, their database pool and the metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import signal

import asyncpg
import uvloop
from prometheus_client import CollectorRegistry, start_http_server

from aggregator.maintenance.retention import MaintenanceLoop
from aggregator.notifications import EventNotifications
from aggregator.rollups.consumer import RollupConsumer
from aggregator.usage_feed.relay import UsageRelay
from meterflow.errors import ConfigurationError
from meterflow.lifecycle.supervision import Supervisor, finish
from meterflow.settings import Settings

log = logging.getLogger("meterflow.aggregator")


async def serve_aggregator(settings: Settings) -> None:
    """Fold (and prune periodically) until SIGTERM/SIGINT or a background task fails, then: stop
    fetching, leave the group, let the passes in hand end, close the pool; a failed background task
    then raises :class:`~meterflow.lifecycle.supervision.BackgroundTaskFailed` (exit status 2)."""
    if not settings.database_url or not settings.kafka_bootstrap_servers:
        raise ConfigurationError("the aggregator needs DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS")
    registry = CollectorRegistry()
    metrics_server, metrics_thread = start_http_server(
        settings.aggregator.aggregator_metrics_port, addr=settings.http_host, registry=registry
    )
    # The fold, the relay, the error-report consumer, its window closer, the webhook worker and
    # maintenance each hold a connection briefly.
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=1, max_size=max(6, settings.db_pool_min)
    )
    relay = UsageRelay(settings, pool, registry)
    consumer = RollupConsumer(settings, pool, registry, on_fold=relay.notify)
    notifications = EventNotifications(settings, pool, registry)
    maintenance = MaintenanceLoop(settings, pool, registry)

    def request_stop() -> None:
        consumer.request_stop()
        relay.request_stop()
        notifications.request_stop()
        maintenance.request_stop()

    supervisor = Supervisor(on_failure=request_stop)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    try:
        await consumer.start()
        await relay.start()
        supervisor.start(relay.run(), name="usage-relay")
        await notifications.start()
        supervisor.start(notifications.run(), name="notifications")
        supervisor.start(maintenance.run(), name="maintenance")
        log.info(
            "aggregator folding; metrics on http://%s:%d/metrics",
            settings.http_host,
            settings.aggregator.aggregator_metrics_port,
        )
        await consumer.run()
    finally:
        request_stop()
        try:
            await asyncio.wait_for(consumer.stop(), settings.shutdown_deadline_s)
        finally:
            # The relay, notifications and maintenance end their pass in hand; rows the relay
            # has not moved stay in usage_changes for the next relay to send.
            for task in supervisor.tasks:
                await finish(task, settings.shutdown_deadline_s)
            await asyncio.wait_for(relay.stop(), settings.shutdown_deadline_s)
            await asyncio.wait_for(notifications.stop(), settings.shutdown_deadline_s)
            await asyncio.wait_for(pool.close(), settings.shutdown_deadline_s)
            metrics_server.shutdown()
            metrics_thread.join(timeout=settings.shutdown_deadline_s)
    supervisor.raise_if_failed()
    log.info("aggregator stopped")


def run_aggregator(settings: Settings) -> None:
    logging.getLogger("meterflow").setLevel(settings.log_level.upper())
    uvloop.run(serve_aggregator(settings))

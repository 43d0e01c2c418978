"""The aggregator process: the rollup consumer, the usage-changes relay, error reports and webhook
delivery, retention maintenance, their database pool and the metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import signal

import asyncpg
import uvloop
from prometheus_client import CollectorRegistry, start_http_server

from aggregator.consumer import RollupConsumer
from aggregator.event_notifications import EventNotifications
from aggregator.maintenance import MaintenanceLoop
from aggregator.usage_relay import UsageRelay
from meterflow.errors import ConfigurationError
from meterflow.settings import Settings

log = logging.getLogger("meterflow.aggregator")


async def serve_aggregator(settings: Settings) -> None:
    """Fold (and prune periodically) until SIGTERM/SIGINT, then: stop fetching, leave the group,
    let a maintenance pass in hand end, close the pool."""
    if not settings.database_url or not settings.kafka_bootstrap_servers:
        raise ConfigurationError("the aggregator needs DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS")
    registry = CollectorRegistry()
    metrics_server, metrics_thread = start_http_server(
        settings.aggregator_metrics_port, addr=settings.http_host, registry=registry
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
    relay_task: asyncio.Task[None] | None = None
    notifications_task: asyncio.Task[None] | None = None
    maintenance_task: asyncio.Task[None] | None = None

    def request_stop() -> None:
        consumer.request_stop()
        relay.request_stop()
        notifications.request_stop()
        maintenance.request_stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    try:
        await consumer.start()
        await relay.start()
        relay_task = asyncio.create_task(relay.run(), name="usage-relay")
        await notifications.start()
        notifications_task = asyncio.create_task(notifications.run(), name="notifications")
        maintenance_task = asyncio.create_task(maintenance.run(), name="maintenance")
        log.info(
            "aggregator folding; metrics on http://%s:%d/metrics",
            settings.http_host,
            settings.aggregator_metrics_port,
        )
        await consumer.run()
    finally:
        relay.request_stop()
        notifications.request_stop()
        maintenance.request_stop()
        try:
            await asyncio.wait_for(consumer.stop(), settings.shutdown_deadline_s)
        finally:
            # Rows the relay has not moved stay in usage_changes for the next relay to send.
            if relay_task is not None:
                await _finish(relay_task, settings.shutdown_deadline_s)
            await asyncio.wait_for(relay.stop(), settings.shutdown_deadline_s)
            if notifications_task is not None:
                await _finish(notifications_task, settings.shutdown_deadline_s)
            await asyncio.wait_for(notifications.stop(), settings.shutdown_deadline_s)
            if maintenance_task is not None:
                await _finish(maintenance_task, settings.shutdown_deadline_s)
            await asyncio.wait_for(pool.close(), settings.shutdown_deadline_s)
            metrics_server.shutdown()
            metrics_thread.join(timeout=settings.shutdown_deadline_s)
    log.info("aggregator stopped")


async def _finish(task: asyncio.Task[None], deadline_s: float) -> None:
    """Let a stopping task end within the deadline, else cancel it; a pass is safe to cut."""
    try:
        await asyncio.wait_for(task, deadline_s)
    except TimeoutError:
        log.warning("%s still running at shutdown; cancelled", task.get_name())


def run_aggregator(settings: Settings) -> None:
    logging.getLogger("meterflow").setLevel(settings.log_level.upper())
    uvloop.run(serve_aggregator(settings))

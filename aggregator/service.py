"""The aggregator process: a rollup consumer, its database pool and its metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import signal

import asyncpg
import uvloop
from prometheus_client import CollectorRegistry, start_http_server

from aggregator.consumer import RollupConsumer
from meterflow.errors import ConfigurationError
from meterflow.settings import Settings

log = logging.getLogger("meterflow.aggregator")


async def serve_aggregator(settings: Settings) -> None:
    """Fold until SIGTERM/SIGINT, then: stop fetching, leave the group, close the pool."""
    if not settings.database_url or not settings.kafka_bootstrap_servers:
        raise ConfigurationError("the aggregator needs DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS")
    registry = CollectorRegistry()
    metrics_server, metrics_thread = start_http_server(
        settings.aggregator_metrics_port, addr=settings.http_host, registry=registry
    )
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=1, max_size=max(2, settings.db_pool_min)
    )
    consumer = RollupConsumer(settings, pool, registry)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, consumer.request_stop)
    try:
        await consumer.start()
        log.info(
            "aggregator folding; metrics on http://%s:%d/metrics",
            settings.http_host,
            settings.aggregator_metrics_port,
        )
        await consumer.run()
    finally:
        try:
            await asyncio.wait_for(consumer.stop(), settings.shutdown_deadline_s)
        finally:
            await asyncio.wait_for(pool.close(), settings.shutdown_deadline_s)
            metrics_server.shutdown()
            metrics_thread.join(timeout=settings.shutdown_deadline_s)
    log.info("aggregator stopped")


def run_aggregator(settings: Settings) -> None:
    logging.getLogger("meterflow").setLevel(settings.log_level.upper())
    uvloop.run(serve_aggregator(settings))

"""Running the ingest service under uvicorn (httptools parser, uvloop event loop)."""

from __future__ import annotations

import logging

import uvicorn
from prometheus_client import CollectorRegistry

from ingest.app import IngestApp
from meterflow.settings import Settings


def build_server(settings: Settings, registry: CollectorRegistry | None = None) -> uvicorn.Server:
    app = IngestApp(settings, registry or CollectorRegistry())
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.ingest.http_port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_deadline_s),
        # Slow or idle clients must not hold sockets forever.
        timeout_keep_alive=30,
        server_header=False,
        date_header=True,
    )
    return uvicorn.Server(config)


def run_ingest(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM: stop accepting, drain in-flight requests, close the pool."""
    logging.getLogger("meterflow").setLevel(settings.log_level.upper())
    server = build_server(settings)
    server.run()
    if not server.started:
        raise SystemExit(1)

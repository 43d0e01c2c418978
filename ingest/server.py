"""Running the ingest service under uvicorn (httptools parser, uvloop event loop), with the
HTTP edge's limits and deadlines (:mod:`ingest.edge.protocol`)."""

from __future__ import annotations

import logging
import resource
import socket

import uvicorn
import uvloop
from prometheus_client import CollectorRegistry

from ingest.app import IngestApp
from ingest.edge.metrics import EdgeMetrics
from ingest.edge.protocol import HttpLimits, guarded_protocol
from meterflow.errors import LauncherError
from meterflow.lifecycle.driver import drive
from meterflow.lifecycle.health import HealthServer
from meterflow.settings import Settings

log = logging.getLogger("meterflow.ingest")


def build_server(settings: Settings, registry: CollectorRegistry | None = None) -> uvicorn.Server:
    """uvicorn with the httptools parser, behind :mod:`ingest.edge.protocol`'s limits."""
    registry = registry or CollectorRegistry()
    app = IngestApp(settings, registry)
    limits = HttpLimits.of(settings.ingest)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.ingest.http_port,
        loop="uvloop",
        lifespan="on",
        ws="none",  # nothing to upgrade to: an Upgrade header is read as a plain request
        access_log=False,
        # No handlers of uvicorn's own: meterflow.logs writes its records (text or JSON), and
        # keeps its INFO lines for DEBUG.
        log_config=None,
        log_level=None,
        timeout_graceful_shutdown=int(settings.shutdown_deadline_s),
        timeout_keep_alive=settings.ingest.keep_alive_timeout_s,
        server_header=False,
        date_header=True,
    )
    server = uvicorn.Server(config)
    metrics = EdgeMetrics(registry, lambda: len(server.server_state.connections))
    config.http = guarded_protocol(limits, metrics)
    _allow_connections(limits.max_connections)
    return server


# Descriptors besides client connections: the database pool, Kafka, the listening socket, logs.
_SPARE_DESCRIPTORS = 256


def _allow_connections(max_connections: int) -> None:
    """Raise the soft descriptor limit so that the connection limit, not EMFILE, refuses first."""
    needed = max_connections + _SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        if raised < needed:
            log.warning(
                "the descriptor limit (%d) is below METERFLOW_MAX_CONNECTIONS (%d) plus %d: "
                "connections past it are refused by the kernel, without an answer",
                raised,
                max_connections,
                _SPARE_DESCRIPTORS,
            )


def shared_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT, not yet listening.

    Every ingest process binding the address this way gets an accept queue of its own, and the
    kernel spreads new connections over the queues. uvicorn's ``startup()`` makes it listen after
    the lifespan has opened the pool and the producer: a process still starting is not in the
    port's group of listeners, so no connection waits in its queue meanwhile.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise LauncherError(f"cannot bind {host}:{port} with SO_REUSEPORT: {exc}") from exc
    sock.setblocking(False)
    return sock


class HttpServer:
    """The uvicorn server as a :class:`~meterflow.lifecycle.component.Component`.

    ``start()`` binds the socket and runs the app's lifespan start-up (pool, producer, caches);
    ``stop()`` stops accepting, lets requests in flight finish (uvicorn's graceful timeout), then
    runs the lifespan shutdown: flush the producer, close the pool.
    """

    name = "http"

    def __init__(self, server: uvicorn.Server, *, reuse_port: bool = False) -> None:
        self._server = server
        self._reuse_port = reuse_port

    async def start(self) -> None:
        config = self._server.config
        if not config.loaded:
            config.load()
        self._server.lifespan = config.lifespan_class(config)
        sockets = [shared_socket(config.host, config.port)] if self._reuse_port else None
        await self._server.startup(sockets=sockets)
        if self._server.should_exit or not self._server.started:
            raise LauncherError("the HTTP server did not start; see the log above")

    def ready(self) -> bool:
        return self._server.started and not self._server.should_exit

    async def run(self) -> None:
        await self._server.main_loop()

    def request_stop(self) -> None:
        self._server.should_exit = True

    async def stop(self) -> None:
        await self._server.shutdown()


def run_ingest(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM: stop accepting, drain in-flight requests, close the pool."""
    logging.getLogger("meterflow").setLevel(settings.log_level.upper())
    registry = CollectorRegistry()
    server = HttpServer(build_server(settings, registry), reuse_port=settings.ingest.reuse_port)
    health = _own_port(settings, registry)
    if health is not None:
        health.watch([server])
    try:
        # The graceful shutdown is bounded by uvicorn's own timeout; the margin covers the
        # lifespan.
        uvloop.run(drive([server], deadline_s=2 * settings.shutdown_deadline_s, registry=registry))
    finally:
        if health is not None:
            health.stop(settings.shutdown_deadline_s)
    log.info("ingest stopped")


def _own_port(settings: Settings, registry: CollectorRegistry) -> HealthServer | None:
    """This process's /metrics, /healthz and /readyz (ready: serving the API) on
    ``METERFLOW_INGEST_METRICS_PORT``, started; None when that is 0."""
    port = settings.ingest.ingest_metrics_port
    if not port:
        return None
    try:
        health = HealthServer(settings.http_host, port, registry)
    except OSError as exc:
        raise LauncherError(
            f"cannot listen on {settings.http_host}:{port} (METERFLOW_INGEST_METRICS_PORT): {exc}"
        ) from exc
    health.start()
    return health

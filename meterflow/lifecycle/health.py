"""The HTTP port of a consumer process (the aggregator, the alert evaluator).

* ``/healthz``: 200 while the process answers at all (a liveness probe).
* ``/readyz``: 200 once every component the process runs is ready, else 503 naming those that
  are not. A consumer is ready when it holds partitions, or is idle in its group
  (:meth:`~meterflow.kafka.consumer.StoredOffsetConsumer.ready`).
* ``/metrics`` (and any other path, as before): the process's Prometheus registry.

It serves from a thread, like ``prometheus_client.start_http_server``, so a busy event loop
never delays a probe; components' ``ready()`` only read flags.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import CollectorRegistry, make_wsgi_app

from meterflow.lifecycle.component import Component

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not worth a log line."""


class HealthEndpoints:
    """The WSGI application: health and readiness of the components it watches, and metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._metrics = make_wsgi_app(registry)
        self._components: tuple[Component, ...] = ()

    def watch(self, components: Sequence[Component]) -> None:
        """Judge readiness by these from now on (until called, the process is starting)."""
        self._components = tuple(components)

    def not_ready(self) -> list[str]:
        """Names of the components that are not ready; ``["starting"]`` before :meth:`watch`."""
        if not self._components:
            return ["starting"]
        return [c.name for c in self._components if not c.ready()]

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return _json(start_response, "200 OK", {"status": "ok"})
        if path == "/readyz":
            waiting = self.not_ready()
            if waiting:
                body = {"status": "not ready", "not_ready": waiting}
                return _json(start_response, "503 Service Unavailable", body)
            return _json(start_response, "200 OK", {"status": "ready"})
        result: Iterable[bytes] = self._metrics(environ, start_response)
        return result


def _json(start_response: StartResponse, status: str, body: object) -> list[bytes]:
    payload = orjson.dumps(body)
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]


class HealthServer:
    """:class:`HealthEndpoints` served on ``host:port`` from a daemon thread."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self.endpoints = HealthEndpoints(registry)
        self._server = make_server(
            host, port, self.endpoints, _ThreadingServer, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-server", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the one chosen for port 0)."""
        port: int = self._server.server_port
        return port

    def start(self) -> None:
        self._thread.start()

    def watch(self, components: Sequence[Component]) -> None:
        self.endpoints.watch(components)

    def stop(self, timeout_s: float) -> None:
        if self._thread.is_alive():  # shutdown() would wait forever for a loop never started
            self._server.shutdown()
            self._thread.join(timeout=timeout_s)
        self._server.server_close()

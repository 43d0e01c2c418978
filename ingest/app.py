"""The ingest ASGI application: read, authenticate, dispatch, answer in Stripe's shape.

Lifespan owns the Kafka producer and the database pool. Startup opens the pool and starts the
producer (waiting at most ``publish_timeout_s`` for Kafka; it keeps connecting in the
background). Shutdown runs after uvicorn stopped accepting and drained requests: flush and stop
the producer, then close the pool, each within the shutdown deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

import asyncpg
from prometheus_client import CollectorRegistry, generate_latest

from ingest.alerts.api import AlertsApi
from ingest.billing.routes import billing_routes
from ingest.core_events.api import CoreEventsApi
from ingest.edge.auth import Authenticator
from ingest.edge.errors import (
    ApiError,
    AuthenticationFailed,
    DatabaseUnavailable,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
)
from ingest.edge.http import Request, Response, error_response, error_response_v2, json_response
from ingest.edge.idempotency import (
    ErrorRenderer,
    IdempotentRequests,
    PgIdempotencyStore,
    idempotency_key,
)
from ingest.edge.key_store import PgKeyDirectory
from ingest.edge.metrics import IdempotencyMetrics, IngestMetrics, MeterEventMetrics, PoolCollector
from ingest.edge.rate_limits import AccountLimiter, LimitClass, RequestLimits
from ingest.edge.routing import AuthedHandler, Match, PublicHandler, Route, Router
from ingest.events.api import MeterEventsApi
from ingest.events.identifiers import PgProcessedEvents
from ingest.events.publisher import EventPublisher, RecordPublisher, UnconfiguredPublisher
from ingest.meters.api import MetersApi
from ingest.meters.directory import MeterDirectory
from ingest.meters.store import MeterStore
from ingest.meters.summaries_api import SummariesApi
from ingest.openapi.api import OpenApiEndpoint
from ingest.replays.api import ReplaysApi
from ingest.stream.api import MeterEventStreamApi
from ingest.stream.sessions import SessionAuthority
from ingest.v1_events.api import V1EventsApi
from ingest.webhooks.api import WebhookEndpointsApi
from meterflow.ids import object_id
from meterflow.kafka.topics import meter_events_rejected_topic, meter_events_topic
from meterflow.lifecycle.reconnect import outage_metrics
from meterflow.settings import Settings
from meterflow.store.outages import DATABASE_ERRORS, is_database_outage
from meterflow.store.ping import ping

log = logging.getLogger("meterflow.ingest")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_READY_TIMEOUT_S = 2.0
# During an outage every request fails alike: one warning per interval is enough.
_OUTAGE_LOG_INTERVAL_S = 5.0


class _BodyTooLarge(Exception):
    pass


class IngestApp:
    """An ASGI 3 application; construct, then let the server drive ``lifespan`` and ``http``."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = IngestMetrics(registry)
        self._limits = RequestLimits(settings.ingest, self.metrics.rate_limited)
        self._outage_errors = outage_metrics(registry).errors.labels("ingest")
        self._outage_logged_at = float("-inf")
        self.pool: asyncpg.Pool | None = None
        self.publisher: EventPublisher | None = None
        self._router: Router | None = None
        self._authenticator: Authenticator | None = None
        self._idempotent: IdempotentRequests | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def startup(self) -> None:
        if not self.settings.database_url:
            raise RuntimeError("ingest needs DATABASE_URL")
        self.pool = await asyncpg.create_pool(
            self.settings.database_url,
            min_size=self.settings.db_pool_min,
            max_size=self.settings.db_pool_max,
        )
        pool = self.pool
        self.registry.register(
            PoolCollector(lambda: (pool.get_size(), pool.get_idle_size(), pool.get_max_size()))
        )
        self._authenticator = Authenticator(
            PgKeyDirectory(self.pool), ttl_s=self.settings.ingest.auth_cache_ttl_s
        )
        self._idempotent = IdempotentRequests(
            PgIdempotencyStore(self.pool), IdempotencyMetrics(self.registry)
        )
        store = MeterStore(self.pool)
        directory = MeterDirectory(store, ttl_s=self.settings.ingest.meter_cache_ttl_s)
        meters = MetersApi(store, on_change=directory.forget)
        publisher = await self._start_publisher()
        events = MeterEventsApi(
            meters=directory,
            processed=PgProcessedEvents(self.pool),
            publisher=publisher,
            topic=meter_events_topic(self.settings.topic_prefix),
            metrics=MeterEventMetrics(self.registry),
            limiter=AccountLimiter(
                "meter events", self.settings.ingest.rate_limit_meter_events_per_s
            ),
        )
        sessions = SessionAuthority(
            self.pool, revocation_ttl_s=self.settings.ingest.auth_cache_ttl_s
        )
        await sessions.load_keys()
        stream = MeterEventStreamApi(
            sessions=sessions,
            meters=directory,
            publisher=publisher,
            events_topic=meter_events_topic(self.settings.topic_prefix),
            rejected_topic=meter_events_rejected_topic(self.settings.topic_prefix),
            limiter=AccountLimiter(
                "stream events", self.settings.ingest.rate_limit_stream_events_per_s
            ),
            registry=self.registry,
        )
        self._router = Router(
            [
                # Not rate limited: a probe or scrape refused under attack would pull the
                # instance out of service; expose them only to the operator's network.
                Route(
                    "GET", "/metrics", self._metrics, authenticated=False, limit_class="operational"
                ),
                Route(
                    "GET", "/healthz", self._healthz, authenticated=False, limit_class="operational"
                ),
                Route(
                    "GET", "/readyz", self._readyz, authenticated=False, limit_class="operational"
                ),
                *meters.routes(),
                *events.routes(),
                *stream.routes(),
                *SummariesApi(store, self.pool).routes(),
                *CoreEventsApi(self.pool).routes(),
                *WebhookEndpointsApi(
                    self.pool,
                    allow_private_targets=self.settings.webhooks.webhook_allow_private_targets,
                ).routes(),
                *AlertsApi(self.pool).routes(),
                *V1EventsApi(self.pool).routes(),
                *billing_routes(
                    self.pool, store, invoice_grace_s=self.settings.aggregator.invoice_grace_s
                ),
                *ReplaysApi(self.pool, self.settings).routes(),
                OpenApiEndpoint(lambda: self.routes).route(),
            ]
        )
        log.info("ingest ready")

    async def _start_publisher(self) -> RecordPublisher:
        if not self.settings.kafka_bootstrap_servers:
            log.warning("KAFKA_BOOTSTRAP_SERVERS is not set: meter event endpoints answer 503")
            return UnconfiguredPublisher()
        self.publisher = EventPublisher(
            self.settings.kafka_bootstrap_servers,
            publish_timeout_s=self.settings.ingest.publish_timeout_s,
            registry=self.registry,
            security=self.settings.kafka,
        )
        await self.publisher.start(wait_s=self.settings.ingest.publish_timeout_s)
        return self.publisher

    async def shutdown(self) -> None:
        # uvicorn has stopped accepting and drained in-flight requests before this runs.
        if self.publisher is not None:
            await self.publisher.stop(self.settings.shutdown_deadline_s)
            self.publisher = None
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), self.settings.shutdown_deadline_s)
            except TimeoutError:
                log.warning("database pool did not close in time; terminating connections")
                self.pool.terminate()
            self.pool = None

    # -- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        route_name = "unmatched"
        limit_class: LimitClass | None = None
        request_id = object_id("req", length=14)
        render_error = _error_renderer(path)
        status = 500
        self.metrics.in_flight.inc()
        try:
            try:
                match = self._match(method, path)
                route_name = match.route.template
                limit_class = match.route.limit_class
                response = await self._handle(scope, receive, match, request_id, render_error)
            except ApiError as exc:
                if isinstance(exc, AuthenticationFailed):
                    self.metrics.auth_failures.inc()
                self._limits.observe(exc, limit_class, scope.get("client"))
                response = render_error(exc)
            except Exception as exc:
                if is_database_outage(exc):
                    self._database_unavailable(exc, method, path, request_id)
                    response = render_error(DatabaseUnavailable.for_outage(exc))
                else:
                    log.exception("unhandled error in %s %s (request %s)", method, path, request_id)
                    self.metrics.errors.labels(route_name).inc()
                    response = render_error(
                        _InternalError("An internal error occurred; the request may be retried.")
                    )
            status = response.status
            await _send_response(send, response, request_id)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(route_name, method, str(status)).inc()
            self.metrics.latency.labels(route_name).observe(time.perf_counter() - started)

    def _database_unavailable(
        self, exc: Exception, method: str, path: str, request_id: str
    ) -> None:
        self._outage_errors.inc()
        now = time.monotonic()
        if now - self._outage_logged_at >= _OUTAGE_LOG_INTERVAL_S:
            self._outage_logged_at = now
            log.warning(
                "database unavailable: answering 503 (%s %s, request %s: %r)",
                method,
                path,
                request_id,
                exc,
            )

    @property
    def routes(self) -> list[Route]:
        """Every route served (empty until started)."""
        return [] if self._router is None else self._router.routes

    def _match(self, method: str, path: str) -> Match:
        if self._router is None or self._authenticator is None:
            raise ServiceUnavailable("meterflow is starting; retry shortly.")
        return self._router.match(method, path)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        match: Match,
        request_id: str,
        render_error: ErrorRenderer,
    ) -> Response:
        assert self._authenticator is not None  # noqa: S101 - checked by the caller
        assert self._idempotent is not None  # noqa: S101 - set with the authenticator
        self._limits.admit(match.route.limit_class, scope.get("client"))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await _read_body(receive, headers, self.settings.ingest.max_body_bytes)
        except _BodyTooLarge as exc:
            raise PayloadTooLarge(
                f"The request body is larger than {self.settings.ingest.max_body_bytes} bytes."
            ) from exc
        request = Request(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b""),
            headers=headers,
            body=body,
            request_id=request_id,
            path_params=match.path_params,
        )
        route = match.route
        if route.authenticated:
            principal = await self._authenticator.authenticate(request.header("authorization"))
            self._limits.charge(route.limit_class, principal)
            handler = cast(AuthedHandler, route.handler)
            key = idempotency_key(request) if request.method == "POST" else None
            if key is not None:
                return await self._idempotent.handle(request, principal, key, handler, render_error)
            return await handler(request, principal)
        return await cast(PublicHandler, route.handler)(request)

    # -- operational endpoints -----------------------------------------------------------------

    async def _metrics(self, _request: Request) -> Response:
        return Response(200, generate_latest(self.registry), b"text/plain; version=0.0.4")

    async def _healthz(self, _request: Request) -> Response:
        return json_response({"status": "ok"})

    async def _readyz(self, _request: Request) -> Response:
        if self.pool is None:
            raise DatabaseUnavailable("database pool is not open")
        try:
            await asyncio.wait_for(ping(self.pool), _READY_TIMEOUT_S)
        except DATABASE_ERRORS as exc:
            raise DatabaseUnavailable("database is not answering") from exc
        if self.publisher is not None and not await self.publisher.reachable(_READY_TIMEOUT_S):
            raise ServiceUnavailable(
                f"Kafka is not reachable: the producer is not connected, or the broker did not "
                f"answer within {_READY_TIMEOUT_S:g}s"
            )
        return json_response({"status": "ready"})


def _error_renderer(path: str) -> ErrorRenderer:
    return error_response_v2 if path.startswith("/v2/") else error_response


class _InternalError(ServiceUnavailable):
    status = 500


async def _read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # The client hung up before the body was complete: what arrived is not the request.
            raise InvalidRequest("The client disconnected before the request body was complete.")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _send_response(send: Send, response: Response, request_id: str) -> None:
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", str(len(response.body)).encode()),
        (b"request-id", request_id.encode()),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})

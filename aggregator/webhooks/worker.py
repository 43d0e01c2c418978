"""The webhook delivery worker: claims due deliveries, POSTs them signed, records every attempt.

Up to ``webhook_concurrency`` requests are in flight per process, and at most a quarter of them to
any one endpoint, so a slow or dead endpoint holds a few slots for at most ``webhook_timeout_s``
each and never delays the others. Nothing waits on a request while holding a database connection
or a transaction: claims and outcomes are short batched transactions.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aggregator.webhooks.http import DeliveryFailed, post
from aggregator.webhooks.policy import (
    SIGNATURE_HEADER,
    AttemptResult,
    NextState,
    RetryPolicy,
    after_attempt,
    is_success,
    pick_fairly,
    signature_header,
)
from aggregator.webhooks.store import (
    ClaimedDelivery,
    PendingBacklog,
    claim_deliveries,
    pending_backlog,
    record_attempts,
)
from meterflow.errors import ConfigurationError
from meterflow.lifecycle.reconnect import DatabaseRetry
from meterflow.settings import Settings
from meterflow.store.outages import DATABASE_ERRORS
from meterflow.webhooks.targets import TargetPolicy

log = logging.getLogger("meterflow.aggregator.webhooks")

Poster = Callable[[str, bytes, Mapping[str, str], float], Awaitable[int]]

POLL_INTERVAL_S = 0.5
_LEASE_MARGIN_S = 10.0
_PENDING_REFRESH_S = 5.0


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self.deliveries = Counter(
            "meterflow_webhook_deliveries_total",
            "Webhook delivery attempts by outcome: succeeded, retrying (failed, will retry), "
            "failed (failed for the last time).",
            ["outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "meterflow_webhook_delivery_seconds",
            "Time from connecting to an endpoint to its answer (or to giving up on it).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.pending = Gauge(
            "meterflow_webhook_deliveries_pending",
            "Deliveries not yet succeeded or given up, as last counted by this process.",
            registry=registry,
        )
        self.retrying = Gauge(
            "meterflow_webhook_deliveries_retrying",
            "Pending deliveries with at least one failed attempt (the retry backlog), as last "
            "counted by this process.",
            registry=registry,
        )
        # The age grows between counts: it is computed when scraped, from the last count.
        self._clock = clock
        self._oldest_created_ms: int | None = None
        self.oldest_pending_age = Gauge(
            "meterflow_webhook_oldest_pending_age_seconds",
            "Age of the oldest delivery not yet succeeded or given up (0 when none), from this "
            "process's last count.",
            registry=registry,
        )
        self.oldest_pending_age.set_function(self._oldest_pending_age_s)
        self.in_flight = Gauge(
            "meterflow_webhook_requests_in_flight",
            "Webhook requests this process is waiting on.",
            registry=registry,
        )

    def record_backlog(self, backlog: PendingBacklog) -> None:
        self.pending.set(backlog.pending)
        self.retrying.set(backlog.retrying)
        self._oldest_created_ms = backlog.oldest_created_ms

    def _oldest_pending_age_s(self) -> float:
        if self._oldest_created_ms is None:
            return 0.0
        return max(0.0, self._clock() - self._oldest_created_ms / 1000)


def _policy(settings: Settings) -> RetryPolicy:
    if settings.webhooks.webhook_max_attempts < 1 or settings.webhooks.webhook_backoff_base_s <= 0:
        raise ConfigurationError(
            "METERFLOW_WEBHOOK_MAX_ATTEMPTS and METERFLOW_WEBHOOK_BACKOFF_BASE_S must be positive"
        )
    if settings.webhooks.webhook_backoff_max_s < settings.webhooks.webhook_backoff_base_s:
        raise ConfigurationError(
            "METERFLOW_WEBHOOK_BACKOFF_MAX_S must be at least METERFLOW_WEBHOOK_BACKOFF_BASE_S"
        )
    return RetryPolicy(
        max_attempts=settings.webhooks.webhook_max_attempts,
        backoff_base_ms=int(settings.webhooks.webhook_backoff_base_s * 1000),
        backoff_max_ms=int(settings.webhooks.webhook_backoff_max_s * 1000),
    )


class WebhookDeliveryWorker:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        registry: CollectorRegistry,
        *,
        poll_interval_s: float = POLL_INTERVAL_S,
        clock: Callable[[], float] = time.time,
        poster: Poster | None = None,
    ) -> None:
        if settings.webhooks.webhook_timeout_s <= 0 or settings.webhooks.webhook_concurrency < 1:
            raise ConfigurationError(
                "METERFLOW_WEBHOOK_TIMEOUT_S and METERFLOW_WEBHOOK_CONCURRENCY must be positive"
            )
        self._pool = pool
        self._policy = _policy(settings)
        self._timeout_s = settings.webhooks.webhook_timeout_s
        self._concurrency = settings.webhooks.webhook_concurrency
        self._per_endpoint = max(1, settings.webhooks.webhook_concurrency // 4)
        self._lease_ms = int((settings.webhooks.webhook_timeout_s + _LEASE_MARGIN_S) * 1000)
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        # Every delivery resolves its host and connects only to addresses the policy allows.
        allow_private = settings.webhooks.webhook_allow_private_targets
        self._poster = poster or partial(post, targets=TargetPolicy(allow_private=allow_private))
        self.metrics = DeliveryMetrics(registry, clock)
        self._retry = DatabaseRetry("webhook-delivery", registry)
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], str] = {}
        self._settled: list[tuple[AttemptResult, NextState]] = []
        self._pending_counted_at = float("-inf")

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def notify(self) -> None:
        """Look for due deliveries now rather than at the next poll (new events were queued)."""
        self._wake.set()

    def request_stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Deliver until asked to stop; then wait for the requests in flight (each bounded by the
        timeout) and record them. Cancelled, it abandons them: their leases run out and they are
        attempted again."""
        try:
            while not self._stopping.is_set():
                try:
                    await self.run_once()
                except DATABASE_ERRORS as exc:
                    # The database is away: leased deliveries come due again once it is back.
                    await self._retry.pause(exc, self._stopping)
                    continue
                except Exception:
                    log.exception("webhook delivery pass failed")
                else:
                    self._retry.succeeded()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
                self._wake.clear()
        except asyncio.CancelledError:
            for task in list(self._in_flight):
                task.cancel()
            raise
        if self._in_flight:
            await asyncio.wait(list(self._in_flight))
        try:
            await self._record_settled()
        except Exception:
            log.exception("could not record the last webhook attempts; they will be made again")

    async def run_once(self) -> None:
        """Record finished attempts, then start as many due deliveries as there are free slots."""
        await self._record_settled()
        free = self._concurrency - len(self._in_flight)
        if free > 0:
            busy = collections.Counter(self._in_flight.values())
            choose = partial(
                pick_fairly, free_slots=free, in_flight=busy, per_endpoint=self._per_endpoint
            )
            async with self._pool.acquire() as conn:
                claimed = await claim_deliveries(
                    conn,
                    now_ms=self._now_ms(),
                    lease_ms=self._lease_ms,
                    per_endpoint=self._per_endpoint,
                    candidates=free * 4,
                    choose=choose,
                )
            for delivery in claimed:
                task = asyncio.create_task(self._attempt(delivery), name="webhook-delivery")
                self._in_flight[task] = delivery.endpoint_id
                task.add_done_callback(self._finished)
            self.metrics.in_flight.set(len(self._in_flight))
        if self._clock() - self._pending_counted_at >= _PENDING_REFRESH_S:
            async with self._pool.acquire() as conn:
                self.metrics.record_backlog(await pending_backlog(conn))
            self._pending_counted_at = self._clock()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self.metrics.in_flight.set(len(self._in_flight))
        self._wake.set()

    async def _attempt(self, delivery: ClaimedDelivery) -> None:
        body = delivery.body.encode()
        started = time.perf_counter()
        started_ms = self._now_ms()
        headers = {SIGNATURE_HEADER: signature_header(delivery.secret, body, started_ms // 1000)}
        status: int | None = None
        error: str | None = None
        try:
            status = await self._poster(delivery.url, body, headers, self._timeout_s)
        except DeliveryFailed as exc:
            error = str(exc)
        except Exception as exc:
            # Recorded as a failed attempt rather than left leased: the schedule still applies.
            log.exception("webhook %s to %s failed unexpectedly", delivery.event_id, delivery.url)
            error = f"internal error: {type(exc).__name__}"
        else:
            if not is_success(status):
                error = f"HTTP {status}"
        elapsed = time.perf_counter() - started
        self.metrics.latency.observe(elapsed)
        result = AttemptResult(
            delivery_id=delivery.delivery_id,
            attempt=delivery.attempt,
            started_ms=started_ms,
            duration_ms=int(elapsed * 1000),
            status_code=status,
            error=error,
        )
        state = after_attempt(result, self._policy, self._now_ms())
        self.metrics.deliveries.labels(state.outcome).inc()
        if error is not None:
            log.info(
                "webhook %s to %s, attempt %d: %s (%s)",
                delivery.event_id,
                delivery.url,
                delivery.attempt,
                error,
                state.outcome,
            )
        self._settled.append((result, state))

    async def _record_settled(self) -> None:
        if not self._settled:
            return
        settled, self._settled = self._settled, []
        try:
            async with self._pool.acquire() as conn:
                await record_attempts(conn, settled, self._now_ms())
        except BaseException:
            self._settled[:0] = settled  # keep them for the next pass
            raise

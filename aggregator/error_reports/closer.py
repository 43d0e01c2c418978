"""Closing error-report windows: a periodic pass turns every window that ended more than the grace
period ago into one v2 core event and queues its webhook deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import asyncpg
from prometheus_client import CollectorRegistry, Counter

from aggregator.error_reports.reports import ErrorReport, report_event
from aggregator.error_reports.store import close_due_windows
from aggregator.webhooks.core_events import CoreEvent, new_event_id
from meterflow.errors import ConfigurationError
from meterflow.lifecycle.reconnect import DatabaseRetry
from meterflow.settings import Settings
from meterflow.store.outages import DATABASE_ERRORS

log = logging.getLogger("meterflow.aggregator.error_reports")

MAX_WINDOWS_PER_PASS = 500
_MAX_INTERVAL_S = 1.0
_MIN_INTERVAL_S = 0.05


class ErrorReportCloser:
    """Runs a pass every ``interval_s`` (at most a second) until asked to stop."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        registry: CollectorRegistry,
        *,
        on_events: Callable[[list[CoreEvent]], None] = lambda _events: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.aggregator.error_report_grace_s < 0:
            raise ConfigurationError("METERFLOW_ERROR_REPORT_GRACE_S must not be negative")
        self._pool = pool
        self._grace_ms = int(settings.aggregator.error_report_grace_s * 1000)
        self.interval_s = max(
            _MIN_INTERVAL_S, min(_MAX_INTERVAL_S, settings.aggregator.error_report_grace_s / 2)
        )
        self._on_events = on_events
        self._clock = clock
        self._stopping = asyncio.Event()
        self.reports = Counter(
            "meterflow_error_reports_emitted_total",
            "Error reports emitted as v2 core events, by event type.",
            ["type"],
            registry=registry,
        )
        self.failures = Counter(
            "meterflow_error_report_close_failures_total",
            "Passes closing error-report windows that failed (retried on the next pass).",
            registry=registry,
        )
        self._retry = DatabaseRetry("error-report-closer", registry)

    def request_stop(self) -> None:
        self._stopping.set()

    def _event(self, report: ErrorReport) -> CoreEvent:
        return report_event(
            report, event_id=new_event_id(report.livemode), created_ms=int(self._clock() * 1000)
        )

    async def run_once(self) -> list[CoreEvent]:
        """Report every window that is due now; return the events created."""
        created: list[CoreEvent] = []
        while True:
            async with self._pool.acquire() as conn:
                batch = await close_due_windows(
                    conn,
                    closed_before_ms=int(self._clock() * 1000) - self._grace_ms,
                    max_windows=MAX_WINDOWS_PER_PASS,
                    make_event=self._event,
                )
            created.extend(batch)
            for event in batch:
                self.reports.labels(event.type).inc()
            if batch:
                self._on_events(batch)
            if len(batch) < MAX_WINDOWS_PER_PASS:
                return created

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except DATABASE_ERRORS as exc:
                # The database is away: the next pass starts over once it is back.
                self.failures.inc()
                await self._retry.pause(exc, self._stopping)
                continue
            except Exception:
                # A bad pass must not end error reporting; the next pass starts over.
                self.failures.inc()
                log.exception("closing error-report windows failed")
            else:
                self._retry.succeeded()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)

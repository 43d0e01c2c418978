"""Waiting out a database outage: one backoff and one pair of metrics for every loop.

The aggregator's and the alert evaluator's loops (consumers, the usage relay, the closers, the
sweeps, maintenance, webhook delivery) work in passes against PostgreSQL, each pass one or more
transactions. A pass that fails on the database has rolled back, and the loop waits before the
next one: 0.2 s after the first failure, doubling to at most 2 s, jittered so that processes do
not all reconnect at once. The first pass that succeeds resets the wait. The asyncpg pool needs
no help: it replaces a closed connection on the next acquire.

Per component, ``meterflow_database_outage_errors_total`` counts the failures that meant the
database was unreachable (:func:`~meterflow.store.outages.is_database_outage`), and
``meterflow_database_reconnects_total`` counts the passes that succeeded after such failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import weakref
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

from meterflow.store.outages import is_database_outage

log = logging.getLogger("meterflow.lifecycle")

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 2.0


class Backoff:
    """Exponential backoff: ``min_s`` (default :data:`BACKOFF_MIN_S`), doubled after each
    consecutive failure up to ``max_s`` (:data:`BACKOFF_MAX_S`), then scaled by a jitter factor
    in ``[0.5, 1)``."""

    def __init__(
        self,
        *,
        min_s: float | None = None,
        max_s: float | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        # Read when built, not when defined: tests shorten every component's backoff at once.
        self._min_s = BACKOFF_MIN_S if min_s is None else min_s
        self._max_s = BACKOFF_MAX_S if max_s is None else max_s
        self._jitter = jitter
        self.failures = 0

    def next_delay_s(self) -> float:
        """Count one more failure; the seconds to wait before trying again."""
        self.failures += 1
        delay_s = min(self._max_s, math.ldexp(self._min_s, min(self.failures - 1, 32)))
        return delay_s * (0.5 + self._jitter() / 2)

    def reset(self) -> None:
        self.failures = 0


class OutageMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.errors = Counter(
            "meterflow_database_outage_errors_total",
            "Passes that failed because PostgreSQL was unreachable or dropped the connection.",
            ["component"],
            registry=registry,
        )
        self.reconnects = Counter(
            "meterflow_database_reconnects_total",
            "Passes that succeeded again after the database had been unreachable.",
            ["component"],
            registry=registry,
        )


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, OutageMetrics] = weakref.WeakKeyDictionary()


def outage_metrics(registry: CollectorRegistry) -> OutageMetrics:
    """The outage counters of ``registry``: every component of a process shares them."""
    metrics = _METRICS.get(registry)
    if metrics is None:
        metrics = _METRICS[registry] = OutageMetrics(registry)
    return metrics


class DatabaseRetry:
    """One component's account of its failed passes: counts, logs and spaces the retries."""

    def __init__(
        self, component: str, registry: CollectorRegistry, *, backoff: Backoff | None = None
    ) -> None:
        self.component = component
        self._metrics = outage_metrics(registry)
        self._backoff = backoff or Backoff()
        self._in_outage = False

    @property
    def in_outage(self) -> bool:
        """Whether the last pass failed because the database was unreachable."""
        return self._in_outage

    def failed(self, exc: BaseException) -> float:
        """Record a failed pass; return the seconds to wait before the next one."""
        delay_s = self._backoff.next_delay_s()
        if is_database_outage(exc):
            self._metrics.errors.labels(self.component).inc()
            if not self._in_outage:
                log.warning(
                    "%s: database unavailable (%r); retrying with backoff", self.component, exc
                )
            self._in_outage = True
        else:
            log.error("%s: pass failed; retrying in %.1fs", self.component, delay_s, exc_info=exc)
        return delay_s

    def succeeded(self) -> None:
        """Record a pass that worked: the backoff starts over."""
        if self._in_outage:
            self._metrics.reconnects.labels(self.component).inc()
            log.info(
                "%s: database reachable again after %d failed pass(es)",
                self.component,
                self._backoff.failures,
            )
            self._in_outage = False
        self._backoff.reset()

    async def pause(self, exc: BaseException, stopping: asyncio.Event) -> None:
        """Record a failed pass, then wait its backoff, or less if ``stopping`` is set."""
        delay_s = self.failed(exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay_s)

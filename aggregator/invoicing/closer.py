"""The invoice closer: a loop in the aggregator that, every ``invoice_tick_s``,

1. schedules new subscriptions and closes every period that has ended (a draft invoice, then the
   renewal into the next period, or the end of a subscription cancelled at period end);
2. invoices the usage of subscriptions whose billing threshold is reached;
3. finalizes the drafts whose grace period is over;
4. expires what is left of grants past their ``expires_at``.

Each step finds its rows with one query, then works on each in a transaction of its own, several
at a time (:data:`CONCURRENCY` connections); see :mod:`aggregator.invoicing.closing` for why any
number of closers may run, and be killed, at any moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
from prometheus_client import CollectorRegistry

from aggregator.invoicing.closing import (
    RowRef,
    check_threshold,
    close_period,
    expire_grant,
    finalize_draft,
)
from aggregator.invoicing.metrics import CloserMetrics
from meterflow.billing.objects.owners import AccountMode
from meterflow.lifecycle.reconnect import DatabaseRetry
from meterflow.settings import Settings
from meterflow.store.outages import DATABASE_ERRORS
from meterflow.store.pg import Conn

log = logging.getLogger("meterflow.aggregator")

BATCH = 1000
CONCURRENCY = 4


def _refs(rows: Sequence[asyncpg.Record]) -> list[RowRef]:
    return [RowRef(r["id"], AccountMode(r["account_id"], r["livemode"])) for r in rows]


class InvoiceCloser:
    """A :class:`~meterflow.lifecycle.component.Component` of the aggregator."""

    name = "invoice-closer"

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._clock = clock
        self.metrics = CloserMetrics(registry)
        self._stopping = asyncio.Event()
        self._retry = DatabaseRetry(self.name, registry)

    async def start(self) -> None:
        """Nothing to connect: each step takes a pooled connection."""

    def ready(self) -> bool:
        return not self._stopping.is_set()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        """Nothing to release: a step in flight has finished or rolled back by now."""

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except DATABASE_ERRORS as exc:
                # The database is away: nothing half-done survives a rolled-back step; the next
                # pass starts over, after a backoff.
                self.metrics.passes.labels("failed").inc()
                await self._retry.pause(exc, self._stopping)
                continue
            self._retry.succeeded()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopping.wait(), self._settings.aggregator.invoice_tick_s
                )

    async def run_once(self) -> None:
        """One pass of every step, each until it has nothing left that is due."""
        grace_s = self._settings.aggregator.invoice_grace_s
        while not self._stopping.is_set():
            now_s = int(self._clock())
            due = _refs(
                await self._pool.fetch(
                    """(SELECT id, account_id, livemode FROM subscriptions
                        WHERE status = 'active' AND next_close_at IS NULL LIMIT $2)
                       UNION ALL
                       (SELECT id, account_id, livemode FROM subscriptions
                        WHERE status = 'active' AND next_close_at <= $1
                        ORDER BY next_close_at LIMIT $2)""",
                    now_s,
                    BATCH,
                )
            )
            if not due:
                break

            async def close(conn: Conn, ref: RowRef, now_s: int = now_s) -> bool:
                outcome = await close_period(conn, ref, now_s=now_s, grace_s=grace_s)
                self.metrics.periods.labels(outcome).inc()
                return outcome != "skipped"

            if await self._each(due, close) == 0:
                break  # every due row is another closer's now
        now_s = int(self._clock())
        thresholds = _refs(
            await self._pool.fetch(
                """SELECT id, account_id, livemode FROM subscriptions
                   WHERE status = 'active' AND threshold_amount_gte IS NOT NULL
                     AND next_close_at > $1""",
                now_s,
            )
        )

        async def threshold(conn: Conn, ref: RowRef) -> bool:
            invoiced = await check_threshold(conn, ref, now_s=now_s)
            if invoiced:
                self.metrics.thresholds.inc()
            return invoiced

        await self._each(thresholds, threshold)
        while not self._stopping.is_set():
            now_s = int(self._clock())
            drafts = _refs(
                await self._pool.fetch(
                    """SELECT id, account_id, livemode FROM invoices
                       WHERE status = 'draft' AND finalize_at <= $1
                       ORDER BY finalize_at LIMIT $2""",
                    now_s,
                    BATCH,
                )
            )
            if not drafts:
                break

            async def finalize(conn: Conn, ref: RowRef, now_s: int = now_s) -> bool:
                finalized = await finalize_draft(conn, ref, now_s=now_s)
                if finalized:
                    self.metrics.finalized.inc()
                return finalized

            if await self._each(drafts, finalize) == 0:
                break
        now_s = int(self._clock())
        grants = _refs(
            await self._pool.fetch(
                """SELECT id, account_id, livemode FROM credit_grants
                   WHERE expires_at <= $1 AND NOT expiry_recorded LIMIT $2""",
                now_s,
                BATCH,
            )
        )

        async def expire(conn: Conn, ref: RowRef) -> bool:
            self.metrics.credits_expired.inc(await expire_grant(conn, ref, now_s=now_s))
            return True

        await self._each(grants, expire)
        self.metrics.passes.labels("done").inc()

    async def _each(
        self, refs: Sequence[RowRef], step: Callable[[Conn, RowRef], Awaitable[bool]]
    ) -> int:
        """Run ``step`` on every row, each in a transaction of its own, :data:`CONCURRENCY` at a
        time; returns how many did something (a row locked by another closer does nothing)."""
        queue = list(reversed(refs))
        done = 0

        async def worker() -> None:
            nonlocal done
            async with self._pool.acquire() as conn:
                while queue and not self._stopping.is_set():
                    ref = queue.pop()
                    async with conn.transaction():
                        if await step(conn, ref):
                            done += 1

        # Every worker ends before the first error is raised: none is left running into the
        # next pass.
        results = await asyncio.gather(
            *(worker() for _ in range(min(CONCURRENCY, len(refs)))), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return done

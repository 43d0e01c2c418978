"""Evaluating credit balance alerts, from a batch of usage changes or from the recheck sweep.

Both run :func:`evaluate_credit_alerts` inside a transaction that commits the outcome together
with what triggered it: the batch's stored offsets, or the deletion of the recheck rows. The
state rows stay locked from the read of the balance to the commit, so of two evaluators (or a
batch and a sweep) the second waits, then sees the alert disarmed: each drop fires once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
from prometheus_client import CollectorRegistry

from aggregator.alerts.credit.metrics import CreditAlertMetrics
from aggregator.alerts.credit.rules import AlertState, CustomerKey, judge
from aggregator.alerts.credit.store import (
    RecordedCreditFiring,
    lock_alert_states,
    rearm,
    record_credit_firings,
    take_due_rechecks,
)
from aggregator.alerts.v1_events import V1EventPublisher
from meterflow.billing.balances import credit_balances
from meterflow.lifecycle.reconnect import DatabaseRetry
from meterflow.store.outages import DATABASE_ERRORS
from meterflow.store.pg import Conn

log = logging.getLogger("meterflow.alerts")

SWEEP_INTERVAL_S = 0.25
SWEEP_BATCH = 200  # customers per sweep transaction


@dataclass(frozen=True, slots=True)
class CreditEvaluation:
    """What one evaluation did, for metrics and publishing after its commit."""

    evaluated: int = 0
    rearmed: int = 0
    recorded: list[RecordedCreditFiring] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)


async def evaluate_credit_alerts(
    conn: Conn, customers: Sequence[CustomerKey], *, now_ms: int
) -> CreditEvaluation:
    """Evaluate the active credit balance alerts of ``customers`` (inside a transaction).

    1. Lock the alerts' state rows, in alert id order (one query for every customer).
    2. Read each customer's available balances (one :func:`credit_balances` per customer).
    3. Judge each alert; record the firings with their events and disarm them; re-arm alerts
       whose balance is above their value again.
    """
    started = time.perf_counter()
    states = await lock_alert_states(conn, customers)
    if not states:
        return CreditEvaluation(started=started)
    now_s = now_ms // 1000
    available: dict[CustomerKey, dict[str, int]] = {}
    for key, state in _one_per_customer(states).items():
        # The alert stands for its account and mode (an ``Owner``).
        balances = await credit_balances(conn, state.alert, key[2], now_s)
        available[key] = {b.currency: b.available for b in balances}
    verdict = judge(states, available)
    recorded = await record_credit_firings(conn, verdict.firings, now_ms=now_ms)
    await rearm(conn, verdict.rearm)
    return CreditEvaluation(len(states), len(verdict.rearm), recorded, started)


def _one_per_customer(states: Sequence[AlertState]) -> dict[CustomerKey, AlertState]:
    return {s.customer_key: s for s in states}


def observe(
    metrics: CreditAlertMetrics,
    trigger: str,
    evaluation: CreditEvaluation,
    *,
    received_ms: Mapping[CustomerKey, int] | None = None,
    committed_ms: int = 0,
) -> None:
    """Count a committed evaluation; ``received_ms`` (usage batches) gives, per customer, the
    receipt of the latest event behind it, for the notification latency."""
    metrics.evaluations.labels(trigger).inc(evaluation.evaluated)
    metrics.firings.labels(trigger).inc(len(evaluation.recorded))
    metrics.rearms.labels(trigger).inc(evaluation.rearmed)
    if evaluation.evaluated:
        metrics.evaluation_seconds.labels(trigger).observe(time.perf_counter() - evaluation.started)
    for r in evaluation.recorded:
        alert = r.firing.alert
        key = (alert.account_id, alert.livemode, alert.customer)
        received = None if received_ms is None else received_ms.get(key)
        if received is not None:
            metrics.notification_latency.observe(max(0, committed_ms - received) / 1000)


class RecheckSweep:
    """Evaluates the customers of due ``credit_alert_rechecks`` rows, ``batch`` at a time, every
    ``interval_s`` (at once again while it finds full batches), until asked to stop."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: V1EventPublisher,
        metrics: CreditAlertMetrics,
        *,
        clock: Callable[[], float] = time.time,
        interval_s: float = SWEEP_INTERVAL_S,
        batch: int = SWEEP_BATCH,
        retry: DatabaseRetry | None = None,
    ) -> None:
        self._retry = retry or DatabaseRetry("credit-alert-rechecks", CollectorRegistry())
        self._pool = pool
        self._publisher = publisher
        self._metrics = metrics
        self._clock = clock
        self._interval_s = interval_s
        self._batch = batch
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        self._stopping.set()

    async def sweep_once(self) -> int:
        """Take due rechecks and evaluate their customers in one transaction, then publish the
        events of what fired; returns how many customers were taken."""
        now_ms = int(self._clock() * 1000)
        async with self._pool.acquire() as conn, conn.transaction():
            customers = await take_due_rechecks(conn, now_s=now_ms // 1000, limit=self._batch)
            if not customers:
                return 0
            evaluation = await evaluate_credit_alerts(conn, customers, now_ms=now_ms)
        self._metrics.rechecked_customers.inc(len(customers))
        observe(self._metrics, "recheck", evaluation)
        await self._publisher.publish([r.stored() for r in evaluation.recorded])
        return len(customers)

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                taken = await self.sweep_once()
            except DATABASE_ERRORS as exc:
                # The database is away: the rows it held are taken again once it is back.
                self._metrics.sweep_failures.inc()
                await self._retry.pause(exc, self._stopping)
                continue
            except Exception:
                # The sweep must outlive a bad pass; the rows it held are taken again.
                self._metrics.sweep_failures.inc()
                log.exception("credit alert recheck sweep failed")
                taken = 0
            else:
                self._retry.succeeded()
            if taken < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._interval_s)

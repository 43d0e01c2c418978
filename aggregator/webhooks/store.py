"""Webhook deliveries in PostgreSQL: created with their events, claimed by workers, settled.

A worker claims due deliveries in a short transaction (``FOR UPDATE SKIP LOCKED``, so workers in
other processes take others) by raising their attempt count and leasing them; it then sends them
with no transaction open, and records the outcomes of many attempts in one transaction. A worker
that dies mid-attempt leaves its deliveries leased; they are due again when the lease ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aggregator.webhooks.policy import AttemptResult, DueDelivery, NextState
from meterflow.store.pg import Conn

_STATUS = {"succeeded": "succeeded", "failed": "failed", "retrying": "pending"}


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    delivery_id: int
    endpoint_id: str
    attempt: int  # 1-based number of the attempt this claim makes
    event_id: str
    body: str
    url: str
    secret: str


Chooser = Callable[[list[DueDelivery]], list[DueDelivery]]


async def claim_deliveries(
    conn: Conn, *, now_ms: int, lease_ms: int, per_endpoint: int, candidates: int, choose: Chooser
) -> list[ClaimedDelivery]:
    """Lease the due deliveries ``choose`` picks among up to ``candidates`` (at most
    ``per_endpoint`` of each enabled endpoint), and start their next attempt."""
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT d.id, d.endpoint_id
               FROM webhook_endpoints e
               CROSS JOIN LATERAL (
                   SELECT id, endpoint_id, next_attempt_ms FROM webhook_deliveries
                   WHERE endpoint_id = e.id AND status = 'pending' AND next_attempt_ms <= $1
                   ORDER BY next_attempt_ms LIMIT $2
                   FOR UPDATE SKIP LOCKED
               ) d
               WHERE e.status = 'enabled'
               ORDER BY d.next_attempt_ms, d.id LIMIT $3""",
            now_ms,
            per_endpoint,
            candidates,
        )
        chosen = choose([DueDelivery(r["id"], r["endpoint_id"]) for r in rows])
        if not chosen:
            return []
        claimed = await conn.fetch(
            """UPDATE webhook_deliveries d
               SET attempt_count = d.attempt_count + 1, next_attempt_ms = $2
               FROM webhook_endpoints e
               WHERE d.id = ANY($1::bigint[]) AND e.id = d.endpoint_id
               RETURNING d.id, d.endpoint_id, d.attempt_count, d.event_id, d.body, e.url,
                         e.secret""",
            [c.delivery_id for c in chosen],
            now_ms + lease_ms,
        )
    return sorted(
        (
            ClaimedDelivery(
                delivery_id=r["id"],
                endpoint_id=r["endpoint_id"],
                attempt=r["attempt_count"],
                event_id=r["event_id"],
                body=r["body"],
                url=r["url"],
                secret=r["secret"],
            )
            for r in claimed
        ),
        key=lambda c: c.delivery_id,
    )


async def record_attempts(
    conn: Conn, settled: Sequence[tuple[AttemptResult, NextState]], now_ms: int
) -> int:
    """Log the attempts and move their deliveries on; return how many deliveries moved.

    A delivery moves only if the attempt is still its latest: an attempt whose lease ran out
    while another worker took the delivery over is logged, and changes nothing else.
    """
    if not settled:
        return 0
    results = [r for r, _ in settled]
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO webhook_delivery_attempts
                   (delivery_id, attempt, started_ms, duration_ms, status_code, error)
               SELECT r.* FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::int[],
                                      $5::int[], $6::text[])
                    AS r(delivery_id, attempt, started_ms, duration_ms, status_code, error)
               JOIN webhook_deliveries d ON d.id = r.delivery_id
               ON CONFLICT DO NOTHING""",
            [r.delivery_id for r in results],
            [r.attempt for r in results],
            [r.started_ms for r in results],
            [r.duration_ms for r in results],
            [r.status_code for r in results],
            [r.error for r in results],
        )
        moved = await conn.fetch(
            """UPDATE webhook_deliveries d
               SET status = r.status,
                   next_attempt_ms = coalesce(r.next_attempt_ms, d.next_attempt_ms),
                   completed_ms = CASE WHEN r.status = 'pending' THEN NULL ELSE $5::bigint END
               FROM unnest($1::bigint[], $2::int[], $3::text[], $4::bigint[])
                    AS r(id, attempt, status, next_attempt_ms)
               WHERE d.id = r.id AND d.attempt_count = r.attempt AND d.status = 'pending'
               RETURNING d.id""",
            [r.delivery_id for r in results],
            [r.attempt for r in results],
            [_STATUS[state.outcome] for _, state in settled],
            [state.next_attempt_ms for _, state in settled],
            now_ms,
        )
    return len(moved)


@dataclass(frozen=True, slots=True)
class PendingBacklog:
    """Deliveries neither succeeded nor given up."""

    pending: int
    retrying: int  # of which at least one attempt failed (it is logged, and they are pending)
    oldest_created_ms: int | None  # None when nothing is pending


async def pending_backlog(conn: Conn) -> PendingBacklog:
    row = await conn.fetchrow(
        """SELECT count(*) AS pending,
                  count(*) FILTER (WHERE EXISTS (
                      SELECT 1 FROM webhook_delivery_attempts a WHERE a.delivery_id = d.id
                  )) AS retrying,
                  min(d.created_ms) AS oldest_created_ms
           FROM webhook_deliveries d WHERE d.status = 'pending'"""
    )
    assert row is not None  # noqa: S101 - an aggregate always yields a row
    return PendingBacklog(row["pending"], row["retrying"], row["oldest_created_ms"])

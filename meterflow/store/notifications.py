"""Events announced to the account's webhook endpoints, and v1 events: written by every process
(ingest for billing objects, the aggregator for error reports and alerts) in the transaction that
makes the change they announce, so a change exists with its events and deliveries or not at all."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from meterflow.store.pg import Conn


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """An event to announce to the account's endpoints; ``body`` is sent (and signed) verbatim."""

    account_id: str
    livemode: bool
    event_id: str
    event_type: str
    body: str


async def enqueue_deliveries(conn: Conn, events: Sequence[OutgoingEvent], now_ms: int) -> int:
    """Queue each event for every enabled endpoint of its account and mode that listens to its
    type; return how many deliveries were queued.

    Call it in the transaction that creates the events: an event then exists with all of its
    deliveries or not at all. Queuing the same event twice is harmless.
    """
    if not events:
        return 0
    status = await conn.execute(
        """INSERT INTO webhook_deliveries
               (endpoint_id, event_id, event_type, body, next_attempt_ms, created_ms)
           SELECT e.id, ev.event_id, ev.event_type, ev.body, $6, $6
           FROM unnest($1::text[], $2::bool[], $3::text[], $4::text[], $5::text[])
                AS ev(account_id, livemode, event_id, event_type, body)
           JOIN webhook_endpoints e
             ON e.account_id = ev.account_id AND e.livemode = ev.livemode
           WHERE e.status = 'enabled' AND e.enabled_events && ARRAY['*', ev.event_type]
           ORDER BY e.seq
           ON CONFLICT (endpoint_id, event_id) DO NOTHING""",
        [e.account_id for e in events],
        [e.livemode for e in events],
        [e.event_id for e in events],
        [e.event_type for e in events],
        [e.body for e in events],
        now_ms,
    )
    return int(status.rpartition(" ")[2])


@dataclass(frozen=True, slots=True)
class NewV1Event:
    """A v1 event object (``evt_…``) of one account and mode, as stored, listed and delivered."""

    account_id: str
    livemode: bool
    event: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.event["id"])

    @property
    def type(self) -> str:
        return str(self.event["type"])


async def record_v1_events(conn: Conn, events: Sequence[NewV1Event], now_ms: int) -> list[str]:
    """Store ``events`` in ``v1_events`` (unpublished: a sweep puts them on the events topic) and
    queue their webhook deliveries; return the stored bodies, in order. Call it inside the
    transaction of the change the events announce."""
    if not events:
        return []
    bodies = [orjson.dumps(e.event).decode() for e in events]
    await conn.execute(
        """INSERT INTO v1_events (id, account_id, livemode, type, created, body)
           SELECT id, account_id, livemode, type, created, body::json
           FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::bigint[], $6::text[])
                AS e(id, account_id, livemode, type, created, body)""",
        [e.id for e in events],
        [e.account_id for e in events],
        [e.livemode for e in events],
        [e.type for e in events],
        [int(e.event["created"]) for e in events],
        bodies,
    )
    # v1 snapshot events are delivered whole, exactly as stored and listed.
    await enqueue_deliveries(
        conn,
        [
            OutgoingEvent(e.account_id, e.livemode, e.id, e.type, body)
            for e, body in zip(events, bodies, strict=True)
        ],
        now_ms=now_ms,
    )
    return bodies

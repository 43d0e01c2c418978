"""The alert evaluator's SQL: one statement per step of a batch, never one per record.

Exactly once rests on ``alert_firings``' primary key (alert, customer, period start): a firing,
its v1 event and its webhook deliveries are inserted in one transaction, and only when the key
is new, however many evaluators race or however often a change is redelivered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from aggregator.alerts.periods import Firing, FiringKey, Watch
from meterflow.alerts import ALERT_COLUMNS, alert_from_row, alert_triggered_event
from meterflow.meters import Formula
from meterflow.store.notifications import NewV1Event, record_v1_events
from meterflow.store.pg import Conn
from meterflow.usage.keys import UsageKey
from meterflow.v1_events import new_v1_event_id

_ALERT_FIELDS = ", ".join(f"a.{column.strip()}" for column in ALERT_COLUMNS.split(","))


async def watching_alerts(conn: Conn, keys: Sequence[UsageKey]) -> list[Watch]:
    """The active alerts on each changed (meter, customer): those filtered on that customer and
    those without a customer filter, with the meter's formula."""
    if not keys:
        return []
    rows = await conn.fetch(
        f"""SELECT {_ALERT_FIELDS}, k.customer AS watched_customer, m.formula
            FROM unnest($1::text[], $2::bool[], $3::text[], $4::text[])
                 AS k(account_id, livemode, meter_id, customer)
            JOIN billing_alerts a
              ON a.account_id = k.account_id AND a.livemode = k.livemode
             AND a.meter_id = k.meter_id AND a.status = 'active'
             AND (a.customer = k.customer OR a.customer IS NULL)
            JOIN meters m ON m.id = a.meter_id""",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [k[3] for k in keys],
    )
    return [
        Watch(alert_from_row(dict(r)), r["watched_customer"], cast(Formula, r["formula"]))
        for r in rows
    ]


async def fired_already(conn: Conn, keys: Sequence[FiringKey]) -> set[FiringKey]:
    """Which of ``keys`` have fired before."""
    if not keys:
        return set()
    rows = await conn.fetch(
        """SELECT f.alert_id, f.customer, f.period_start
           FROM unnest($1::text[], $2::text[], $3::bigint[]) AS k(alert_id, customer, period_start)
           JOIN alert_firings f USING (alert_id, customer, period_start)""",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
    )
    return {(r["alert_id"], r["customer"], r["period_start"]) for r in rows}


@dataclass(frozen=True, slots=True)
class RecordedFiring:
    """A firing this transaction recorded, with the v1 event it created."""

    firing: Firing
    event: dict[str, Any]
    account_id: str
    livemode: bool

    @property
    def event_id(self) -> str:
        return str(self.event["id"])


def _triggered_event(firing: Firing, event_id: str, created_s: int) -> dict[str, Any]:
    watch = firing.candidate.watch
    return alert_triggered_event(
        event_id=event_id,
        alert=watch.alert,
        customer=watch.customer,
        value=math.floor(firing.value),
        created=created_s,
    )


async def record_firings(
    conn: Conn, fired: Sequence[Firing], *, now_ms: int
) -> list[RecordedFiring]:
    """Record the firings whose key is new and whose alert is still active, with their
    ``billing.alert.triggered`` events and webhook deliveries; return those recorded.

    1. Insert the firings, in key order (two evaluators inserting overlapping keys then wait on
       each other instead of deadlocking), skipping known keys and alerts no longer active; the
       alert rows are share-locked, so a deactivation committing meanwhile is seen.
    2. Store the inserted firings' events in ``v1_events``, unpublished.
    3. Queue them for the account's webhook endpoints listening to the type.
    Run it inside a transaction: all of it commits, or none of it.
    """
    if not fired:
        return []
    created_s = now_ms // 1000
    pending = {
        f.candidate.firing_key: (f, _triggered_event(f, new_v1_event_id(), created_s))
        for f in fired
    }
    keys = sorted(pending)
    inserted = await conn.fetch(
        """INSERT INTO alert_firings (alert_id, customer, period_start, value, event_id, fired_ms)
           SELECT f.alert_id, f.customer, f.period_start, f.value, f.event_id, $6
           FROM unnest($1::text[], $2::text[], $3::bigint[], $4::numeric[], $5::text[])
                AS f(alert_id, customer, period_start, value, event_id)
           JOIN billing_alerts a ON a.id = f.alert_id AND a.status = 'active'
           ORDER BY f.alert_id, f.customer, f.period_start
           FOR SHARE OF a
           ON CONFLICT DO NOTHING
           RETURNING alert_id, customer, period_start""",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [pending[k][0].value for k in keys],
        [pending[k][1]["id"] for k in keys],
        now_ms,
    )
    recorded = []
    for r in inserted:
        firing, event = pending[(r["alert_id"], r["customer"], r["period_start"])]
        alert = firing.candidate.watch.alert
        recorded.append(RecordedFiring(firing, event, alert.account_id, alert.livemode))
    if not recorded:
        return []
    await record_v1_events(
        conn,
        [NewV1Event(r.account_id, r.livemode, r.event) for r in recorded],
        now_ms=now_ms,
    )
    return recorded


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A v1 event as the events topic carries it."""

    id: str
    account_id: str
    livemode: bool
    body: bytes


async def unpublished_events(conn: Conn, *, created_before_s: int, limit: int) -> list[StoredEvent]:
    """Events not yet on the topic and older than ``created_before_s``, oldest first, locked so
    a sweep in another evaluator skips them (call it in a transaction)."""
    rows = await conn.fetch(
        """SELECT id, account_id, livemode, body::text AS body FROM v1_events
           WHERE NOT published AND created < $1
           ORDER BY seq LIMIT $2
           FOR UPDATE SKIP LOCKED""",
        created_before_s,
        limit,
    )
    return [StoredEvent(r["id"], r["account_id"], r["livemode"], r["body"].encode()) for r in rows]


async def mark_published(conn: Conn, event_ids: Sequence[str]) -> None:
    if event_ids:
        await conn.execute(
            "UPDATE v1_events SET published = true WHERE id = ANY($1::text[]) AND NOT published",
            list(event_ids),
        )

"""Credit balance alerts' SQL: one statement per step for any number of customers.

Locks are always taken in one order, so evaluators never deadlock with each other, the alerts API,
or whatever writes the ledger: a sweep first takes its ``credit_alert_rechecks`` rows (SKIP
LOCKED, never waiting), every evaluation then locks ``credit_alert_states`` rows in alert id
order, and only then share-locks the alerts it fires. Ledger writers and the API touch recheck
rows before alert rows and never touch states.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aggregator.alerts.credit.rules import AlertState, CreditFiring, CustomerKey
from aggregator.alerts.store import StoredEvent
from meterflow.alerts import ALERT_COLUMNS, alert_triggered_event, credit_alert_from_row
from meterflow.store.notifications import NewV1Event, record_v1_events
from meterflow.store.pg import Conn
from meterflow.v1_events import encode_v1_event, new_v1_event_id

_ALERT_FIELDS = ", ".join(f"a.{column.strip()}" for column in ALERT_COLUMNS.split(","))


async def take_due_rechecks(conn: Conn, *, now_s: int, limit: int) -> list[CustomerKey]:
    """Delete up to ``limit`` due recheck rows that no one else holds; return their distinct
    customers. Call it in the transaction that evaluates them: a rollback puts them back."""
    rows = await conn.fetch(
        """DELETE FROM credit_alert_rechecks r
           USING (SELECT account_id, livemode, customer_id, due_s FROM credit_alert_rechecks
                  WHERE due_s <= $1 ORDER BY due_s LIMIT $2
                  FOR UPDATE SKIP LOCKED) due
           WHERE r.account_id = due.account_id AND r.livemode = due.livemode
             AND r.customer_id = due.customer_id AND r.due_s = due.due_s
           RETURNING r.account_id, r.livemode, r.customer_id""",
        now_s,
        limit,
    )
    return sorted({(r["account_id"], r["livemode"], r["customer_id"]) for r in rows})


async def lock_alert_states(conn: Conn, customers: Sequence[CustomerKey]) -> list[AlertState]:
    """The active credit balance alerts of ``customers`` with their states, the state rows locked
    in alert id order until the transaction ends (an evaluation elsewhere finishes first)."""
    if not customers:
        return []
    rows = await conn.fetch(
        f"""SELECT {_ALERT_FIELDS}, s.armed, s.firings
            FROM unnest($1::text[], $2::bool[], $3::text[]) AS k(account_id, livemode, customer)
            JOIN billing_alerts a
              ON a.account_id = k.account_id AND a.livemode = k.livemode
             AND a.customer = k.customer AND a.status = 'active'
             AND a.alert_type = 'credit_balance_threshold'
            JOIN credit_alert_states s ON s.alert_id = a.id
            ORDER BY a.id
            FOR UPDATE OF s""",
        [c[0] for c in customers],
        [c[1] for c in customers],
        [c[2] for c in customers],
    )
    return [AlertState(credit_alert_from_row(dict(r)), r["armed"], r["firings"]) for r in rows]


@dataclass(frozen=True, slots=True)
class RecordedCreditFiring:
    """A firing this transaction recorded, with its ``billing.alert.triggered`` event."""

    firing: CreditFiring
    event: dict[str, Any]

    def stored(self) -> StoredEvent:
        alert = self.firing.alert
        return StoredEvent(
            str(self.event["id"]), alert.account_id, alert.livemode, encode_v1_event(self.event)
        )


async def record_credit_firings(
    conn: Conn, fired: Sequence[CreditFiring], *, now_ms: int
) -> list[RecordedCreditFiring]:
    """Record the firings of alerts still active, with their events and webhook deliveries, and
    disarm those alerts; return the firings recorded.

    1. Insert the firings into ``alert_firings`` under (alert, customer, sequence), share-locking
       the alert rows: a deactivation that committed first wins, one racing waits.
    2. Disarm the recorded alerts and count their firings.
    3. Store their events in ``v1_events``, unpublished, and queue their webhook deliveries.
    Run it inside the transaction that locked the states.
    """
    if not fired:
        return []
    created_s = now_ms // 1000
    pending = {
        (f.alert.id, f.sequence): (
            f,
            alert_triggered_event(
                event_id=new_v1_event_id(),
                alert=f.alert,
                customer=f.alert.customer,
                value=f.value,
                created=created_s,
            ),
        )
        for f in fired
    }
    keys = sorted(pending)
    inserted = await conn.fetch(
        """INSERT INTO alert_firings (alert_id, customer, period_start, value, event_id, fired_ms)
           SELECT f.alert_id, f.customer, f.sequence, f.value, f.event_id, $6
           FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[])
                AS f(alert_id, customer, sequence, value, event_id)
           JOIN billing_alerts a ON a.id = f.alert_id AND a.status = 'active'
           ORDER BY f.alert_id
           FOR SHARE OF a
           ON CONFLICT DO NOTHING
           RETURNING alert_id, period_start""",
        [k[0] for k in keys],
        [pending[k][0].alert.customer for k in keys],
        [k[1] for k in keys],
        [pending[k][0].value for k in keys],
        [pending[k][1]["id"] for k in keys],
        now_ms,
    )
    recorded = [
        RecordedCreditFiring(*pending[(r["alert_id"], r["period_start"])]) for r in inserted
    ]
    if not recorded:
        return []
    await conn.execute(
        """UPDATE credit_alert_states s SET armed = false, firings = u.sequence
           FROM unnest($1::text[], $2::int[]) AS u(alert_id, sequence)
           WHERE s.alert_id = u.alert_id""",
        [r.firing.alert.id for r in recorded],
        [r.firing.sequence for r in recorded],
    )
    await record_v1_events(
        conn,
        [NewV1Event(r.firing.alert.account_id, r.firing.alert.livemode, r.event) for r in recorded],
        now_ms=now_ms,
    )
    return recorded


async def rearm(conn: Conn, alert_ids: Sequence[str]) -> None:
    """Arm the alerts again (their states are locked by this transaction)."""
    if alert_ids:
        await conn.execute(
            "UPDATE credit_alert_states SET armed = true WHERE alert_id = ANY($1::text[])",
            list(alert_ids),
        )

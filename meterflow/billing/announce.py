"""The v1 events billing objects announce (``customer.created``, ``price.updated``, …), written in
the transaction of the change."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meterflow.billing.objects.owners import Owner
from meterflow.store.notifications import NewV1Event, record_v1_events
from meterflow.store.pg import Conn
from meterflow.v1_events import BILLING_EVENT_API_VERSION, previous_attributes, snapshot_event

BILLING_EVENT_TYPES = frozenset(
    {
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "product.created",
        "product.updated",
        "price.created",
        "price.updated",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.voided",
        "billing.credit_grant.created",
        "billing.credit_grant.updated",
        "billing.credit_balance_transaction.created",
    }
)


async def announce(
    conn: Conn,
    who: Owner,
    event_type: str,
    data_object: Mapping[str, Any],
    now_s: int,
    *,
    before: Mapping[str, Any] | None = None,
) -> None:
    """Record the event of one change; an update that changed nothing announces nothing."""
    changed = None if before is None else previous_attributes(before, data_object)
    if changed is not None and not changed:
        return
    event = snapshot_event(
        event_type=event_type,
        data_object=data_object,
        created=now_s,
        livemode=who.livemode,
        api_version=BILLING_EVENT_API_VERSION,
        previous_attributes=changed,
    )
    await record_v1_events(conn, [NewV1Event(who.account_id, who.livemode, event)], now_s * 1000)

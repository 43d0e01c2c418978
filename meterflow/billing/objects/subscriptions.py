"""The ``subscription`` and ``subscription_item`` objects: loaded with their prices, and their
wire shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import orjson

from meterflow.billing.objects.owners import Owner
from meterflow.billing.objects.prices import Price, price_from_row
from meterflow.billing.periods import subscription_period
from meterflow.store.pg import Conn


@dataclass(frozen=True, slots=True)
class Thresholds:
    amount_gte: int
    reset_billing_cycle_anchor: bool


SubscriptionStatus = Literal["active", "canceled"]

_SUBSCRIPTION_COLUMNS = (
    "s.seq, s.id, s.livemode, s.customer_id, s.status, s.currency, s.billing_cycle_anchor, "
    "s.start_date, s.cancel_at_period_end, s.canceled_at, s.ended_at, s.threshold_amount_gte, "
    "s.threshold_reset_anchor, s.metadata::text AS metadata, s.created, s.open_period_start"
)
SUBSCRIPTION_PRICE_COLUMNS = (
    "p.seq, p.id, p.livemode, p.product_id, p.active, p.currency, p.type, p.billing_scheme, "
    "p.unit_amount_decimal, p.tiers_mode, p.tiers::text AS tiers, p.transform_divide_by, "
    "p.transform_round, p.interval, p.interval_count, p.usage_type, p.meter_id, p.nickname, "
    "p.lookup_key, p.metadata::text AS metadata, p.created"
)


@dataclass(frozen=True, slots=True)
class SubscriptionItem:
    id: str
    subscription: str
    price: Price
    quantity: int | None
    metadata: dict[str, str]
    created: int

    def to_stripe(self, period: tuple[int, int]) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": self.id,
            "object": "subscription_item",
            "billing_thresholds": None,
            "created": self.created,
            "current_period_end": period[1],
            "current_period_start": period[0],
            "discounts": [],
            "metadata": self.metadata,
            "price": self.price.to_stripe(),
            "subscription": self.subscription,
            "tax_rates": [],
        }
        if self.quantity is not None:
            item["quantity"] = self.quantity
        return item


@dataclass(frozen=True, slots=True)
class Subscription:
    seq: int
    id: str
    livemode: bool
    customer: str
    status: SubscriptionStatus
    currency: str
    billing_cycle_anchor: int
    start_date: int
    cancel_at_period_end: bool
    canceled_at: int | None
    ended_at: int | None
    thresholds: Thresholds | None
    metadata: dict[str, str]
    created: int
    items: tuple[SubscriptionItem, ...]
    # The start of the first period not invoiced yet (None: none invoiced, the start date's).
    open_period_start: int | None = None

    def period_at(self, at_s: int) -> tuple[int, int]:
        """The subscription's period holding ``at_s`` (its items share one billing interval)."""
        recurring = self.items[0].price.recurring if self.items else None
        if recurring is None:
            return (self.start_date, self.billing_cycle_anchor)
        return subscription_period(
            self.start_date,
            self.billing_cycle_anchor,
            recurring.interval,
            recurring.interval_count,
            at_s,
        )

    def open_period(self) -> tuple[int, int]:
        """The first period not invoiced yet: the one the closer invoices next."""
        return self.period_at(
            self.start_date if self.open_period_start is None else self.open_period_start
        )

    def current_period(self, item: SubscriptionItem, now_s: int) -> tuple[int, int]:
        """The item's current period: from the start date to the anchor, then cycle periods."""
        recurring = item.price.recurring
        assert recurring is not None  # noqa: S101 - subscriptions hold recurring prices only
        at = now_s if self.ended_at is None else max(self.start_date, self.ended_at - 1)
        return subscription_period(
            self.start_date,
            self.billing_cycle_anchor,
            recurring.interval,
            recurring.interval_count,
            at,
        )

    def to_stripe(self, now_s: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_cycle_anchor": self.billing_cycle_anchor,
            "billing_cycle_anchor_config": None,
            "billing_thresholds": None
            if self.thresholds is None
            else {
                "amount_gte": self.thresholds.amount_gte,
                "reset_billing_cycle_anchor": self.thresholds.reset_billing_cycle_anchor,
            },
            "cancel_at": None,
            "cancel_at_period_end": self.cancel_at_period_end,
            "canceled_at": self.canceled_at,
            "cancellation_details": {"comment": None, "feedback": None, "reason": None},
            "collection_method": "charge_automatically",
            "created": self.created,
            "currency": self.currency,
            "customer": self.customer,
            "days_until_due": None,
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discounts": [],
            "ended_at": self.ended_at,
            "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
            "items": {
                "object": "list",
                "data": [i.to_stripe(self.current_period(i, now_s)) for i in self.items],
                "has_more": False,
                "total_count": len(self.items),
                "url": f"/v1/subscription_items?subscription={self.id}",
            },
            "latest_invoice": None,
            "livemode": self.livemode,
            "metadata": self.metadata,
            "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None,
            "pause_collection": None,
            "payment_settings": None,
            "pending_invoice_item_interval": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": self.start_date,
            "status": self.status,
            "test_clock": None,
            "transfer_data": None,
            "trial_end": None,
            "trial_settings": None,
            "trial_start": None,
        }


def _item(row: asyncpg.Record, price: Price) -> SubscriptionItem:
    return SubscriptionItem(
        id=row["item_id"],
        subscription=row["subscription_id"],
        price=price,
        quantity=row["quantity"],
        metadata=orjson.loads(row["item_metadata"]),
        created=row["item_created"],
    )


def _subscription(row: asyncpg.Record, items: Sequence[SubscriptionItem]) -> Subscription:
    thresholds = (
        None
        if row["threshold_amount_gte"] is None
        else Thresholds(row["threshold_amount_gte"], bool(row["threshold_reset_anchor"]))
    )
    return Subscription(
        seq=row["seq"],
        id=row["id"],
        livemode=row["livemode"],
        customer=row["customer_id"],
        status=row["status"],
        currency=row["currency"],
        billing_cycle_anchor=row["billing_cycle_anchor"],
        start_date=row["start_date"],
        cancel_at_period_end=row["cancel_at_period_end"],
        canceled_at=row["canceled_at"],
        ended_at=row["ended_at"],
        thresholds=thresholds,
        metadata=orjson.loads(row["metadata"]),
        created=row["created"],
        items=tuple(items),
        open_period_start=row["open_period_start"],
    )


async def load_subscriptions(
    conn: Conn,
    owner: Owner,
    condition: str,
    args: Sequence[object],
    *,
    limit: int,
    oldest_first: bool = False,
) -> list[Subscription]:
    """Subscriptions matching ``condition`` (``$3``… are ``args``) with their items, in one
    query for the subscriptions and one for their items."""
    rows = await conn.fetch(
        f"""SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions s
            WHERE s.account_id = $1 AND s.livemode = $2 AND {condition}
            ORDER BY s.seq {"ASC" if oldest_first else "DESC"} LIMIT {int(limit)}""",
        owner.account_id,
        owner.livemode,
        *args,
    )
    if not rows:
        return []
    item_rows = await conn.fetch(
        f"""SELECT i.id AS item_id, i.subscription_id, i.quantity,
                   i.metadata::text AS item_metadata, i.created AS item_created,
                   {SUBSCRIPTION_PRICE_COLUMNS}
            FROM subscription_items i JOIN prices p ON p.id = i.price_id
            WHERE i.subscription_id = ANY($1::text[]) AND NOT i.deleted
            ORDER BY i.seq""",
        [r["id"] for r in rows],
    )
    items: dict[str, list[SubscriptionItem]] = {}
    for r in item_rows:
        items.setdefault(r["subscription_id"], []).append(_item(r, price_from_row(r)))
    return [_subscription(r, items.get(r["id"], [])) for r in rows]

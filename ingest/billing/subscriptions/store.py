"""Subscriptions and their items in PostgreSQL, always scoped to one account and mode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import orjson

from ingest.billing.events import announce
from ingest.billing.owned_rows import owned_row
from ingest.billing.prices.store import Price, price_from_row
from ingest.billing.subscriptions.params import Thresholds
from ingest.edge.auth import Principal
from ingest.edge.list_pages import PageRequest
from ingest.edge.object_params import MetadataChange
from meterflow.billing.periods import period_containing
from meterflow.ids import object_id
from meterflow.store.pg import Conn

SubscriptionStatus = Literal["active", "canceled"]
StatusFilter = Literal["active", "canceled", "all", "not_canceled"]

_SUBSCRIPTION_COLUMNS = (
    "s.seq, s.id, s.livemode, s.customer_id, s.status, s.currency, s.billing_cycle_anchor, "
    "s.start_date, s.cancel_at_period_end, s.canceled_at, s.ended_at, s.threshold_amount_gte, "
    "s.threshold_reset_anchor, s.metadata::text AS metadata, s.created"
)
_PRICE_COLUMNS = (
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

    def current_period(self, item: SubscriptionItem, now_s: int) -> tuple[int, int]:
        """The item's current period: from the start date to the anchor, then cycle periods."""
        recurring = item.price.recurring
        assert recurring is not None  # noqa: S101 - subscriptions hold recurring prices only
        at = now_s if self.ended_at is None else max(self.start_date, self.ended_at - 1)
        if at < self.billing_cycle_anchor:
            return (self.start_date, self.billing_cycle_anchor)
        return period_containing(
            self.billing_cycle_anchor, recurring.interval, recurring.interval_count, at
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


@dataclass(frozen=True, slots=True)
class NewSubscriptionRow:
    customer: str
    currency: str
    billing_cycle_anchor: int
    start_date: int
    cancel_at_period_end: bool
    thresholds: Thresholds | None
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class NewItemRow:
    price: str
    quantity: int | None
    metadata: dict[str, str]


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
    )


class SubscriptionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def prices(self, who: Principal, price_ids: Sequence[str]) -> dict[str, Price]:
        rows = await self._pool.fetch(
            f"""SELECT {_PRICE_COLUMNS} FROM prices p
                WHERE p.id = ANY($1::text[]) AND p.account_id = $2 AND p.livemode = $3""",
            list(price_ids),
            who.account_id,
            who.livemode,
        )
        return {r["id"]: price_from_row(r) for r in rows}

    async def customer_exists(self, who: Principal, customer_id: str) -> bool:
        found = await owned_row(
            self._pool, who, table="customers", columns="true", object_id=customer_id,
            condition="NOT deleted",
        )  # fmt: skip
        return found is not None

    async def create(
        self, who: Principal, new: NewSubscriptionRow, items: Sequence[NewItemRow], now_s: int
    ) -> str:
        subscription_id = object_id("sub")
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO subscriptions (id, account_id, livemode, customer_id, status,
                       currency, billing_cycle_anchor, start_date, cancel_at_period_end,
                       threshold_amount_gte, threshold_reset_anchor, metadata, created)
                   VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $9, $10, $11::jsonb, $12)""",
                subscription_id,
                who.account_id,
                who.livemode,
                new.customer,
                new.currency,
                new.billing_cycle_anchor,
                new.start_date,
                new.cancel_at_period_end,
                None if new.thresholds is None else new.thresholds.amount_gte,
                None if new.thresholds is None else new.thresholds.reset_billing_cycle_anchor,
                orjson.dumps(new.metadata).decode(),
                now_s,
            )
            await _insert_items(conn, who, subscription_id, items, now_s)
            created = await self._one(conn, who, subscription_id)
            assert created is not None  # noqa: S101 - inserted above
            await announce(
                conn, who, "customer.subscription.created", created.to_stripe(now_s), now_s
            )
        return subscription_id

    async def get(self, who: Principal, subscription_id: str) -> Subscription | None:
        async with self._pool.acquire() as conn:
            return await self._one(conn, who, subscription_id)

    async def update(
        self,
        who: Principal,
        subscription_id: str,
        *,
        cancel_at_period_end: bool | None,
        metadata: MetadataChange,
        add: Sequence[NewItemRow],
        remove: Sequence[str],
        quantities: dict[str, int],
        now_s: int,
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            before = await self._one(conn, who, subscription_id, lock=True)
            assert before is not None  # noqa: S101 - the caller found it
            await conn.execute(
                """UPDATE subscriptions SET
                       cancel_at_period_end = coalesce($4, cancel_at_period_end),
                       metadata = (metadata || $5::jsonb) - $6::text[]
                   WHERE id = $1 AND account_id = $2 AND livemode = $3""",
                subscription_id,
                who.account_id,
                who.livemode,
                cancel_at_period_end,
                orjson.dumps(metadata.set).decode(),
                metadata.unset,
            )
            if remove:
                await conn.execute(
                    """UPDATE subscription_items SET deleted = true
                       WHERE subscription_id = $1 AND id = ANY($2::text[])""",
                    subscription_id,
                    list(remove),
                )
            if quantities:
                await conn.execute(
                    """UPDATE subscription_items SET quantity = q.quantity
                       FROM unnest($2::text[], $3::bigint[]) AS q(id, quantity)
                       WHERE subscription_items.subscription_id = $1
                         AND subscription_items.id = q.id""",
                    subscription_id,
                    list(quantities),
                    list(quantities.values()),
                )
            await _insert_items(conn, who, subscription_id, add, now_s)
            after = await self._one(conn, who, subscription_id)
            assert after is not None  # noqa: S101 - locked above
            await announce(
                conn, who, "customer.subscription.updated", after.to_stripe(now_s), now_s,
                before=before.to_stripe(now_s),
            )  # fmt: skip

    async def cancel(self, who: Principal, subscription_id: str, now_s: int) -> bool:
        """Cancel now; False if it was canceled already."""
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                """UPDATE subscriptions SET status = 'canceled', canceled_at = $4, ended_at = $4
                   WHERE id = $1 AND account_id = $2 AND livemode = $3
                     AND status <> 'canceled'""",
                subscription_id,
                who.account_id,
                who.livemode,
                now_s,
            )
            if status == "UPDATE 0":
                return False
            canceled = await self._one(conn, who, subscription_id)
            assert canceled is not None  # noqa: S101 - updated above
            await announce(
                conn, who, "customer.subscription.deleted", canceled.to_stripe(now_s), now_s
            )
        return True

    async def page(
        self,
        who: Principal,
        page: PageRequest,
        *,
        customer: str | None,
        price: str | None,
        status: StatusFilter,
    ) -> tuple[list[Subscription], bool] | None:
        """Newest first, one page of subscriptions (None: the cursor names no subscription)."""
        args: list[object] = []
        conditions: list[str] = []

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args) + 2}"

        if page.cursor is not None:
            seq = await self._pool.fetchval(
                """SELECT seq FROM subscriptions
                   WHERE id = $1 AND account_id = $2 AND livemode = $3""",
                page.cursor[1],
                who.account_id,
                who.livemode,
            )
            if seq is None:
                return None
            conditions.append(f"s.seq {'>' if page.ending_before else '<'} {arg(seq)}")
        if customer is not None:
            conditions.append(f"s.customer_id = {arg(customer)}")
        if status == "not_canceled":
            conditions.append("s.status <> 'canceled'")
        elif status != "all":
            conditions.append(f"s.status = {arg(status)}")
        if price is not None:
            conditions.append(
                "EXISTS (SELECT 1 FROM subscription_items i WHERE i.subscription_id = s.id "
                f"AND NOT i.deleted AND i.price_id = {arg(price)})"
            )
        async with self._pool.acquire() as conn:
            found = await self._load(
                conn,
                who,
                " AND ".join(conditions) or "true",
                args,
                limit=page.limit + 1,
                oldest_first=page.ending_before is not None,
            )
        has_more = len(found) > page.limit
        found = found[: page.limit]
        if page.ending_before is not None:
            found.reverse()
        return found, has_more

    async def holding_item(self, who: Principal, item_id: str) -> Subscription | None:
        """The subscription that holds the (not deleted) item ``item_id``."""
        found = await owned_row(
            self._pool, who, table="subscription_items", columns="subscription_id",
            object_id=item_id, condition="NOT deleted",
        )  # fmt: skip
        return None if found is None else await self.get(who, found["subscription_id"])

    async def _one(
        self, conn: Conn, who: Principal, subscription_id: str, *, lock: bool = False
    ) -> Subscription | None:
        """One subscription with its items (``lock``: its row locked until the transaction
        ends)."""
        if lock:
            await conn.execute(
                "SELECT 1 FROM subscriptions WHERE id = $1 FOR UPDATE", subscription_id
            )
        found = await self._load(conn, who, "s.id = $3", [subscription_id], limit=1)
        return found[0] if found else None

    async def _load(
        self,
        conn: Conn,
        who: Principal,
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
            who.account_id,
            who.livemode,
            *args,
        )
        if not rows:
            return []
        item_rows = await conn.fetch(
            f"""SELECT i.id AS item_id, i.subscription_id, i.quantity,
                       i.metadata::text AS item_metadata, i.created AS item_created,
                       {_PRICE_COLUMNS}
                FROM subscription_items i JOIN prices p ON p.id = i.price_id
                WHERE i.subscription_id = ANY($1::text[]) AND NOT i.deleted
                ORDER BY i.seq""",
            [r["id"] for r in rows],
        )
        items: dict[str, list[SubscriptionItem]] = {}
        for r in item_rows:
            items.setdefault(r["subscription_id"], []).append(_item(r, price_from_row(r)))
        return [_subscription(r, items.get(r["id"], [])) for r in rows]


async def _insert_items(
    conn: Conn, who: Principal, subscription_id: str, items: Sequence[NewItemRow], now_s: int
) -> None:
    if not items:
        return
    await conn.executemany(
        """INSERT INTO subscription_items (id, account_id, livemode, subscription_id, price_id,
               quantity, metadata, created)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)""",
        [
            (
                object_id("si"),
                who.account_id,
                who.livemode,
                subscription_id,
                item.price,
                item.quantity,
                orjson.dumps(item.metadata).decode(),
                now_s,
            )
            for item in items
        ],
    )

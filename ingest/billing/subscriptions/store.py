"""Subscriptions and their items in PostgreSQL, always scoped to one account and mode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import asyncpg
import orjson

from ingest.billing.owned_rows import owned_row
from ingest.edge.auth import Principal
from ingest.edge.list_pages import PageRequest
from ingest.edge.object_params import MetadataChange
from meterflow.billing.announce import announce
from meterflow.billing.closing import invoice_at_cancel
from meterflow.billing.objects.prices import Price, price_from_row
from meterflow.billing.objects.subscriptions import (
    SUBSCRIPTION_PRICE_COLUMNS,
    Subscription,
    Thresholds,
    load_subscriptions,
)
from meterflow.ids import object_id
from meterflow.store.pg import Conn

StatusFilter = Literal["active", "canceled", "all", "not_canceled"]


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


class SubscriptionStore:
    def __init__(self, pool: asyncpg.Pool, *, invoice_grace_s: int) -> None:
        self._pool = pool
        self._grace_s = invoice_grace_s

    async def prices(self, who: Principal, price_ids: Sequence[str]) -> dict[str, Price]:
        rows = await self._pool.fetch(
            f"""SELECT {SUBSCRIPTION_PRICE_COLUMNS} FROM prices p
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

    async def cancel(
        self, who: Principal, subscription_id: str, now_s: int, *, invoice_now: bool
    ) -> bool:
        """Cancel now, first invoicing the periods that ended and, with ``invoice_now``, the
        usage of the period in progress; False if it was canceled already."""
        async with self._pool.acquire() as conn, conn.transaction():
            subscription = await self._one(conn, who, subscription_id, lock=True)
            if subscription is None or subscription.status == "canceled":
                return False
            open_start = (
                await invoice_at_cancel(
                    conn,
                    who,
                    subscription,
                    now_s=now_s,
                    grace_s=self._grace_s,
                    invoice_now=invoice_now,
                )
                if subscription.items
                else subscription.start_date
            )
            await conn.execute(
                """UPDATE subscriptions SET status = 'canceled', canceled_at = $4, ended_at = $4,
                       open_period_start = $5, next_close_at = NULL
                   WHERE id = $1 AND account_id = $2 AND livemode = $3""",
                subscription_id,
                who.account_id,
                who.livemode,
                now_s,
                open_start,
            )
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
            found = await load_subscriptions(
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
        found = await load_subscriptions(conn, who, "s.id = $3", [subscription_id], limit=1)
        return found[0] if found else None


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

"""Invoices in PostgreSQL, read through the shared invoice loader and always scoped to one
account and mode; and the preview's reads, in one consistent snapshot."""

from __future__ import annotations

import asyncpg

from ingest.billing.invoices.params import InvoiceListQuery
from ingest.billing.invoices.preview import preview_invoice
from ingest.edge.auth import Principal
from ingest.edge.created_bounds import SQL_OPERATORS
from meterflow.billing.objects.invoices import Invoice, load_invoice, load_invoices
from meterflow.billing.objects.subscriptions import Subscription


class InvoiceStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, who: Principal, invoice_id: str) -> Invoice | None:
        async with self._pool.acquire() as conn:
            return await load_invoice(conn, who, invoice_id)

    async def page(
        self, who: Principal, query: InvoiceListQuery
    ) -> tuple[list[Invoice], bool] | None:
        """Newest first, one page of invoices matching every filter of ``query``, and whether
        more follow (None: the cursor names no invoice of the caller)."""
        if query.status == "uncollectible":
            return [], False
        page = query.page
        args: list[object] = []
        conditions: list[str] = []

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args) + 2}"

        if page.cursor is not None:
            seq = await self._pool.fetchval(
                "SELECT seq FROM invoices WHERE id = $1 AND account_id = $2 AND livemode = $3",
                page.cursor[1],
                who.account_id,
                who.livemode,
            )
            if seq is None:
                return None
            conditions.append(f"i.seq {'>' if page.ending_before else '<'} {arg(seq)}")
        if query.customer is not None:
            conditions.append(f"i.customer_id = {arg(query.customer)}")
        if query.subscription is not None:
            conditions.append(f"i.subscription_id = {arg(query.subscription)}")
        if query.status is not None:
            conditions.append(f"i.status = {arg(query.status)}")
        for comparison, value in query.created:
            conditions.append(f"i.created {SQL_OPERATORS[comparison]} {arg(value)}")
        async with self._pool.acquire() as conn:
            found = await load_invoices(
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

    async def active_subscription_ids(self, who: Principal, customer: str) -> list[str]:
        rows = await self._pool.fetch(
            """SELECT id FROM subscriptions
               WHERE account_id = $1 AND livemode = $2 AND customer_id = $3
                 AND status = 'active' ORDER BY seq DESC LIMIT 2""",
            who.account_id,
            who.livemode,
            customer,
        )
        return [r["id"] for r in rows]

    async def preview(
        self,
        who: Principal,
        subscription: Subscription,
        customer: tuple[str | None, str | None],
        now_s: int,
    ) -> Invoice:
        """The preview of ``subscription``'s current period. Its reads (usage, earlier invoices,
        grants) share one snapshot, so an invoice finalized meanwhile is either wholly in it,
        usage and debits, or not at all."""
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            return await preview_invoice(conn, who, subscription, customer, now_s)

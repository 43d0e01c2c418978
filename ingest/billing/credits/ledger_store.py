"""Reading the credit ledger: balance transactions, and a customer's live balance summary."""

from __future__ import annotations

import asyncpg

from ingest.billing.credits.params import BalanceFilter
from ingest.billing.credits.rules import missing_grant
from ingest.billing.customers.api import missing_customer
from ingest.billing.owned_rows import owned_row
from ingest.edge.auth import Principal
from ingest.edge.errors import InvalidRequest, ResourceMissing
from ingest.edge.list_pages import PageRequest, fetch_page
from meterflow.billing.balances import CurrencyBalance, credit_balances
from meterflow.billing.objects.credit_transactions import (
    TRANSACTION_COLUMNS,
    BalanceTransaction,
    transaction_from_row,
)
from meterflow.store.pg import Conn


async def _check_filter(
    conn: Conn, who: Principal, customer: str, balance_filter: BalanceFilter, scope_param: str
) -> None:
    """The filter's grant is one of the customer's; its prices are the caller's."""
    if balance_filter.grant is not None:
        owner = await owned_row(
            conn, who, table="credit_grants", columns="customer_id",
            object_id=balance_filter.grant,
        )  # fmt: skip
        if owner is None:
            raise missing_grant(balance_filter.grant, "filter[credit_grant]")
        if owner["customer_id"] != customer:
            raise InvalidRequest(
                f"The credit grant {balance_filter.grant} does not belong to customer {customer}.",
                code="parameter_invalid",
                param="filter[credit_grant]",
            )
    if balance_filter.prices is not None:
        rows = await conn.fetch(
            """SELECT id FROM prices
               WHERE id = ANY($1::text[]) AND account_id = $2 AND livemode = $3""",
            list(balance_filter.prices),
            who.account_id,
            who.livemode,
        )
        known = {r["id"] for r in rows}
        for index, price_id in enumerate(balance_filter.prices):
            if price_id not in known:
                raise ResourceMissing(
                    f"No such price: '{price_id}'", param=f"{scope_param}[{index}][id]"
                )


class CreditLedgerStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, who: Principal, transaction_id: str) -> BalanceTransaction | None:
        row = await owned_row(
            self._pool, who, table="credit_ledger", columns=TRANSACTION_COLUMNS,
            object_id=transaction_id,
        )  # fmt: skip
        return None if row is None else transaction_from_row(row)

    async def page(
        self, who: Principal, page: PageRequest, *, customer: str | None, grant: str | None
    ) -> tuple[list[BalanceTransaction], bool] | None:
        """Newest first (None: unknown cursor)."""
        filters: dict[str, object] = {}
        if customer is not None:
            filters["customer_id"] = customer
        if grant is not None:
            filters["credit_grant_id"] = grant
        found = await fetch_page(
            self._pool, who, page, table="credit_ledger", columns=TRANSACTION_COLUMNS,
            filters=filters,
        )  # fmt: skip
        if found is None:
            return None
        rows, has_more = found
        return [transaction_from_row(r) for r in rows], has_more

    async def balances(
        self,
        who: Principal,
        customer: str,
        balance_filter: BalanceFilter,
        now_s: int,
        *,
        scope_param: str,
    ) -> list[CurrencyBalance]:
        """The customer's balances under ``balance_filter``, read in one snapshot (grants, ledger,
        invoices and usage agree with each other)."""
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            found = await owned_row(
                conn, who, table="customers", columns="id", object_id=customer,
                condition="NOT deleted",
            )  # fmt: skip
            if found is None:
                raise missing_customer(customer, "customer")
            await _check_filter(conn, who, customer, balance_filter, scope_param)
            return await credit_balances(
                conn,
                who,
                customer,
                now_s,
                grant=balance_filter.grant,
                prices=None if balance_filter.prices is None else frozenset(balance_filter.prices),
            )

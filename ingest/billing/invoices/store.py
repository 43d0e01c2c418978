"""What a preview reads: the meters' formulas and the products' names, and the usage of each
metered item's period through the usage reader."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from ingest.edge.auth import Principal
from meterflow.meters import Formula
from meterflow.usage.keys import UsageSpan, UsageTotals
from meterflow.usage.reader import usage_totals


class PreviewStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def meter_formulas(self, who: Principal, meter_ids: Sequence[str]) -> dict[str, Formula]:
        rows = await self._pool.fetch(
            """SELECT id, formula FROM meters
               WHERE id = ANY($1::text[]) AND account_id = $2 AND livemode = $3""",
            list(meter_ids),
            who.account_id,
            who.livemode,
        )
        return {r["id"]: r["formula"] for r in rows}

    async def product_names(self, who: Principal, product_ids: Sequence[str]) -> dict[str, str]:
        rows = await self._pool.fetch(
            """SELECT id, name FROM products
               WHERE id = ANY($1::text[]) AND account_id = $2 AND livemode = $3""",
            list(product_ids),
            who.account_id,
            who.livemode,
        )
        return {r["id"]: r["name"] for r in rows}

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

    async def usage(self, spans: Sequence[UsageSpan]) -> dict[UsageSpan, UsageTotals]:
        async with self._pool.acquire() as conn:
            return await usage_totals(conn, spans)

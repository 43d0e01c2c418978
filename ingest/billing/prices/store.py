"""Prices in PostgreSQL, always scoped to one account and mode."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
import orjson

from ingest.billing.owned_rows import owned_row
from ingest.billing.prices.params import NewPrice, PriceChanges
from ingest.billing.products.store import insert_product
from ingest.edge.auth import Principal
from ingest.edge.list_pages import PageRequest, fetch_page
from meterflow.billing.announce import announce
from meterflow.billing.objects.prices import PRICE_COLUMNS, Price, price_from_row, tiers_json
from meterflow.ids import object_id

_COLUMNS = PRICE_COLUMNS


class LookupKeyTaken(Exception):
    """Another price of the account and mode has the lookup key."""


@dataclass(frozen=True, slots=True)
class PriceFilters:
    active: bool | None = True
    product: str | None = None
    type: str | None = None
    currency: str | None = None
    lookup_keys: list[str] = field(default_factory=list)


class PriceStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def product_exists(self, who: Principal, product_id: str) -> bool:
        found = await owned_row(
            self._pool, who, table="products", columns="true", object_id=product_id
        )
        return found is not None

    async def create(self, who: Principal, new: NewPrice, now_s: int) -> Price:
        """Insert the price, and its product first when given as ``product_data``."""
        terms, recurring = new.terms, new.recurring
        async with self._pool.acquire() as conn, conn.transaction():
            product_id = new.product
            if new.product_data is not None:
                product_id = (await insert_product(conn, who, new.product_data, now_s)).id
            try:
                row = await conn.fetchrow(
                    f"""INSERT INTO prices (id, account_id, livemode, product_id, active, currency,
                            type, billing_scheme, unit_amount_decimal, tiers_mode, tiers,
                            transform_divide_by, transform_round, interval, interval_count,
                            usage_type, meter_id, nickname, lookup_key, metadata, created)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13,
                            $14, $15, $16, $17, $18, $19, $20::jsonb, $21)
                        RETURNING {_COLUMNS}""",
                    object_id("price"),
                    who.account_id,
                    who.livemode,
                    product_id,
                    new.active,
                    new.currency,
                    new.type,
                    terms.billing_scheme,
                    terms.unit_amount,
                    terms.tiers_mode,
                    tiers_json(terms.tiers) if terms.billing_scheme == "tiered" else None,
                    None if terms.transform is None else terms.transform.divide_by,
                    None if terms.transform is None else terms.transform.round,
                    None if recurring is None else recurring.interval,
                    None if recurring is None else recurring.interval_count,
                    None if recurring is None else recurring.usage_type,
                    None if recurring is None else recurring.meter,
                    new.nickname,
                    new.lookup_key,
                    orjson.dumps(new.metadata).decode(),
                    now_s,
                )
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == "prices_lookup_key":
                    raise LookupKeyTaken(new.lookup_key) from exc
                raise
            assert row is not None  # noqa: S101 - INSERT … RETURNING always yields the row
            price = price_from_row(row)
            await announce(conn, who, "price.created", price.to_stripe(), now_s)
        return price

    async def get(self, who: Principal, price_id: str) -> Price | None:
        row = await owned_row(self._pool, who, table="prices", columns=_COLUMNS, object_id=price_id)
        return None if row is None else price_from_row(row)

    async def update(
        self, who: Principal, price_id: str, changes: PriceChanges, now_s: int
    ) -> Price | None:
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await owned_row(
                conn, who, table="prices", columns=_COLUMNS, object_id=price_id, lock=True
            )
            if locked is None:
                return None
            try:
                row = await conn.fetchrow(
                    f"""UPDATE prices SET
                            active = coalesce($2, active),
                            nickname = CASE WHEN $3 THEN NULL ELSE coalesce($4, nickname) END,
                            lookup_key = CASE WHEN $5 THEN NULL ELSE coalesce($6, lookup_key) END,
                            metadata = (metadata || $7::jsonb) - $8::text[]
                        WHERE id = $1 RETURNING {_COLUMNS}""",
                    price_id,
                    changes.active,
                    changes.unset_nickname,
                    changes.nickname,
                    changes.unset_lookup_key,
                    changes.lookup_key,
                    orjson.dumps(changes.metadata.set).decode(),
                    changes.metadata.unset,
                )
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == "prices_lookup_key":
                    raise LookupKeyTaken(changes.lookup_key) from exc
                raise
            assert row is not None  # noqa: S101 - locked above
            price = price_from_row(row)
            await announce(
                conn, who, "price.updated", price.to_stripe(), now_s,
                before=price_from_row(locked).to_stripe(),
            )  # fmt: skip
        return price

    async def page(
        self, who: Principal, page: PageRequest, filters: PriceFilters
    ) -> tuple[list[Price], bool] | None:
        equal: dict[str, object] = {}
        if filters.active is not None:
            equal["active"] = filters.active
        if filters.product is not None:
            equal["product_id"] = filters.product
        if filters.type is not None:
            equal["type"] = filters.type
        if filters.currency is not None:
            equal["currency"] = filters.currency
        if filters.lookup_keys:
            return await self._by_lookup_keys(who, filters)
        found = await fetch_page(
            self._pool, who, page, table="prices", columns=_COLUMNS, filters=equal
        )
        if found is None:
            return None
        rows, has_more = found
        return [price_from_row(r) for r in rows], has_more

    async def _by_lookup_keys(
        self, who: Principal, filters: PriceFilters
    ) -> tuple[list[Price], bool]:
        rows = await self._pool.fetch(
            f"""SELECT {_COLUMNS} FROM prices
                WHERE account_id = $1 AND livemode = $2 AND lookup_key = ANY($3::text[])
                  AND ($4::boolean IS NULL OR active = $4)
                ORDER BY seq DESC""",
            who.account_id,
            who.livemode,
            filters.lookup_keys,
            filters.active,
        )
        return [price_from_row(r) for r in rows], False

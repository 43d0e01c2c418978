"""Products in PostgreSQL, always scoped to one account and mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from ingest.billing.owned_rows import owned_row
from ingest.edge.auth import Principal
from ingest.edge.list_pages import PageRequest, fetch_page
from ingest.edge.object_params import MetadataChange
from meterflow.billing.announce import announce
from meterflow.ids import object_id
from meterflow.store.pg import Conn

_COLUMNS = (
    "seq, id, livemode, name, active, description, metadata::text AS metadata, created, updated"
)
MAX_NAME = 250


@dataclass(frozen=True, slots=True)
class Product:
    seq: int
    id: str
    livemode: bool
    name: str
    active: bool
    description: str | None
    metadata: dict[str, str]
    created: int
    updated: int

    def to_stripe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "product",
            "active": self.active,
            "created": self.created,
            "default_price": None,
            "description": self.description,
            "images": [],
            "livemode": self.livemode,
            "marketing_features": [],
            "metadata": self.metadata,
            "name": self.name,
            "package_dimensions": None,
            "shippable": None,
            "statement_descriptor": None,
            "tax_code": None,
            "type": "service",
            "unit_label": None,
            "updated": self.updated,
            "url": None,
        }


@dataclass(frozen=True, slots=True)
class ProductFields:
    name: str | None = None
    active: bool | None = None
    description: str | None = None
    unset_description: bool = False
    metadata: MetadataChange = field(default_factory=MetadataChange)


def _product(row: asyncpg.Record) -> Product:
    values = dict(row)
    values["metadata"] = orjson.loads(values["metadata"])
    return Product(**values)


async def insert_product(conn: Conn, who: Principal, new: ProductFields, now_s: int) -> Product:
    """Create a product (also used inside a price's transaction, for ``product_data``)."""
    row = await conn.fetchrow(
        f"""INSERT INTO products (id, account_id, livemode, name, active, description, metadata,
                created, updated)
            VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $8) RETURNING {_COLUMNS}""",
        object_id("prod"),
        who.account_id,
        who.livemode,
        new.name,
        True if new.active is None else new.active,
        new.description,
        orjson.dumps(new.metadata.set).decode(),
        now_s,
    )
    assert row is not None  # noqa: S101 - INSERT … RETURNING always yields the row
    product = _product(row)
    await announce(conn, who, "product.created", product.to_stripe(), now_s)
    return product


class ProductStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, who: Principal, new: ProductFields, now_s: int) -> Product:
        async with self._pool.acquire() as conn, conn.transaction():
            return await insert_product(conn, who, new, now_s)

    async def get(self, who: Principal, product_id: str) -> Product | None:
        row = await owned_row(
            self._pool, who, table="products", columns=_COLUMNS, object_id=product_id
        )
        return None if row is None else _product(row)

    async def update(
        self, who: Principal, product_id: str, changes: ProductFields, now_s: int
    ) -> Product | None:
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await owned_row(
                conn, who, table="products", columns=_COLUMNS, object_id=product_id, lock=True
            )
            if locked is None:
                return None
            row = await conn.fetchrow(
                f"""UPDATE products SET
                        name = coalesce($2, name),
                        active = coalesce($3, active),
                        description = CASE WHEN $4 THEN NULL ELSE coalesce($5, description) END,
                        metadata = (metadata || $6::jsonb) - $7::text[],
                        updated = $8
                    WHERE id = $1 RETURNING {_COLUMNS}""",
                product_id,
                changes.name,
                changes.active,
                changes.unset_description,
                changes.description,
                orjson.dumps(changes.metadata.set).decode(),
                changes.metadata.unset,
                now_s,
            )
            assert row is not None  # noqa: S101 - locked above
            product = _product(row)
            before = _product(locked).to_stripe()
            # A change of nothing but `updated` is no change.
            before["updated"] = product.updated
            await announce(conn, who, "product.updated", product.to_stripe(), now_s, before=before)
        return product

    async def page(
        self, who: Principal, page: PageRequest, *, active: bool | None
    ) -> tuple[list[Product], bool] | None:
        found = await fetch_page(
            self._pool, who, page, table="products", columns=_COLUMNS,
            filters=None if active is None else {"active": active},
        )  # fmt: skip
        if found is None:
            return None
        rows, has_more = found
        return [_product(r) for r in rows], has_more

"""Customers in PostgreSQL, always scoped to one account and mode."""

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
    "seq, id, livemode, name, email, description, metadata::text AS metadata, created, deleted"
)


@dataclass(frozen=True, slots=True)
class Customer:
    seq: int
    id: str
    livemode: bool
    name: str | None
    email: str | None
    description: str | None
    metadata: dict[str, str]
    created: int
    deleted: bool

    def to_stripe(self) -> dict[str, Any]:
        """The ``customer`` object as Stripe shapes it; a deleted one is just its id."""
        if self.deleted:
            return deleted_customer(self.id)
        return {
            "id": self.id,
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": self.created,
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": self.description,
            "discount": None,
            "email": self.email,
            "invoice_prefix": None,
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": self.livemode,
            "metadata": self.metadata,
            "name": self.name,
            "next_invoice_sequence": 1,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }


def deleted_customer(customer_id: str) -> dict[str, Any]:
    return {"id": customer_id, "object": "customer", "deleted": True}


@dataclass(frozen=True, slots=True)
class CustomerFields:
    """Fields a create or update sets; ``unset`` names those sent empty to clear them."""

    name: str | None = None
    email: str | None = None
    description: str | None = None
    unset: tuple[str, ...] = ()
    metadata: MetadataChange = field(default_factory=MetadataChange)


def _customer(row: asyncpg.Record) -> Customer:
    values = dict(row)
    values["metadata"] = orjson.loads(values["metadata"])
    return Customer(**values)


async def _locked(conn: Conn, who: Principal, customer_id: str) -> Customer | None:
    """The customer (not deleted), locked until the transaction ends."""
    row = await owned_row(
        conn, who, table="customers", columns=_COLUMNS, object_id=customer_id,
        condition="NOT deleted", lock=True,
    )  # fmt: skip
    return None if row is None else _customer(row)


class CustomerStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, who: Principal, new: CustomerFields, now_s: int) -> Customer:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""INSERT INTO customers (id, account_id, livemode, name, email, description,
                        metadata, created)
                    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8) RETURNING {_COLUMNS}""",
                object_id("cus"),
                who.account_id,
                who.livemode,
                new.name,
                new.email,
                new.description,
                orjson.dumps(new.metadata.set).decode(),
                now_s,
            )
            assert row is not None  # noqa: S101 - INSERT … RETURNING always yields the row
            customer = _customer(row)
            await announce(conn, who, "customer.created", customer.to_stripe(), now_s)
        return customer

    async def get(self, who: Principal, customer_id: str) -> Customer | None:
        """The customer, deleted or not (a deleted one answers with its deleted shape)."""
        row = await owned_row(
            self._pool, who, table="customers", columns=_COLUMNS, object_id=customer_id
        )
        return None if row is None else _customer(row)

    async def update(
        self, who: Principal, customer_id: str, changes: CustomerFields, now_s: int
    ) -> Customer | None:
        """Apply ``changes`` to a customer that is not deleted; None if there is none."""
        async with self._pool.acquire() as conn, conn.transaction():
            before = await _locked(conn, who, customer_id)
            if before is None:
                return None
            row = await conn.fetchrow(
                f"""UPDATE customers SET
                        name = CASE WHEN 'name' = ANY($4::text[]) THEN NULL
                                    ELSE coalesce($5, name) END,
                        email = CASE WHEN 'email' = ANY($4::text[]) THEN NULL
                                     ELSE coalesce($6, email) END,
                        description = CASE WHEN 'description' = ANY($4::text[]) THEN NULL
                                           ELSE coalesce($7, description) END,
                        metadata = (metadata || $8::jsonb) - $9::text[]
                    WHERE id = $1 AND account_id = $2 AND livemode = $3
                    RETURNING {_COLUMNS}""",
                customer_id,
                who.account_id,
                who.livemode,
                list(changes.unset),
                changes.name,
                changes.email,
                changes.description,
                orjson.dumps(changes.metadata.set).decode(),
                changes.metadata.unset,
            )
            assert row is not None  # noqa: S101 - locked above
            customer = _customer(row)
            await announce(
                conn, who, "customer.updated", customer.to_stripe(), now_s,
                before=before.to_stripe(),
            )  # fmt: skip
        return customer

    async def delete(self, who: Principal, customer_id: str, now_s: int) -> bool:
        """Mark the customer deleted; False if there is no such customer (or it was deleted)."""
        async with self._pool.acquire() as conn, conn.transaction():
            before = await _locked(conn, who, customer_id)
            if before is None:
                return False
            await conn.execute("UPDATE customers SET deleted = true WHERE id = $1", customer_id)
            await announce(conn, who, "customer.deleted", before.to_stripe(), now_s)
        return True

    async def page(
        self, who: Principal, page: PageRequest, *, email: str | None
    ) -> tuple[list[Customer], bool] | None:
        """Newest first: a page of customers that are not deleted (None: unknown cursor)."""
        filters: dict[str, object] = {"deleted": False}
        if email is not None:
            filters["email"] = email
        found = await fetch_page(
            self._pool, who, page, table="customers", columns=_COLUMNS, filters=filters
        )
        if found is None:
            return None
        rows, has_more = found
        return [_customer(r) for r in rows], has_more

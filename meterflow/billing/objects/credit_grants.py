"""The ``billing.credit_grant`` object: a stored grant and its wire shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import asyncpg
import orjson

from meterflow.billing.credits import Category

GRANT_COLUMNS = (
    "seq, id, livemode, customer_id, name, category, priority, currency, amount, scope_prices, "
    "effective_at, expires_at, voided_at, metadata::text AS metadata, created, updated"
)


def monetary(currency: str, value: int) -> dict[str, Any]:
    """An amount of billing credits as Stripe writes one (only monetary credits exist)."""
    return {"type": "monetary", "monetary": {"currency": currency, "value": value}}


@dataclass(frozen=True, slots=True)
class CreditGrant:
    seq: int
    id: str
    livemode: bool
    customer: str
    name: str | None
    category: Category
    priority: int
    currency: str
    amount: int  # minor units
    scope_prices: tuple[str, ...] | None  # None: every metered price
    effective_at: int
    expires_at: int | None
    voided_at: int | None
    metadata: dict[str, str]
    created: int
    updated: int

    def expired(self, now_s: int) -> bool:
        return self.expires_at is not None and self.expires_at <= now_s

    def to_stripe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "billing.credit_grant",
            "amount": monetary(self.currency, self.amount),
            "applicability_config": {
                "scope": {
                    "price_type": "metered" if self.scope_prices is None else None,
                    "prices": None
                    if self.scope_prices is None
                    else [{"id": p} for p in self.scope_prices],
                }
            },
            "category": self.category,
            "created": self.created,
            "customer": self.customer,
            "customer_account": None,
            "effective_at": self.effective_at,
            "expires_at": self.expires_at,
            "livemode": self.livemode,
            "metadata": self.metadata,
            "name": self.name,
            "priority": self.priority,
            "test_clock": None,
            "updated": self.updated,
            "voided_at": self.voided_at,
        }


def grant_from_row(row: asyncpg.Record) -> CreditGrant:
    prices = row["scope_prices"]
    return CreditGrant(
        seq=row["seq"],
        id=row["id"],
        livemode=row["livemode"],
        customer=row["customer_id"],
        name=row["name"],
        category=cast(Category, row["category"]),
        priority=row["priority"],
        currency=row["currency"],
        amount=row["amount"],
        scope_prices=None if prices is None else tuple(prices),
        effective_at=row["effective_at"],
        expires_at=row["expires_at"],
        voided_at=row["voided_at"],
        metadata=orjson.loads(row["metadata"]),
        created=row["created"],
        updated=row["updated"],
    )

"""Credit grants in PostgreSQL, always scoped to one account and mode. Every change to a grant
and the ledger entry it makes are written, and announced, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

from ingest.billing.credits.params import GrantChanges, NewGrant
from ingest.billing.credits.rules import (
    MAX_UNUSED_GRANTS,
    check_expire,
    check_expiry_change,
    check_void,
    unused_grants_limit,
)
from ingest.billing.customers.api import missing_customer
from ingest.billing.owned_rows import owned_row
from ingest.edge.auth import Principal
from ingest.edge.list_pages import PageRequest, fetch_page
from meterflow.billing.announce import announce
from meterflow.billing.ledger import EntryReason, LedgerEntry
from meterflow.billing.objects.credit_grants import GRANT_COLUMNS, CreditGrant, grant_from_row
from meterflow.billing.objects.credit_transactions import record_entries
from meterflow.billing.objects.prices import PRICE_COLUMNS, Price, price_from_row
from meterflow.ids import object_id
from meterflow.store.pg import Conn

# Unused: neither voided nor expired, with a balance left counting every entry, those not in
# effect yet included (so a pending grant counts).
_UNUSED_GRANTS = """
    SELECT count(*) FROM credit_grants g
    WHERE g.account_id = $1 AND g.livemode = $2 AND g.customer_id = $3
      AND g.voided_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > $4)
      AND (SELECT coalesce(sum(CASE WHEN l.type = 'credit' THEN l.amount ELSE -l.amount END), 0)
           FROM credit_ledger l WHERE l.credit_grant_id = g.id) > 0"""


async def _locked(conn: Conn, who: Principal, grant_id: str) -> CreditGrant | None:
    row = await owned_row(
        conn, who, table="credit_grants", columns=GRANT_COLUMNS, object_id=grant_id, lock=True
    )
    return None if row is None else grant_from_row(row)


async def _remaining(conn: Conn, grant_id: str) -> tuple[int, bool]:
    """What is left of the grant counting every entry, and whether it was ever applied."""
    row = await conn.fetchrow(
        """SELECT coalesce(sum(CASE WHEN type = 'credit' THEN amount ELSE -amount END), 0)
                      ::bigint AS balance,
                  coalesce(bool_or(reason = 'credits_applied'), false) AS applied
           FROM credit_ledger WHERE credit_grant_id = $1""",
        grant_id,
    )
    assert row is not None  # noqa: S101 - an aggregate always yields a row
    return row["balance"], row["applied"]


# What names each entry a grant's own changes append, so each is recorded once: the closer
# records an expiry under the same key.
_ENTRY_KEYS: dict[EntryReason, str] = {
    "credits_granted": "granted",
    "credits_expired": "expired",
    "credits_voided": "voided",
}


async def _record(
    conn: Conn,
    who: Principal,
    grant: CreditGrant,
    reason: EntryReason,
    amount: int,
    *,
    effective_at: int,
    now_s: int,
) -> None:
    """Append and announce one entry of ``grant``; nothing for a zero amount."""
    if amount <= 0:
        return
    entry = LedgerEntry(
        customer=grant.customer,
        grant=grant.id,
        reason=reason,
        amount=amount,
        currency=grant.currency,
        effective_at=effective_at,
        dedupe_key=f"{_ENTRY_KEYS[reason]}:{grant.id}",
    )
    await record_entries(conn, who, [entry], now_s)


class CreditGrantStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def prices(self, who: Principal, price_ids: Sequence[str]) -> dict[str, Price]:
        if not price_ids:
            return {}
        rows = await self._pool.fetch(
            f"""SELECT {PRICE_COLUMNS} FROM prices
                WHERE id = ANY($1::text[]) AND account_id = $2 AND livemode = $3""",
            list(price_ids),
            who.account_id,
            who.livemode,
        )
        return {r["id"]: price_from_row(r) for r in rows}

    async def create(
        self,
        who: Principal,
        new: NewGrant,
        *,
        effective_at: int,
        expires_at: int | None,
        now_s: int,
    ) -> CreditGrant:
        """Insert the grant and its ``credits_granted`` entry (in effect from ``effective_at``).

        1. Lock the customer's row: concurrent creates for one customer queue here, so the count
           of step 2 cannot be raced past the limit, and the customer cannot be deleted meanwhile.
        2. Count the customer's unused grants, in one query.
        3. Insert the grant, append its entry, announce both.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            customer = await owned_row(
                conn, who, table="customers", columns="id", object_id=new.customer,
                condition="NOT deleted", lock=True,
            )  # fmt: skip
            if customer is None:
                raise missing_customer(new.customer, "customer")
            unused = await conn.fetchval(
                _UNUSED_GRANTS, who.account_id, who.livemode, new.customer, now_s
            )
            if unused >= MAX_UNUSED_GRANTS:
                raise unused_grants_limit(new.customer)
            row = await conn.fetchrow(
                f"""INSERT INTO credit_grants (id, account_id, livemode, customer_id, name,
                        category, priority, currency, amount, scope_prices, effective_at,
                        expires_at, metadata, created, updated)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb, $14,
                            $14)
                    RETURNING {GRANT_COLUMNS}""",
                object_id("credgr", livemode=who.livemode),
                who.account_id,
                who.livemode,
                new.customer,
                new.name,
                new.category,
                new.priority,
                new.currency,
                new.value,
                None if new.scope_prices is None else list(new.scope_prices),
                effective_at,
                expires_at,
                orjson.dumps(new.metadata).decode(),
                now_s,
            )
            assert row is not None  # noqa: S101 - INSERT … RETURNING always yields the row
            grant = grant_from_row(row)
            await announce(conn, who, "billing.credit_grant.created", grant.to_stripe(), now_s)
            await _record(conn, who, grant, "credits_granted", grant.amount,
                          effective_at=effective_at, now_s=now_s)  # fmt: skip
        return grant

    async def get(self, who: Principal, grant_id: str) -> CreditGrant | None:
        row = await owned_row(
            self._pool, who, table="credit_grants", columns=GRANT_COLUMNS, object_id=grant_id
        )
        return None if row is None else grant_from_row(row)

    async def update(
        self, who: Principal, grant_id: str, changes: GrantChanges, now_s: int
    ) -> CreditGrant | None:
        """Set ``expires_at`` and ``metadata``; a change that changes nothing writes nothing."""
        async with self._pool.acquire() as conn, conn.transaction():
            before = await _locked(conn, who, grant_id)
            if before is None:
                return None
            check_expiry_change(before, changes, now_s)
            expires_at = before.expires_at
            if changes.clear_expiry:
                expires_at = None
            elif changes.expires_at is not None:
                expires_at = changes.expires_at
            metadata = before.metadata | changes.metadata.set
            for key in changes.metadata.unset:
                metadata.pop(key, None)
            if (expires_at, metadata) == (before.expires_at, before.metadata):
                return before
            row = await conn.fetchrow(
                f"""UPDATE credit_grants SET expires_at = $2, metadata = $3::jsonb, updated = $4
                    WHERE id = $1 RETURNING {GRANT_COLUMNS}""",
                grant_id,
                expires_at,
                orjson.dumps(metadata).decode(),
                now_s,
            )
            assert row is not None  # noqa: S101 - locked above
            grant = grant_from_row(row)
            await announce(conn, who, "billing.credit_grant.updated", grant.to_stripe(), now_s,
                           before=before.to_stripe())  # fmt: skip
        return grant

    async def expire(self, who: Principal, grant_id: str, now_s: int) -> CreditGrant | None:
        """Set ``expires_at`` to now and debit what is left (``credits_expired``). The expiry is
        marked recorded, and its entry has the closer's key, so the closer never expires the
        grant a second time."""
        async with self._pool.acquire() as conn, conn.transaction():
            before = await _locked(conn, who, grant_id)
            if before is None:
                return None
            check_expire(before, now_s)
            left, _ = await _remaining(conn, grant_id)
            row = await conn.fetchrow(
                f"""UPDATE credit_grants SET expires_at = $2, expiry_recorded = true, updated = $2
                    WHERE id = $1 RETURNING {GRANT_COLUMNS}""",
                grant_id,
                now_s,
            )
            assert row is not None  # noqa: S101 - locked above
            grant = grant_from_row(row)
            await announce(conn, who, "billing.credit_grant.updated", grant.to_stripe(), now_s,
                           before=before.to_stripe())  # fmt: skip
            await _record(
                conn, who, grant, "credits_expired", left, effective_at=now_s, now_s=now_s
            )
        return grant

    async def void(self, who: Principal, grant_id: str, now_s: int) -> CreditGrant | None:
        """Set ``voided_at`` and debit what is left (``credits_voided``), refused once any of the
        grant's credits were applied. The debit takes effect with the grant's credit (now, or
        ``effective_at`` for a pending grant), so the ledger balance never dips below zero."""
        async with self._pool.acquire() as conn, conn.transaction():
            before = await _locked(conn, who, grant_id)
            if before is None:
                return None
            left, applied = await _remaining(conn, grant_id)
            check_void(before, applied=applied)
            row = await conn.fetchrow(
                f"""UPDATE credit_grants SET voided_at = $2, updated = $2
                    WHERE id = $1 RETURNING {GRANT_COLUMNS}""",
                grant_id,
                now_s,
            )
            assert row is not None  # noqa: S101 - locked above
            grant = grant_from_row(row)
            await announce(conn, who, "billing.credit_grant.updated", grant.to_stripe(), now_s,
                           before=before.to_stripe())  # fmt: skip
            await _record(conn, who, grant, "credits_voided", left,
                          effective_at=max(now_s, grant.effective_at), now_s=now_s)  # fmt: skip
        return grant

    async def page(
        self, who: Principal, page: PageRequest, *, customer: str | None
    ) -> tuple[list[CreditGrant], bool] | None:
        """Newest first (None: unknown cursor)."""
        filters: dict[str, object] = {} if customer is None else {"customer_id": customer}
        found = await fetch_page(
            self._pool, who, page, table="credit_grants", columns=GRANT_COLUMNS, filters=filters
        )
        if found is None:
            return None
        rows, has_more = found
        return [grant_from_row(r) for r in rows], has_more

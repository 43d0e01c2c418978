"""The credit ledger in PostgreSQL: grants with their balances, and appending transactions.

The ledger (``credit_ledger``) is append-only; a trigger refuses updates and deletes. A grant's
balance is the sum of its entries in effect (credits minus debits, ``effective_at`` <= now). Every
entry carries a ``dedupe_key`` naming what recorded it (``granted:<grant>``,
``applied:<invoice line>:<grant>``, …), so recording the same fact twice records it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import asyncpg

from meterflow.billing.credits import Category, GrantTerms
from meterflow.billing.objects.owners import Owner
from meterflow.ids import object_id
from meterflow.store.pg import Conn

EntryType = Literal["credit", "debit"]
EntryReason = Literal[
    "credits_granted",
    "credits_application_invoice_voided",
    "credits_applied",
    "credits_expired",
    "credits_voided",
]
CREDIT_REASONS: frozenset[EntryReason] = frozenset(
    {"credits_granted", "credits_application_invoice_voided"}
)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One transaction to append (``amount`` > 0, minor units)."""

    customer: str
    grant: str
    reason: EntryReason
    amount: int
    currency: str
    effective_at: int
    dedupe_key: str
    invoice: str | None = None
    invoice_line: str | None = None

    @property
    def type(self) -> EntryType:
        return "credit" if self.reason in CREDIT_REASONS else "debit"


async def append_entries(
    conn: Conn, owner: Owner, entries: Sequence[LedgerEntry], now_s: int
) -> list[str]:
    """Append ``entries``; those whose ``dedupe_key`` is recorded already are skipped. Returns
    the ids of the transactions appended, in order."""
    if not entries:
        return []
    rows = await conn.fetch(
        """INSERT INTO credit_ledger (id, account_id, livemode, customer_id, credit_grant_id,
               type, reason, amount, currency, invoice_id, invoice_line_id, effective_at,
               created, dedupe_key)
           SELECT e.id, $1, $2, e.customer_id, e.grant_id, e.type, e.reason, e.amount,
                  e.currency, e.invoice_id, e.line_id, e.effective_at, $3, e.dedupe_key
           FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                       $9::bigint[], $10::text[], $11::text[], $12::text[], $13::bigint[],
                       $14::text[], $15::int[])
                AS e(id, customer_id, grant_id, type, reason, amount, currency, invoice_id,
                     line_id, effective_at, dedupe_key, ord)
           ORDER BY e.ord
           ON CONFLICT (dedupe_key) DO NOTHING
           RETURNING id""",
        owner.account_id,
        owner.livemode,
        now_s,
        [object_id("cbtxn") for _ in entries],
        [e.customer for e in entries],
        [e.grant for e in entries],
        [e.type for e in entries],
        [e.reason for e in entries],
        [e.amount for e in entries],
        [e.currency for e in entries],
        [e.invoice for e in entries],
        [e.invoice_line for e in entries],
        [e.effective_at for e in entries],
        [e.dedupe_key for e in entries],
        list(range(len(entries))),
    )
    return [r["id"] for r in rows]


_GRANT_COLUMNS = (
    "g.id, g.currency, g.category, g.priority, g.effective_at, g.expires_at, g.created, "
    "g.scope_prices, g.voided_at, "
    "coalesce((SELECT sum(CASE WHEN l.type = 'credit' THEN l.amount ELSE -l.amount END) "
    "          FROM credit_ledger l "
    "          WHERE l.credit_grant_id = g.id AND l.effective_at <= $4), 0)::bigint AS balance"
)


def grant_terms_from_row(row: asyncpg.Record) -> GrantTerms:
    prices = row["scope_prices"]
    return GrantTerms(
        id=row["id"],
        currency=row["currency"],
        category=cast(Category, row["category"]),
        priority=row["priority"],
        effective_at=row["effective_at"],
        expires_at=row["expires_at"],
        created=row["created"],
        scope_prices=None if prices is None else frozenset(prices),
        voided=row["voided_at"] is not None,
        balance=row["balance"],
    )


async def customer_grants(
    conn: Conn, owner: Owner, customer: str, now_s: int, *, lock: bool = False
) -> list[GrantTerms]:
    """The customer's grants with their ledger balances as of ``now_s``. ``lock`` holds the
    grants' rows until the transaction ends, so two finalizations of one customer's invoices
    apply credits one after the other, each seeing the other's debits."""
    rows = await conn.fetch(
        f"""SELECT {_GRANT_COLUMNS} FROM credit_grants g
            WHERE g.account_id = $1 AND g.livemode = $2 AND g.customer_id = $3
            ORDER BY g.seq {"FOR UPDATE" if lock else ""}""",
        owner.account_id,
        owner.livemode,
        customer,
        now_s,
    )
    return [grant_terms_from_row(r) for r in rows]


async def grant_balance(conn: Conn, grant_id: str, now_s: int) -> int:
    """One grant's ledger balance as of ``now_s``."""
    value = await conn.fetchval(
        """SELECT coalesce(sum(CASE WHEN type = 'credit' THEN amount ELSE -amount END), 0)
           FROM credit_ledger WHERE credit_grant_id = $1 AND effective_at <= $2""",
        grant_id,
        now_s,
    )
    return int(value)

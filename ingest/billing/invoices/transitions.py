"""Paying an open invoice out of band, and voiding one, in PostgreSQL.

Each runs in one transaction that first locks the invoice's row and checks it is ``open``, so of
two concurrent calls on one invoice the second sees the first's outcome and changes nothing. A
finalized invoice's amounts and lines never change; only its status and the matching timestamps
do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from ingest.billing.invoices.reinstatement import AppliedEntry, reinstatements
from ingest.edge.auth import Principal
from meterflow.billing.announce import announce
from meterflow.billing.objects.credit_transactions import record_entries
from meterflow.billing.objects.invoices import Invoice, load_invoice
from meterflow.store.pg import Conn


@dataclass(frozen=True, slots=True)
class Transition:
    invoice: Invoice  # after the change; as found when it was not open
    changed: bool


class InvoiceTransitions:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def pay(self, who: Principal, invoice_id: str, now_s: int) -> Transition | None:
        """Mark the open invoice paid out of band (None: no such invoice of the caller)."""
        async with self._pool.acquire() as conn, conn.transaction():
            found = await load_invoice(conn, who, invoice_id, lock=True)
            if found is None or found.status != "open":
                return None if found is None else Transition(found, changed=False)
            await conn.execute(
                """UPDATE invoices SET status = 'paid', amount_paid = amount_due, paid_at = $2,
                       paid_out_of_band = true
                   WHERE id = $1""",
                invoice_id,
                now_s,
            )
            paid = await _reloaded(conn, who, invoice_id)
            await announce(conn, who, "invoice.paid", paid.to_stripe(), now_s)
        return Transition(paid, changed=True)

    async def void(self, who: Principal, invoice_id: str, now_s: int) -> Transition | None:
        """Void the open invoice and give back the credits applied to it (None: no such invoice
        of the caller)."""
        async with self._pool.acquire() as conn, conn.transaction():
            found = await load_invoice(conn, who, invoice_id, lock=True)
            if found is None or found.status != "open":
                return None if found is None else Transition(found, changed=False)
            applied = await _applied_entries(conn, invoice_id)
            expiries = await _lock_grants(conn, [a.grant for a in applied])
            await conn.execute(
                "UPDATE invoices SET status = 'void', voided_at = $2 WHERE id = $1",
                invoice_id,
                now_s,
            )
            voided = await _reloaded(conn, who, invoice_id)
            await announce(conn, who, "invoice.voided", voided.to_stripe(), now_s)
            # Each entry is announced as billing.credit_balance_transaction.created.
            await record_entries(conn, who, reinstatements(applied, expiries, now_s), now_s)
        return Transition(voided, changed=True)


async def _reloaded(conn: Conn, who: Principal, invoice_id: str) -> Invoice:
    invoice = await load_invoice(conn, who, invoice_id)
    assert invoice is not None  # noqa: S101 - locked by this transaction
    return invoice


async def _applied_entries(conn: Conn, invoice_id: str) -> list[AppliedEntry]:
    rows = await conn.fetch(
        """SELECT id, customer_id, credit_grant_id, amount, currency, invoice_line_id
           FROM credit_ledger WHERE invoice_id = $1 AND reason = 'credits_applied'
           ORDER BY seq""",
        invoice_id,
    )
    return [
        AppliedEntry(
            id=r["id"],
            customer=r["customer_id"],
            grant=r["credit_grant_id"],
            amount=r["amount"],
            currency=r["currency"],
            invoice=invoice_id,
            invoice_line=r["invoice_line_id"],
        )
        for r in rows
    ]


async def _lock_grants(conn: Conn, grant_ids: Sequence[str]) -> dict[str, int | None]:
    """Lock the grants (in ``seq`` order, as finalization locks them, so the two cannot
    deadlock) and return their expiries. The lock also orders the void with the closer's expiry
    of a grant: whichever commits second sees the other's entries."""
    if not grant_ids:
        return {}
    rows = await conn.fetch(
        """SELECT id, expires_at FROM credit_grants WHERE id = ANY($1::text[])
           ORDER BY seq FOR UPDATE""",
        list(set(grant_ids)),
    )
    return {r["id"]: r["expires_at"] for r in rows}

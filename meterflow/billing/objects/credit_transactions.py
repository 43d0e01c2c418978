"""The ``billing.credit_balance_transaction`` object: one entry of the credit ledger, and
recording entries with their ``billing.credit_balance_transaction.created`` events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import asyncpg

from meterflow.billing.announce import announce
from meterflow.billing.ledger import EntryReason, EntryType, LedgerEntry, append_entries
from meterflow.billing.objects.credit_grants import monetary
from meterflow.billing.objects.owners import Owner
from meterflow.store.pg import Conn

TRANSACTION_COLUMNS = (
    "seq, id, livemode, credit_grant_id, type, reason, amount, currency, invoice_id, "
    "invoice_line_id, effective_at, created"
)


@dataclass(frozen=True, slots=True)
class BalanceTransaction:
    seq: int
    id: str
    livemode: bool
    grant: str
    type: EntryType
    reason: EntryReason
    amount: int  # minor units, > 0
    currency: str
    invoice: str | None
    invoice_line: str | None
    effective_at: int
    created: int

    def to_stripe(self) -> dict[str, Any]:
        """Details under ``credit`` or ``debit`` (the other is null); the invoice reference only
        for an application or its reversal."""
        on_invoice = (
            None
            if self.invoice is None
            else {"invoice": self.invoice, "invoice_line_item": self.invoice_line}
        )
        amount = monetary(self.currency, self.amount)
        credit = debit = None
        if self.type == "credit":
            credit = {
                "amount": amount,
                "credits_application_invoice_voided": on_invoice
                if self.reason == "credits_application_invoice_voided"
                else None,
                "type": self.reason,
            }
        else:
            debit = {
                "amount": amount,
                "credits_applied": on_invoice if self.reason == "credits_applied" else None,
                "type": self.reason,
            }
        return {
            "id": self.id,
            "object": "billing.credit_balance_transaction",
            "created": self.created,
            "credit": credit,
            "credit_grant": self.grant,
            "debit": debit,
            "effective_at": self.effective_at,
            "livemode": self.livemode,
            "test_clock": None,
            "type": self.type,
        }


def transaction_from_row(row: asyncpg.Record) -> BalanceTransaction:
    return BalanceTransaction(
        seq=row["seq"],
        id=row["id"],
        livemode=row["livemode"],
        grant=row["credit_grant_id"],
        type=cast(EntryType, row["type"]),
        reason=cast(EntryReason, row["reason"]),
        amount=row["amount"],
        currency=row["currency"],
        invoice=row["invoice_id"],
        invoice_line=row["invoice_line_id"],
        effective_at=row["effective_at"],
        created=row["created"],
    )


async def record_entries(
    conn: Conn, owner: Owner, entries: Sequence[LedgerEntry], now_s: int
) -> list[BalanceTransaction]:
    """Append ``entries`` (those recorded already are skipped) and announce each appended one,
    in the caller's transaction. Returns the transactions appended, in order."""
    ids = await append_entries(conn, owner, entries, now_s)
    if not ids:
        return []
    rows = await conn.fetch(
        f"""SELECT {TRANSACTION_COLUMNS} FROM credit_ledger
            WHERE id = ANY($1::text[]) ORDER BY seq""",
        ids,
    )
    appended = [transaction_from_row(r) for r in rows]
    for transaction in appended:
        await announce(
            conn, owner, "billing.credit_balance_transaction.created", transaction.to_stripe(),
            now_s,
        )  # fmt: skip
    return appended

"""The credits a voided invoice gives back (pure).

Each ``credits_applied`` debit of the invoice is reinstated by a
``credits_application_invoice_voided`` credit of the same amount to the same grant, naming the
invoice and line. A grant that has expired by then (``expires_at`` <= now) expires the reinstated
amount at once with a ``credits_expired`` debit, as Stripe does: "if the grant has already expired
they expire immediately". Each entry's ``dedupe_key`` names the entry it answers, so a void
records its entries once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meterflow.billing.ledger import LedgerEntry


@dataclass(frozen=True, slots=True)
class AppliedEntry:
    """A ``credits_applied`` ledger entry of the invoice being voided."""

    id: str
    customer: str
    grant: str
    amount: int
    currency: str
    invoice: str
    invoice_line: str | None


def reinstatements(
    applied: Sequence[AppliedEntry], expires_at: Mapping[str, int | None], now_s: int
) -> list[LedgerEntry]:
    """The ledger entries that give ``applied`` back at ``now_s``, in order; ``expires_at`` maps
    each grant to its expiry (None: never)."""
    entries: list[LedgerEntry] = []
    for debit in applied:
        credit = LedgerEntry(
            customer=debit.customer,
            grant=debit.grant,
            reason="credits_application_invoice_voided",
            amount=debit.amount,
            currency=debit.currency,
            effective_at=now_s,
            dedupe_key=f"reinstated:{debit.id}",
            invoice=debit.invoice,
            invoice_line=debit.invoice_line,
        )
        entries.append(credit)
        expiry = expires_at.get(debit.grant)
        if expiry is not None and expiry <= now_s:
            entries.append(
                LedgerEntry(
                    customer=debit.customer,
                    grant=debit.grant,
                    reason="credits_expired",
                    amount=debit.amount,
                    currency=debit.currency,
                    effective_at=now_s,
                    dedupe_key=f"expired:{credit.dedupe_key}",
                )
            )
    return entries

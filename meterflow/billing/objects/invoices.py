"""The ``invoice`` and ``line_item`` objects: stored invoices loaded with their lines and the
credits applied to them, previews built in memory, and their wire shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import asyncpg
import orjson

from meterflow.billing.money import decimal_string
from meterflow.billing.objects.owners import Owner
from meterflow.store.pg import Conn

InvoiceStatus = Literal["draft", "open", "paid", "void"]
BillingReason = Literal[
    "subscription_cycle", "subscription_threshold", "subscription_update", "upcoming"
]


@dataclass(frozen=True, slots=True)
class AppliedCredit:
    amount: int
    transaction: str | None  # the ledger entry; None on a preview, where nothing is recorded


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    id: str
    subscription_item: str
    price: str
    product: str
    unit_amount: Decimal | None  # per-unit prices only
    metered: bool
    period: tuple[int, int]
    quantity: Decimal
    amount: int
    description: str
    credits: tuple[AppliedCredit, ...] = ()

    def to_stripe(self, invoice: Invoice) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "line_item",
            "amount": self.amount,
            "currency": invoice.currency,
            "description": self.description,
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "invoice": invoice.id,
            "livemode": invoice.livemode,
            "metadata": {},
            "parent": {
                "type": "subscription_item_details",
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": invoice.subscription,
                    "subscription_item": self.subscription_item,
                },
            },
            "period": {"start": self.period[0], "end": self.period[1]},
            "pretax_credit_amounts": [_credit_amount(c) for c in self.credits],
            "pricing": {
                "type": "price_details",
                "price_details": {"price": self.price, "product": self.product},
                "unit_amount_decimal": None
                if self.unit_amount is None
                else decimal_string(self.unit_amount),
            },
            # Stripe: an integer quantity, decimals truncated; quantity_decimal is exact.
            "quantity": int(self.quantity),
            "quantity_decimal": decimal_string(self.quantity),
            "subtotal": self.amount,
            "taxes": [],
        }


def _credit_amount(credit: AppliedCredit) -> dict[str, Any]:
    return {
        "amount": credit.amount,
        "credit_balance_transaction": credit.transaction,
        "discount": None,
        "type": "credit_balance_transaction",
    }


@dataclass(frozen=True, slots=True)
class Invoice:
    id: str
    livemode: bool
    customer: str
    customer_name: str | None
    customer_email: str | None
    subscription: str
    subscription_metadata: dict[str, str]
    billing_reason: BillingReason
    period: tuple[int, int]
    currency: str
    status: InvoiceStatus
    created: int
    lines: tuple[InvoiceLine, ...]
    amount_paid: int = 0
    number: str | None = None
    finalized_at: int | None = None
    paid_at: int | None = None
    voided_at: int | None = None
    paid_out_of_band: bool = False
    seq: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def subtotal(self) -> int:
        return sum(line.amount for line in self.lines)

    @property
    def total_credits(self) -> int:
        return sum(c.amount for line in self.lines for c in line.credits)

    @property
    def total(self) -> int:
        """After the credits, which apply before tax (and meterflow computes no tax)."""
        return self.subtotal - self.total_credits

    def to_stripe(self) -> dict[str, Any]:
        total = self.total
        remaining = 0 if self.status in ("paid", "void") else total - self.amount_paid
        credits: dict[str | None, int] = {}
        for line in self.lines:
            for c in line.credits:
                credits[c.transaction] = credits.get(c.transaction, 0) + c.amount
        return {
            "id": self.id,
            "object": "invoice",
            "account_country": None,
            "account_name": None,
            "amount_due": total,
            "amount_overpaid": 0,
            "amount_paid": self.amount_paid,
            "amount_remaining": remaining,
            "amount_shipping": 0,
            "attempt_count": 0,
            "attempted": self.status != "draft" and self.billing_reason != "upcoming",
            "auto_advance": self.status == "draft" and self.billing_reason != "upcoming",
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_reason": self.billing_reason,
            "collection_method": "charge_automatically",
            "created": self.created,
            "currency": self.currency,
            "customer": self.customer,
            "customer_email": self.customer_email,
            "customer_name": self.customer_name,
            "description": None,
            "discounts": [],
            "due_date": None,
            "effective_at": self.finalized_at,
            "ending_balance": None if self.status == "draft" else 0,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "lines": {
                "object": "list",
                "data": [line.to_stripe(self) for line in self.lines],
                "has_more": False,
                "total_count": len(self.lines),
                "url": f"/v1/invoices/{self.id}/lines",
            },
            "livemode": self.livemode,
            "metadata": self.metadata,
            "next_payment_attempt": None,
            "number": self.number,
            "parent": {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {
                    "metadata": self.subscription_metadata,
                    "subscription": self.subscription,
                },
            },
            "period_end": self.period[1],
            "period_start": self.period[0],
            "starting_balance": 0,
            "status": self.status,
            "status_transitions": {
                "finalized_at": self.finalized_at,
                "marked_uncollectible_at": None,
                "paid_at": self.paid_at,
                "voided_at": self.voided_at,
            },
            "subtotal": self.subtotal,
            "subtotal_excluding_tax": self.subtotal,
            "total": total,
            "total_discount_amounts": [],
            "total_excluding_tax": total,
            "total_pretax_credit_amounts": [
                _credit_amount(AppliedCredit(amount, transaction))
                for transaction, amount in credits.items()
            ],
            "total_taxes": [],
            "webhooks_delivered_at": None,
        }


_INVOICE_COLUMNS = (
    "i.seq, i.id, i.livemode, i.customer_id, i.customer_name, i.customer_email, "
    "i.subscription_id, s.metadata::text AS subscription_metadata, i.billing_reason, "
    "i.period_start, i.period_end, i.currency, i.status, i.amount_paid, i.number, i.created, "
    "i.finalized_at, i.paid_at, i.voided_at, i.paid_out_of_band"
)


async def load_invoices(
    conn: Conn,
    owner: Owner,
    condition: str,
    args: Sequence[object],
    *,
    limit: int,
    oldest_first: bool = False,
    lock: bool = False,
) -> list[Invoice]:
    """Invoices of ``owner`` matching ``condition`` (on ``i``, the invoice, and ``s``, its
    subscription; ``$3``… are ``args``), newest first, with their lines and applied credits: one
    query for the invoices, one for the lines, one for the credits. ``lock`` holds the invoice
    rows until the transaction ends. ``condition`` comes from the callers' constants, never from
    a request."""
    rows = await conn.fetch(
        f"""SELECT {_INVOICE_COLUMNS} FROM invoices i JOIN subscriptions s
                ON s.id = i.subscription_id
            WHERE i.account_id = $1 AND i.livemode = $2 AND {condition}
            ORDER BY i.seq {"ASC" if oldest_first else "DESC"} LIMIT {int(limit)}
            {"FOR UPDATE OF i" if lock else ""}""",
        owner.account_id,
        owner.livemode,
        *args,
    )
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    line_rows = await conn.fetch(
        """SELECT l.id, l.invoice_id, l.subscription_item_id, l.price_id, p.product_id,
                  p.unit_amount_decimal, l.metered, l.period_start, l.period_end, l.quantity,
                  l.amount, l.description
           FROM invoice_lines l JOIN prices p ON p.id = l.price_id
           WHERE l.invoice_id = ANY($1::text[]) ORDER BY l.invoice_id, l.position""",
        ids,
    )
    credit_rows = await conn.fetch(
        """SELECT invoice_line_id, id, amount FROM credit_ledger
           WHERE invoice_id = ANY($1::text[]) AND reason = 'credits_applied' ORDER BY seq""",
        ids,
    )
    credits: dict[str, list[AppliedCredit]] = {}
    for r in credit_rows:
        credits.setdefault(r["invoice_line_id"], []).append(AppliedCredit(r["amount"], r["id"]))
    lines: dict[str, list[InvoiceLine]] = {}
    for r in line_rows:
        lines.setdefault(r["invoice_id"], []).append(_line(r, credits.get(r["id"], ())))
    return [_invoice(r, lines.get(r["id"], [])) for r in rows]


async def load_invoice(
    conn: Conn, owner: Owner, invoice_id: str, *, lock: bool = False
) -> Invoice | None:
    found = await load_invoices(conn, owner, "i.id = $3", [invoice_id], limit=1, lock=lock)
    return found[0] if found else None


def _line(row: asyncpg.Record, credits: Sequence[AppliedCredit]) -> InvoiceLine:
    return InvoiceLine(
        id=row["id"],
        subscription_item=row["subscription_item_id"],
        price=row["price_id"],
        product=row["product_id"],
        unit_amount=row["unit_amount_decimal"],
        metered=row["metered"],
        period=(row["period_start"], row["period_end"]),
        quantity=row["quantity"],
        amount=row["amount"],
        description=row["description"],
        credits=tuple(credits),
    )


def _invoice(row: asyncpg.Record, lines: Sequence[InvoiceLine]) -> Invoice:
    return Invoice(
        seq=row["seq"],
        id=row["id"],
        livemode=row["livemode"],
        customer=row["customer_id"],
        customer_name=row["customer_name"],
        customer_email=row["customer_email"],
        subscription=row["subscription_id"],
        subscription_metadata=orjson.loads(row["subscription_metadata"]),
        billing_reason=row["billing_reason"],
        period=(row["period_start"], row["period_end"]),
        currency=row["currency"],
        status=row["status"],
        created=row["created"],
        lines=tuple(lines),
        amount_paid=row["amount_paid"],
        number=row["number"],
        finalized_at=row["finalized_at"],
        paid_at=row["paid_at"],
        voided_at=row["voided_at"],
        paid_out_of_band=row["paid_out_of_band"],
    )

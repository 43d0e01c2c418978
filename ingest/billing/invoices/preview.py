"""The preview invoice, built without I/O from a subscription, the usage of its metered items
and the rating rules of :mod:`meterflow.billing.rating`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from meterflow.apikeys import random_token
from meterflow.billing.money import decimal_string
from meterflow.billing.objects.subscriptions import Subscription, SubscriptionItem
from meterflow.billing.rating import RatedLine, rate


@dataclass(frozen=True, slots=True)
class PreviewLine:
    item: SubscriptionItem
    period: tuple[int, int]
    rated: RatedLine
    product_name: str


def rate_item(item: SubscriptionItem, usage: Decimal) -> RatedLine:
    """A metered item rates its period's usage; a licensed one, its quantity."""
    quantity = usage if item.price.metered else Decimal(item.quantity or 0)
    return rate(item.price.terms, quantity)


def _line(line: PreviewLine, invoice_id: str, subscription: Subscription) -> dict[str, Any]:
    price = line.item.price
    quantity = int(line.rated.quantity)  # Stripe: integer format, decimals truncated
    return {
        "id": "il_tmp_" + random_token(24),
        "object": "line_item",
        "amount": line.rated.amount,
        "currency": price.currency,
        "description": f"{quantity} \u00d7 {line.product_name}",  # as Stripe: N, times, name
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": subscription.livemode,
        "metadata": {},
        "parent": {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription.id,
                "subscription_item": line.item.id,
            },
        },
        "period": {"start": line.period[0], "end": line.period[1]},
        "pretax_credit_amounts": [],
        "pricing": {
            "type": "price_details",
            "price_details": {"price": price.id, "product": price.product},
            "unit_amount_decimal": None
            if price.terms.unit_amount is None
            else decimal_string(price.terms.unit_amount),
        },
        "quantity": quantity,
        "quantity_decimal": decimal_string(line.rated.quantity),
        "subtotal": line.rated.amount,
        "taxes": [],
    }


def preview_invoice(
    subscription: Subscription, lines: list[PreviewLine], customer: Mapping[str, Any], now_s: int
) -> dict[str, Any]:
    """Stripe's ``invoice`` object for a preview: never stored, status ``draft``, billing reason
    ``upcoming``; amounts in minor units, each line rounded once."""
    invoice_id = "upcoming_in_" + random_token(24)
    subtotal = sum(line.rated.amount for line in lines)
    period_start = min((line.period[0] for line in lines), default=now_s)
    period_end = max((line.period[1] for line in lines), default=now_s)
    return {
        "id": invoice_id,
        "object": "invoice",
        "account_country": None,
        "account_name": None,
        "amount_due": subtotal,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_remaining": subtotal,
        "amount_shipping": 0,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": False,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_reason": "upcoming",
        "collection_method": "charge_automatically",
        "created": now_s,
        "currency": subscription.currency,
        "customer": subscription.customer,
        "customer_email": customer.get("email"),
        "customer_name": customer.get("name"),
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": None,
        "ending_balance": 0,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "lines": {
            "object": "list",
            "data": [_line(line, invoice_id, subscription) for line in lines],
            "has_more": False,
            "total_count": len(lines),
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": subscription.livemode,
        "metadata": {},
        "next_payment_attempt": None,
        "number": None,
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {
                "metadata": subscription.metadata,
                "subscription": subscription.id,
            },
        },
        "period_end": period_end,
        "period_start": period_start,
        "starting_balance": 0,
        "status": "draft",
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "subtotal": subtotal,
        "subtotal_excluding_tax": subtotal,
        "total": subtotal,
        "total_discount_amounts": [],
        "total_excluding_tax": subtotal,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": None,
    }

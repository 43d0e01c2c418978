"""The preview invoice: the subscription's current period so far, as the shared
:class:`~meterflow.billing.objects.invoices.Invoice`, never stored.

Its lines are the period's accrued lines (:mod:`meterflow.billing.accrual`): each item rated over
the period's usage so far, net of what earlier invoices of the period billed, so a preview after a
threshold invoice shows only what is not billed yet. The credits the customer's grants would apply
now are shown on the lines and reduce ``amount_due``; they are recorded nowhere, since credits
apply only when an invoice is finalized (Stripe: credits on previews are provisional).
"""

from __future__ import annotations

from meterflow.apikeys import random_token
from meterflow.billing.accrual import AccruedLine, accrued_lines
from meterflow.billing.closing import line_descriptions
from meterflow.billing.credits import apply_credits
from meterflow.billing.ledger import customer_grants
from meterflow.billing.objects.invoices import AppliedCredit, Invoice, InvoiceLine
from meterflow.billing.objects.owners import Owner
from meterflow.billing.objects.subscriptions import Subscription
from meterflow.store.pg import Conn


async def preview_invoice(
    conn: Conn,
    owner: Owner,
    subscription: Subscription,
    customer: tuple[str | None, str | None],
    now_s: int,
) -> Invoice:
    """The ``upcoming`` draft of ``subscription``'s period holding ``now_s``; ``customer`` is
    the customer's (name, email)."""
    period = subscription.period_at(now_s)
    accrued = await accrued_lines(conn, owner, subscription, period)
    grants = await customer_grants(conn, owner, subscription.customer, now_s)
    credits: list[list[AppliedCredit]] = [[] for _ in accrued]
    for applied in apply_credits(grants, [line.creditable() for line in accrued], period[1]):
        credits[applied.line].append(AppliedCredit(applied.amount, None))
    descriptions = await line_descriptions(conn, accrued)
    lines = tuple(
        _line(line, description, line_credits)
        for line, description, line_credits in zip(accrued, descriptions, credits, strict=True)
    )
    return Invoice(
        id="upcoming_in_" + random_token(24),
        livemode=owner.livemode,
        customer=subscription.customer,
        customer_name=customer[0],
        customer_email=customer[1],
        subscription=subscription.id,
        subscription_metadata=subscription.metadata,
        billing_reason="upcoming",
        period=period,
        currency=subscription.currency,
        status="draft",
        created=now_s,
        lines=lines,
    )


def _line(line: AccruedLine, description: str, credits: list[AppliedCredit]) -> InvoiceLine:
    price = line.item.price
    return InvoiceLine(
        id="il_tmp_" + random_token(24),
        subscription_item=line.item.id,
        price=price.id,
        product=price.product,
        unit_amount=price.terms.unit_amount,
        metered=price.metered,
        period=line.period,
        quantity=line.net.quantity,
        amount=line.net.amount,
        description=description,
        credits=tuple(credits),
    )

"""Invoicing a subscription's period, and finalizing the invoice, each within the caller's
transaction.

- :func:`invoice_period` writes a draft invoice for a period: one line per item (only the
  metered ones for a threshold invoice), each net of what the period's earlier invoices billed.
  The invoice is keyed by the close that made it (``cycle:<period start>``, …); a second attempt
  at the same close writes nothing, so however many closers run, and wherever one crashes, each
  close gives one invoice.
- :func:`finalize_invoice` re-rates the draft's lines from the latest usage (events that arrived
  during the grace period count), applies the customer's credit grants, records the ledger's
  debits, and opens the invoice; one whose amount due is zero is paid at once, as Stripe does.
  A finalized invoice never changes again.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

from meterflow.billing.accrual import AccruedLine, accrued_lines
from meterflow.billing.announce import announce
from meterflow.billing.credits import apply_credits, credits_per_line
from meterflow.billing.ledger import LedgerEntry, customer_grants
from meterflow.billing.objects.credit_transactions import record_entries
from meterflow.billing.objects.invoices import BillingReason, Invoice, load_invoice
from meterflow.billing.objects.owners import Owner
from meterflow.billing.objects.prices import PRICE_COLUMNS, price_from_row
from meterflow.billing.objects.subscriptions import Subscription, SubscriptionItem
from meterflow.ids import object_id
from meterflow.store.pg import Conn
from meterflow.windows import MINUTE_S, minute_of


async def invoice_period(
    conn: Conn,
    owner: Owner,
    subscription: Subscription,
    period: tuple[int, int],
    *,
    reason: BillingReason,
    close_key: str,
    now_s: int,
    finalize_at: int,
) -> Invoice | None:
    """Write the draft invoice of ``period`` (None: this close has its invoice already), and
    finalize it at once if ``finalize_at`` has come."""
    lines = await accrued_lines(
        conn, owner, subscription, period, metered_only=reason == "subscription_threshold"
    )
    customer = await conn.fetchrow(
        "SELECT name, email FROM customers WHERE id = $1", subscription.customer
    )
    invoice_id = object_id("in")
    inserted = await conn.fetchval(
        """INSERT INTO invoices (id, account_id, livemode, customer_id, customer_name,
               customer_email, subscription_id, billing_reason, close_key, period_start,
               period_end, currency, status, subtotal, amount_due, finalize_at, created)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'draft', $13, $13, $14,
                   $15)
           ON CONFLICT (subscription_id, close_key) DO NOTHING
           RETURNING id""",
        invoice_id,
        owner.account_id,
        owner.livemode,
        subscription.customer,
        None if customer is None else customer["name"],
        None if customer is None else customer["email"],
        subscription.id,
        reason,
        close_key,
        period[0],
        period[1],
        subscription.currency,
        sum(line.net.amount for line in lines),
        finalize_at,
        now_s,
    )
    if inserted is None:
        return None
    await _insert_lines(conn, invoice_id, lines)
    invoice = await load_invoice(conn, owner, invoice_id)
    assert invoice is not None  # noqa: S101 - inserted above
    await announce(conn, owner, "invoice.created", invoice.to_stripe(), now_s)
    if finalize_at <= now_s:
        return await finalize_invoice(conn, owner, invoice_id, now_s)
    return invoice


async def finalize_invoice(conn: Conn, owner: Owner, invoice_id: str, now_s: int) -> Invoice | None:
    """Finalize the draft ``invoice_id`` (None: it is not a draft any more)."""
    draft = await load_invoice(conn, owner, invoice_id, lock=True)
    if draft is None or draft.status != "draft":
        return None
    subscription = await _as_billed(conn, owner, draft)
    lines = await accrued_lines(conn, owner, subscription, draft.period, exclude_invoice=draft.id)
    grants = [
        g if g.expires_at is None or g.expires_at > now_s else dataclasses.replace(g, balance=0)
        for g in await customer_grants(conn, owner, draft.customer, now_s, lock=True)
    ]
    applied = apply_credits(grants, [line.creditable() for line in lines], draft.period[1])
    line_ids = [line.id for line in draft.lines]
    credits = credits_per_line(applied, len(lines))
    await conn.execute(
        """UPDATE invoice_lines l SET usage = u.usage, quantity = u.quantity,
               amount = u.amount, credits = u.credits, description = u.description
           FROM unnest($2::text[], $3::numeric[], $4::numeric[], $5::bigint[], $6::bigint[],
                       $7::text[])
                AS u(id, usage, quantity, amount, credits, description)
           WHERE l.invoice_id = $1 AND l.id = u.id""",
        invoice_id,
        line_ids,
        [line.net.usage for line in lines],
        [line.net.quantity for line in lines],
        [line.net.amount for line in lines],
        credits,
        await line_descriptions(conn, lines),
    )
    await record_entries(
        conn,
        owner,
        [
            LedgerEntry(
                customer=draft.customer,
                grant=a.grant,
                reason="credits_applied",
                amount=a.amount,
                currency=draft.currency,
                effective_at=now_s,
                dedupe_key=f"applied:{line_ids[a.line]}:{a.grant}",
                invoice=invoice_id,
                invoice_line=line_ids[a.line],
            )
            for a in applied
        ],
        now_s,
    )
    subtotal = sum(line.net.amount for line in lines)
    due = subtotal - sum(credits)
    await conn.execute(
        """UPDATE invoices SET status = CASE WHEN $3::bigint = 0 THEN 'paid' ELSE 'open' END,
               subtotal = $2::bigint, total_credits = $2::bigint - $3::bigint,
               amount_due = $3::bigint, finalized_at = $4::bigint,
               paid_at = CASE WHEN $3::bigint = 0 THEN $4::bigint END, number = $5
           WHERE id = $1""",
        invoice_id,
        subtotal,
        due,
        now_s,
        invoice_number(draft.customer, draft.seq),
    )
    final = await load_invoice(conn, owner, invoice_id)
    assert final is not None  # noqa: S101 - locked above
    await announce(conn, owner, "invoice.finalized", final.to_stripe(), now_s)
    if final.status == "paid":
        await announce(conn, owner, "invoice.paid", final.to_stripe(), now_s)
    return final


def invoice_number(customer: str, seq: int) -> str:
    """Stripe-like ``PREFIX-NNNN``: a prefix per customer, then a number unique to the invoice."""
    prefix = hashlib.sha256(customer.encode()).hexdigest()[:8].upper()
    return f"{prefix}-{seq:04d}"


async def _as_billed(conn: Conn, owner: Owner, draft: Invoice) -> Subscription:
    """The subscription as the draft bills it: the items of the draft's lines, in line order, with
    their prices (an item removed since still bills the period it was part of)."""
    rows = await conn.fetch(
        f"""SELECT {PRICE_COLUMNS} FROM prices WHERE id = ANY($1::text[])""",
        list({line.price for line in draft.lines}),
    )
    prices = {r["id"]: price_from_row(r) for r in rows}
    items = tuple(
        SubscriptionItem(
            id=line.subscription_item,
            subscription=draft.subscription,
            price=prices[line.price],
            quantity=None if line.metered else int(line.quantity),
            metadata={},
            created=draft.created,
        )
        for line in draft.lines
    )
    found = await conn.fetchrow(
        "SELECT currency, start_date, billing_cycle_anchor FROM subscriptions WHERE id = $1",
        draft.subscription,
    )
    assert found is not None  # noqa: S101 - the invoice references it
    return Subscription(
        seq=0,
        id=draft.subscription,
        livemode=owner.livemode,
        customer=draft.customer,
        status="active",
        currency=found["currency"],
        billing_cycle_anchor=found["billing_cycle_anchor"],
        start_date=found["start_date"],
        cancel_at_period_end=False,
        canceled_at=None,
        ended_at=None,
        thresholds=None,
        metadata={},
        created=draft.created,
        items=items,
    )


async def _insert_lines(conn: Conn, invoice_id: str, lines: Sequence[AccruedLine]) -> None:
    if not lines:
        return
    await conn.execute(
        """INSERT INTO invoice_lines (id, invoice_id, position, subscription_item_id, price_id,
               metered, period_start, period_end, usage, quantity, amount, description)
           SELECT u.id, $1, u.position, u.item, u.price, u.metered, u.period_start,
                  u.period_end, u.usage, u.quantity, u.amount, u.description
           FROM unnest($2::text[], $3::int[], $4::text[], $5::text[], $6::bool[], $7::bigint[],
                       $8::bigint[], $9::numeric[], $10::numeric[], $11::bigint[], $12::text[])
                AS u(id, position, item, price, metered, period_start, period_end, usage,
                     quantity, amount, description)""",
        invoice_id,
        [object_id("il") for _ in lines],
        list(range(len(lines))),
        [line.item.id for line in lines],
        [line.item.price.id for line in lines],
        [line.item.price.metered for line in lines],
        [line.period[0] for line in lines],
        [line.period[1] for line in lines],
        [line.net.usage for line in lines],
        [line.net.quantity for line in lines],
        [line.net.amount for line in lines],
        await line_descriptions(conn, lines),
    )


async def line_descriptions(conn: Conn, lines: Sequence[AccruedLine]) -> list[str]:
    """As Stripe describes a subscription line: the quantity, times, the product's name."""
    rows = await conn.fetch(
        "SELECT id, name FROM products WHERE id = ANY($1::text[])",
        list({line.item.price.product for line in lines}),
    )
    names = {r["id"]: r["name"] for r in rows}
    return [
        f"{int(line.net.quantity)} \u00d7 {names.get(line.item.price.product, '')}"
        for line in lines
    ]


async def invoice_at_cancel(
    conn: Conn,
    owner: Owner,
    subscription: Subscription,
    *,
    now_s: int,
    grace_s: int,
    invoice_now: bool,
) -> int:
    """Before a subscription (its row locked) is cancelled at ``now_s``: invoice its periods that
    ended and are not invoiced yet, then, with ``invoice_now``, the usage of the period in
    progress (``billing_reason=subscription_update``), counted to the end of the current minute
    since usage is kept per minute. Returns the start of the period in progress."""
    period = subscription.open_period()
    while period[1] <= now_s:
        await invoice_period(
            conn, owner, subscription, period, reason="subscription_cycle",
            close_key=f"cycle:{period[0]}", now_s=now_s, finalize_at=period[1] + grace_s,
        )  # fmt: skip
        subscription = dataclasses.replace(subscription, open_period_start=period[1])
        period = subscription.open_period()
    if invoice_now:
        # The whole current minute, even when ``now_s`` is its first second: an event stamped
        # in that very second is usage so far.
        cut = min(period[1], minute_of(now_s) + MINUTE_S)
        await invoice_period(
            conn, owner, subscription, (period[0], max(cut, period[0])),
            reason="subscription_update", close_key=f"cancel:{period[0]}", now_s=now_s,
            finalize_at=now_s + grace_s,
        )  # fmt: skip
    return period[0]

"""What a subscription's period has accrued so far: each item's usage, rated, net of what earlier
invoices of the period billed. Previews, threshold checks, closing and live credit balances all
read it here, in three queries whatever the number of items: the meters' formulas, the usage of
every metered item's period (one batched read of the rollups), and what earlier invoices billed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from meterflow.billing.credits import CreditableLine
from meterflow.billing.invoicing import Billed, NetLine, net_line
from meterflow.billing.objects.owners import Owner
from meterflow.billing.objects.subscriptions import Subscription, SubscriptionItem
from meterflow.billing.periods import usage_window
from meterflow.meters import Formula
from meterflow.store.pg import Conn
from meterflow.usage.keys import UsageSpan
from meterflow.usage.reader import usage_totals


@dataclass(frozen=True, slots=True)
class AccruedLine:
    item: SubscriptionItem
    period: tuple[int, int]
    net: NetLine

    def creditable(self) -> CreditableLine:
        price = self.item.price
        return CreditableLine(price.id, price.metered, price.currency, self.net.amount)


async def accrued_lines(
    conn: Conn,
    owner: Owner,
    subscription: Subscription,
    period: tuple[int, int],
    *,
    exclude_invoice: str | None = None,
    metered_only: bool = False,
) -> list[AccruedLine]:
    """The items of ``subscription`` over ``period``, in item order: a metered item rates its
    meter's aggregate for the customer over the period's minutes, a licensed one its quantity,
    each net of the lines of the period's earlier invoices that are not void (``exclude_invoice``:
    an invoice being finalized, whose own lines do not count as earlier)."""
    items = [i for i in subscription.items if i.price.metered or not metered_only]
    meters = {i.id: m for i in items if i.price.recurring and (m := i.price.recurring.meter)}
    formulas = await meter_formulas(conn, owner, list(set(meters.values())))
    start, end = usage_window(period)
    spans: dict[str, UsageSpan] = {
        item_id: (owner.account_id, owner.livemode, meter, subscription.customer, start, end)
        for item_id, meter in meters.items()
    }
    usage = await usage_totals(conn, list(spans.values()))
    billed = await billed_before(conn, [i.id for i in items], period[0], exclude_invoice)
    lines = []
    for item in items:
        meter = meters.get(item.id)
        if meter is not None:
            totals = usage.get(spans[item.id])
            amount = Decimal(0) if totals is None else totals.value(formulas[meter])
        else:
            amount = Decimal(0 if item.price.metered else item.quantity or 0)
        lines.append(
            AccruedLine(
                item, period, net_line(item.price.terms, amount, billed.get(item.id, Billed()))
            )
        )
    return lines


async def meter_formulas(conn: Conn, owner: Owner, meter_ids: Sequence[str]) -> dict[str, Formula]:
    if not meter_ids:
        return {}
    rows = await conn.fetch(
        """SELECT id, formula FROM meters
           WHERE id = ANY($1::text[]) AND account_id = $2 AND livemode = $3""",
        list(meter_ids),
        owner.account_id,
        owner.livemode,
    )
    return {r["id"]: r["formula"] for r in rows}


async def billed_before(
    conn: Conn, item_ids: Sequence[str], period_start: int, exclude_invoice: str | None
) -> dict[str, Billed]:
    """Per item, what the invoices of the period starting at ``period_start`` billed, void ones
    and ``exclude_invoice`` aside."""
    if not item_ids:
        return {}
    rows = await conn.fetch(
        """SELECT l.subscription_item_id AS item, sum(l.quantity) AS quantity,
                  sum(l.amount)::bigint AS amount
           FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
           WHERE l.subscription_item_id = ANY($1::text[]) AND l.period_start = $2
             AND i.status <> 'void' AND i.id IS DISTINCT FROM $3
           GROUP BY l.subscription_item_id""",
        list(item_ids),
        period_start,
        exclude_invoice,
    )
    return {r["item"]: Billed(r["quantity"], r["amount"]) for r in rows}

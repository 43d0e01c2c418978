"""A customer's credit balances per currency: the ledger balance, and the balance available now.

- The ledger balance sums the counted grants' ledger entries in effect (``effective_at`` <= now).
  A pending grant (``effective_at`` in the future) adds nothing until its credit takes effect.
- The available balance is what would be left if everything that can take credits were finalized
  now: the ledger balance, less what is left of grants past their ``expires_at`` (whose
  ``credits_expired`` debit the closer may not have recorded yet), less what the customer's draft
  invoices (oldest ``finalize_at`` first) and then each active subscription's open period (unless
  a draft covers it) would take from the counted grants. Every grant of the customer takes part
  in that simulation, as at finalization, so a counted grant is only charged what finalization
  would charge it. The usage is read from the rollups when asked, so an event shows as soon as
  the aggregator folds it.

Which grants count: every grant of the customer; with ``grant``, that grant only; with
``prices``, the grants that could pay for one of those prices, i.e. whose scope is every metered
price or lists one of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meterflow.billing.accrual import accrued_lines
from meterflow.billing.credits import CreditableLine, GrantTerms, apply_credits
from meterflow.billing.ledger import customer_grants
from meterflow.billing.objects.owners import Owner
from meterflow.billing.objects.subscriptions import load_subscriptions
from meterflow.store.pg import Conn

# Subscriptions read for one customer's balance; a customer has a handful.
_MAX_SUBSCRIPTIONS = 1000


@dataclass(frozen=True, slots=True)
class CurrencyBalance:
    currency: str
    ledger: int  # minor units
    available: int  # minor units


@dataclass(frozen=True, slots=True)
class PendingInvoice:
    """An invoice as finalizing it now would see it: its metered lines in invoice order, and the
    end of its period (which decides the grants' eligibility)."""

    lines: tuple[CreditableLine, ...]
    period_end: int


def expired(grant: GrantTerms, now_s: int) -> bool:
    return grant.expires_at is not None and grant.expires_at <= now_s


def counted(grant: GrantTerms, *, only: str | None, prices: frozenset[str] | None) -> bool:
    """Whether ``grant`` counts towards a balance filtered to one grant (``only``) or to the
    grants that can pay for one of ``prices``."""
    if only is not None and grant.id != only:
        return False
    return prices is None or grant.scope_prices is None or not grant.scope_prices.isdisjoint(prices)


def credits_taken(
    grants: Sequence[GrantTerms], invoices: Sequence[PendingInvoice], now_s: int
) -> dict[str, int]:
    """Per grant, what finalizing ``invoices`` now, one after the other, would take from it: each
    invoice sees the balances the previous ones left. An expired grant gives nothing, as at
    finalization."""
    left = {g.id: 0 if expired(g, now_s) else g.balance for g in grants}
    taken: dict[str, int] = {}
    for invoice in invoices:
        current = [dataclasses.replace(g, balance=left[g.id]) for g in grants]
        for applied in apply_credits(current, invoice.lines, invoice.period_end):
            left[applied.grant] -= applied.amount
            taken[applied.grant] = taken.get(applied.grant, 0) + applied.amount
    return taken


def summarize(
    grants: Sequence[GrantTerms], taken: Mapping[str, int], now_s: int
) -> list[CurrencyBalance]:
    """One balance per currency of ``grants`` (the counted ones), by currency code. A grant's
    available part is its balance less what the invoices would take, none once it has expired,
    never below zero."""
    ledger: dict[str, int] = {}
    available: dict[str, int] = {}
    for grant in grants:
        free = 0 if expired(grant, now_s) else max(0, grant.balance - taken.get(grant.id, 0))
        ledger[grant.currency] = ledger.get(grant.currency, 0) + grant.balance
        available[grant.currency] = available.get(grant.currency, 0) + free
    return [CurrencyBalance(c, ledger[c], available[c]) for c in sorted(ledger)]


async def credit_balances(
    conn: Conn,
    owner: Owner,
    customer: str,
    now_s: int,
    *,
    grant: str | None = None,
    prices: frozenset[str] | None = None,
) -> list[CurrencyBalance]:
    """The customer's balances of the counted grants, one per currency they use (none: [])."""
    grants = await customer_grants(conn, owner, customer, now_s)
    counted_grants = [g for g in grants if counted(g, only=grant, prices=prices)]
    if not counted_grants:
        return []
    taken: dict[str, int] = {}
    if any(g.balance > 0 and not expired(g, now_s) for g in counted_grants):
        taken = credits_taken(grants, await pending_invoices(conn, owner, customer), now_s)
    return summarize(counted_grants, taken, now_s)


async def pending_invoices(conn: Conn, owner: Owner, customer: str) -> list[PendingInvoice]:
    """What finalizing now would credit, in order: the customer's draft invoices, oldest
    ``finalize_at`` first, each rated from the latest usage net of the period's other invoices;
    then the open period of each active subscription, oldest subscription first. Metered lines
    only: no other line takes credits."""
    drafts = await conn.fetch(
        """SELECT id, subscription_id, period_start, period_end FROM invoices
           WHERE account_id = $1 AND livemode = $2 AND customer_id = $3 AND status = 'draft'
           ORDER BY finalize_at, seq""",
        owner.account_id,
        owner.livemode,
        customer,
    )
    subscriptions = await load_subscriptions(
        conn,
        owner,
        "s.customer_id = $3 AND (s.status = 'active' OR s.id = ANY($4::text[]))",
        [customer, [d["subscription_id"] for d in drafts]],
        limit=_MAX_SUBSCRIPTIONS,
        oldest_first=True,
    )
    by_id = {s.id: s for s in subscriptions}
    invoices: list[PendingInvoice] = []
    for draft in drafts:
        subscription = by_id.get(draft["subscription_id"])
        if subscription is None:
            continue
        lines = await accrued_lines(
            conn,
            owner,
            subscription,
            (draft["period_start"], draft["period_end"]),
            exclude_invoice=draft["id"],
            metered_only=True,
        )
        invoices.append(PendingInvoice(tuple(x.creditable() for x in lines), draft["period_end"]))
    # A draft of a subscription's open period, re-rated from the latest usage, bills all of it:
    # rating the open period too would count the usage since the draft was written twice.
    drafted = {(d["subscription_id"], d["period_start"]) for d in drafts}
    for subscription in subscriptions:
        if subscription.status != "active" or not any(i.price.metered for i in subscription.items):
            continue
        period = subscription.open_period()
        if (subscription.id, period[0]) in drafted:
            continue
        lines = await accrued_lines(conn, owner, subscription, period, metered_only=True)
        invoices.append(PendingInvoice(tuple(x.creditable() for x in lines), period[1]))
    return invoices

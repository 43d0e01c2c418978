"""One step of invoicing per transaction: close a subscription's ended period, check its billing
threshold, finalize a draft whose grace period is over, expire what is left of a grant.

Each step locks the row it works on with ``FOR UPDATE SKIP LOCKED``: a row another closer is
working on is skipped, and that closer's transaction either commits the whole step or, if it
dies, none of it. Each invoice is also keyed by the close that made it, so a step repeated after
a crash, or by two closers that both saw the row before either committed, writes it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meterflow.billing.accrual import accrued_lines
from meterflow.billing.announce import announce
from meterflow.billing.closing import finalize_invoice, invoice_period
from meterflow.billing.ledger import LedgerEntry, grant_balance
from meterflow.billing.objects.credit_transactions import record_entries
from meterflow.billing.objects.owners import AccountMode
from meterflow.billing.objects.subscriptions import Subscription, load_subscriptions
from meterflow.store.pg import Conn
from meterflow.windows import minute_of

CloseOutcome = Literal["skipped", "scheduled", "invoiced", "canceled"]


@dataclass(frozen=True, slots=True)
class RowRef:
    """A row to work on, with the account and mode that own it."""

    id: str
    owner: AccountMode


async def _locked_subscription(conn: Conn, ref: RowRef) -> Subscription | None:
    """The active subscription, its row locked; None if it is locked by another closer, or no
    longer active."""
    locked = await conn.fetchval(
        """SELECT id FROM subscriptions WHERE id = $1 AND status = 'active'
           FOR UPDATE SKIP LOCKED""",
        ref.id,
    )
    if locked is None:
        return None
    found = await load_subscriptions(conn, ref.owner, "s.id = $3", [ref.id], limit=1)
    return found[0] if found and found[0].items else None


async def close_period(conn: Conn, ref: RowRef, *, now_s: int, grace_s: int) -> CloseOutcome:
    """Invoice the subscription's open period if it has ended, then renew into the next one (or
    end the subscription, if it cancels at period end); otherwise record when the open period
    ends."""
    subscription = await _locked_subscription(conn, ref)
    if subscription is None:
        return "skipped"
    period = subscription.open_period()
    if period[1] > now_s:
        await conn.execute(
            """UPDATE subscriptions SET open_period_start = $2, next_close_at = $3
               WHERE id = $1""",
            ref.id,
            period[0],
            period[1],
        )
        return "scheduled"
    await invoice_period(
        conn,
        ref.owner,
        subscription,
        period,
        reason="subscription_cycle",
        close_key=f"cycle:{period[0]}",
        now_s=now_s,
        finalize_at=period[1] + grace_s,
    )
    if subscription.cancel_at_period_end:
        await conn.execute(
            """UPDATE subscriptions SET status = 'canceled', canceled_at = $2, ended_at = $2,
                   open_period_start = $2, next_close_at = NULL
               WHERE id = $1""",
            ref.id,
            period[1],
        )
        ended = await load_subscriptions(conn, ref.owner, "s.id = $3", [ref.id], limit=1)
        await announce(
            conn, ref.owner, "customer.subscription.deleted", ended[0].to_stripe(now_s), now_s
        )
        return "canceled"
    following = subscription.period_at(period[1])
    await conn.execute(
        "UPDATE subscriptions SET open_period_start = $2, next_close_at = $3 WHERE id = $1",
        ref.id,
        following[0],
        following[1],
    )
    return "invoiced"


async def check_threshold(conn: Conn, ref: RowRef, *, now_s: int) -> bool:
    """Invoice the usage of the open period not billed yet once it reaches the subscription's
    ``billing_thresholds.amount_gte``; with ``reset_billing_cycle_anchor`` the period ends there
    and a new one starts. True if it invoiced."""
    subscription = await _locked_subscription(conn, ref)
    if subscription is None or subscription.thresholds is None:
        return False
    period = subscription.open_period()
    if period[1] <= now_s:
        return False  # ended: its close bills it
    lines = await accrued_lines(conn, ref.owner, subscription, period, metered_only=True)
    if sum(line.net.amount for line in lines) < subscription.thresholds.amount_gte:
        return False
    crossings = await conn.fetchval(
        """SELECT count(*) FROM invoices WHERE subscription_id = $1 AND period_start = $2
               AND billing_reason = 'subscription_threshold'""",
        ref.id,
        period[0],
    )
    close_key = f"threshold:{period[0]}:{crossings + 1}"
    if not subscription.thresholds.reset_billing_cycle_anchor:
        invoiced = await invoice_period(
            conn, ref.owner, subscription, period, reason="subscription_threshold",
            close_key=close_key, now_s=now_s, finalize_at=now_s,
        )  # fmt: skip
        return invoiced is not None
    return await _invoice_and_reset(
        conn, ref, subscription, period, close_key=close_key, now_s=now_s
    )


async def _invoice_and_reset(
    conn: Conn,
    ref: RowRef,
    subscription: Subscription,
    period: tuple[int, int],
    *,
    close_key: str,
    now_s: int,
) -> bool:
    """A threshold invoice that ends the period at the minute the threshold was reached (usage
    is kept per minute); the billing cycle restarts there."""
    cut = minute_of(now_s)
    if cut <= period[0]:
        return False  # reached in the period's first minute: cut at the next one
    invoiced = await invoice_period(
        conn, ref.owner, subscription, (period[0], cut), reason="subscription_threshold",
        close_key=close_key, now_s=now_s, finalize_at=now_s,
    )  # fmt: skip
    if invoiced is None:
        return False
    before = subscription.to_stripe(now_s)
    renewed = await conn.fetchrow(
        """UPDATE subscriptions SET billing_cycle_anchor = $2, open_period_start = $2
           WHERE id = $1 RETURNING id""",
        ref.id,
        cut,
    )
    assert renewed is not None  # noqa: S101 - locked above
    after = await load_subscriptions(conn, ref.owner, "s.id = $3", [ref.id], limit=1)
    next_period = after[0].open_period()
    await conn.execute(
        "UPDATE subscriptions SET next_close_at = $2 WHERE id = $1", ref.id, next_period[1]
    )
    await announce(
        conn, ref.owner, "customer.subscription.updated", after[0].to_stripe(now_s), now_s,
        before=before,
    )  # fmt: skip
    return True


async def finalize_draft(conn: Conn, ref: RowRef, *, now_s: int) -> bool:
    """Finalize the draft invoice if no other closer holds it. True if it finalized it."""
    locked = await conn.fetchval(
        "SELECT id FROM invoices WHERE id = $1 AND status = 'draft' FOR UPDATE SKIP LOCKED",
        ref.id,
    )
    if locked is None:
        return False
    return await finalize_invoice(conn, ref.owner, ref.id, now_s) is not None


async def expire_grant(conn: Conn, ref: RowRef, *, now_s: int) -> int:
    """Debit what is left of a grant past its ``expires_at``; returns the amount expired."""
    grant = await conn.fetchrow(
        """SELECT customer_id, currency, expires_at FROM credit_grants
           WHERE id = $1 AND NOT expiry_recorded AND expires_at <= $2
           FOR UPDATE SKIP LOCKED""",
        ref.id,
        now_s,
    )
    if grant is None:
        return 0
    left = await grant_balance(conn, ref.id, now_s)
    if left > 0:
        await record_entries(
            conn,
            ref.owner,
            [
                LedgerEntry(
                    customer=grant["customer_id"],
                    grant=ref.id,
                    reason="credits_expired",
                    amount=left,
                    currency=grant["currency"],
                    effective_at=grant["expires_at"],
                    dedupe_key=f"expired:{ref.id}",
                )
            ],
            now_s,
        )
    await conn.execute("UPDATE credit_grants SET expiry_recorded = true WHERE id = $1", ref.id)
    return max(left, 0)

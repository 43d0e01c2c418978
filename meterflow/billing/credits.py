"""Credit grants applied to invoice lines: which grants qualify, the order they are consumed in,
and how much each line takes (pure).

A grant qualifies for a line when:
- the currencies match;
- the line bills a metered price, and the grant's scope is every metered price or lists the
  line's price;
- ``effective_at`` <= the invoice's period end < ``expires_at`` (if set);
- it is not voided, and has a balance left.

Grants are consumed in Stripe's order: priority (lower number first); earliest ``expires_at``,
never-expiring last; ``promotional`` before ``paid``; earliest ``effective_at``; earliest
``created``; then the id, so the order is total. Lines are served in invoice order: each takes
from the first qualifying grant until the line or the grant is exhausted, then from the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Category = Literal["paid", "promotional"]
# The largest unix time: "never expires" sorts after every expiry.
_NEVER = 2**63 - 1


@dataclass(frozen=True, slots=True)
class GrantTerms:
    """What decides whether and when a grant is consumed, and its balance at the moment."""

    id: str
    currency: str
    category: Category
    priority: int
    effective_at: int
    expires_at: int | None
    created: int
    scope_prices: frozenset[str] | None  # None: every metered price
    voided: bool
    balance: int  # minor units left

    def order_key(self) -> tuple[int, int, int, int, int, str]:
        return (
            self.priority,
            _NEVER if self.expires_at is None else self.expires_at,
            0 if self.category == "promotional" else 1,
            self.effective_at,
            self.created,
            self.id,
        )

    def applies_to(self, line: CreditableLine, period_end: int) -> bool:
        return (
            not self.voided
            and self.balance > 0
            and line.metered
            and line.currency == self.currency
            and (self.scope_prices is None or line.price in self.scope_prices)
            and self.effective_at <= period_end
            and (self.expires_at is None or period_end < self.expires_at)
        )


@dataclass(frozen=True, slots=True)
class CreditableLine:
    """An invoice line as credits see it: its price, whether metered, and its amount."""

    price: str
    metered: bool
    currency: str
    amount: int  # minor units, >= 0


@dataclass(frozen=True, slots=True)
class Application:
    line: int  # the line's index in invoice order
    grant: str
    amount: int  # minor units taken from the grant


def apply_credits(
    grants: Sequence[GrantTerms], lines: Sequence[CreditableLine], period_end: int
) -> list[Application]:
    """The credits each line takes, in invoice order, then grant order."""
    left = {g.id: g.balance for g in grants}
    ordered = sorted(grants, key=GrantTerms.order_key)
    applied: list[Application] = []
    for index, line in enumerate(lines):
        due = line.amount
        for grant in ordered:
            if due <= 0:
                break
            if left[grant.id] <= 0 or not grant.applies_to(line, period_end):
                continue
            take = min(due, left[grant.id])
            left[grant.id] -= take
            due -= take
            applied.append(Application(index, grant.id, take))
    return applied


def credits_per_line(applied: Sequence[Application], line_count: int) -> list[int]:
    totals = [0] * line_count
    for a in applied:
        totals[a.line] += a.amount
    return totals

"""An invoice line net of what earlier invoices of the same period billed (pure).

A period may be invoiced more than once: a threshold invoice bills the usage so far, and the
period's end bills the rest. Each invoice rates the period's whole usage so far and bills the
difference from what earlier invoices of that period billed, so however many invoices a period
gets, together they bill exactly what one invoice at its end would have: the rounding, the tiers
and the flat amounts are applied once, to the whole period. A difference below zero (usage
cancelled after an earlier invoice) bills zero; finalized invoices never change.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from meterflow.billing.prices import PriceTerms
from meterflow.billing.rating import rate

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Billed:
    """What earlier invoices of an item's period billed."""

    quantity: Decimal = _ZERO
    amount: int = 0


@dataclass(frozen=True, slots=True)
class NetLine:
    usage: Decimal  # the period's whole usage so far
    quantity: Decimal  # billed by this line
    amount: int  # minor units, billed by this line


def net_line(terms: PriceTerms, usage: Decimal, billed: Billed) -> NetLine:
    rated = rate(terms, usage)
    return NetLine(
        usage,
        max(rated.quantity - billed.quantity, _ZERO),
        max(rated.amount - billed.amount, 0),
    )

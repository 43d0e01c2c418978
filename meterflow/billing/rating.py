"""Rating: a period's usage and a price's terms in, the line's quantity and amount out.

1. Usage below zero bills as zero (Stripe: a negative period total is reported as quantity 0).
2. ``transform_quantity`` divides, then rounds up or down to a whole number.
3. The price is applied exactly:
   - ``per_unit``: quantity times the unit amount;
   - ``graduated``: each tier prices the units that fall in it, ``(previous up_to, up_to]``, and
     adds its flat amount once the quantity reaches the tier;
   - ``volume``: the tier holding the quantity prices every unit, plus its flat amount.
   The first tier always holds the quantity 0, so a flat amount there is a base fee charged even
   for a period without usage.
4. The exact amount is rounded once to a whole minor unit (:func:`round_to_minor_unit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from meterflow.billing.money import EXACT, round_to_minor_unit
from meterflow.billing.prices import PriceTerms, Tier, TransformQuantity

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class RatedLine:
    usage: Decimal  # the period's aggregate, as the meter's formula gives it
    quantity: Decimal  # what the price applies to: clamped at 0, transformed
    amount_exact: Decimal  # minor units, before rounding
    amount: int  # minor units


def billable_quantity(usage: Decimal, transform: TransformQuantity | None) -> Decimal:
    quantity = max(usage, _ZERO)
    if transform is None:
        return quantity
    rounding = ROUND_CEILING if transform.round == "up" else ROUND_FLOOR
    return EXACT.divide(quantity, Decimal(transform.divide_by)).quantize(
        Decimal(1), rounding=rounding, context=EXACT
    )


def _graduated(tiers: tuple[Tier, ...], quantity: Decimal) -> Decimal:
    total = _ZERO
    floor = _ZERO
    for index, tier in enumerate(tiers):
        if index > 0 and quantity <= floor:
            break
        top = quantity if tier.up_to is None else min(quantity, Decimal(tier.up_to))
        units = max(top - floor, _ZERO)
        total = EXACT.add(
            total, EXACT.add(EXACT.multiply(units, tier.unit_amount), tier.flat_amount)
        )
        if tier.up_to is None:
            break
        floor = Decimal(tier.up_to)
    return total


def _volume(tiers: tuple[Tier, ...], quantity: Decimal) -> Decimal:
    for tier in tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            return EXACT.add(EXACT.multiply(quantity, tier.unit_amount), tier.flat_amount)
    raise ValueError("tiers must end with an unbounded tier")


def price_quantity(terms: PriceTerms, quantity: Decimal) -> Decimal:
    """The exact amount, in minor units, of ``quantity`` (already clamped and transformed)."""
    if terms.billing_scheme == "per_unit":
        return EXACT.multiply(quantity, terms.unit_amount or _ZERO)
    if terms.tiers_mode == "graduated":
        return _graduated(terms.tiers, quantity)
    return _volume(terms.tiers, quantity)


def rate(terms: PriceTerms, usage: Decimal) -> RatedLine:
    """Rate one period's usage (see the module docstring for the steps)."""
    quantity = billable_quantity(usage, terms.transform)
    exact = price_quantity(terms, quantity)
    return RatedLine(usage, quantity, exact, round_to_minor_unit(exact))

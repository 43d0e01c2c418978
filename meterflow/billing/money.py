"""Money: integer amounts in the currency's minor unit, and exact decimals on the way to them.

Prices may carry fractions of a minor unit (``unit_amount_decimal``, up to 12 decimal places).
Everything is computed exactly in :class:`~decimal.Decimal` and rounded once, per invoice line, to
a whole minor unit, halves away from zero (Stripe rounds each line after multiplying the quantity
by the decimal price; its documented roundings of fees and tax amounts round halves up).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal

MAX_DECIMAL_PLACES = 12
# Exact arithmetic for any amount meterflow accepts: 8 integer digits of unit amount times a
# quantity of up to 15 significant digits, with 12 decimal places each, fits in 60 digits.
EXACT = Context(prec=60)


def round_to_minor_unit(amount: Decimal) -> int:
    """``amount`` (minor units, exact) as a whole number of minor units, halves away from zero."""
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP, context=EXACT))


def decimal_string(amount: Decimal) -> str:
    """A decimal as Stripe writes ``*_decimal`` fields: no exponent, no trailing zeros after the
    point (``"0.05"``, ``"2000"``, ``"105.5"``)."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text

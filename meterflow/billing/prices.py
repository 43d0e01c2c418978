"""How a price turns a quantity into an amount: the terms rating needs, apart from the stored
``price`` object."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

BillingScheme = Literal["per_unit", "tiered"]
TiersMode = Literal["graduated", "volume"]
QuantityRounding = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class Tier:
    """Units up to and including ``up_to`` (``None``: no upper bound, the last tier)."""

    up_to: int | None
    unit_amount: Decimal = Decimal(0)
    flat_amount: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class TransformQuantity:
    """Divide the usage by ``divide_by``, then round the result to a whole number."""

    divide_by: int
    round: QuantityRounding


@dataclass(frozen=True, slots=True)
class PriceTerms:
    """A price's rating terms: ``per_unit`` with ``unit_amount`` (minor units, possibly
    fractional) and an optional ``transform``, or ``tiered`` with ``tiers`` in ascending order."""

    billing_scheme: BillingScheme
    unit_amount: Decimal | None = None
    transform: TransformQuantity | None = None
    tiers_mode: TiersMode | None = None
    tiers: tuple[Tier, ...] = ()

    @staticmethod
    def per_unit(unit_amount: Decimal, transform: TransformQuantity | None = None) -> PriceTerms:
        return PriceTerms("per_unit", unit_amount=unit_amount, transform=transform)

    @staticmethod
    def tiered(mode: TiersMode, tiers: tuple[Tier, ...]) -> PriceTerms:
        return PriceTerms("tiered", tiers_mode=mode, tiers=tiers)

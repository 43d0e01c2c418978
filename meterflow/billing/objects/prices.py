"""The ``price`` object: a stored price's terms, its recurring settings, and its wire shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, cast

import asyncpg
import orjson

from meterflow.billing.money import decimal_string
from meterflow.billing.periods import Interval
from meterflow.billing.prices import (
    BillingScheme,
    PriceTerms,
    QuantityRounding,
    Tier,
    TiersMode,
    TransformQuantity,
)

PRICE_COLUMNS = (
    "seq, id, livemode, product_id, active, currency, type, billing_scheme, unit_amount_decimal, "
    "tiers_mode, tiers::text AS tiers, transform_divide_by, transform_round, interval, "
    "interval_count, usage_type, meter_id, nickname, lookup_key, metadata::text AS metadata, "
    "created"
)

UsageType = Literal["licensed", "metered"]
PriceType = Literal["one_time", "recurring"]


@dataclass(frozen=True, slots=True)
class Recurring:
    interval: Interval
    interval_count: int
    usage_type: UsageType
    meter: str | None


def _minor_units(amount: Decimal | None) -> int | None:
    """The integer field beside a ``*_decimal`` one: set only when the amount is whole."""
    if amount is None or amount != amount.to_integral_value():
        return None
    return int(amount)


@dataclass(frozen=True, slots=True)
class Price:
    seq: int
    id: str
    livemode: bool
    product: str
    active: bool
    currency: str
    type: PriceType
    terms: PriceTerms
    recurring: Recurring | None
    nickname: str | None
    lookup_key: str | None
    metadata: dict[str, str]
    created: int

    @property
    def metered(self) -> bool:
        return self.recurring is not None and self.recurring.usage_type == "metered"

    def to_stripe(self, *, expand_tiers: bool = False) -> dict[str, Any]:
        """The ``price`` object; ``tiers`` only when expanded, as Stripe does."""
        terms = self.terms
        transform = terms.transform
        price: dict[str, Any] = {
            "id": self.id,
            "object": "price",
            "active": self.active,
            "billing_scheme": terms.billing_scheme,
            "created": self.created,
            "currency": self.currency,
            "custom_unit_amount": None,
            "livemode": self.livemode,
            "lookup_key": self.lookup_key,
            "metadata": self.metadata,
            "nickname": self.nickname,
            "product": self.product,
            "recurring": None
            if self.recurring is None
            else {
                "interval": self.recurring.interval,
                "interval_count": self.recurring.interval_count,
                "meter": self.recurring.meter,
                "trial_period_days": None,
                "usage_type": self.recurring.usage_type,
            },
            "tax_behavior": "unspecified",
            "tiers_mode": terms.tiers_mode,
            "transform_quantity": None
            if transform is None
            else {"divide_by": transform.divide_by, "round": transform.round},
            "type": self.type,
            "unit_amount": _minor_units(terms.unit_amount),
            "unit_amount_decimal": None
            if terms.unit_amount is None
            else decimal_string(terms.unit_amount),
        }
        if expand_tiers and terms.billing_scheme == "tiered":
            price["tiers"] = [_tier_object(t) for t in terms.tiers]
        return price


def _tier_object(tier: Tier) -> dict[str, Any]:
    return {
        "flat_amount": _minor_units(tier.flat_amount),
        "flat_amount_decimal": decimal_string(tier.flat_amount),
        "unit_amount": _minor_units(tier.unit_amount),
        "unit_amount_decimal": decimal_string(tier.unit_amount),
        "up_to": tier.up_to,
    }


def tiers_json(tiers: Sequence[Tier]) -> str:
    return orjson.dumps(
        [
            {
                "up_to": t.up_to,
                "unit_amount_decimal": str(t.unit_amount),
                "flat_amount_decimal": str(t.flat_amount),
            }
            for t in tiers
        ]
    ).decode()


def price_from_row(row: asyncpg.Record) -> Price:
    scheme = cast(BillingScheme, row["billing_scheme"])
    if scheme == "tiered":
        tiers = tuple(
            Tier(t["up_to"], Decimal(t["unit_amount_decimal"]), Decimal(t["flat_amount_decimal"]))
            for t in orjson.loads(row["tiers"])
        )
        terms = PriceTerms.tiered(cast(TiersMode, row["tiers_mode"]), tiers)
    else:
        transform = (
            None
            if row["transform_divide_by"] is None
            else TransformQuantity(
                row["transform_divide_by"], cast(QuantityRounding, row["transform_round"])
            )
        )
        terms = PriceTerms.per_unit(row["unit_amount_decimal"], transform)
    recurring = (
        None
        if row["interval"] is None
        else Recurring(
            cast(Interval, row["interval"]),
            row["interval_count"],
            cast(UsageType, row["usage_type"]),
            row["meter_id"],
        )
    )
    return Price(
        seq=row["seq"],
        id=row["id"],
        livemode=row["livemode"],
        product=row["product_id"],
        active=row["active"],
        currency=row["currency"],
        type=cast(PriceType, row["type"]),
        terms=terms,
        recurring=recurring,
        nickname=row["nickname"],
        lookup_key=row["lookup_key"],
        metadata=orjson.loads(row["metadata"]),
        created=row["created"],
    )

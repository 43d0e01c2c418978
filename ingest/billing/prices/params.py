"""Price parameters, checked without I/O: amounts, tiers, ``transform_quantity`` and
``recurring``. What needs the database (the product, the meter) is checked by the API."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from ingest.billing.products.store import MAX_NAME, ProductFields
from ingest.edge.errors import InvalidRequest
from ingest.edge.object_params import (
    MetadataChange,
    parse_metadata_change,
    take_boolean,
    take_unset,
)
from ingest.edge.params import Params, missing_param
from meterflow.billing.currencies import CURRENCIES
from meterflow.billing.objects.prices import PriceType, Recurring, UsageType
from meterflow.billing.periods import Interval
from meterflow.billing.prices import PriceTerms, Tier, TiersMode, TransformQuantity

MAX_UNIT_AMOUNT = 99_999_999  # 8 integer digits, Stripe's limit on an amount
MAX_TIERS = 250
MAX_LOOKUP_KEY = 200
MAX_NICKNAME = 250
MAX_LOOKUP_KEYS = 10
# interval -> most interval_count allowed: three years of each
MAX_INTERVAL_COUNT: dict[str, int] = {"day": 1095, "week": 156, "month": 36, "year": 3}
_DECIMAL = re.compile(r"-?\d+(\.\d+)?")


@dataclass(frozen=True, slots=True)
class NewPrice:
    currency: str
    product: str | None
    product_data: ProductFields | None
    terms: PriceTerms
    recurring: Recurring | None
    active: bool
    nickname: str | None
    lookup_key: str | None
    metadata: dict[str, str]
    expand_tiers: bool

    @property
    def type(self) -> PriceType:
        return "one_time" if self.recurring is None else "recurring"


@dataclass(frozen=True, slots=True)
class PriceChanges:
    active: bool | None = None
    nickname: str | None = None
    unset_nickname: bool = False
    lookup_key: str | None = None
    unset_lookup_key: bool = False
    metadata: MetadataChange = field(default_factory=MetadataChange)
    expand_tiers: bool = False


def _exclusive(a: str, b: str, param: str) -> InvalidRequest:
    first, second = sorted((a, b))
    return InvalidRequest(
        f"You may only specify one of these parameters: {first}, {second}.",
        code="parameters_exclusive",
        param=param,
    )


def _invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, code="parameter_invalid", param=param)


def parse_currency(params: Params, key: str) -> str:
    """A required three-letter ISO currency code, lower-cased as Stripe stores it."""
    currency = params.required_string(key, max_length=3).lower()
    if currency not in CURRENCIES:
        name = params.name(key)
        raise _invalid(
            f"Invalid {name}: must be a supported three-letter ISO currency code, such as usd.",
            name,
        )
    return currency


def parse_amount(params: Params, key: str) -> Decimal | None:
    """``<key>`` (integer minor units) or ``<key>_decimal`` (up to 12 decimal places), not both."""
    whole = params.integer(key, minimum=0, maximum=MAX_UNIT_AMOUNT)
    text = params.string(f"{key}_decimal", max_length=40)
    if whole is not None and text is not None:
        raise _exclusive(params.name(key), params.name(f"{key}_decimal"), params.name(key))
    if text is None:
        return None if whole is None else Decimal(whole)
    name = params.name(f"{key}_decimal")
    if not _DECIMAL.fullmatch(text):
        raise _invalid(f"Invalid {name}: must be a decimal number, such as 0.05.", name)
    integer, _, fraction = text.lstrip("-").partition(".")
    if len(fraction) > 12:
        raise _invalid(f"Invalid {name}: at most 12 decimal places are allowed.", name)
    amount = Decimal(text)
    if amount < 0:
        raise _invalid(f"Invalid {name}: must be at least 0.", name)
    if len(integer.lstrip("0")) > 8:
        raise InvalidRequest(
            f"Invalid {name}: at most 8 integer digits are allowed.",
            code="amount_too_large",
            param=name,
        )
    return amount


def _positive_integer(raw: object, name: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        number = raw
    elif isinstance(raw, str) and raw.isdigit():
        number = int(raw)
    else:
        raise InvalidRequest(
            f"Invalid {name}: must be a positive integer or inf.",
            code="parameter_invalid_integer",
            param=name,
        )
    if not 1 <= number <= 2**63 - 1:
        raise _invalid(f"Invalid {name}: must be a positive integer or inf.", name)
    return number


def _tier(params: Params, index: int, last: bool) -> Tier:
    name = params.name("up_to")
    raw = params.raw("up_to")
    if raw is None or raw == "":
        raise missing_param(name)
    up_to = None if raw == "inf" else _positive_integer(raw, name)
    if (up_to is None) != last:
        message = (
            f"Invalid {name}: the last tier must have up_to=inf."
            if last
            else f"Invalid {name}: only the last tier may have up_to=inf."
        )
        raise _invalid(message, name)
    unit = parse_amount(params, "unit_amount")
    flat = parse_amount(params, "flat_amount")
    if unit is None and flat is None:
        raise InvalidRequest(
            f"An entry in the tiers array is missing an amount: tiers[{index}] needs unit_amount "
            "or flat_amount.",
            code="parameter_missing",
            param=params.name("unit_amount"),
        )
    return Tier(up_to, unit or Decimal(0), flat or Decimal(0))


def parse_tiers(params: Params) -> tuple[Tier, ...]:
    raw = params.raw("tiers")
    if raw is None:
        return ()
    if isinstance(raw, dict) and all(k.isdigit() for k in raw):
        raw = [raw[k] for k in sorted(raw, key=int)]
    if not isinstance(raw, list) or not raw or not all(isinstance(t, dict) for t in raw):
        raise _invalid("Invalid tiers: must be a list of tier objects.", "tiers")
    if len(raw) > MAX_TIERS:
        raise _invalid(f"Invalid tiers: at most {MAX_TIERS} tiers are allowed.", "tiers")
    tiers: list[Tier] = []
    for index, entry in enumerate(raw):
        child = Params(entry, f"tiers[{index}]")
        tier = _tier(child, index, last=index == len(raw) - 1)
        child.finish()
        if tiers and tier.up_to is not None and tier.up_to <= (tiers[-1].up_to or 0):
            raise _invalid(
                f"Invalid tiers[{index}][up_to]: tiers must be in strictly ascending order of "
                f"up_to ({tier.up_to} follows {tiers[-1].up_to}).",
                f"tiers[{index}][up_to]",
            )
        tiers.append(tier)
    return tuple(tiers)


def _transform(params: Params) -> TransformQuantity | None:
    transform = params.object("transform_quantity")
    if transform is None:
        return None
    divide_by = transform.integer("divide_by", minimum=1)
    if divide_by is None:
        raise missing_param("transform_quantity[divide_by]")
    rounding = transform.choice("round", ("down", "up"), required=True)
    return TransformQuantity(divide_by, "up" if rounding == "up" else "down")


def _recurring(params: Params) -> Recurring | None:
    recurring = params.object("recurring")
    if recurring is None:
        return None
    interval = cast(
        Interval, recurring.choice("interval", ("day", "month", "week", "year"), required=True)
    )
    count = recurring.integer("interval_count", minimum=1) or 1
    if count > MAX_INTERVAL_COUNT[interval]:
        raise _invalid(
            "Invalid recurring[interval_count]: the maximum interval is three years (3 years, "
            "36 months, 156 weeks or 1095 days).",
            "recurring[interval_count]",
        )
    usage_type = recurring.choice("usage_type", ("licensed", "metered")) or "licensed"
    meter = recurring.string("meter", max_length=255)
    if usage_type == "metered" and meter is None:
        raise InvalidRequest(
            "A price with recurring[usage_type]=metered must name the meter that measures its "
            "usage in recurring[meter].",
            code="parameter_missing",
            param="recurring[meter]",
        )
    if usage_type == "licensed" and meter is not None:
        raise _invalid(
            "Invalid recurring[meter]: only a price with recurring[usage_type]=metered uses a "
            "meter.",
            "recurring[meter]",
        )
    return Recurring(interval, count, cast(UsageType, usage_type), meter)


def expands_tiers(params: Params) -> bool:
    """``expand[]=tiers`` (the only expansion prices offer here)."""
    paths = params.string_list("expand")
    for path in paths:
        if path not in ("tiers", "data.tiers"):
            raise _invalid(f"This property cannot be expanded ({path}).", "expand")
    return bool(paths)


def _product_data(params: Params) -> ProductFields | None:
    data = params.object("product_data")
    if data is None:
        return None
    return ProductFields(
        name=data.required_string("name", max_length=MAX_NAME),
        metadata=parse_metadata_change(data),
    )


def parse_new_price(values: dict[str, Any]) -> NewPrice:
    """Create parameters (pure): every rule that needs no lookup."""
    active = take_boolean(values, "active")
    params = Params(values)
    currency = parse_currency(params, "currency")
    product = params.string("product", max_length=255)
    product_data = _product_data(params)
    if product is not None and product_data is not None:
        raise _exclusive("product", "product_data", "product")
    if product is None and product_data is None:
        raise missing_param("product")
    recurring = _recurring(params)
    price = NewPrice(
        currency=currency,
        product=product,
        product_data=product_data,
        terms=_terms(params, recurring),
        recurring=recurring,
        active=True if active is None else active,
        nickname=params.string("nickname", max_length=MAX_NICKNAME),
        lookup_key=params.string("lookup_key", max_length=MAX_LOOKUP_KEY),
        metadata=parse_metadata_change(params).set,
        expand_tiers=expands_tiers(params),
    )
    params.finish()
    return price


def _terms(params: Params, recurring: Recurring | None) -> PriceTerms:
    """Amounts, tiers and the quantity transform, checked against each other."""
    scheme = params.choice("billing_scheme", ("per_unit", "tiered")) or "per_unit"
    unit_amount = parse_amount(params, "unit_amount")
    tiers_mode = params.choice("tiers_mode", ("graduated", "volume"))
    tiers = parse_tiers(params)
    transform = _transform(params)
    if scheme == "tiered":
        if unit_amount is not None:
            raise _exclusive("tiers", "unit_amount", "unit_amount")
        if transform is not None:
            raise _exclusive("tiers", "transform_quantity", "tiers")
        if not tiers:
            raise missing_param("tiers")
        if tiers_mode is None:
            raise missing_param("tiers_mode")
        if recurring is None:
            raise _invalid(
                "Invalid billing_scheme: tiered pricing needs a recurring price.", "billing_scheme"
            )
        return PriceTerms.tiered(cast(TiersMode, tiers_mode), tiers)
    if tiers:
        raise _invalid("Invalid tiers: only a price with billing_scheme=tiered has tiers.", "tiers")
    if tiers_mode is not None:
        raise _invalid(
            "Invalid tiers_mode: only a price with billing_scheme=tiered has tiers.", "tiers_mode"
        )
    if unit_amount is None:
        raise InvalidRequest(
            "Missing required param: unit_amount (or unit_amount_decimal), unless "
            "billing_scheme=tiered.",
            code="parameter_missing",
            param="unit_amount",
        )
    return PriceTerms.per_unit(unit_amount, transform)


def parse_price_changes(values: dict[str, Any]) -> PriceChanges:
    """Update parameters (pure): amounts, recurring and tiers cannot change."""
    active = take_boolean(values, "active")
    unset_nickname = take_unset(values, "nickname")
    unset_lookup_key = take_unset(values, "lookup_key")
    params = Params(values)
    changes = PriceChanges(
        active=active,
        nickname=params.string("nickname", max_length=MAX_NICKNAME),
        unset_nickname=unset_nickname,
        lookup_key=params.string("lookup_key", max_length=MAX_LOOKUP_KEY),
        unset_lookup_key=unset_lookup_key,
        metadata=parse_metadata_change(params),
        expand_tiers=expands_tiers(params),
    )
    params.finish()
    return changes

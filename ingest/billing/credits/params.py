"""Credit grant and credit balance parameters, checked without I/O. What needs the database (the
customer, the scope's prices, the limit on unused grants) is checked by the stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from ingest.billing.prices.params import parse_currency
from ingest.edge.errors import InvalidRequest
from ingest.edge.object_params import (
    MetadataChange,
    parse_metadata_change,
    take_unset,
)
from ingest.edge.params import Params, missing_param
from meterflow.billing.credits import Category

MAX_NAME = 100
MAX_SCOPE_PRICES = 20
MAX_ID = 255
DEFAULT_PRIORITY = 50
# Eight digits of minor units, Stripe's limit on an amount; sums of 100 grants stay far inside
# a bigint.
MAX_GRANT_VALUE = 99_999_999


@dataclass(frozen=True, slots=True)
class NewGrant:
    customer: str
    currency: str
    value: int  # minor units
    scope_prices: tuple[str, ...] | None  # None: every metered price
    scope_param: str  # where the scope was given, for errors about its prices
    category: Category
    priority: int
    effective_at: int | None  # None: now
    expires_at: int | None
    name: str | None
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class GrantChanges:
    """``expires_at`` to set, or ``clear_expiry`` (sent as ``""``: never expire); metadata."""

    expires_at: int | None = None
    clear_expiry: bool = False
    metadata: MetadataChange = field(default_factory=MetadataChange)


@dataclass(frozen=True, slots=True)
class BalanceFilter:
    """``filter`` of the balance summary: one grant, or the grants that can pay for a scope."""

    grant: str | None = None
    prices: tuple[str, ...] | None = None  # None: every metered price


def _invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, code="parameter_invalid", param=param)


def _indexed(raw: object, name: str) -> list[dict[str, Any]]:
    """A list of objects, given as a JSON list or a form's indexed map (``prices[0][id]``)."""
    if isinstance(raw, dict) and raw and all(isinstance(k, str) and k.isdigit() for k in raw):
        raw = [raw[k] for k in sorted(raw, key=int)]
    if not isinstance(raw, list) or not raw or not all(isinstance(v, dict) for v in raw):
        raise _invalid(f"Invalid {name}: must be a non-empty list of objects.", name)
    if len(raw) > MAX_SCOPE_PRICES:
        raise _invalid(f"Invalid {name}: at most {MAX_SCOPE_PRICES} prices are allowed.", name)
    return [dict(v) for v in raw]


def parse_scope(scope: Params) -> tuple[str, ...] | None:
    """``price_type=metered`` (None: every metered price) or ``prices[n][id]`` (up to 20, in the
    order given, repeats dropped): exactly one of the two."""
    price_type = scope.choice("price_type", ("metered",))
    raw = scope.raw("prices")
    if price_type is not None and raw is not None:
        raise InvalidRequest(
            f"You may only specify one of these parameters: {scope.name('price_type')}, "
            f"{scope.name('prices')}.",
            code="parameters_exclusive",
            param=scope.name("prices"),
        )
    if raw is None:
        if price_type is None:
            raise InvalidRequest(
                f"Missing required param: {scope.name('price_type')} or {scope.name('prices')}.",
                code="parameter_missing",
                param=scope.name("price_type"),
            )
        return None
    name = scope.name("prices")
    ids: list[str] = []
    for index, entry in enumerate(_indexed(raw, name)):
        price = Params(entry, f"{name}[{index}]")
        price_id = price.required_string("id", max_length=MAX_ID)
        price.finish()
        if price_id not in ids:
            ids.append(price_id)
    return tuple(ids)


def parse_new_grant(values: dict[str, Any]) -> NewGrant:
    """Create parameters (pure): every rule that needs no lookup."""
    params = Params(values)
    amount = params.object("amount", required=True)
    assert amount is not None  # noqa: S101 - required
    amount.choice("type", ("monetary",), required=True)
    monetary = amount.object("monetary", required=True)
    assert monetary is not None  # noqa: S101 - required
    currency = parse_currency(monetary, "currency")
    value = monetary.integer("value", minimum=1, maximum=MAX_GRANT_VALUE)
    if value is None:
        raise missing_param(monetary.name("value"))
    config = params.object("applicability_config", required=True)
    assert config is not None  # noqa: S101 - required
    scope = config.object("scope", required=True)
    assert scope is not None  # noqa: S101 - required
    scope_prices = parse_scope(scope)
    effective_at = params.integer("effective_at", minimum=0)
    expires_at = params.integer("expires_at", minimum=0)
    if effective_at is not None and expires_at is not None and expires_at <= effective_at:
        raise _invalid("Invalid expires_at: it must be later than effective_at.", "expires_at")
    new = NewGrant(
        customer=params.required_string("customer", max_length=MAX_ID),
        currency=currency,
        value=value,
        scope_prices=scope_prices,
        scope_param=scope.name("prices"),
        category=cast(Category, params.choice("category", ("paid", "promotional")) or "paid"),
        priority=_priority(params),
        effective_at=effective_at,
        expires_at=expires_at,
        name=params.string("name", max_length=MAX_NAME),
        metadata=parse_metadata_change(params).set,
    )
    params.no_expansion()
    params.finish()
    return new


def _priority(params: Params) -> int:
    priority = params.integer("priority", minimum=0, maximum=100)
    return DEFAULT_PRIORITY if priority is None else priority


def parse_grant_changes(values: dict[str, Any]) -> GrantChanges:
    """Update parameters: ``expires_at`` (``""`` clears it) and ``metadata``."""
    clear_expiry = take_unset(values, "expires_at")
    params = Params(values)
    changes = GrantChanges(
        expires_at=params.integer("expires_at", minimum=0),
        clear_expiry=clear_expiry,
        metadata=parse_metadata_change(params),
    )
    params.no_expansion()
    params.finish()
    return changes


def parse_balance_filter(filter_params: Params) -> BalanceFilter:
    """``filter[type]`` and what it names: ``filter[credit_grant]`` or
    ``filter[applicability_scope]``; the other one may not be given."""
    kind = filter_params.choice("type", ("applicability_scope", "credit_grant"), required=True)
    other = "applicability_scope" if kind == "credit_grant" else "credit_grant"
    if filter_params.has(other):
        raise _invalid(
            f"Invalid {filter_params.name(other)}: it cannot be used with "
            f"{filter_params.name('type')}={kind}.",
            filter_params.name(other),
        )
    if kind == "credit_grant":
        return BalanceFilter(grant=filter_params.required_string("credit_grant", max_length=MAX_ID))
    scope = filter_params.object("applicability_scope", required=True)
    assert scope is not None  # noqa: S101 - required
    return BalanceFilter(prices=parse_scope(scope))

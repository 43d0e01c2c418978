"""What a subscription's items must satisfy, checked once their prices are loaded (pure)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

from ingest.edge.errors import InvalidRequest, ResourceMissing
from meterflow.billing.objects.prices import Price
from meterflow.billing.periods import Interval


class Cadence(NamedTuple):
    """What every item of one subscription shares: its currency and its billing interval."""

    currency: str
    interval: Interval
    interval_count: int


def cadence_of(price: Price) -> Cadence:
    recurring = price.recurring
    assert recurring is not None  # noqa: S101 - subscriptions hold recurring prices only
    return Cadence(price.currency, recurring.interval, recurring.interval_count)


def quantity_on_metered(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Quantity should not be specified where usage_type is `metered`. Remove quantity "
        f"from `{param}`.",
        code="parameter_invalid",
        param=f"{param}[quantity]",
    )


def check_items(
    items: Sequence[tuple[str, str, int | None]],
    prices: Mapping[str, Price],
    *,
    shared: Cadence | None = None,
    taken: Collection[str] = (),
) -> Cadence:
    """``items`` (new ones) as (param, price id, quantity). Every price exists, is active and
    recurring; a metered price takes no quantity; no price twice, counting the prices the
    subscription holds already (``taken``); one currency and one billing interval, those of the
    items it holds (``shared``) if any. Returns the cadence they share."""
    seen: set[str] = set(taken)
    for param, price_id, quantity in items:
        price = prices.get(price_id)
        if price is None:
            raise ResourceMissing(f"No such price: '{price_id}'", param=f"{param}[price]")
        if not price.active:
            raise InvalidRequest(
                f"The price {price_id} is not active; an inactive price cannot be added to a "
                "subscription.",
                code="parameter_invalid",
                param=f"{param}[price]",
            )
        if price.recurring is None:
            raise InvalidRequest(
                f"The price specified ({price_id}) is set to `type=one_time` but this field only "
                "accepts prices with `type=recurring`.",
                code="parameter_invalid",
                param=f"{param}[price]",
            )
        if price.metered and quantity is not None:
            raise quantity_on_metered(param)
        if price_id in seen:
            raise InvalidRequest(
                f"Cannot add multiple subscription items with the same price: {price_id}.",
                code="parameter_invalid",
                param=f"{param}[price]",
            )
        seen.add(price_id)
        cadence = cadence_of(price)
        if shared is not None and shared != cadence:
            field = "currency" if shared.currency != cadence.currency else "interval"
            raise InvalidRequest(
                "Currency and interval fields must match across all prices on this "
                f"subscription. Found mismatch in {field} field.",
                code="parameter_invalid",
                param=f"{param}[price]",
            )
        shared = cadence
    assert shared is not None  # noqa: S101 - at least one item
    return shared

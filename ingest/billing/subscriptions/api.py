"""``/v1/subscriptions`` (create, retrieve, update, list, cancel) and ``/v1/subscription_items``
(list by subscription, retrieve)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

from ingest.billing.customers.api import missing_customer
from ingest.billing.subscriptions.params import (
    NewSubscription,
    parse_new_subscription,
    parse_subscription_changes,
)
from ingest.billing.subscriptions.rules import (
    Cadence,
    cadence_of,
    check_items,
    quantity_on_metered,
)
from ingest.billing.subscriptions.store import (
    NewItemRow,
    NewSubscriptionRow,
    StatusFilter,
    SubscriptionStore,
)
from ingest.edge.auth import Principal
from ingest.edge.errors import InvalidRequest, ResourceMissing
from ingest.edge.http import Request, Response, json_response
from ingest.edge.list_pages import found_page, page_request
from ingest.edge.object_params import take_boolean
from ingest.edge.params import Params
from ingest.edge.routing import Route
from meterflow.billing.objects.subscriptions import Subscription
from meterflow.billing.periods import boundary

BASE = "/v1/subscriptions"
ITEMS = "/v1/subscription_items"


def missing_subscription(subscription_id: str, param: str | None = "id") -> ResourceMissing:
    return ResourceMissing(f"No such subscription: '{subscription_id}'", param=param)


def _anchor_and_start(new: NewSubscription, cadence: Cadence, now_s: int) -> tuple[int, int]:
    """The start date (``backdate_start_date`` or now) and the billing cycle anchor (given, or
    the start date), which must lie within one period of the start."""
    start = now_s if new.backdate_start_date is None else new.backdate_start_date
    if start > now_s:
        raise InvalidRequest(
            "Invalid backdate_start_date: it must be in the past.",
            code="parameter_invalid",
            param="backdate_start_date",
        )
    anchor = start if new.billing_cycle_anchor is None else new.billing_cycle_anchor
    natural = boundary(start, cadence.interval, cadence.interval_count, 1)
    if not start <= anchor <= natural:
        raise InvalidRequest(
            f"billing_cycle_anchor cannot be later than next natural billing date ({natural}) "
            "for price, nor before the subscription's start.",
            code="parameter_invalid",
            param="billing_cycle_anchor",
        )
    return start, anchor


class SubscriptionsApi:
    def __init__(self, store: SubscriptionStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def _now(self) -> int:
        return int(self._clock())

    def routes(self) -> list[Route]:
        return [
            Route("POST", BASE, self.create),
            Route("GET", BASE, self.list),
            Route("GET", BASE + "/{id}", self.retrieve),
            Route("POST", BASE + "/{id}", self.update),
            Route("DELETE", BASE + "/{id}", self.cancel),
            Route("GET", ITEMS, self.list_items),
            Route("GET", ITEMS + "/{id}", self.retrieve_item),
        ]

    async def create(self, request: Request, who: Principal) -> Response:
        new = parse_new_subscription(dict(request.params()))
        if not await self._store.customer_exists(who, new.customer):
            raise missing_customer(new.customer, "customer")
        prices = await self._store.prices(who, [i.price for i in new.items])
        cadence = check_items([(i.param, i.price, i.quantity) for i in new.items], prices)
        now_s = self._now()
        start, anchor = _anchor_and_start(new, cadence, now_s)
        items = [
            NewItemRow(
                i.price,
                None if prices[i.price].metered else (1 if i.quantity is None else i.quantity),
                i.metadata,
            )
            for i in new.items
        ]
        subscription_id = await self._store.create(
            who,
            NewSubscriptionRow(
                customer=new.customer,
                currency=cadence.currency,
                billing_cycle_anchor=anchor,
                start_date=start,
                cancel_at_period_end=new.cancel_at_period_end,
                thresholds=new.thresholds,
                metadata=new.metadata,
            ),
            items,
            now_s,
        )
        return json_response((await self._found(who, subscription_id)).to_stripe(now_s))

    async def retrieve(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        params.no_expansion()
        params.finish()
        subscription = await self._found(who, request.path_params["id"])
        return json_response(subscription.to_stripe(self._now()))

    async def update(self, request: Request, who: Principal) -> Response:
        subscription_id = request.path_params["id"]
        changes = parse_subscription_changes(dict(request.params()))
        subscription = await self._found(who, subscription_id)
        if subscription.status == "canceled" and (
            changes.items or changes.cancel_at_period_end is not None
        ):
            raise InvalidRequest(
                "A canceled subscription can only have its metadata updated.",
                code="parameter_invalid",
                param="items" if changes.items else "cancel_at_period_end",
            )
        held = {item.id: item for item in subscription.items}
        remove = [c.id for c in changes.items if c.deleted and c.id is not None]
        quantities: dict[str, int] = {}
        for change in changes.items:
            if change.id is not None and change.id not in held:
                raise ResourceMissing(
                    f"No such subscription item: '{change.id}'", param=f"{change.param}[id]"
                )
            if change.id is not None and change.quantity is not None and not change.deleted:
                if held[change.id].price.metered:
                    raise quantity_on_metered(change.param)
                quantities[change.id] = change.quantity
        added = [(c, c.price) for c in changes.items if c.id is None and c.price is not None]
        kept = [i for i in subscription.items if i.id not in remove]
        if not kept and not added:
            raise InvalidRequest(
                "A subscription needs at least one item; cancel it instead of removing them all.",
                code="parameter_invalid",
                param="items",
            )
        prices = await self._store.prices(who, [price for _, price in added])
        if added:
            check_items(
                [(c.param, price, c.quantity) for c, price in added],
                prices,
                shared=cadence_of(subscription.items[0].price) if subscription.items else None,
                taken={i.price.id for i in kept},
            )
        await self._store.update(
            who,
            subscription_id,
            cancel_at_period_end=changes.cancel_at_period_end,
            metadata=changes.metadata,
            add=[
                NewItemRow(
                    price,
                    None if prices[price].metered else (1 if c.quantity is None else c.quantity),
                    {},
                )
                for c, price in added
            ],
            remove=remove,
            quantities=quantities,
            now_s=self._now(),
        )
        return json_response((await self._found(who, subscription_id)).to_stripe(self._now()))

    async def cancel(self, request: Request, who: Principal) -> Response:
        values = dict(request.params())
        invoice_now = bool(take_boolean(values, "invoice_now"))
        # Accepted as Stripe's SDKs send it; usage-based items are never prorated.
        take_boolean(values, "prorate")
        params = Params(values)
        params.no_expansion()
        params.finish()
        subscription_id = request.path_params["id"]
        await self._found(who, subscription_id)
        if not await self._store.cancel(who, subscription_id, self._now(), invoice_now=invoice_now):
            raise InvalidRequest(
                f"The subscription {subscription_id} is already canceled.",
                code="resource_missing",
                param="id",
            )
        return json_response((await self._found(who, subscription_id)).to_stripe(self._now()))

    async def list(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        request_page = page_request(params)
        customer = params.string("customer", max_length=255)
        price = params.string("price", max_length=255)
        status = params.choice("status", ("active", "all", "canceled"))
        params.no_expansion()
        params.finish()
        page = await self._store.page(
            who,
            request_page,
            customer=customer,
            price=price,
            # Stripe: without a status, every subscription that is not canceled.
            status=cast(StatusFilter, status or "not_canceled"),
        )
        subscriptions, has_more = found_page(page, request_page, missing_subscription)
        now_s = self._now()
        return json_response(
            {
                "object": "list",
                "data": [s.to_stripe(now_s) for s in subscriptions],
                "has_more": has_more,
                "url": BASE,
            }
        )

    async def list_items(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        subscription_id = params.required_string("subscription", max_length=255)
        page_request(params)  # one subscription holds at most 20 items: one page
        params.no_expansion()
        params.finish()
        subscription = await self._store.get(who, subscription_id)
        if subscription is None:
            raise missing_subscription(subscription_id, "subscription")
        now_s = self._now()
        return json_response(
            {
                "object": "list",
                "data": [
                    i.to_stripe(subscription.current_period(i, now_s)) for i in subscription.items
                ],
                "has_more": False,
                "url": ITEMS,
            }
        )

    async def retrieve_item(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        params.no_expansion()
        params.finish()
        item_id = request.path_params["id"]
        subscription = await self._store.holding_item(who, item_id)
        if subscription is None:
            raise ResourceMissing(f"No such subscription item: '{item_id}'")
        item = next(i for i in subscription.items if i.id == item_id)
        return json_response(item.to_stripe(subscription.current_period(item, self._now())))

    async def _found(self, who: Principal, subscription_id: str) -> Subscription:
        subscription = await self._store.get(who, subscription_id)
        if subscription is None:
            raise missing_subscription(subscription_id)
        return subscription

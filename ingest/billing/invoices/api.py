"""``POST /v1/invoices/create_preview``: the current period of a subscription, rated from the
usage folded so far."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

from ingest.billing.customers.api import missing_customer
from ingest.billing.customers.store import CustomerStore
from ingest.billing.invoices.preview import PreviewLine, preview_invoice, rate_item
from ingest.billing.invoices.store import PreviewStore
from ingest.billing.subscriptions.api import missing_subscription
from ingest.billing.subscriptions.store import SubscriptionStore
from ingest.edge.auth import Principal
from ingest.edge.errors import InvalidRequest, ResourceMissing
from ingest.edge.http import Request, Response, json_response
from ingest.edge.params import Params
from ingest.edge.routing import Route
from meterflow.billing.periods import usage_window
from meterflow.usage.keys import UsageSpan


class InvoicesApi:
    def __init__(
        self,
        previews: PreviewStore,
        subscriptions: SubscriptionStore,
        customers: CustomerStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._previews = previews
        self._subscriptions = subscriptions
        self._customers = customers
        self._clock = clock

    def routes(self) -> list[Route]:
        return [Route("POST", "/v1/invoices/create_preview", self.create_preview)]

    async def _subscription_id(
        self, who: Principal, customer: str | None, subscription: str | None
    ) -> str:
        if subscription is not None:
            return subscription
        if customer is None:
            raise InvalidRequest(
                "Missing required param: customer or subscription.",
                code="parameter_missing",
                param="customer",
            )
        found = await self._previews.active_subscription_ids(who, customer)
        if not found:
            raise ResourceMissing(f"No upcoming invoices for customer: {customer}", param=None)
        if len(found) > 1:
            raise InvalidRequest(
                f"The customer {customer} has more than one active subscription; name the one "
                "to preview in subscription.",
                code="parameter_missing",
                param="subscription",
            )
        return found[0]

    async def create_preview(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        customer_id = params.string("customer", max_length=255)
        subscription_param = params.string("subscription", max_length=255)
        params.no_expansion()
        params.finish()
        subscription_id = await self._subscription_id(who, customer_id, subscription_param)
        subscription = await self._subscriptions.get(who, subscription_id)
        if subscription is None:
            raise missing_subscription(subscription_id, "subscription")
        if customer_id is not None and subscription.customer != customer_id:
            raise InvalidRequest(
                f"The subscription {subscription_id} does not belong to customer {customer_id}.",
                code="parameter_invalid",
                param="subscription",
            )
        if subscription.status == "canceled":
            raise ResourceMissing(
                f"No upcoming invoices for customer: {subscription.customer}", param=None
            )
        customer = await self._customers.get(who, subscription.customer)
        if customer is None:
            raise missing_customer(subscription.customer, "customer")
        now_s = int(self._clock())
        periods = {i.id: subscription.current_period(i, now_s) for i in subscription.items}
        metered = [i for i in subscription.items if i.price.metered]
        formulas = await self._previews.meter_formulas(
            who, [m for i in metered if i.price.recurring and (m := i.price.recurring.meter)]
        )
        spans: dict[str, UsageSpan] = {}
        for item in metered:
            meter = item.price.recurring.meter if item.price.recurring else None
            if meter is not None:
                start, end = usage_window(periods[item.id])
                spans[item.id] = (
                    who.account_id,
                    who.livemode,
                    meter,
                    subscription.customer,
                    start,
                    end,
                )
        usage = await self._previews.usage(list(spans.values()))
        names = await self._previews.product_names(
            who, list({i.price.product for i in subscription.items})
        )
        lines: list[PreviewLine] = []
        for item in subscription.items:
            amount = Decimal(0)
            span = spans.get(item.id)
            if span is not None and (totals := usage.get(span)) is not None:
                amount = totals.value(formulas[span[2]])
            lines.append(
                PreviewLine(
                    item,
                    periods[item.id],
                    rate_item(item, amount),
                    names.get(item.price.product, item.price.product),
                )
            )
        return json_response(
            preview_invoice(
                subscription,
                lines,
                {"email": customer.email, "name": customer.name},
                now_s,
            )
        )

"""``/v1/invoices``: list, retrieve, the lines of one, pay out of band, void, and
``create_preview``.

Invoices are made by the aggregator's closer; through the API they can only be read, paid out of
band (meterflow collects no payments) or voided. Both changes apply to ``open`` invoices only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ingest.billing.customers.api import missing_customer
from ingest.billing.customers.store import CustomerStore
from ingest.billing.invoices.params import (
    parse_invoice_list,
    parse_line_page,
    parse_no_params,
    parse_pay,
)
from ingest.billing.invoices.store import InvoiceStore
from ingest.billing.invoices.transitions import InvoiceTransitions, Transition
from ingest.billing.subscriptions.api import missing_subscription
from ingest.billing.subscriptions.store import SubscriptionStore
from ingest.edge.auth import Principal
from ingest.edge.errors import InvalidRequest, ResourceMissing
from ingest.edge.http import Request, Response, json_response
from ingest.edge.list_pages import found_page, list_object
from ingest.edge.params import Params
from ingest.edge.routing import Route
from meterflow.billing.objects.invoices import Invoice

BASE = "/v1/invoices"


def missing_invoice(invoice_id: str, param: str | None = "id") -> ResourceMissing:
    return ResourceMissing(f"No such invoice: '{invoice_id}'", param=param)


def _missing_line(line_id: str, param: str) -> ResourceMissing:
    return ResourceMissing(f"No such invoice line item: '{line_id}'", param=param)


def _unexpected_state(invoice: Invoice, action: str) -> InvalidRequest:
    """Paying or voiding an invoice that is not open. Stripe's own words where they are known
    ("Invoice is already paid", "Voided invoices cannot be paid.")."""
    if action == "pay" and invoice.status == "paid":
        message = "Invoice is already paid"
    elif action == "pay" and invoice.status == "void":
        message = "Voided invoices cannot be paid."
    else:
        message = (
            f"You cannot {action} this invoice because it has a status of {invoice.status}: only "
            f"an open invoice can be {'paid' if action == 'pay' else 'voided'}."
        )
        if invoice.status == "draft":
            message += " A draft is finalized when its grace period ends."
    return InvalidRequest(message, code="invoice_unexpected_state")


class InvoicesApi:
    def __init__(
        self,
        invoices: InvoiceStore,
        transitions: InvoiceTransitions,
        subscriptions: SubscriptionStore,
        customers: CustomerStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._invoices = invoices
        self._transitions = transitions
        self._subscriptions = subscriptions
        self._customers = customers
        self._clock = clock

    def routes(self) -> list[Route]:
        return [
            Route("POST", BASE + "/create_preview", self.create_preview),
            Route("GET", BASE, self.list),
            Route("GET", BASE + "/{id}", self.retrieve),
            Route("GET", BASE + "/{id}/lines", self.list_lines),
            Route("POST", BASE + "/{id}/pay", self.pay),
            Route("POST", BASE + "/{id}/void", self.void),
        ]

    async def list(self, request: Request, who: Principal) -> Response:
        query = parse_invoice_list(request.params())
        invoices, has_more = found_page(
            await self._invoices.page(who, query), query.page, missing_invoice
        )
        return json_response(list_object([i.to_stripe() for i in invoices], has_more, BASE))

    async def retrieve(self, request: Request, who: Principal) -> Response:
        parse_no_params(request.params())
        return json_response((await self._found(who, request.path_params["id"])).to_stripe())

    async def list_lines(self, request: Request, who: Principal) -> Response:
        """One page of the invoice's lines, in invoice order (an invoice has a line per
        subscription item, so all of them are loaded and the page is cut here)."""
        page = parse_line_page(request.params())
        invoice = await self._found(who, request.path_params["id"])
        ids = [line.id for line in invoice.lines]
        start, end = 0, len(ids)
        if page.cursor is not None:
            param, cursor_id = page.cursor
            if cursor_id not in ids:
                raise _missing_line(cursor_id, param)
            if page.starting_after:
                start = ids.index(cursor_id) + 1
            else:
                end = ids.index(cursor_id)
        if page.ending_before:
            start = max(start, end - page.limit)
            has_more = start > 0
        else:
            end = min(end, start + page.limit)
            has_more = end < len(ids)
        return json_response(
            list_object(
                [line.to_stripe(invoice) for line in invoice.lines[start:end]],
                has_more,
                f"{BASE}/{invoice.id}/lines",
            )
        )

    async def pay(self, request: Request, who: Principal) -> Response:
        parse_pay(request.params())
        invoice_id = request.path_params["id"]
        done = await self._transitions.pay(who, invoice_id, self._now())
        return json_response(self._changed(done, invoice_id, "pay").to_stripe())

    async def void(self, request: Request, who: Principal) -> Response:
        parse_no_params(request.params())
        invoice_id = request.path_params["id"]
        done = await self._transitions.void(who, invoice_id, self._now())
        return json_response(self._changed(done, invoice_id, "void").to_stripe())

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
        preview = await self._invoices.preview(
            who, subscription, (customer.name, customer.email), self._now()
        )
        return json_response(preview.to_stripe())

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
        found = await self._invoices.active_subscription_ids(who, customer)
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

    async def _found(self, who: Principal, invoice_id: str) -> Invoice:
        invoice = await self._invoices.get(who, invoice_id)
        if invoice is None:
            raise missing_invoice(invoice_id)
        return invoice

    @staticmethod
    def _changed(done: Transition | None, invoice_id: str, action: str) -> Invoice:
        if done is None:
            raise missing_invoice(invoice_id)
        if not done.changed:
            raise _unexpected_state(done.invoice, action)
        return done.invoice

    def _now(self) -> int:
        return int(self._clock())

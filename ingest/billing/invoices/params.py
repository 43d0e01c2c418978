"""The parameters of the invoice endpoints (pure): the list's filters, and paying out of band."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from ingest.edge.created_bounds import CreatedBounds, created_bounds
from ingest.edge.errors import InvalidRequest
from ingest.edge.list_pages import PageRequest, page_request
from ingest.edge.object_params import take_boolean
from ingest.edge.params import Params

# Stripe's list filter takes ``uncollectible`` too; meterflow never marks an invoice so, so it
# matches nothing.
StatusFilter = Literal["draft", "open", "paid", "uncollectible", "void"]
STATUS_FILTERS: tuple[StatusFilter, ...] = ("draft", "open", "paid", "uncollectible", "void")
MAX_ID = 255
# What a payment attempt would be made with; meterflow attempts none.
_PAYMENT_PARAMS = ("payment_method", "source", "mandate", "off_session", "forgive")
NO_PAYMENTS = (
    "meterflow collects no payments: pay an invoice with paid_out_of_band=true to record that "
    "it was paid outside meterflow."
)


@dataclass(frozen=True, slots=True)
class InvoiceListQuery:
    page: PageRequest
    customer: str | None
    subscription: str | None
    status: StatusFilter | None
    created: CreatedBounds


def parse_invoice_list(values: Mapping[str, Any]) -> InvoiceListQuery:
    params = Params(values)
    page = page_request(params)
    customer = params.string("customer", max_length=MAX_ID)
    subscription = params.string("subscription", max_length=MAX_ID)
    status = params.choice("status", STATUS_FILTERS)
    created = created_bounds(params)
    params.no_expansion()
    params.finish()
    return InvoiceListQuery(
        page, customer, subscription, cast(StatusFilter | None, status), created
    )


def parse_line_page(values: Mapping[str, Any]) -> PageRequest:
    params = Params(values)
    page = page_request(params)
    params.no_expansion()
    params.finish()
    return page


def parse_pay(values: Mapping[str, Any]) -> None:
    """``paid_out_of_band=true`` is required: anything that would attempt a payment is refused."""
    remaining = dict(values)
    for key in _PAYMENT_PARAMS:
        if key in remaining:
            raise InvalidRequest(NO_PAYMENTS, code="parameter_unknown", param=key)
    out_of_band = take_boolean(remaining, "paid_out_of_band")
    if out_of_band is None:
        raise InvalidRequest(NO_PAYMENTS, code="parameter_missing", param="paid_out_of_band")
    if not out_of_band:
        raise InvalidRequest(NO_PAYMENTS, code="parameter_invalid", param="paid_out_of_band")
    params = Params(remaining)
    params.no_expansion()
    params.finish()


def parse_no_params(values: Mapping[str, Any]) -> None:
    """Retrieve and void take nothing but an empty ``expand``."""
    params = Params(values)
    params.no_expansion()
    params.finish()

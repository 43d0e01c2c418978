"""``/v1/billing/credit_balance_transactions`` (list by customer or grant, retrieve) and
``GET /v1/billing/credit_balance_summary``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ingest.billing.credits.ledger_store import CreditLedgerStore
from ingest.billing.credits.params import MAX_ID, parse_balance_filter
from ingest.billing.credits.rules import missing_transaction
from ingest.edge.auth import Principal
from ingest.edge.errors import InvalidRequest
from ingest.edge.http import Request, Response, json_response
from ingest.edge.list_pages import found_page, list_object, page_request
from ingest.edge.params import Params
from ingest.edge.routing import Route
from meterflow.billing.balances import CurrencyBalance
from meterflow.billing.objects.credit_grants import monetary

TRANSACTIONS = "/v1/billing/credit_balance_transactions"
SUMMARY = "/v1/billing/credit_balance_summary"
# Where a summary's price scope is given, for errors about its prices.
_SCOPE_PRICES = "filter[applicability_scope][prices]"


def balance_summary(
    customer: str, livemode: bool, balances: list[CurrencyBalance]
) -> dict[str, Any]:
    """The ``billing.credit_balance_summary`` object."""
    return {
        "object": "billing.credit_balance_summary",
        "balances": [
            {
                "available_balance": monetary(b.currency, b.available),
                "ledger_balance": monetary(b.currency, b.ledger),
            }
            for b in balances
        ],
        "customer": customer,
        "customer_account": None,
        "livemode": livemode,
    }


class CreditLedgerApi:
    def __init__(self, store: CreditLedgerStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def routes(self) -> list[Route]:
        return [
            Route("GET", TRANSACTIONS, self.list_transactions),
            Route("GET", TRANSACTIONS + "/{id}", self.retrieve_transaction),
            Route("GET", SUMMARY, self.summary),
        ]

    async def list_transactions(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        request_page = page_request(params)
        customer = params.string("customer", max_length=MAX_ID)
        grant = params.string("credit_grant", max_length=MAX_ID)
        params.no_expansion()
        params.finish()
        if customer is None and grant is None:
            raise InvalidRequest(
                "Missing required param: customer or credit_grant.",
                code="parameter_missing",
                param="customer",
            )
        page = await self._store.page(who, request_page, customer=customer, grant=grant)
        transactions, has_more = found_page(page, request_page, missing_transaction)
        return json_response(
            list_object([t.to_stripe() for t in transactions], has_more, TRANSACTIONS)
        )

    async def retrieve_transaction(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        params.no_expansion()
        params.finish()
        transaction_id = request.path_params["id"]
        transaction = await self._store.get(who, transaction_id)
        if transaction is None:
            raise missing_transaction(transaction_id)
        return json_response(transaction.to_stripe())

    async def summary(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        customer = params.required_string("customer", max_length=MAX_ID)
        filter_params = params.object("filter", required=True)
        assert filter_params is not None  # noqa: S101 - required
        balance_filter = parse_balance_filter(filter_params)
        params.no_expansion()
        params.finish()
        balances = await self._store.balances(
            who, customer, balance_filter, int(self._clock()), scope_param=_SCOPE_PRICES
        )
        return json_response(balance_summary(customer, who.livemode, balances))

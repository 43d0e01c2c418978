"""``/v1/customers``: create, retrieve, update, list (by ``email``) and delete."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ingest.billing.customers.store import CustomerFields, CustomerStore, deleted_customer
from ingest.edge.auth import Principal
from ingest.edge.errors import ResourceMissing
from ingest.edge.http import Request, Response, json_response
from ingest.edge.list_pages import found_page, list_object, page_request
from ingest.edge.object_params import parse_metadata_change, take_unset
from ingest.edge.params import Params
from ingest.edge.routing import Route

BASE = "/v1/customers"
MAX_NAME = 256
MAX_EMAIL = 512
MAX_DESCRIPTION = 350
_CLEARABLE = ("name", "email", "description")


def parse_customer_fields(values: dict[str, Any]) -> CustomerFields:
    """Create or update parameters (pure); an empty string clears an optional field."""
    unset = tuple(key for key in _CLEARABLE if take_unset(values, key))
    params = Params(values)
    fields = CustomerFields(
        name=params.string("name", max_length=MAX_NAME),
        email=params.string("email", max_length=MAX_EMAIL, printable=True),
        description=params.string("description", max_length=MAX_DESCRIPTION),
        unset=unset,
        metadata=parse_metadata_change(params),
    )
    params.no_expansion()
    params.finish()
    return fields


def missing_customer(customer_id: str, param: str | None = "id") -> ResourceMissing:
    return ResourceMissing(f"No such customer: '{customer_id}'", param=param)


class CustomersApi:
    def __init__(self, store: CustomerStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def routes(self) -> list[Route]:
        return [
            Route("POST", BASE, self.create),
            Route("GET", BASE, self.list),
            Route("GET", BASE + "/{id}", self.retrieve),
            Route("POST", BASE + "/{id}", self.update),
            Route("DELETE", BASE + "/{id}", self.delete),
        ]

    async def create(self, request: Request, who: Principal) -> Response:
        fields = parse_customer_fields(dict(request.params()))
        customer = await self._store.create(who, fields, int(self._clock()))
        return json_response(customer.to_stripe())

    async def retrieve(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        params.no_expansion()
        params.finish()
        customer_id = request.path_params["id"]
        customer = await self._store.get(who, customer_id)
        if customer is None:
            raise missing_customer(customer_id)
        return json_response(customer.to_stripe())

    async def update(self, request: Request, who: Principal) -> Response:
        customer_id = request.path_params["id"]
        changes = parse_customer_fields(dict(request.params()))
        customer = await self._store.update(who, customer_id, changes, int(self._clock()))
        if customer is None:
            raise missing_customer(customer_id)
        return json_response(customer.to_stripe())

    async def delete(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        params.finish()
        customer_id = request.path_params["id"]
        if not await self._store.delete(who, customer_id, int(self._clock())):
            raise missing_customer(customer_id)
        return json_response(deleted_customer(customer_id))

    async def list(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        request_page = page_request(params)
        email = params.string("email", max_length=MAX_EMAIL)
        params.no_expansion()
        params.finish()
        page = await self._store.page(who, request_page, email=email)
        customers, has_more = found_page(page, request_page, missing_customer)
        return json_response(list_object([c.to_stripe() for c in customers], has_more, BASE))

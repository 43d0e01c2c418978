"""``/v1/products``: create, retrieve, update and list (by ``active``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ingest.billing.products.store import MAX_NAME, ProductFields, ProductStore
from ingest.edge.auth import Principal
from ingest.edge.errors import ResourceMissing
from ingest.edge.http import Request, Response, json_response
from ingest.edge.list_pages import found_page, list_object, page_request
from ingest.edge.object_params import parse_metadata_change, take_boolean, take_unset
from ingest.edge.params import Params
from ingest.edge.routing import Route

BASE = "/v1/products"
MAX_DESCRIPTION = 40_000


def parse_product_fields(values: dict[str, Any], *, creating: bool) -> ProductFields:
    """Create (``name`` required) or update parameters, pure."""
    unset_description = take_unset(values, "description")
    active = take_boolean(values, "active")
    params = Params(values)
    fields = ProductFields(
        name=params.string("name", required=creating, max_length=MAX_NAME),
        active=active,
        description=params.string("description", max_length=MAX_DESCRIPTION),
        unset_description=unset_description,
        metadata=parse_metadata_change(params),
    )
    params.no_expansion()
    params.finish()
    return fields


def missing_product(product_id: str, param: str | None = "id") -> ResourceMissing:
    return ResourceMissing(f"No such product: '{product_id}'", param=param)


class ProductsApi:
    def __init__(self, store: ProductStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def routes(self) -> list[Route]:
        return [
            Route("POST", BASE, self.create),
            Route("GET", BASE, self.list),
            Route("GET", BASE + "/{id}", self.retrieve),
            Route("POST", BASE + "/{id}", self.update),
        ]

    async def create(self, request: Request, who: Principal) -> Response:
        fields = parse_product_fields(dict(request.params()), creating=True)
        return json_response(
            (await self._store.create(who, fields, int(self._clock()))).to_stripe()
        )

    async def retrieve(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        params.no_expansion()
        params.finish()
        product_id = request.path_params["id"]
        product = await self._store.get(who, product_id)
        if product is None:
            raise missing_product(product_id)
        return json_response(product.to_stripe())

    async def update(self, request: Request, who: Principal) -> Response:
        product_id = request.path_params["id"]
        changes = parse_product_fields(dict(request.params()), creating=False)
        product = await self._store.update(who, product_id, changes, int(self._clock()))
        if product is None:
            raise missing_product(product_id)
        return json_response(product.to_stripe())

    async def list(self, request: Request, who: Principal) -> Response:
        values = dict(request.params())
        active = take_boolean(values, "active")
        params = Params(values)
        request_page = page_request(params)
        params.no_expansion()
        params.finish()
        page = await self._store.page(who, request_page, active=active)
        products, has_more = found_page(page, request_page, missing_product)
        return json_response(list_object([p.to_stripe() for p in products], has_more, BASE))

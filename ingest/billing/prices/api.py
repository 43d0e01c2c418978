"""``/v1/prices``: create, retrieve, update and list."""

from __future__ import annotations

import time
from collections.abc import Callable

from ingest.billing.prices.params import (
    MAX_LOOKUP_KEY,
    MAX_LOOKUP_KEYS,
    NewPrice,
    expands_tiers,
    parse_new_price,
    parse_price_changes,
)
from ingest.billing.prices.store import LookupKeyTaken, PriceFilters, PriceStore
from ingest.billing.products.api import missing_product
from ingest.edge.auth import Principal
from ingest.edge.errors import InvalidRequest, ResourceMissing
from ingest.edge.http import Request, Response, json_response
from ingest.edge.list_pages import found_page, list_object, page_request
from ingest.edge.object_params import take_boolean
from ingest.edge.params import Params
from ingest.edge.routing import Route
from ingest.meters.store import MeterStore
from meterflow.billing.objects.prices import Price

BASE = "/v1/prices"


def missing_price(price_id: str, param: str | None = "id") -> ResourceMissing:
    return ResourceMissing(f"No such price: '{price_id}'", param=param)


def _lookup_key_taken(key: str | None) -> InvalidRequest:
    return InvalidRequest(
        f"A price with the lookup_key '{key}' already exists. Lookup keys are unique per "
        "account and mode.",
        code="resource_already_exists",
        param="lookup_key",
    )


class PricesApi:
    def __init__(
        self, store: PriceStore, meters: MeterStore, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._meters = meters
        self._clock = clock

    def routes(self) -> list[Route]:
        return [
            Route("POST", BASE, self.create),
            Route("GET", BASE, self.list),
            Route("GET", BASE + "/{id}", self.retrieve),
            Route("POST", BASE + "/{id}", self.update),
        ]

    async def _check_references(self, who: Principal, new: NewPrice) -> None:
        """The product and the meter must be objects of the caller, the meter active."""
        if new.product is not None and not await self._store.product_exists(who, new.product):
            raise missing_product(new.product, "product")
        if new.recurring is not None and new.recurring.meter is not None:
            meter = await self._meters.get(who, new.recurring.meter)
            if meter is None:
                raise ResourceMissing(
                    f"No such billing meter: '{new.recurring.meter}'", param="recurring[meter]"
                )
            if meter.status != "active":
                raise InvalidRequest(
                    f"The meter {meter.id} is inactive. A metered price needs an active meter.",
                    code="parameter_invalid",
                    param="recurring[meter]",
                )

    async def create(self, request: Request, who: Principal) -> Response:
        new = parse_new_price(dict(request.params()))
        await self._check_references(who, new)
        try:
            price = await self._store.create(who, new, int(self._clock()))
        except LookupKeyTaken as exc:
            raise _lookup_key_taken(new.lookup_key) from exc
        return json_response(price.to_stripe(expand_tiers=new.expand_tiers))

    async def retrieve(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        expand = expands_tiers(params)
        params.finish()
        return json_response((await self._found(who, request.path_params["id"])).to_stripe(
            expand_tiers=expand
        ))  # fmt: skip

    async def update(self, request: Request, who: Principal) -> Response:
        price_id = request.path_params["id"]
        changes = parse_price_changes(dict(request.params()))
        try:
            price = await self._store.update(who, price_id, changes, int(self._clock()))
        except LookupKeyTaken as exc:
            raise _lookup_key_taken(changes.lookup_key) from exc
        if price is None:
            raise missing_price(price_id)
        return json_response(price.to_stripe(expand_tiers=changes.expand_tiers))

    async def list(self, request: Request, who: Principal) -> Response:
        values = dict(request.params())
        active = take_boolean(values, "active")
        params = Params(values)
        request_page = page_request(params)
        lookup_keys = params.string_list("lookup_keys")
        if len(lookup_keys) > MAX_LOOKUP_KEYS or any(len(k) > MAX_LOOKUP_KEY for k in lookup_keys):
            raise InvalidRequest(
                f"Invalid lookup_keys: at most {MAX_LOOKUP_KEYS} keys of at most "
                f"{MAX_LOOKUP_KEY} characters.",
                code="parameter_invalid",
                param="lookup_keys",
            )
        filters = PriceFilters(
            # Stripe lists active prices unless asked for inactive ones.
            active=True if active is None else active,
            product=params.string("product", max_length=255),
            type=params.choice("type", ("one_time", "recurring")),
            currency=(params.string("currency", max_length=3) or "").lower() or None,
            lookup_keys=lookup_keys,
        )
        expand = expands_tiers(params)
        params.finish()
        page = await self._store.page(who, request_page, filters)
        prices, has_more = found_page(page, request_page, missing_price)
        return json_response(
            list_object([p.to_stripe(expand_tiers=expand) for p in prices], has_more, BASE)
        )

    async def _found(self, who: Principal, price_id: str) -> Price:
        price = await self._store.get(who, price_id)
        if price is None:
            raise missing_price(price_id)
        return price

"""``/v1/billing/credit_grants``: create, retrieve, update, list (by ``customer``), expire and
void."""

from __future__ import annotations

import time
from collections.abc import Callable

from ingest.billing.credits.grants_store import CreditGrantStore
from ingest.billing.credits.params import MAX_ID, parse_grant_changes, parse_new_grant
from ingest.billing.credits.rules import check_scope_prices, effective_times, missing_grant
from ingest.edge.auth import Principal
from ingest.edge.http import Request, Response, json_response
from ingest.edge.list_pages import found_page, list_object, page_request
from ingest.edge.params import Params
from ingest.edge.routing import Route
from meterflow.billing.objects.credit_grants import CreditGrant

BASE = "/v1/billing/credit_grants"


def _no_params(request: Request) -> None:
    params = Params(request.params())
    params.no_expansion()
    params.finish()


class CreditGrantsApi:
    def __init__(self, store: CreditGrantStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def routes(self) -> list[Route]:
        return [
            Route("POST", BASE, self.create),
            Route("GET", BASE, self.list),
            Route("GET", BASE + "/{id}", self.retrieve),
            Route("POST", BASE + "/{id}", self.update),
            Route("POST", BASE + "/{id}/expire", self.expire),
            Route("POST", BASE + "/{id}/void", self.void),
        ]

    async def create(self, request: Request, who: Principal) -> Response:
        new = parse_new_grant(dict(request.params()))
        now_s = int(self._clock())
        effective_at, expires_at = effective_times(new, now_s)
        if new.scope_prices is not None:
            check_scope_prices(new, await self._store.prices(who, new.scope_prices))
        grant = await self._store.create(
            who, new, effective_at=effective_at, expires_at=expires_at, now_s=now_s
        )
        return json_response(grant.to_stripe())

    async def retrieve(self, request: Request, who: Principal) -> Response:
        _no_params(request)
        grant_id = request.path_params["id"]
        return json_response(_found(await self._store.get(who, grant_id), grant_id).to_stripe())

    async def update(self, request: Request, who: Principal) -> Response:
        grant_id = request.path_params["id"]
        changes = parse_grant_changes(dict(request.params()))
        grant = await self._store.update(who, grant_id, changes, int(self._clock()))
        return json_response(_found(grant, grant_id).to_stripe())

    async def expire(self, request: Request, who: Principal) -> Response:
        _no_params(request)
        grant_id = request.path_params["id"]
        grant = await self._store.expire(who, grant_id, int(self._clock()))
        return json_response(_found(grant, grant_id).to_stripe())

    async def void(self, request: Request, who: Principal) -> Response:
        _no_params(request)
        grant_id = request.path_params["id"]
        grant = await self._store.void(who, grant_id, int(self._clock()))
        return json_response(_found(grant, grant_id).to_stripe())

    async def list(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        request_page = page_request(params)
        customer = params.string("customer", max_length=MAX_ID)
        params.no_expansion()
        params.finish()
        page = await self._store.page(who, request_page, customer=customer)
        grants, has_more = found_page(page, request_page, missing_grant)
        return json_response(list_object([g.to_stripe() for g in grants], has_more, BASE))


def _found(grant: CreditGrant | None, grant_id: str) -> CreditGrant:
    if grant is None:
        raise missing_grant(grant_id)
    return grant

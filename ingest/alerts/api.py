"""``/v1/billing/alerts``: create, retrieve, list, activate, deactivate, archive, for usage
alerts (``usage_threshold``) and credit balance alerts (``credit_balance_threshold``).

Alerts render in the shape of the caller's ``Stripe-Version``: ``usage_threshold`` from
2024-09-30 on (and without the header), ``usage_threshold_config`` + ``filter`` before it.
Archived alerts answer 404 everywhere, as if deleted: Stripe says archiving removes an alert from
the list view and the APIs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg

from ingest.alerts.credit_params import CUSTOMER_PARAM, NewCreditBalanceAlert
from ingest.alerts.params import NewAlert, expands_meter, parse_list_query, parse_new_alert
from ingest.alerts.store import (
    MAX_ALERTS_PER_METER_CUSTOMER,
    MAX_CREDIT_ALERTS_PER_CUSTOMER,
    AlertLimitReached,
    AlertStore,
    CustomerNotFound,
    MeterInactive,
    MeterNotFound,
)
from ingest.edge.auth import Principal
from ingest.edge.errors import InvalidRequest, ResourceMissing
from ingest.edge.http import Request, Response, json_response
from ingest.edge.params import Params
from ingest.edge.routing import Route
from ingest.meters.store import MeterStore
from meterflow.alerts import Alert, AlertStatus, AnyAlert, alert_object, uses_legacy_shape

BASE = "/v1/billing/alerts"


def _missing(alert_id: str) -> ResourceMissing:
    return ResourceMissing(f"No such billing alert: '{alert_id}'")


def _path_id(request: Request) -> str:
    alert_id = request.path_params["id"]
    if "\x00" in alert_id:
        # PostgreSQL text cannot hold NUL, so no alert has such an id.
        raise _missing(alert_id)
    return alert_id


def _legacy(request: Request) -> bool:
    return uses_legacy_shape(request.header("stripe-version"))


class AlertsApi:
    def __init__(self, pool: asyncpg.Pool, clock: Callable[[], float] = time.time) -> None:
        self._store = AlertStore(pool)
        self._meters = MeterStore(pool)
        self._clock = clock

    def routes(self) -> list[Route]:
        return [
            Route("POST", BASE, self.create),
            Route("GET", BASE, self.list),
            Route("GET", BASE + "/{id}", self.retrieve),
            Route("POST", BASE + "/{id}/activate", self.activate),
            Route("POST", BASE + "/{id}/deactivate", self.deactivate),
            Route("POST", BASE + "/{id}/archive", self.archive),
        ]

    async def create(self, request: Request, who: Principal) -> Response:
        new = parse_new_alert(request.params())
        if isinstance(new, NewCreditBalanceAlert):
            return json_response(
                await self._render(who, await self._create_credit(who, new), request, expand=False)
            )
        alert = await self._create_usage(who, new)
        return json_response(await self._render(who, alert, request, expand=new.expand_meter))

    async def _create_usage(self, who: Principal, new: NewAlert) -> AnyAlert:
        try:
            return await self._store.create(who, new, int(self._clock()))
        except MeterNotFound as exc:
            raise InvalidRequest(
                f"No such billing meter: '{new.meter_id}'",
                code="resource_missing",
                param=new.meter_param,
            ) from exc
        except MeterInactive as exc:
            raise InvalidRequest(
                f"The billing meter '{new.meter_id}' is inactive. Alerts can only watch an active "
                "meter; reactivate it first.",
                code="parameter_invalid",
                param=new.meter_param,
            ) from exc
        except AlertLimitReached as exc:
            whose = "all customers" if new.customer is None else f"customer '{new.customer}'"
            raise InvalidRequest(
                f"The billing meter '{new.meter_id}' already has "
                f"{MAX_ALERTS_PER_METER_CUSTOMER} alerts for {whose}, the most allowed per meter "
                "and customer. Archive one before creating another.",
                param=new.meter_param,
            ) from exc

    async def _create_credit(self, who: Principal, new: NewCreditBalanceAlert) -> AnyAlert:
        try:
            return await self._store.create_credit(who, new, int(self._clock()))
        except CustomerNotFound as exc:
            raise InvalidRequest(
                f"No such customer: '{new.customer}'",
                code="resource_missing",
                param=CUSTOMER_PARAM,
            ) from exc
        except AlertLimitReached as exc:
            raise InvalidRequest(
                f"The customer '{new.customer}' already has {MAX_CREDIT_ALERTS_PER_CUSTOMER} "
                "credit balance alerts, the most allowed per customer. Archive one before "
                "creating another.",
                param=CUSTOMER_PARAM,
            ) from exc

    async def retrieve(self, request: Request, who: Principal) -> Response:
        expand = _single_object_expand(request)
        alert_id = _path_id(request)
        alert = await self._store.get(who, alert_id)
        if alert is None:
            raise _missing(alert_id)
        return json_response(await self._render(who, alert, request, expand=expand))

    async def activate(self, request: Request, who: Principal) -> Response:
        return await self._transition(request, who, "active")

    async def deactivate(self, request: Request, who: Principal) -> Response:
        return await self._transition(request, who, "inactive")

    async def archive(self, request: Request, who: Principal) -> Response:
        return await self._transition(request, who, "archived")

    async def _transition(self, request: Request, who: Principal, status: AlertStatus) -> Response:
        expand = _single_object_expand(request)
        alert_id = _path_id(request)
        alert = await self._store.set_status(who, alert_id, status)
        if alert is None:
            raise _missing(alert_id)
        return json_response(await self._render(who, alert, request, expand=expand))

    async def list(self, request: Request, who: Principal) -> Response:
        query = parse_list_query(Params(request.params()))
        page = await self._store.page(
            who,
            query.page,
            alert_type=query.alert_type,
            meter_id=query.meter_id,
            customer=query.customer,
        )
        if page is None:
            assert query.page.cursor is not None  # noqa: S101 - only a cursor can miss
            param, cursor_id = query.page.cursor
            raise ResourceMissing(f"No such billing alert: '{cursor_id}'", param=param)
        alerts, has_more = page
        meters = {}
        if query.expand_meter:
            meters = await self._meter_objects(who, (_meter_of(a) for a in alerts))
        legacy = _legacy(request)
        return json_response(
            {
                "object": "list",
                "data": [
                    alert_object(a, legacy=legacy, meter=meters.get(_meter_of(a))) for a in alerts
                ],
                "has_more": has_more,
                "url": BASE,
            }
        )

    async def _render(
        self, who: Principal, alert: AnyAlert, request: Request, *, expand: bool
    ) -> dict[str, Any]:
        meter_id = _meter_of(alert)
        meters = await self._meter_objects(who, [meter_id]) if expand else {}
        return alert_object(alert, legacy=_legacy(request), meter=meters.get(meter_id))

    async def _meter_objects(
        self, who: Principal, meter_ids: Iterable[str | None]
    ) -> dict[str | None, dict[str, Any]]:
        """The ``billing.meter`` objects to embed, one lookup per distinct meter."""
        found: dict[str | None, dict[str, Any]] = {}
        for meter_id in dict.fromkeys(meter_ids):
            if meter_id is None:
                continue
            meter = await self._meters.get(who, meter_id)
            if meter is not None:
                found[meter_id] = meter.to_stripe()
        return found


def _meter_of(alert: AnyAlert) -> str | None:
    """The meter a usage alert watches; a credit balance alert has none to expand."""
    return alert.meter_id if isinstance(alert, Alert) else None


def _single_object_expand(request: Request) -> bool:
    params = Params(request.params())
    expand = expands_meter(params)
    params.finish()
    return expand

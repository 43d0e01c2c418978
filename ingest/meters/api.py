"""``/v1/billing/meters``: create, update, retrieve, list, deactivate, reactivate."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

from ingest.edge.auth import Principal
from ingest.edge.errors import InvalidRequest, ResourceMissing
from ingest.edge.http import Request, Response, json_response
from ingest.edge.list_pages import found_page, list_object, page_request
from ingest.edge.params import Params
from ingest.edge.routing import Route
from ingest.meters.store import EventNameTaken, MeterStore
from meterflow.meters import Formula, Meter, NewMeter
from meterflow.windows import TimeWindow

FORMULAS = ("count", "last", "sum")
TIME_WINDOWS = ("day", "hour")
DEFAULT_CUSTOMER_KEY = "stripe_customer_id"
DEFAULT_VALUE_KEY = "value"
MAX_DISPLAY_NAME = 250
MAX_EVENT_NAME = 100
MAX_PAYLOAD_KEY = 100
_IMMUTABLE = ("event_name", "default_aggregation", "customer_mapping", "value_settings",
              "event_time_window")  # fmt: skip


def parse_new_meter(params: Params) -> NewMeter:
    """Validate create parameters (pure), filling Stripe's defaults."""
    aggregation = params.object("default_aggregation", required=True)
    assert aggregation is not None  # noqa: S101 - required=True
    formula = aggregation.choice("formula", FORMULAS, required=True)
    display_name = params.required_string("display_name", max_length=MAX_DISPLAY_NAME)
    event_name = params.required_string("event_name", max_length=MAX_EVENT_NAME)
    customer_key = DEFAULT_CUSTOMER_KEY
    mapping = params.object("customer_mapping")
    if mapping is not None:
        customer_key = mapping.required_string("event_payload_key", max_length=MAX_PAYLOAD_KEY)
        mapping.choice("type", ("by_id",), required=True)
    value_key = DEFAULT_VALUE_KEY
    value_settings = params.object("value_settings")
    if value_settings is not None:
        value_key = value_settings.required_string("event_payload_key", max_length=MAX_PAYLOAD_KEY)
    window = params.choice("event_time_window", TIME_WINDOWS)
    params.no_expansion()
    params.finish()
    return NewMeter(
        event_name=event_name,
        display_name=display_name,
        formula=cast(Formula, formula),
        customer_key=customer_key,
        value_key=value_key,
        event_time_window=cast(TimeWindow | None, window),
    )


def parse_update(params: Params) -> str | None:
    """The new display name, if any; naming any other parameter is an error."""
    for key in _IMMUTABLE:
        if params.has(key):
            raise InvalidRequest(
                f"A meter's {key} cannot be changed after it is created; only display_name can "
                "be updated.",
                code="parameter_unknown",
                param=key,
            )
    display_name = params.string("display_name", max_length=MAX_DISPLAY_NAME)
    params.no_expansion()
    params.finish()
    return display_name


def _missing(meter_id: str, param: str | None = "id") -> ResourceMissing:
    return ResourceMissing(f"No such billing.meter: '{meter_id}'", param=param)


MeterChanged = Callable[[Principal, str], None]


class MetersApi:
    def __init__(
        self,
        store: MeterStore,
        clock: Callable[[], float] = time.time,
        *,
        on_change: MeterChanged | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        # Told (account, event name) whenever a meter appears or changes status, so this
        # process's event endpoints see the change at once rather than after their cache TTL.
        self._on_change = on_change or (lambda _who, _event_name: None)

    def _now(self) -> int:
        return int(self._clock())

    def routes(self) -> list[Route]:
        base = "/v1/billing/meters"
        return [
            Route("POST", base, self.create),
            Route("GET", base, self.list),
            Route("POST", base + "/{id}", self.update),
            Route("GET", base + "/{id}", self.retrieve),
            Route("POST", base + "/{id}/deactivate", self.deactivate),
            Route("POST", base + "/{id}/reactivate", self.reactivate),
        ]

    async def create(self, request: Request, who: Principal) -> Response:
        new = parse_new_meter(Params(request.params()))
        try:
            meter = await self._store.create(who, new, self._now())
        except EventNameTaken as exc:
            raise InvalidRequest(
                f"A meter with event_name '{new.event_name}' already exists. An event name can "
                "belong to only one meter.",
                code="resource_already_exists",
                param="event_name",
            ) from exc
        self._on_change(who, meter.event_name)
        return json_response(meter.to_stripe())

    async def retrieve(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        params.no_expansion()
        params.finish()
        return json_response((await self._found(who, request.path_params["id"])).to_stripe())

    async def update(self, request: Request, who: Principal) -> Response:
        meter_id = request.path_params["id"]
        display_name = parse_update(Params(request.params()))
        if display_name is None:
            meter = await self._found(who, meter_id)
        else:
            renamed = await self._store.rename(who, meter_id, display_name, self._now())
            if renamed is None:
                raise _missing(meter_id)
            meter = renamed
        return json_response(meter.to_stripe())

    async def deactivate(self, request: Request, who: Principal) -> Response:
        return await self._transition(request, who, "inactive")

    async def reactivate(self, request: Request, who: Principal) -> Response:
        return await self._transition(request, who, "active")

    async def _transition(self, request: Request, who: Principal, status: str) -> Response:
        params = Params(request.params())
        params.no_expansion()
        params.finish()
        meter_id = request.path_params["id"]
        meter = await self._store.set_status(
            who, meter_id, "active" if status == "active" else "inactive", self._now()
        )
        if meter is None:
            raise _missing(meter_id)
        self._on_change(who, meter.event_name)
        return json_response(meter.to_stripe())

    async def list(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        request_page = page_request(params)
        status = params.choice("status", ("active", "inactive"))
        params.no_expansion()
        params.finish()
        page = await self._store.page(
            who,
            request_page,
            status="active" if status == "active" else "inactive" if status else None,
        )
        meters, has_more = found_page(page, request_page, _missing)
        return json_response(
            list_object([m.to_stripe() for m in meters], has_more, "/v1/billing/meters")
        )

    async def _found(self, who: Principal, meter_id: str) -> Meter:
        meter = await self._store.get(who, meter_id)
        if meter is None:
            raise _missing(meter_id)
        return meter

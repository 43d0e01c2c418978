"""``/v1/webhook_endpoints``: where the account's events are POSTed, signed as Stripe signs them.

Create, retrieve, update, list and delete as in Stripe's API. The signing secret (``whsec_…``) is
shown only in the create answer. ``GET /v1/webhook_endpoints/:id/deliveries`` (a meterflow
extension) lists the endpoint's deliveries, newest first, each with its attempts. A URL must be
https in live mode and reach a public address (:mod:`ingest.webhooks.targets`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from ingest.edge.auth import Principal
from ingest.edge.errors import InvalidRequest, ResourceMissing
from ingest.edge.http import Request, Response, json_response
from ingest.edge.list_pages import found_page, list_object, page_request
from ingest.edge.object_params import (
    parse_metadata,
    parse_metadata_change,
    take_boolean,
    take_unset,
)
from ingest.edge.params import Params
from ingest.edge.routing import Route
from ingest.webhooks.store import (
    EndpointChanges,
    NewEndpoint,
    WebhookEndpoint,
    WebhookEndpointStore,
)
from ingest.webhooks.targets import check_endpoint_url, check_host_syntax
from meterflow.billing.announce import BILLING_EVENT_TYPES
from meterflow.meters import METER_EVENT_TYPES
from meterflow.webhooks.targets import TargetPolicy

BASE = "/v1/webhook_endpoints"
# The events meterflow emits; "*" stands for all of them, including any added later.
EVENT_TYPES = frozenset(
    {
        "billing.alert.triggered",
        "v1.billing.meter.error_report_triggered",
        "v1.billing.meter.no_meter_found",
        *BILLING_EVENT_TYPES,
        *METER_EVENT_TYPES,
    }
)
MAX_URL = 2048
MAX_DESCRIPTION = 5000
DELIVERY_PREFIX = "whdel_"
_MAX_BIGINT = 2**63 - 1


def parse_url(params: Params, *, required: bool) -> str | None:
    url = params.string("url", required=required, max_length=MAX_URL)
    if url is None:
        return None
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not url.isascii()
        or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url)
    ):
        raise InvalidRequest(
            f"Invalid URL: {url[:100]}. A webhook endpoint URL must be an http or https URL "
            "(percent-encode anything that is not ASCII).",
            code="url_invalid",
            param="url",
        )
    try:
        _ = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"Invalid URL port: {url[:100]}", param="url") from exc
    check_host_syntax(url)
    return url


def parse_enabled_events(params: Params, *, required: bool) -> list[str] | None:
    if not params.has("enabled_events"):
        if required:
            raise InvalidRequest(
                "Missing required param: enabled_events.",
                code="parameter_missing",
                param="enabled_events",
            )
        return None
    events = params.string_list("enabled_events")
    if not events:
        raise InvalidRequest(
            "Invalid enabled_events: name at least one event type, or '*'.",
            param="enabled_events",
        )
    for i, event in enumerate(events):
        if event != "*" and event not in EVENT_TYPES:
            raise InvalidRequest(
                f"Invalid enabled_events[{i}]: must be one of *, {', '.join(sorted(EVENT_TYPES))}.",
                param=f"enabled_events[{i}]",
            )
    return list(dict.fromkeys(events))


def parse_new_endpoint(values: dict[str, Any]) -> NewEndpoint:
    take_unset(values, "description")
    params = Params(values)
    url = parse_url(params, required=True)
    events = parse_enabled_events(params, required=True)
    description = params.string("description", max_length=MAX_DESCRIPTION)
    metadata = parse_metadata(params) or {}
    params.no_expansion()
    params.finish()
    assert url is not None  # noqa: S101 - required above
    assert events is not None  # noqa: S101 - required above
    return NewEndpoint(url, events, description, metadata)


def parse_changes(values: dict[str, Any]) -> EndpointChanges:
    unset = take_unset(values, "description")
    disabled = take_boolean(values, "disabled")
    params = Params(values)
    url = parse_url(params, required=False)
    events = parse_enabled_events(params, required=False)
    description = params.string("description", max_length=MAX_DESCRIPTION)
    metadata = parse_metadata_change(params)
    params.no_expansion()
    params.finish()
    return EndpointChanges(
        url=url,
        enabled_events=events,
        description=description,
        unset_description=unset,
        status=None if disabled is None else ("disabled" if disabled else "enabled"),
        metadata_set=metadata.set,
        metadata_unset=metadata.unset,
    )


def _missing(endpoint_id: str, param: str | None = "id") -> ResourceMissing:
    return ResourceMissing(f"No such webhook endpoint: '{endpoint_id}'", param=param)


def _s(ms: int | None) -> int | None:
    return None if ms is None else ms // 1000


def render_delivery(row: asyncpg.Record, attempts: list[asyncpg.Record]) -> dict[str, Any]:
    return {
        "id": f"{DELIVERY_PREFIX}{row['id']}",
        "object": "webhook_delivery",
        "webhook_endpoint": row["endpoint_id"],
        "event": row["event_id"],
        "event_type": row["event_type"],
        "status": row["status"],
        "attempt_count": row["attempt_count"],
        "created": _s(row["created_ms"]),
        "next_attempt_at": _s(row["next_attempt_ms"]) if row["status"] == "pending" else None,
        "completed_at": _s(row["completed_ms"]),
        "attempts": [
            {
                "attempt": a["attempt"],
                "created": _s(a["started_ms"]),
                "duration_ms": a["duration_ms"],
                "status_code": a["status_code"],
                "error": a["error"],
            }
            for a in attempts
        ],
    }


def _delivery_cursor(params: Params, key: str) -> int | None:
    value = params.string(key, max_length=64)
    if value is None:
        return None
    number = value.removeprefix(DELIVERY_PREFIX)
    # ASCII digits (isdigit alone takes "²") within PostgreSQL's bigint, else no such delivery.
    if (
        not value.startswith(DELIVERY_PREFIX)
        or not (number.isascii() and number.isdigit())
        or int(number) > _MAX_BIGINT
    ):
        raise ResourceMissing(f"No such webhook delivery: '{value}'", param=key)
    return int(number)


class WebhookEndpointsApi:
    def __init__(
        self,
        pool: asyncpg.Pool,
        clock: Callable[[], float] = time.time,
        *,
        allow_private_targets: bool = False,
    ) -> None:
        self._store = WebhookEndpointStore(pool)
        self._clock = clock
        self._targets = TargetPolicy(allow_private=allow_private_targets)

    def routes(self) -> list[Route]:
        return [
            Route("POST", BASE, self.create),
            Route("GET", BASE, self.list),
            Route("GET", BASE + "/{id}", self.retrieve),
            Route("POST", BASE + "/{id}", self.update),
            Route("DELETE", BASE + "/{id}", self.delete),
            Route("GET", BASE + "/{id}/deliveries", self.deliveries),
        ]

    async def create(self, request: Request, who: Principal) -> Response:
        new = parse_new_endpoint(request.params())
        await check_endpoint_url(new.url, livemode=who.livemode, targets=self._targets)
        endpoint = await self._store.create(who, new, int(self._clock()))
        return json_response(endpoint.to_stripe(with_secret=True))

    async def retrieve(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        params.no_expansion()
        params.finish()
        return json_response((await self._found(who, request.path_params["id"])).to_stripe())

    async def update(self, request: Request, who: Principal) -> Response:
        endpoint_id = request.path_params["id"]
        changes = parse_changes(request.params())
        if changes.url is not None:
            await check_endpoint_url(changes.url, livemode=who.livemode, targets=self._targets)
        endpoint = await self._store.update(who, endpoint_id, changes)
        if endpoint is None:
            raise _missing(endpoint_id)
        return json_response(endpoint.to_stripe())

    async def delete(self, request: Request, who: Principal) -> Response:
        Params(request.params()).finish()
        endpoint_id = request.path_params["id"]
        if not await self._store.delete(who, endpoint_id):
            raise _missing(endpoint_id)
        return json_response({"id": endpoint_id, "object": "webhook_endpoint", "deleted": True})

    async def list(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        request_page = page_request(params)
        params.no_expansion()
        params.finish()
        page = await self._store.page(who, request_page)
        endpoints, has_more = found_page(page, request_page, _missing)
        return json_response(list_object([e.to_stripe() for e in endpoints], has_more, BASE))

    async def deliveries(self, request: Request, who: Principal) -> Response:
        endpoint = await self._found(who, request.path_params["id"])
        params = Params(request.params())
        limit = params.integer("limit", minimum=1, maximum=100) or 10
        after = _delivery_cursor(params, "starting_after")
        before = _delivery_cursor(params, "ending_before")
        params.finish()
        if after is not None and before is not None:
            raise InvalidRequest(
                "You may only specify one of these parameters: ending_before, starting_after.",
                code="parameters_exclusive",
                param="ending_before",
            )
        rows, attempts, has_more = await self._store.deliveries(
            endpoint.id, limit=limit, after_id=after, before_id=before
        )
        return json_response(
            {
                "object": "list",
                "data": [render_delivery(r, attempts.get(r["id"], [])) for r in rows],
                "has_more": has_more,
                "url": f"{BASE}/{endpoint.id}/deliveries",
            }
        )

    async def _found(self, who: Principal, endpoint_id: str) -> WebhookEndpoint:
        endpoint = await self._store.get(who, endpoint_id)
        if endpoint is None:
            raise _missing(endpoint_id)
        return endpoint

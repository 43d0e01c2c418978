"""``/v1/events``: the v1 snapshot events (``billing.alert.triggered``) of the caller.

Events are listed newest first with Stripe's v1 pagination, filtered by ``type`` (exact) or
``types[]``, and by ``created`` (``created=…`` or ``created[gt|gte|lt|lte]=…``). Each body is
the event as stored and delivered, except ``pending_webhooks``: that is counted live from the
account's webhook deliveries still pending, in one query per page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from ingest.edge.auth import Principal
from ingest.edge.errors import InvalidRequest, ResourceMissing
from ingest.edge.http import Request, Response, json_response
from ingest.edge.list_pages import PageRequest, page_request
from ingest.edge.params import Params
from ingest.edge.routing import Route
from ingest.v1_events.store import Comparison, StoredV1Event, V1EventStore

BASE = "/v1/events"
MAX_TYPES = 20
MAX_TYPE = 100
_BOUNDS: tuple[Comparison, ...] = ("gt", "gte", "lt", "lte")


@dataclass(frozen=True, slots=True)
class EventListQuery:
    page: PageRequest
    types: tuple[str, ...]  # empty: every type
    created: tuple[tuple[Comparison, int], ...]  # (comparison, unix seconds), all must hold


def parse_event_list(values: Mapping[str, Any]) -> EventListQuery:
    params = Params(values)
    page = page_request(params)
    single = params.string("type", max_length=MAX_TYPE)
    several = params.string_list("types")
    if single is not None and several:
        raise InvalidRequest(
            "You may only specify one of these parameters: type, types.",
            code="parameters_exclusive",
            param="types",
        )
    if len(several) > MAX_TYPES:
        raise InvalidRequest(f"Invalid types: at most {MAX_TYPES} are allowed.", param="types")
    created = _created(params, values.get("created"))
    params.no_expansion()
    params.finish()
    return EventListQuery(page, (single,) if single is not None else tuple(several), created)


def _created(params: Params, raw: Any) -> tuple[tuple[Comparison, int], ...]:
    """``created=<s>`` (exactly) or ``created[gt|gte|lt|lte]=<s>``."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        exact = params.integer("created", minimum=0)
        assert exact is not None  # noqa: S101 - present
        return (("eq", exact),)
    bounds = params.object("created")
    assert bounds is not None  # noqa: S101 - present
    found: list[tuple[Comparison, int]] = []
    for key in _BOUNDS:
        value = bounds.integer(key, minimum=0)
        if value is not None:
            found.append((key, value))
    return tuple(found)


def _missing(event_id: str) -> ResourceMissing:
    return ResourceMissing(f"No such event: '{event_id}'")


class V1EventsApi:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._store = V1EventStore(pool)

    def routes(self) -> list[Route]:
        return [
            Route("GET", BASE, self.list_events),
            Route("GET", BASE + "/{id}", self.retrieve),
        ]

    async def retrieve(self, request: Request, who: Principal) -> Response:
        params = Params(request.params())
        params.no_expansion()
        params.finish()
        event_id = request.path_params["id"]
        if "\x00" in event_id:
            raise _missing(event_id)  # PostgreSQL text cannot hold NUL: no event has this id
        stored = await self._store.get(who, event_id)
        if stored is None:
            raise _missing(event_id)
        [event] = await self._with_pending_webhooks(who, [stored])
        return json_response(event)

    async def list_events(self, request: Request, who: Principal) -> Response:
        query = parse_event_list(request.params())
        found = await self._store.page(who, query.page, types=query.types, created=query.created)
        if found is None:
            assert query.page.cursor is not None  # noqa: S101 - only a cursor can miss
            param, cursor_id = query.page.cursor
            raise ResourceMissing(f"No such event: '{cursor_id}'", param=param)
        stored, has_more = found
        return json_response(
            {
                "object": "list",
                "data": await self._with_pending_webhooks(who, stored),
                "has_more": has_more,
                "url": BASE,
            }
        )

    async def _with_pending_webhooks(
        self, who: Principal, stored: list[StoredV1Event]
    ) -> list[dict[str, Any]]:
        """The stored bodies, each with the live count of its deliveries still pending."""
        counts = await self._store.pending_webhooks(who, [e.id for e in stored])
        events: list[dict[str, Any]] = []
        for e in stored:
            event = orjson.loads(e.body)
            event["pending_webhooks"] = counts.get(e.id, 0)
            events.append(event)
        return events

"""``/v2/core/events``: the v2 core events (thin events) of the caller's account and mode.

The list is newest first, in Stripe's v2 list shape ``{"data", "next_page_url",
"previous_page_url"}``; the page URLs are relative (``/v2/core/events?limit=…&page=…``), carry the
filters, and are what Stripe's SDKs request to auto-paginate. The ``page`` token is opaque: it holds
a position in the account's event order and a direction.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import asyncpg
import orjson

from ingest.core_events.store import CoreEventStore, StoredCoreEvent
from ingest.edge.auth import Principal
from ingest.edge.errors import InvalidRequest, ResourceMissing
from ingest.edge.http import Request, Response, json_response
from ingest.edge.params import Params
from ingest.edge.routing import Route
from meterflow.core_events import event_envelope

BASE = "/v2/core/events"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_TYPES = 20

Direction = Literal["after", "before"]


@dataclass(frozen=True, slots=True)
class PageToken:
    direction: Direction  # "after": older than ``seq``; "before": newer than ``seq``
    seq: int


def encode_page(token: PageToken) -> str:
    raw = orjson.dumps({"d": token.direction, "s": token.seq})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page(text: str) -> PageToken:
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        direction, seq = doc["d"], doc["s"]
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise _bad_page() from exc
    # A position is a bigint; a bool is an int to Python but no position.
    if (
        direction not in ("after", "before")
        or not isinstance(seq, int)
        or isinstance(seq, bool)
        or not -(2**63) <= seq < 2**63
    ):
        raise _bad_page()
    return PageToken(direction, seq)


def _bad_page() -> InvalidRequest:
    return InvalidRequest("Invalid page: not a page token from a previous list.", param="page")


@dataclass(frozen=True, slots=True)
class EventQuery:
    limit: int
    object_id: str | None
    types: tuple[str, ...]
    page: PageToken | None

    def url(self, page: PageToken) -> str:
        """The relative URL of another page of the same list."""
        pairs = [("limit", str(self.limit))]
        if self.object_id is not None:
            pairs.append(("object_id", self.object_id))
        pairs.extend((f"types[{i}]", t) for i, t in enumerate(self.types))
        pairs.append(("page", encode_page(page)))
        return f"{BASE}?{urlencode(pairs)}"


def parse_list_query(params: Params) -> EventQuery:
    limit = params.integer("limit", minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
    object_id = params.string("object_id", max_length=255)
    types = params.string_list("types")
    if len(types) > MAX_TYPES:
        raise InvalidRequest(f"Invalid types: at most {MAX_TYPES} are allowed.", param="types")
    page_text = params.string("page", max_length=200)
    params.finish()
    page = None if page_text is None else decode_page(page_text)
    return EventQuery(limit, object_id, tuple(types), page)


def render_event(event: StoredCoreEvent) -> dict[str, Any]:
    """The full ``v2.core.event``; ``data`` and ``related_object`` are sent as stored."""
    related = event.related_object
    envelope = event_envelope(
        event_id=event.id,
        event_type=event.type,
        created_ms=event.created_ms,
        livemode=event.livemode,
        related_object=None if related is None else orjson.Fragment(related),
    )
    return {**envelope, "data": orjson.Fragment(event.data)}


class CoreEventsApi:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._store = CoreEventStore(pool)

    def routes(self) -> list[Route]:
        return [
            Route("GET", BASE, self.list_events),
            Route("GET", BASE + "/{id}", self.retrieve),
        ]

    async def retrieve(self, request: Request, who: Principal) -> Response:
        Params(request.params()).finish()
        event_id = request.path_params["id"]
        event = await self._store.get(who, event_id)
        if event is None:
            raise ResourceMissing(f"No such v2.core.event: '{event_id}'")
        return json_response(render_event(event))

    async def list_events(self, request: Request, who: Principal) -> Response:
        query = parse_list_query(Params(request.params()))
        cursor = query.page
        events, more = await self._store.page(
            who,
            limit=query.limit,
            object_id=query.object_id,
            types=query.types,
            older_than=cursor.seq if cursor is not None and cursor.direction == "after" else None,
            newer_than=cursor.seq if cursor is not None and cursor.direction == "before" else None,
        )
        first, last = (events[0].seq, events[-1].seq) if events else (None, None)
        older: PageToken | None = None
        newer: PageToken | None = None
        if cursor is None or cursor.direction == "after":
            if more and last is not None:
                older = PageToken("after", last)
            if cursor is not None:
                newer = PageToken("before", first if first is not None else cursor.seq)
        else:
            if more and first is not None:
                newer = PageToken("before", first)
            older = PageToken("after", last if last is not None else cursor.seq)
        return json_response(
            {
                "data": [render_event(e) for e in events],
                "next_page_url": None if older is None else query.url(older),
                "previous_page_url": None if newer is None else query.url(newer),
            }
        )

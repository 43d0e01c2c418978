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

BASE = "/v1/events"
MAX_TYPES = 20
MAX_TYPE = 100
_COMPARISONS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass(frozen=True, slots=True)
class EventListQuery:
    page: PageRequest
    types: tuple[str, ...]  # empty: every type
    created: tuple[tuple[str, int], ...]  # (SQL comparison, unix seconds), all must hold


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


def _created(params: Params, raw: Any) -> tuple[tuple[str, int], ...]:
    """``created=<s>`` (exactly) or ``created[gt|gte|lt|lte]=<s>``."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        exact = params.integer("created", minimum=0)
        assert exact is not None  # noqa: S101 - present
        return (("=", exact),)
    bounds = params.object("created")
    assert bounds is not None  # noqa: S101 - present
    found: list[tuple[str, int]] = []
    for key, operator in _COMPARISONS.items():
        value = bounds.integer(key, minimum=0)
        if value is not None:
            found.append((operator, value))
    return tuple(found)


def _missing(event_id: str) -> ResourceMissing:
    return ResourceMissing(f"No such event: '{event_id}'")


class V1EventsApi:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

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
        row = await self._pool.fetchrow(
            "SELECT id, body::text AS body FROM v1_events "
            "WHERE id = $1 AND account_id = $2 AND livemode = $3",
            event_id,
            who.account_id,
            who.livemode,
        )
        if row is None:
            raise _missing(event_id)
        [event] = await self._with_pending_webhooks(who, [row])
        return json_response(event)

    async def list_events(self, request: Request, who: Principal) -> Response:
        query = parse_event_list(request.params())
        found = await self._page(who, query)
        if found is None:
            assert query.page.cursor is not None  # noqa: S101 - only a cursor can miss
            param, cursor_id = query.page.cursor
            raise ResourceMissing(f"No such event: '{cursor_id}'", param=param)
        rows, has_more = found
        return json_response(
            {
                "object": "list",
                "data": await self._with_pending_webhooks(who, rows),
                "has_more": has_more,
                "url": BASE,
            }
        )

    async def _page(
        self, who: Principal, query: EventListQuery
    ) -> tuple[list[asyncpg.Record], bool] | None:
        """Up to ``limit`` events newest first, and whether more follow (None: unknown cursor)."""
        page = query.page
        args: list[object] = [who.account_id, who.livemode, page.limit + 1]
        conditions = ""
        if page.cursor is not None:
            cursor_seq = await self._pool.fetchval(
                "SELECT seq FROM v1_events WHERE id = $1 AND account_id = $2 AND livemode = $3",
                page.cursor[1],
                who.account_id,
                who.livemode,
            )
            if cursor_seq is None:
                return None
            args.append(cursor_seq)
            conditions += f" AND seq {'>' if page.ending_before else '<'} ${len(args)}"
        if query.types:
            args.append(list(query.types))
            conditions += f" AND type = ANY(${len(args)}::text[])"
        for operator, value in query.created:
            args.append(value)
            conditions += f" AND created {operator} ${len(args)}"
        backwards = page.ending_before is not None
        rows = await self._pool.fetch(
            f"""SELECT id, body::text AS body FROM v1_events
                WHERE account_id = $1 AND livemode = $2{conditions}
                ORDER BY seq {"ASC" if backwards else "DESC"} LIMIT $3""",
            *args,
        )
        found = list(rows[: page.limit])
        if backwards:
            found.reverse()
        return found, len(rows) > page.limit

    async def _with_pending_webhooks(
        self, who: Principal, rows: list[asyncpg.Record]
    ) -> list[dict[str, Any]]:
        """The stored bodies, each with the live count of its deliveries still pending."""
        if not rows:
            return []
        # Through the account's endpoints: the (endpoint_id, event_id) index answers it.
        pending = await self._pool.fetch(
            """SELECT d.event_id, count(*)::int AS count FROM webhook_deliveries d
                   JOIN webhook_endpoints e ON e.id = d.endpoint_id
                   WHERE e.account_id = $1 AND e.livemode = $2
                     AND d.event_id = ANY($3::text[]) AND d.status = 'pending'
                   GROUP BY d.event_id""",
            who.account_id,
            who.livemode,
            [r["id"] for r in rows],
        )
        counts: dict[str, int] = {r["event_id"]: r["count"] for r in pending}
        events: list[dict[str, Any]] = []
        for row in rows:
            event = orjson.loads(row["body"])
            event["pending_webhooks"] = counts.get(row["id"], 0)
            events.append(event)
        return events

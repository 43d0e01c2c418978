"""Webhook endpoints and their delivery log in PostgreSQL, always scoped to one account and mode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import orjson

from ingest.edge.auth import Principal
from ingest.edge.list_pages import PageRequest, fetch_page
from meterflow.apikeys import random_token
from meterflow.ids import object_id

Status = Literal["enabled", "disabled"]
_SECRET_LENGTH = 32
_COLUMNS = (
    "seq, id, livemode, url, enabled_events, description, metadata::text AS metadata, secret, "
    "status, created"
)


def new_secret() -> str:
    return "whsec_" + random_token(_SECRET_LENGTH)


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    seq: int
    id: str
    livemode: bool
    url: str
    enabled_events: list[str]
    description: str | None
    metadata: dict[str, str]
    secret: str
    status: Status
    created: int

    def to_stripe(self, *, with_secret: bool = False) -> dict[str, Any]:
        """The ``webhook_endpoint`` object; Stripe shows the secret only in the create answer."""
        endpoint: dict[str, Any] = {
            "id": self.id,
            "object": "webhook_endpoint",
            "api_version": None,
            "application": None,
            "created": self.created,
            "description": self.description,
            "enabled_events": self.enabled_events,
            "livemode": self.livemode,
            "metadata": self.metadata,
            "status": self.status,
            "url": self.url,
        }
        if with_secret:
            endpoint["secret"] = self.secret
        return endpoint


@dataclass(frozen=True, slots=True)
class NewEndpoint:
    url: str
    enabled_events: list[str]
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EndpointChanges:
    url: str | None = None
    enabled_events: list[str] | None = None
    description: str | None = None
    unset_description: bool = False
    status: Status | None = None
    metadata_set: dict[str, str] = field(default_factory=dict)
    metadata_unset: list[str] = field(default_factory=list)


def _endpoint(row: asyncpg.Record) -> WebhookEndpoint:
    values = dict(row)
    values["metadata"] = orjson.loads(values["metadata"])
    return WebhookEndpoint(**values)


class WebhookEndpointStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, who: Principal, new: NewEndpoint, now_s: int) -> WebhookEndpoint:
        row = await self._pool.fetchrow(
            f"""INSERT INTO webhook_endpoints (id, account_id, livemode, url, enabled_events,
                    description, metadata, secret, created)
                VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9) RETURNING {_COLUMNS}""",
            object_id("we"),
            who.account_id,
            who.livemode,
            new.url,
            new.enabled_events,
            new.description,
            orjson.dumps(new.metadata).decode(),
            new_secret(),
            now_s,
        )
        assert row is not None  # noqa: S101 - INSERT … RETURNING always yields the row
        return _endpoint(row)

    async def get(self, who: Principal, endpoint_id: str) -> WebhookEndpoint | None:
        row = await self._pool.fetchrow(
            f"""SELECT {_COLUMNS} FROM webhook_endpoints
                WHERE id = $1 AND account_id = $2 AND livemode = $3""",
            endpoint_id,
            who.account_id,
            who.livemode,
        )
        return None if row is None else _endpoint(row)

    async def update(
        self, who: Principal, endpoint_id: str, changes: EndpointChanges
    ) -> WebhookEndpoint | None:
        row = await self._pool.fetchrow(
            f"""UPDATE webhook_endpoints SET
                    url = coalesce($4, url),
                    enabled_events = coalesce($5, enabled_events),
                    description = CASE WHEN $7 THEN NULL ELSE coalesce($6, description) END,
                    status = coalesce($8, status),
                    metadata = (metadata || $9::jsonb) - $10::text[]
                WHERE id = $1 AND account_id = $2 AND livemode = $3 RETURNING {_COLUMNS}""",
            endpoint_id,
            who.account_id,
            who.livemode,
            changes.url,
            changes.enabled_events,
            changes.description,
            changes.unset_description,
            changes.status,
            orjson.dumps(changes.metadata_set).decode(),
            changes.metadata_unset,
        )
        return None if row is None else _endpoint(row)

    async def delete(self, who: Principal, endpoint_id: str) -> bool:
        """Delete the endpoint with its pending deliveries and their log."""
        status = await self._pool.execute(
            "DELETE FROM webhook_endpoints WHERE id = $1 AND account_id = $2 AND livemode = $3",
            endpoint_id,
            who.account_id,
            who.livemode,
        )
        return status.endswith(" 1")

    async def page(
        self, who: Principal, page: PageRequest
    ) -> tuple[list[WebhookEndpoint], bool] | None:
        """Newest first: a page of endpoints and whether more follow (None: bad cursor)."""
        found = await fetch_page(self._pool, who, page, table="webhook_endpoints", columns=_COLUMNS)
        if found is None:
            return None
        rows, has_more = found
        return [_endpoint(r) for r in rows], has_more

    async def deliveries(
        self, endpoint_id: str, *, limit: int, after_id: int | None, before_id: int | None
    ) -> tuple[list[asyncpg.Record], dict[int, list[asyncpg.Record]], bool]:
        """Newest first: up to ``limit`` deliveries of an endpoint (already checked to be the
        caller's), their attempts by delivery id, and whether more follow."""
        backwards = before_id is not None
        cursor = before_id if backwards else after_id
        condition = "" if cursor is None else f" AND id {'>' if backwards else '<'} $3"
        args: list[object] = [endpoint_id, limit + 1]
        if cursor is not None:
            args.append(cursor)
        rows = await self._pool.fetch(
            f"""SELECT id, endpoint_id, event_id, event_type, status, attempt_count,
                       next_attempt_ms, created_ms, completed_ms
                FROM webhook_deliveries WHERE endpoint_id = $1{condition}
                ORDER BY id {"ASC" if backwards else "DESC"} LIMIT $2""",
            *args,
        )
        page = list(rows[:limit])
        if backwards:
            page.reverse()
        attempts = await self._attempts([r["id"] for r in page])
        return page, attempts, len(rows) > limit

    async def _attempts(self, delivery_ids: Sequence[int]) -> dict[int, list[asyncpg.Record]]:
        if not delivery_ids:
            return {}
        rows = await self._pool.fetch(
            """SELECT delivery_id, attempt, started_ms, duration_ms, status_code, error
               FROM webhook_delivery_attempts WHERE delivery_id = ANY($1::bigint[])
               ORDER BY delivery_id, attempt""",
            list(delivery_ids),
        )
        found: dict[int, list[asyncpg.Record]] = {}
        for row in rows:
            found.setdefault(row["delivery_id"], []).append(row)
        return found

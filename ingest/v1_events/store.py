"""v1 events in PostgreSQL, read-only here and always scoped to one account and mode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import asyncpg

from ingest.edge.auth import Principal
from ingest.edge.list_pages import PageRequest

Comparison = Literal["eq", "gt", "gte", "lt", "lte"]
_OPERATORS: dict[Comparison, str] = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass(frozen=True, slots=True)
class StoredV1Event:
    id: str
    body: str  # the event object as stored and delivered (JSON text)


def _event(row: asyncpg.Record) -> StoredV1Event:
    return StoredV1Event(row["id"], row["body"])


class V1EventStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, who: Principal, event_id: str) -> StoredV1Event | None:
        row = await self._pool.fetchrow(
            "SELECT id, body::text AS body FROM v1_events "
            "WHERE id = $1 AND account_id = $2 AND livemode = $3",
            event_id,
            who.account_id,
            who.livemode,
        )
        return None if row is None else _event(row)

    async def page(
        self,
        who: Principal,
        page: PageRequest,
        *,
        types: Sequence[str],
        created: Sequence[tuple[Comparison, int]],
    ) -> tuple[list[StoredV1Event], bool] | None:
        """Up to ``limit`` events newest first, and whether more follow (None: unknown cursor).

        ``types`` (empty: every type) and every ``created`` bound (unix seconds) must hold.
        """
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
        if types:
            args.append(list(types))
            conditions += f" AND type = ANY(${len(args)}::text[])"
        for comparison, value in created:
            args.append(value)
            conditions += f" AND created {_OPERATORS[comparison]} ${len(args)}"
        backwards = page.ending_before is not None
        rows = await self._pool.fetch(
            f"""SELECT id, body::text AS body FROM v1_events
                WHERE account_id = $1 AND livemode = $2{conditions}
                ORDER BY seq {"ASC" if backwards else "DESC"} LIMIT $3""",
            *args,
        )
        found = [_event(r) for r in rows[: page.limit]]
        if backwards:
            found.reverse()
        return found, len(rows) > page.limit

    async def pending_webhooks(self, who: Principal, event_ids: Sequence[str]) -> dict[str, int]:
        """Per event, its deliveries still pending (events without any are absent)."""
        if not event_ids:
            return {}
        # Through the account's endpoints: the (endpoint_id, event_id) index answers it.
        rows = await self._pool.fetch(
            """SELECT d.event_id, count(*)::int AS count FROM webhook_deliveries d
                   JOIN webhook_endpoints e ON e.id = d.endpoint_id
                   WHERE e.account_id = $1 AND e.livemode = $2
                     AND d.event_id = ANY($3::text[]) AND d.status = 'pending'
                   GROUP BY d.event_id""",
            who.account_id,
            who.livemode,
            list(event_ids),
        )
        return {r["event_id"]: r["count"] for r in rows}

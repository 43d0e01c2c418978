"""v2 core events in PostgreSQL, read-only here and always scoped to one account and mode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from ingest.edge.auth import Principal

_COLUMNS = "seq, id, type, created_ms, livemode, related_object, data"


@dataclass(frozen=True, slots=True)
class StoredCoreEvent:
    seq: int
    id: str
    type: str
    created_ms: int
    livemode: bool
    related_object: str | None  # JSON text as stored, or None
    data: str  # JSON text as stored


def _event(row: asyncpg.Record) -> StoredCoreEvent:
    return StoredCoreEvent(**dict(row))


class CoreEventStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, who: Principal, event_id: str) -> StoredCoreEvent | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM core_events "
            "WHERE id = $1 AND account_id = $2 AND livemode = $3",
            event_id,
            who.account_id,
            who.livemode,
        )
        return None if row is None else _event(row)

    async def page(
        self,
        who: Principal,
        *,
        limit: int,
        object_id: str | None,
        types: Sequence[str],
        older_than: int | None = None,
        newer_than: int | None = None,
    ) -> tuple[list[StoredCoreEvent], bool]:
        """Up to ``limit`` events newest first, and whether more lie beyond them: those older
        than the ``seq`` ``older_than``, or the oldest of those newer than ``newer_than``."""
        args: list[object] = [who.account_id, who.livemode, limit + 1]
        conditions = ""
        if object_id is not None:
            args.append(object_id)
            conditions += f" AND related_object_id = ${len(args)}"
        if types:
            args.append(list(types))
            conditions += f" AND type = ANY(${len(args)}::text[])"
        backwards = newer_than is not None
        cursor = newer_than if newer_than is not None else older_than
        if cursor is not None:
            args.append(cursor)
            conditions += f" AND seq {'>' if backwards else '<'} ${len(args)}"
        rows = await self._pool.fetch(
            f"""SELECT {_COLUMNS} FROM core_events
                WHERE account_id = $1 AND livemode = $2{conditions}
                ORDER BY seq {"ASC" if backwards else "DESC"} LIMIT $3""",
            *args,
        )
        page = [_event(r) for r in rows[:limit]]
        if backwards:
            page.reverse()
        return page, len(rows) > limit

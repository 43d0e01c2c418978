"""One billing object's row, looked up by id within the caller's account and mode."""

from __future__ import annotations

import asyncpg

from ingest.edge.auth import Principal
from meterflow.store.pg import Conn


async def owned_row(
    db: Conn | asyncpg.Pool,
    who: Principal,
    *,
    table: str,
    columns: str,
    object_id: str,
    condition: str = "true",
    lock: bool = False,
) -> asyncpg.Record | None:
    """The row of ``object_id`` in ``table`` if the caller owns it and ``condition`` holds;
    ``lock`` keeps it locked until the transaction ends. ``table``, ``columns`` and
    ``condition`` come from module constants of the stores, never from a request."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"""SELECT {columns} FROM {table}
            WHERE id = $1 AND account_id = $2 AND livemode = $3 AND {condition}
            {"FOR UPDATE" if lock else ""}""",
        object_id,
        who.account_id,
        who.livemode,
    )
    return row

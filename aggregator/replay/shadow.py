"""The shadow tables a rebuild folds into: a schema of their own beside the live tables.

The shadow schema holds tables named and shaped like the fold's (``event_identifiers``,
``meter_events``, ``rollups_minute``, ``rollups_hour``, ``rollups_day``, ``window_survivors``,
``usage_changes``, ``consumer_offsets``). A connection whose ``search_path`` puts the shadow
schema first therefore runs the fold's own statements, unchanged, against the shadow tables,
while ``meters`` and ``event_series`` (not shadowed) still resolve to the live ones: series ids
mean the same on both sides. Everything but the raw events is
unlogged: a crashed rebuild is simply started again.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from meterflow.store.pg import Conn

SHADOW_SCHEMA = "meterflow_rebuild"

# Shadowed tables, created LIKE their live namesakes (indexes and defaults included).
_UNLOGGED = (
    "event_identifiers",
    "rollups_minute",
    "rollups_hour",
    "rollups_day",
    "window_survivors",
    "usage_changes",
    "consumer_offsets",
)


@dataclass(frozen=True, slots=True)
class Schemas:
    """The live schema and the shadow schema, each quoted for use in SQL text."""

    live: str
    shadow: str


async def live_schema(conn: Conn) -> str:
    """The schema the live fold tables are in (as quoted SQL), whatever the search_path."""
    found = await conn.fetchval(
        """SELECT quote_ident(n.nspname) FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.oid = 'rollups_minute'::regclass"""
    )
    return str(found)


async def create_shadow(conn: Conn, live: str) -> Schemas:
    """Drop what a crashed rebuild left, then create empty shadow tables."""
    shadow = SHADOW_SCHEMA
    async with conn.transaction():
        await conn.execute(f"DROP SCHEMA IF EXISTS {shadow} CASCADE")
        await conn.execute(f"CREATE SCHEMA {shadow}")
        for table in _UNLOGGED:
            await conn.execute(
                f"CREATE UNLOGGED TABLE {shadow}.{table} (LIKE {live}.{table} INCLUDING ALL)"
            )
        # Partitioned like the live table, so the fold creates day partitions as it goes.
        await conn.execute(
            f"""CREATE TABLE {shadow}.meter_events (LIKE {live}.meter_events INCLUDING DEFAULTS)
                PARTITION BY RANGE (event_ts)"""
        )
        await conn.execute(f"CREATE INDEX ON {shadow}.meter_events (series_id, event_ts)")
    return Schemas(live=live, shadow=shadow)


async def drop_shadow(conn: Conn) -> None:
    await conn.execute(f"DROP SCHEMA IF EXISTS {SHADOW_SCHEMA} CASCADE")


async def shadow_connection(database_url: str, schemas: Schemas) -> asyncpg.Connection:
    """A connection on which the fold's unqualified table names mean the shadow tables."""
    return await asyncpg.connect(
        database_url, server_settings={"search_path": f"{schemas.shadow}, {schemas.live}"}
    )

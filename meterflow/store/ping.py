"""Whether PostgreSQL answers: the database part of a process's readiness."""

from __future__ import annotations

import asyncpg


async def ping(pool: asyncpg.Pool) -> None:
    """One trivial round trip through ``pool``; raises what the driver raises if it fails."""
    await pool.fetchval("SELECT 1")

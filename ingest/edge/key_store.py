"""Secret keys in PostgreSQL, looked up by digest: the :class:`~ingest.edge.auth.KeyDirectory`
the authenticator caches in front of."""

from __future__ import annotations

import asyncpg

from ingest.edge.auth import Principal


class PgKeyDirectory:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def principal_for(self, key_hash: bytes) -> Principal | None:
        """Whose key has this digest, unless it was revoked."""
        row = await self._pool.fetchrow(
            "SELECT account_id, livemode FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            key_hash,
        )
        return None if row is None else Principal(row["account_id"], row["livemode"])

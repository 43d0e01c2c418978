"""Accounts and their API keys in PostgreSQL (used by the CLI, the launcher and tests)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from meterflow.apikeys import display_hint, generate_secret_key, hash_key
from meterflow.ids import object_id


@dataclass(frozen=True, slots=True)
class NewAccount:
    account_id: str
    secret_key: str


async def create_account(
    conn: asyncpg.Connection, name: str, *, livemode: bool = False
) -> NewAccount:
    """Create an account with one secret key; the key is returned once and stored only hashed."""
    account_id = object_id("acct", length=16)
    async with conn.transaction():
        await conn.execute("INSERT INTO accounts (id, name) VALUES ($1, $2)", account_id, name)
        key = await create_key(conn, account_id, livemode=livemode)
    return NewAccount(account_id=account_id, secret_key=key)


async def create_key(conn: asyncpg.Connection, account_id: str, *, livemode: bool) -> str:
    key = generate_secret_key(livemode=livemode)
    await conn.execute(
        """INSERT INTO api_keys (key_hash, account_id, livemode, display_hint)
           VALUES ($1, $2, $3, $4)""",
        hash_key(key),
        account_id,
        livemode,
        display_hint(key),
    )
    return key


async def account_by_name(conn: asyncpg.Connection, name: str) -> str | None:
    row = await conn.fetchval(
        "SELECT id FROM accounts WHERE name = $1 ORDER BY created_at LIMIT 1", name
    )
    return None if row is None else str(row)


async def revoke_key(conn: asyncpg.Connection, key: str) -> bool:
    status = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1 AND revoked_at IS NULL",
        hash_key(key),
    )
    return bool(status.endswith(" 1"))

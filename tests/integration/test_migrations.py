"""migrate() against a real PostgreSQL: one fresh, unmigrated database per test.

The server is the session's ``pg_admin_dsn`` (tests/conftest.py, from ``postgres_service``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest

from meterflow.store.migrations import (
    MIGRATION_LOCK_KEY,
    Migration,
    MigrationError,
    applied_migrations,
    checksum,
    load_migrations,
    migrate,
)
from tests.fixtures.postgres import create_fresh_database, drop_database

pytestmark = pytest.mark.integration

SHIPPED = [m.name for m in load_migrations()]


@pytest.fixture
async def database(pg_admin_dsn: str) -> AsyncIterator[str]:
    """Empty, not even migrated: unlike conftest's ``database_url``, which clones the template."""
    name = f"mf_migrations_{uuid.uuid4().hex[:12]}"
    dsn = await create_fresh_database(pg_admin_dsn, name)
    yield dsn
    await drop_database(pg_admin_dsn, name)


async def _fetchval(dsn: str, query: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def test_migrate_applies_and_records_every_file(database: str) -> None:
    assert await migrate(database) == SHIPPED
    assert "0001_accounts_and_meters" in SHIPPED
    assert await applied_migrations(database) == SHIPPED
    assert await _fetchval(database, "SELECT to_regclass('meters')::text") == "meters"
    recorded = await _fetchval(database, "SELECT checksum FROM schema_migrations WHERE version = 1")
    assert recorded == load_migrations()[0].checksum


async def test_second_run_applies_nothing(database: str) -> None:
    await migrate(database)
    assert await migrate(database) == []
    assert await _fetchval(database, "SELECT count(*) FROM schema_migrations") == len(SHIPPED)


async def test_applied_migrations_on_a_new_database_is_empty(database: str) -> None:
    assert await applied_migrations(database) == []


async def test_concurrent_migrators_apply_each_migration_once(database: str) -> None:
    # Hold the lock so both migrators are provably waiting on it before either can proceed.
    holder = await asyncpg.connect(database)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        tasks = [asyncio.create_task(migrate(database)) for _ in range(2)]
        deadline = time.monotonic() + 15
        while not any(task.done() for task in tasks):
            waiting = await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            if waiting == 2:
                break
            assert time.monotonic() < deadline, f"only {waiting} migrator(s) reached the lock"
            await asyncio.sleep(0.02)
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        async with asyncio.timeout(30):
            results = await asyncio.gather(*tasks)
    finally:
        await holder.close()
    assert sorted(results, key=len) == [[], SHIPPED]
    assert await _fetchval(database, "SELECT count(*) FROM schema_migrations") == len(SHIPPED)


async def test_changed_applied_migration_is_refused(database: str) -> None:
    await migrate(database)
    first, *rest = load_migrations()
    edited_sql = first.sql + "\n-- an afterthought\n"
    edited = replace(first, sql=edited_sql, checksum=checksum(edited_sql.encode()))
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(database, migrations=[edited, *rest])


async def test_failing_migration_leaves_no_trace(database: str) -> None:
    broken = Migration(
        version=9999,
        name="9999_broken",
        sql="CREATE TABLE half_done (id int); SELECT 1 / 0;",
        checksum=checksum(b"broken"),
    )
    with pytest.raises(MigrationError, match="9999_broken failed"):
        await migrate(database, migrations=[*load_migrations(), broken])
    assert await applied_migrations(database) == SHIPPED
    assert await _fetchval(database, "SELECT to_regclass('half_done')") is None


async def test_clone_of_a_migrated_template_needs_no_migrations(pg_admin_dsn: str) -> None:
    suffix = uuid.uuid4().hex[:12]
    template, clone = f"template_{suffix}", f"clone_{suffix}"
    try:
        await migrate(await create_fresh_database(pg_admin_dsn, template))
        clone_dsn = await create_fresh_database(pg_admin_dsn, clone, template=template)
        assert await applied_migrations(clone_dsn) == SHIPPED
        assert await migrate(clone_dsn) == []
    finally:
        await drop_database(pg_admin_dsn, clone)
        await drop_database(pg_admin_dsn, template)

"""0016_dedupe_digests upgrades a database holding text-keyed identifiers in place."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from meterflow.store.migrations import Migration, load_migrations, migrate
from tests.fixtures.postgres import database_before

pytestmark = pytest.mark.integration

DIGESTS = 16  # the migration that keys the dedupe set by digest
# (account, livemode, identifier, received_ms): one identifier in three scopes, and triples whose
# concatenations would collide without the account id's length prefix.
OLD_ROWS = [
    ("acct_a", False, "evt-1", 1_000),
    ("acct_a", True, "evt-1", 2_000),
    ("acct_b", False, "evt-1", 3_000),
    ("acct_ab", False, "c", 4_000),
    ("acct_a", False, "bc", 5_000),
]


def _through_digests() -> list[Migration]:
    return [m for m in load_migrations() if m.version <= DIGESTS]


@pytest.fixture
async def before_digests(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A database migrated up to the migration before the digests."""
    async with database_before(pg_admin_dsn, DIGESTS, "mf_digests") as dsn:
        yield dsn


async def test_identifiers_keep_their_rows_and_are_found_by_digest(before_digests: str) -> None:
    conn = await asyncpg.connect(before_digests)
    try:
        await conn.executemany(
            """INSERT INTO event_identifiers
                   (account_id, livemode, identifier, meter_id, customer, event_ts, received_ms)
               VALUES ($1, $2, $3, 'mtr_1', 'cus_' || $3, $4 / 1000, $4)""",
            OLD_ROWS,
        )
        applied = await migrate(before_digests, migrations=_through_digests())
        assert applied == [m.name for m in load_migrations() if m.version == DIGESTS]

        rows = await conn.fetch(
            """SELECT e.*, o.identifier FROM event_identifiers e
               JOIN unnest($1::text[], $2::bool[], $3::text[]) AS o(account_id, livemode,
                                                                    identifier)
                 ON e.digest = event_digest(o.account_id, o.livemode, o.identifier)
              ORDER BY e.received_ms""",
            *zip(*((a, m, i) for a, m, i, _ in OLD_ROWS), strict=True),
        )
        assert [(r["account_id"], r["livemode"], r["identifier"], r["received_ms"]) for r in rows] \
            == OLD_ROWS  # fmt: skip
        assert all(r["customer"] == "cus_" + r["identifier"] for r in rows)
        assert len({r["digest"] for r in rows}) == len(OLD_ROWS)

        # The primary key is the digest: the same identifier again in a scope is refused.
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                """INSERT INTO event_identifiers
                       (digest, account_id, livemode, meter_id, customer, event_ts, received_ms)
                   VALUES (event_digest('acct_b', false, 'evt-1'), 'acct_b', false, 'mtr_2',
                           'cus_2', 9, 9000)"""
            )
        indexes = await conn.fetch(
            """SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'event_identifiers'
               ORDER BY indexname"""
        )
        assert [r["indexname"] for r in indexes] == [
            "event_identifiers_age",
            "event_identifiers_pkey",
        ]
        assert "brin (received_ms)" in indexes[0]["indexdef"]
        assert "(digest)" in indexes[1]["indexdef"]
        assert await conn.fetchval("SELECT to_regclass('event_identifiers_text')") is None
    finally:
        await conn.close()


async def test_the_digest_is_md5_of_the_length_prefixed_scope_and_identifier(
    before_digests: str,
) -> None:
    await migrate(before_digests, migrations=_through_digests())
    conn = await asyncpg.connect(before_digests)
    try:
        digest = await conn.fetchval("SELECT event_digest('acct_a', true, 'evt-1')")
        expected = await conn.fetchval("SELECT md5('6:acct_alevt-1')::uuid")
        assert digest == expected
        assert await conn.fetchval("SELECT event_digest(NULL, true, 'evt-1')") is None
    finally:
        await conn.close()

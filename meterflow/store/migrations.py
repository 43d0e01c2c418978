"""Forward-only schema migrations from ``sql/NNNN_name.sql``.

Each file runs once, in its own transaction together with its row in ``schema_migrations``. A
session-level advisory lock serialises concurrent migrators: the second waits, then finds nothing
left to do. An applied file must never change; fix mistakes with a new migration.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files

import asyncpg

from meterflow.errors import MeterflowError

# Fixed key for pg_advisory_lock: b"mflwmigr" read as a signed 64-bit integer.
MIGRATION_LOCK_KEY = int.from_bytes(b"mflwmigr", "big", signed=True)
MIGRATION_FILE = re.compile(r"(?P<version>\d{4})_(?P<slug>[a-z0-9]+(?:_[a-z0-9]+)*)\.sql")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     int PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""

_RECORD = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"


class MigrationError(MeterflowError):
    """The migration files or the database's migration history are not in a state we can apply."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the file name without ".sql", e.g. "0001_accounts_and_meters"
    sql: str
    checksum: str


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str


def checksum(content: bytes) -> str:
    """SHA-256 of the file with line endings normalised, so a CRLF checkout is not an edit."""
    return hashlib.sha256(content.replace(b"\r\n", b"\n")).hexdigest()


def parse_migrations(sources: Iterable[tuple[str, bytes]]) -> list[Migration]:
    """Validate ``(file name, content)`` pairs and order them by version.

    Names not ending in ``.sql`` are ignored (``__init__.py``); a ``.sql`` file that does not match
    ``NNNN_lower_snake.sql``, version 0000, or two files with one version are errors.
    """
    by_version: dict[int, Migration] = {}
    for filename, content in sources:
        if not filename.endswith(".sql"):
            continue
        match = MIGRATION_FILE.fullmatch(filename)
        if match is None:
            raise MigrationError(f"migration file {filename!r} is not named NNNN_lower_snake.sql")
        version = int(match["version"])
        if version == 0:
            raise MigrationError(f"migration file {filename!r}: versions start at 0001")
        if version in by_version:
            raise MigrationError(
                f"migration files {by_version[version].name}.sql and {filename} share a version"
            )
        by_version[version] = Migration(
            version=version,
            name=filename.removesuffix(".sql"),
            sql=content.decode("utf-8"),
            checksum=checksum(content),
        )
    return [by_version[v] for v in sorted(by_version)]


def pending_migrations(
    available: Sequence[Migration], applied: Mapping[int, AppliedMigration]
) -> list[Migration]:
    """The migrations still to apply, after checking the history against the files."""
    known = {m.version: m for m in available}
    for version, record in sorted(applied.items()):
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                f"database has migration {record.name}, which this code does not have; "
                "is this an older release than the one that migrated it?"
            )
        if migration.checksum != record.checksum:
            raise MigrationError(
                f"migration {migration.name} was changed after it was applied "
                f"(checksum {record.checksum[:12]} in the database, {migration.checksum[:12]} "
                "on disk); applied migrations are forward-only: add a new one instead"
            )
    newest_applied = max(applied, default=0)
    pending = [m for m in available if m.version not in applied]
    if pending and pending[0].version < newest_applied:
        raise MigrationError(
            f"migration {pending[0].name} is older than the newest applied one "
            f"({applied[newest_applied].name}); renumber it after {newest_applied:04d}"
        )
    return pending


def load_migrations(package: str = "sql") -> list[Migration]:
    """The migrations shipped as package data in ``package``."""
    root = files(package)
    return parse_migrations(
        (entry.name, entry.read_bytes()) for entry in root.iterdir() if entry.is_file()
    )


async def migrate(dsn: str, *, migrations: Sequence[Migration] | None = None) -> list[str]:
    """Apply pending migrations (default: :func:`load_migrations`); return the names applied."""
    available = load_migrations() if migrations is None else list(migrations)
    applied_names: list[str] = []
    conn = await asyncpg.connect(dsn)
    try:
        # Released when the session ends, even if we fail half way.
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(_CREATE_TABLE)
        for migration in pending_migrations(available, await _applied(conn)):
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        _RECORD, migration.version, migration.name, migration.checksum
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {migration.name} failed: {exc}") from exc
            applied_names.append(migration.name)
    finally:
        await conn.close()
    return applied_names


async def applied_migrations(dsn: str) -> list[str]:
    """Names of the migrations recorded in the database, oldest first."""
    conn = await asyncpg.connect(dsn)
    try:
        return [record.name for _, record in sorted((await _applied(conn)).items())]
    finally:
        await conn.close()


async def _applied(conn: asyncpg.Connection) -> dict[int, AppliedMigration]:
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return {}
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    return {
        row["version"]: AppliedMigration(row["version"], row["name"], row["checksum"])
        for row in rows
    }

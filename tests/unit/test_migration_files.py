"""Discovering, ordering and validating migration files: no database involved."""

from __future__ import annotations

import pytest

from meterflow.store.migrations import (
    AppliedMigration,
    Migration,
    MigrationError,
    checksum,
    load_migrations,
    parse_migrations,
    pending_migrations,
)


def _files(*names: str) -> list[tuple[str, bytes]]:
    return [(name, f"-- {name}\n".encode()) for name in names]


def _record(migration: Migration) -> AppliedMigration:
    return AppliedMigration(migration.version, migration.name, migration.checksum)


def test_orders_by_version_not_by_listing_order() -> None:
    parsed = parse_migrations(_files("0010_ten.sql", "0002_two.sql", "0001_one.sql"))
    assert [(m.version, m.name) for m in parsed] == [
        (1, "0001_one"),
        (2, "0002_two"),
        (10, "0010_ten"),
    ]


def test_ignores_files_that_are_not_sql() -> None:
    parsed = parse_migrations(_files("__init__.py", "README.md", "0001_one.sql"))
    assert [m.name for m in parsed] == ["0001_one"]


def test_keeps_content_and_its_checksum() -> None:
    (migration,) = parse_migrations([("0001_one.sql", b"CREATE TABLE t ();\n")])
    assert migration.sql == "CREATE TABLE t ();\n"
    assert migration.checksum == checksum(b"CREATE TABLE t ();\n")


@pytest.mark.parametrize(
    "filename",
    [
        "1_one.sql",
        "00001_one.sql",
        "0001-one.sql",
        "0001_One.sql",
        "0001_.sql",
        "0001.sql",
        "0001_one__two.sql",
        "0001_one_.sql",
        "0001_one two.sql",
        "abcd_one.sql",
        "0001_one.SQL.sql",
    ],
)
def test_rejects_badly_named_sql_files(filename: str) -> None:
    with pytest.raises(MigrationError, match="NNNN_lower_snake"):
        parse_migrations(_files(filename))


def test_rejects_version_zero() -> None:
    with pytest.raises(MigrationError, match="start at 0001"):
        parse_migrations(_files("0000_zero.sql"))


def test_rejects_two_files_with_one_version() -> None:
    with pytest.raises(MigrationError, match="share a version"):
        parse_migrations(_files("0001_one.sql", "0001_uno.sql"))


def test_checksum_is_sha256_hex_and_ignores_crlf() -> None:
    assert checksum(b"SELECT 1;\r\nSELECT 2;\r\n") == checksum(b"SELECT 1;\nSELECT 2;\n")
    assert checksum(b"SELECT 1;") != checksum(b"SELECT 2;")
    assert len(checksum(b"")) == 64


def test_pending_is_everything_on_a_new_database() -> None:
    available = parse_migrations(_files("0001_one.sql", "0002_two.sql"))
    assert pending_migrations(available, {}) == available


def test_pending_skips_applied_migrations() -> None:
    one, two, three = parse_migrations(_files("0001_one.sql", "0002_two.sql", "0003_three.sql"))
    applied = {1: _record(one), 2: _record(two)}
    assert pending_migrations([one, two, three], applied) == [three]


def test_changed_applied_migration_is_an_error() -> None:
    (one,) = parse_migrations(_files("0001_one.sql"))
    applied = {1: AppliedMigration(1, one.name, checksum(b"what was applied"))}
    with pytest.raises(MigrationError, match="changed after it was applied"):
        pending_migrations([one], applied)


def test_applied_migration_missing_from_the_files_is_an_error() -> None:
    (one,) = parse_migrations(_files("0001_one.sql"))
    applied = {1: _record(one), 2: AppliedMigration(2, "0002_two", checksum(b""))}
    with pytest.raises(MigrationError, match="does not have"):
        pending_migrations([one], applied)


def test_new_migration_older_than_an_applied_one_is_an_error() -> None:
    one, two, three = parse_migrations(_files("0001_one.sql", "0002_two.sql", "0003_three.sql"))
    with pytest.raises(MigrationError, match="older than the newest applied"):
        pending_migrations([one, two, three], {1: _record(one), 3: _record(three)})


def test_shipped_migrations_load_in_order() -> None:
    shipped = load_migrations()
    assert shipped[0].name == "0001_accounts_and_meters"
    assert [m.version for m in shipped] == sorted({m.version for m in shipped})

"""The local PostgreSQL's settings: sized to the machine when durable, fast when not."""

from pathlib import Path

from deploy.postgres_server import (
    SHARED_BUFFERS_MAX_MB,
    SHARED_BUFFERS_MIN_MB,
    PostgresServerConfig,
    machine_memory_bytes,
    server_settings,
    shared_buffers_mb,
)

GIB = 2**30


def test_shared_buffers_are_a_quarter_of_memory_within_bounds() -> None:
    assert shared_buffers_mb(4 * GIB) == 1024
    assert shared_buffers_mb(256 * 2**20) == SHARED_BUFFERS_MIN_MB
    assert shared_buffers_mb(24 * GIB) == 6144
    assert shared_buffers_mb(64 * GIB) == SHARED_BUFFERS_MAX_MB


def test_a_durable_server_is_sized_for_the_fold_and_a_test_server_is_not() -> None:
    durable = server_settings(PostgresServerConfig(data_dir=Path("/d"), port=5432))
    assert durable["shared_buffers"] == f"{shared_buffers_mb(machine_memory_bytes())}MB"
    assert durable["max_wal_size"] == "16GB"
    assert durable["wal_compression"] == "on"
    assert "fsync" not in durable
    fast = server_settings(PostgresServerConfig(data_dir=Path("/d"), port=5432, durable=False))
    assert fast["shared_buffers"] == "128MB"
    assert fast["fsync"] == "off"
    assert "wal_compression" not in fast


def test_extra_settings_win() -> None:
    config = PostgresServerConfig(
        data_dir=Path("/d"), port=5432, extra_settings={"shared_buffers": "4GB"}
    )
    assert server_settings(config)["shared_buffers"] == "4GB"

"""The local PostgreSQL `meterflow up` runs takes passwords from everyone.

Each role's password is generated once, kept in the data directory (0600) and reused; a cluster
left on trust by an earlier version moves to passwords on its next start; the unix socket lives
in a directory only the server's user may enter.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from deploy.ports import free_port
from deploy.postgres_server import (
    HOST,
    SUPERUSER,
    LocalPostgresServer,
    PostgresServerConfig,
    find_bin_dir,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _config(tmp_path: Path, *, password_auth: bool = True) -> PostgresServerConfig:
    data_dir = tmp_path / "pg"
    data_dir.mkdir(exist_ok=True)
    data_dir.chmod(0o755)  # as under /var/lib: the server's user must reach its own files
    return PostgresServerConfig(
        data_dir=data_dir, port=free_port(), durable=False, password_auth=password_auth
    )


def _without_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    return parts._replace(netloc=f"{parts.username}@{parts.hostname}:{parts.port}").geturl()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _refused(dsn: str, password: str | None = None) -> bool:
    try:
        conn = await asyncpg.connect(dsn, password=password)
    except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InterfaceError):
        return True
    await conn.close()
    return False


async def _connects(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT true"))
    finally:
        await conn.close()


async def test_every_role_needs_its_generated_password(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with LocalPostgresServer(config) as server:
        for role in (SUPERUSER, config.user):
            assert _mode(config.password_file(role)) == 0o600
        assert _mode(config.socket_dir) == 0o700
        assert urlsplit(server.dsn).password
        assert await _connects(server.dsn)
        assert await _connects(server.admin_dsn)
        for dsn in (server.dsn, server.admin_dsn):
            assert await _refused(_without_password(dsn), password="")
            assert await _refused(_without_password(dsn), password="not-the-password")
        hba = (config.pgdata / "pg_hba.conf").read_text()
        assert "trust" not in hba.replace("# ", "")
        first = server.dsn, server.admin_dsn
    with LocalPostgresServer(config) as server:  # the passwords are reused
        assert (server.dsn, server.admin_dsn) == first
        assert await _connects(server.dsn)


async def test_a_cluster_left_on_trust_moves_to_passwords(tmp_path: Path) -> None:
    with LocalPostgresServer(_config(tmp_path, password_auth=False)) as server:
        assert await _connects(server.dsn)  # trust: no password at all
    config = _config(tmp_path)
    with LocalPostgresServer(config) as server:
        assert urlsplit(server.dsn).password
        assert await _connects(server.dsn)
        assert await _connects(server.admin_dsn)
        assert await _refused(_without_password(server.admin_dsn), password="")
        assert await _refused(_without_password(server.dsn), password="")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another local user")
def test_another_local_user_gets_nothing(tmp_path: Path) -> None:
    """``nobody`` can neither enter the socket directory nor log in over TCP without a password."""
    config = _config(tmp_path)
    psql = find_bin_dir() / "psql"
    nobody = pwd.getpwnam("nobody")
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}
    with LocalPostgresServer(config):
        for host in (str(config.socket_dir), HOST):
            argv = [str(psql), "-X", "-w", "-h", host, "-p", str(config.port), "-U", SUPERUSER]
            result = subprocess.run(
                [*argv, "-d", "postgres", "-c", "SELECT 1"],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
                env=env,
                cwd="/",
                user=nobody.pw_uid,
                group=nobody.pw_gid,
                extra_groups=[],
            )
            assert result.returncode != 0, (host, result.stdout)
            expected = "Permission denied" if host != HOST else "password"
            assert expected in result.stderr, (host, result.stderr)

"""The commands find a running `meterflow up` stack from its record, with nothing set; an explicit
DATABASE_URL or KAFKA_BOOTSTRAP_SERVERS wins; a stopped stack's record is ignored."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from pathlib import Path

import pytest

from meterflow.settings.local_stack import LocalStack, write_local_stack

pytestmark = pytest.mark.integration


def _nothing_set(data_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without connections, the data directory pointing at ``data_dir``."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    return {**env, "METERFLOW_DATA_DIR": str(data_dir), **extra}


async def _meterflow(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _stack(database_url: str, kafka_bootstrap: str, pid: int | None = None) -> LocalStack:
    return LocalStack(database_url, kafka_bootstrap, "http://127.0.0.1:8080", pid or os.getpid())


async def test_commands_find_the_local_stack_with_nothing_set(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    write_local_stack(tmp_path, _stack(database_url, kafka_bootstrap))
    env = _nothing_set(tmp_path, METERFLOW_TOPIC_PREFIX=f"t_{uuid.uuid4().hex[:8]}.")

    assert await _meterflow(env, "migrate") == (0, "applied 0 migration(s)\n", "")
    code, out, _ = await _meterflow(env, "accounts", "create", "--name", "found")
    assert code == 0
    assert re.search(r"secret key: sk_test_\w+", out)
    code, out, _ = await _meterflow(env, "topics")
    assert (code, out.split(" topic(s)")[0]) == (0, "4")
    code, out, _ = await _meterflow(env, "maintenance")
    assert code == 0
    code, out, _ = await _meterflow(env, "config")
    assert f"KAFKA_BOOTSTRAP_SERVERS={kafka_bootstrap}\n" in out


async def test_explicit_connections_win_over_the_local_stack(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    write_local_stack(tmp_path, _stack(database_url, kafka_bootstrap))
    elsewhere = "postgresql://someone:pw@127.0.0.1:1/elsewhere"
    env = _nothing_set(tmp_path, DATABASE_URL=elsewhere, KAFKA_BOOTSTRAP_SERVERS="kafka:9092")
    code, out, _ = await _meterflow(env, "config")
    assert code == 0
    assert "DATABASE_URL=postgresql://someone:***@127.0.0.1:1/elsewhere\n" in out
    assert "KAFKA_BOOTSTRAP_SERVERS=kafka:9092\n" in out
    code, _, err = await _meterflow(env, "accounts", "create")
    assert code != 0  # it tried the explicit database, which refuses connections
    assert "Connection refused" in err or "ConnectionRefusedError" in err


async def test_the_record_of_a_stopped_stack_is_ignored(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await gone.wait()
    write_local_stack(tmp_path, _stack(database_url, kafka_bootstrap, gone.pid))
    code, _, err = await _meterflow(_nothing_set(tmp_path), "accounts", "create")
    assert code == 2
    assert "DATABASE_URL is not set and no local stack is running" in err
    assert "meterflow up" in err

"""The operations subcommands against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


async def _meterflow(
    database_url: str, *args: str, data_dir: Path | None = None
) -> tuple[int, str, str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    if data_dir is not None:  # where a running `meterflow up` would have left its record
        env["METERFLOW_DATA_DIR"] = str(data_dir)
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


async def test_accounts_and_keys_from_the_command_line(database_url: str, ingest_url: str) -> None:
    code, out, _ = await _meterflow(database_url, "migrate")
    assert (code, out.strip()) == (0, "applied 0 migration(s)")  # the template is migrated

    code, out, _ = await _meterflow(database_url, "accounts", "create", "--name", "acme")
    assert code == 0
    account = re.search(r"account: (acct_\w+)", out)
    test_key = re.search(r"secret key: (sk_test_\w+)", out)
    assert account is not None
    assert test_key is not None

    code, out, _ = await _meterflow(
        database_url, "accounts", "keys", "create", account.group(1), "--live"
    )
    live_key = out.strip()
    assert code == 0
    assert live_key.startswith("sk_live_")

    async with httpx.AsyncClient(base_url=ingest_url) as http:
        for key, livemode in ((test_key.group(1), False), (live_key, True)):
            created = await http.post(
                "/v1/billing/meters",
                auth=(key, ""),
                data={
                    "display_name": "d",
                    "event_name": "e",
                    "default_aggregation[formula]": "count",
                },
            )
            assert created.json()["livemode"] is livemode

    code, out, _ = await _meterflow(database_url, "accounts", "keys", "revoke", live_key)
    assert (code, out.strip()) == (0, "revoked")
    code, out, _ = await _meterflow(database_url, "accounts", "keys", "revoke", live_key)
    assert (code, out.strip()) == (1, "no such active key")


async def test_config_masks_the_database_password() -> None:
    code, out, _ = await _meterflow("postgresql://mf:s3cret@127.0.0.1:5432/mf", "config")
    assert code == 0
    assert "DATABASE_URL=postgresql://mf:***@127.0.0.1:5432/mf" in out
    assert "s3cret" not in out


async def test_commands_needing_a_database_say_so(tmp_path: Path) -> None:
    code, _, err = await _meterflow("", "accounts", "create", data_dir=tmp_path)
    assert code == 2
    assert "DATABASE_URL is not set" in err

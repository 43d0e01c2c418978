"""``meterflow import`` against real Kafka and PostgreSQL: a million lines, the importer killed
with SIGKILL halfway and run again, give exact totals once folded, and a reject file with each
bad line once, by line number and code; JSON Lines from standard input."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import asyncpg
import orjson
import pytest

from meterflow.kafka.topics import meter_events_topic
from meterflow.settings import Settings
from tests.conftest import AccountFactory
from tests.fixtures.aggregator_processes import Aggregators
from tests.fixtures.meter_events import folded_offsets, wait_until
from tests.fixtures.meter_events_topic import MeterEventsReader
from tests.fixtures.meterflow_cli import cli_env, meterflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

LINES = 1_000_000
CUSTOMERS = 1000
HEADER = "event_name,timestamp,identifier,payload.stripe_customer_id,payload.value\n"


async def _meter(database_url: str, account_id: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO meters (id, account_id, livemode, event_name, display_name, formula,
                   customer_key, value_key, event_time_window, created, updated)
               VALUES ($1, $2, false, 'tokens', 'Tokens', 'sum', 'stripe_customer_id',
                       'value', NULL, 0, 0)""",
            f"mtr_test_import{account_id[-12:]}",
            account_id,
        )
    finally:
        await conn.close()


def _write_file(path: Path, now: int) -> tuple[dict[str, tuple[Decimal, int]], dict[int, str]]:
    """The CSV, the expected (sum, count) per customer, and the bad lines with their codes.

    Half the lines name an identifier; every 5,000th repeats the line before it (a resend,
    counted once); every 997th has a value that is not a number, every 1,009th an unknown
    event name."""
    sums: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    bad: dict[int, str] = {}
    rows = [HEADER]
    previous = ""
    for n in range(LINES):
        line = n + 2  # the header is line 1
        if n % 5000 == 4999:
            rows.append(previous)
            continue
        customer = f"cus_{n % CUSTOMERS}"
        name, value = "tokens", n % 100
        text = str(value)
        if n % 997 == 3:
            text, bad[line] = "lots", "payload_invalid_value"
        elif n % 1009 == 5:
            name, bad[line] = "nope", "no_meter"
        else:
            sums[customer] += value
            counts[customer] += 1
        identifier = f"line-{n}" if n % 2 == 0 else ""
        previous = f"{name},{now - n % 172_800},{identifier},{customer},{text}\n"
        rows.append(previous)
    path.write_text("".join(rows))
    for n in range(4999, LINES, 5000):  # a repeated bad line is rejected again, on its own line
        if n + 1 in bad:
            bad[n + 2] = bad[n + 1]
    expected = {c: (Decimal(sums[c]), counts[c]) for c in counts}
    return expected, bad


async def _lines_done(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        done = await conn.fetchval("SELECT max(lines_done) FROM event_imports")
    finally:
        await conn.close()
    return int(done or 0)


async def _totals(database_url: str, account_id: str) -> dict[str, tuple[Decimal, int]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT customer, sum(value_sum) AS s, sum(event_count) AS c FROM rollups_minute
               WHERE account_id = $1 GROUP BY customer""",
            account_id,
        )
    finally:
        await conn.close()
    return {r["customer"]: (r["s"], int(r["c"])) for r in rows}


async def test_a_million_lines_killed_halfway_and_resumed_give_exact_totals(
    ingest_settings: Settings,
    database_url: str,
    kafka_bootstrap: str,
    make_account: AccountFactory,
    tmp_path: Path,
) -> None:
    account = await make_account("import")
    await _meter(database_url, account.account_id)
    source = tmp_path / "usage.csv"
    expected, bad = _write_file(source, int(time.time()))
    settings = ingest_settings.with_overrides(consumer_group=f"imp-{ingest_settings.topic_prefix}")
    env = cli_env(settings)
    aggregators = Aggregators(env)
    await aggregators.start()
    try:
        importer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "deploy.cli", "import", str(source),
            "--account", account.account_id,
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

        async def halfway() -> bool:
            return await _lines_done(database_url) >= LINES // 2

        await wait_until(halfway, 300, "the import to pass half the file", interval_s=0.05)
        importer.send_signal(signal.SIGKILL)
        await importer.wait()
        killed_at = await _lines_done(database_url)
        assert killed_at < LINES, "the import finished before it was killed"

        resumed = await meterflow(env, "import", str(source), "--account", account.account_id)
        assert resumed.code == 0, resumed.err
        assert f"resumed after line {killed_at:,}" in resumed.out
        assert f"in all: {LINES - len(bad):,} published, {len(bad):,} rejected" in resumed.out
        again = await meterflow(env, "import", str(source), "--account", account.account_id)
        assert "already finished" in again.out

        topic = meter_events_topic(settings.topic_prefix)
        async with MeterEventsReader(kafka_bootstrap, settings.topic_prefix) as reader:
            records = await reader.record_count()

        async def folded() -> bool:
            return await folded_offsets(database_url, topic) >= records

        await wait_until(folded, 600, "every imported record to be folded", interval_s=1.0)
    finally:
        await aggregators.stop_all()

    assert await _totals(database_url, account.account_id) == expected
    rejects = [
        orjson.loads(line)
        for line in (tmp_path / "usage.csv.rejects.jsonl").read_bytes().splitlines()
    ]
    assert {r["line"]: r["code"] for r in rejects} == bad
    assert len(rejects) == len(bad)  # each once, though the kill came after some were written


async def test_json_lines_from_standard_input_with_an_import_id(
    ingest_settings: Settings,
    database_url: str,
    make_account: AccountFactory,
    tmp_path: Path,
) -> None:
    account = await make_account("stdin")
    await _meter(database_url, account.account_id)
    now = int(time.time())
    lines = [
        {"event_name": "tokens", "timestamp": now - 60, "identifier": "a",
         "payload": {"stripe_customer_id": "cus_1", "value": "5"}},
        {"event_name": "tokens", "payload": {"stripe_customer_id": "cus_1"}},
        {"event_name": "tokens", "timestamp": "2026-01-01T00:00:00Z",
         "payload": {"stripe_customer_id": "cus_1", "value": "1"}},
    ]  # fmt: skip
    # A byte order mark first, as some editors write, and a blank line last.
    body = b"\xef\xbb\xbf" + b"\n".join(orjson.dumps(line) for line in lines) + b"\n\n"
    rejects = tmp_path / "rejects.jsonl"
    env = cli_env(ingest_settings)
    args = ("import", "-", "--account", account.account_id, "--import-id", "batch-7",
            "--reject-file", str(rejects))  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deploy.cli", *args, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(body), 120)
    assert proc.returncode == 0, err.decode()
    assert "import batch-7: 3 lines: 1 events published, 2 rejected" in out.decode()
    found = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(r["line"], r["code"]) for r in found] == [
        (2, "payload_no_value_defined"),
        (3, "timestamp_too_far_in_past"),
    ]
    assert found[0]["source"].startswith('{"event_name":"tokens"')

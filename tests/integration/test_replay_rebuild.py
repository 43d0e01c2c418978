"""``meterflow replay rebuild`` against real Kafka and PostgreSQL: rollups corrupted in
PostgreSQL are found by ``--dry-run`` and repaired exactly by ``--apply`` while a load generator
keeps sending through ingest, and the totals are exact afterwards; a range older than the topic
keeps is refused."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import orjson
import pytest

from loadtest.generator import LoadResult, run_load
from loadtest.plan import Bounds, LoadConfig, MeterCounts, TrafficMix, meter_shapes, new_run_id
from loadtest.provision import provision
from loadtest.verify import verify_run
from meterflow.settings import Settings
from meterflow.windows import DAY_S, HOUR_S, MINUTE_S
from tests.conftest import AccountFactory
from tests.fixtures.meter_events import rollups_disagreeing_with_minutes, wait_until
from tests.fixtures.meterflow_cli import cli_env, meterflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

LOAD_S = 75.0
Key = tuple[str, str, str, int]  # (level, meter, customer, bucket start)


def _keys(report: Path) -> set[Key]:
    documents = [orjson.loads(line) for line in report.read_bytes().splitlines()]
    return {(d["level"], d["meter"], d["customer"], d["bucket_ts"]) for d in documents}


async def _enough_rollups(database_url: str, account_id: str) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        hours = await conn.fetchval(
            "SELECT count(*) FROM rollups_hour WHERE account_id = $1", account_id
        )
    finally:
        await conn.close()
    return int(hours) >= 20


async def _corrupt(database_url: str, account_id: str, raw: list[str], windowed: str) -> set[Key]:
    """Six kinds of damage, each to a key the load never writes again in a way that could undo
    it; returns the keys a rebuild must report."""
    now = int(time.time())
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            minute = await conn.fetchrow(
                """UPDATE rollups_minute SET value_sum = value_sum + 1000,
                          event_count = event_count + 3
                   WHERE ctid = (SELECT ctid FROM rollups_minute WHERE account_id = $1
                                 AND meter_id = $2 ORDER BY minute_ts DESC LIMIT 1)
                   RETURNING meter_id, customer, minute_ts""",
                account_id,
                raw[0],
            )
            hour = await conn.fetchrow(
                """DELETE FROM rollups_hour
                   WHERE ctid = (SELECT ctid FROM rollups_hour WHERE account_id = $1
                                 AND meter_id = $2 ORDER BY hour_ts DESC LIMIT 1)
                   RETURNING meter_id, customer, hour_ts""",
                account_id,
                raw[1],
            )
            day = await conn.fetchrow(
                """UPDATE rollups_day SET value_sum = value_sum - 5
                   WHERE ctid = (SELECT ctid FROM rollups_day WHERE account_id = $1
                                 AND meter_id = $2 LIMIT 1)
                   RETURNING meter_id, customer, day_ts""",
                account_id,
                raw[0],
            )
            # A row's ctid is unique within its partition only: name the partition too.
            event = await conn.fetchrow(
                """DELETE FROM meter_events e USING event_series s
                   WHERE s.series_id = e.series_id
                     AND (e.tableoid, e.ctid) = (
                         SELECT e.tableoid, e.ctid FROM meter_events e
                         JOIN event_series s USING (series_id)
                         WHERE s.account_id = $1 AND s.meter_id = $2 LIMIT 1)
                   RETURNING s.meter_id, s.customer, e.event_ts""",
                account_id,
                raw[1],
            )
            phantom_minute = now - now % MINUTE_S - 10 * MINUTE_S
            await conn.execute(
                """INSERT INTO rollups_minute (account_id, livemode, meter_id, customer,
                       minute_ts, value_sum, event_count, last_value, last_received_ms,
                       last_receipt_batch, last_receipt_index)
                   VALUES ($1, false, $2, 'cus_phantom', $3, 42, 1, 42, 1, 'phantom', 0)""",
                account_id,
                raw[0],
                phantom_minute,
            )
            phantom_window = now - now % HOUR_S
            await conn.execute(
                """INSERT INTO window_survivors (account_id, livemode, meter_id, customer,
                       window_ts, identifier, value, event_ts, received_ms, receipt_batch,
                       receipt_index)
                   VALUES ($1, false, $2, 'cus_phantom', $3, 'phantom', 9, $3, 1, 'phantom', 0)""",
                account_id,
                windowed,
                phantom_window,
            )
    finally:
        await conn.close()
    assert minute is not None
    assert hour is not None
    assert day is not None
    assert event is not None
    return {
        ("minute", minute["meter_id"], minute["customer"], minute["minute_ts"]),
        ("hour", hour["meter_id"], hour["customer"], hour["hour_ts"]),
        ("day", day["meter_id"], day["customer"], day["day_ts"]),
        ("events", event["meter_id"], event["customer"], event["event_ts"] // DAY_S * DAY_S),
        ("minute", raw[0], "cus_phantom", phantom_minute),
        ("window", windowed, "cus_phantom", phantom_window),
    }


@pytest.mark.usefixtures("aggregator")
async def test_corrupted_rollups_are_found_and_repaired_exactly_while_load_keeps_coming(
    ingest_url: str,
    ingest_settings: Settings,
    database_url: str,
    make_account: AccountFactory,
    tmp_path: Path,
) -> None:
    account = await make_account("rebuild")
    setup = await provision(
        ingest_url,
        [account.secret_key],
        meter_shapes(MeterCounts(raw=2, windowed=2)),
        customers=40,
        run_id=new_run_id(),
    )
    meters = setup.accounts[0].meters
    raw = [m.meter_id for m in meters if m.window is None]
    windowed = next(m.meter_id for m in meters if m.window == "hour")
    config = LoadConfig(
        bounds=Bounds(duration_s=LOAD_S),
        mode="stream",
        rate=1500,
        workers=0,
        connections=4,
        batch_size=25,
        mix=TrafficMix(duplicate_ratio=0.05, invalid_ratio=0.02, late_ratio=0.1),
    )
    load: asyncio.Task[LoadResult] = asyncio.create_task(
        run_load(config, setup, label="rebuild-load", out=None)
    )
    env = cli_env(
        # The aggregator fixture's group: the live rollups the rebuild hands over from.
        ingest_settings.with_overrides(consumer_group=f"g-{ingest_settings.topic_prefix}")
    )
    await wait_until(
        lambda: _enough_rollups(database_url, account.account_id), 60, "the load's rollups"
    )
    damaged = await _corrupt(database_url, account.account_id, raw, windowed)
    rebuild = ("replay", "rebuild", "--account", account.account_id)

    found = await meterflow(env, *rebuild, "--dry-run", "--report", str(tmp_path / "dry.jsonl"))
    assert found.code == 1, found.err
    assert _keys(tmp_path / "dry.jsonl") == damaged, found.out
    assert "rebuild: read" in found.err  # progress while it runs
    assert "6 differences" in found.out

    applied = await meterflow(env, *rebuild, "--apply", "--report", str(tmp_path / "apply.jsonl"))
    assert applied.code == 0, applied.err
    assert _keys(tmp_path / "apply.jsonl") == damaged
    assert "applied:" in applied.out
    assert not load.done(), "the load stopped before the hand-over: lengthen LOAD_S"

    again = await meterflow(env, *rebuild, "--dry-run")
    assert again.code == 0, again.out + again.err
    assert "no differences" in again.out
    assert not load.done()

    result = await load
    assert result.expected is not None
    assert result.report["problems"] == {}, result.report["samples"]
    verification = await verify_run(
        setup, result.expected, unresolved=result.unresolved, timeout_s=120.0
    )
    assert verification.lost == 0, verification.text()
    assert verification.doubled == 0, verification.text()
    assert verification.ok, verification.text()
    assert await rollups_disagreeing_with_minutes(database_url) == []
    final = await meterflow(env, *rebuild, "--dry-run")
    assert final.code == 0, final.out


async def test_a_range_older_than_the_topic_keeps_is_refused(
    ingest_settings: Settings, make_account: AccountFactory
) -> None:
    account = await make_account("too-old")
    sixty_days_ago = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 60 * DAY_S))
    ran = await meterflow(
        cli_env(ingest_settings),
        "replay", "rebuild", "--account", account.account_id, "--from", sixty_days_ago,
    )  # fmt: skip
    assert ran.code == 2
    assert "keeps records for 40 days" in ran.err
    assert "the earliest day a rebuild can start on now is" in ran.err

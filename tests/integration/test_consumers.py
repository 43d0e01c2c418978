"""``meterflow consumers`` and ``meterflow consumers reset`` against real Kafka and PostgreSQL:
each group's stored offsets, lag and owner; the rollup group reset to a time before events it
folded reads them again and changes nothing; resets that could change something are refused."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import orjson
import pytest

from meterflow.kafka.topics import meter_events_topic
from meterflow.records.meter_events import (
    AcceptedEvent,
    CancelRecord,
    EventsRecord,
    MeterEventsRecord,
)
from meterflow.settings import Settings
from tests.fixtures.meter_events import (
    events_record,
    fold_records,
    folded_offsets,
    produce,
    wait_until,
)
from tests.fixtures.meterflow_cli import cli_env, meterflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NOW = int(time.time()) // 60 * 60
TABLES = {
    "rollups_minute": "account_id, livemode, meter_id, customer, minute_ts",
    "rollups_hour": "account_id, livemode, meter_id, customer, hour_ts",
    "rollups_day": "account_id, livemode, meter_id, customer, day_ts",
    "window_survivors": "account_id, livemode, meter_id, customer, window_ts",
    "meter_events": "meter_id, customer, identifier",
    "event_identifiers": "digest",
    "usage_changes": "seq",
}

# Raw events and identifiers carry a series id: read with their series' columns, as before it.
SOURCES = {
    "meter_events": """(SELECT s.account_id, s.livemode, s.meter_id, s.customer, e.identifier,
                               e.value, e.event_ts, e.received_ms, e.receipt_batch,
                               e.receipt_index, e.cancelled
                        FROM meter_events e JOIN event_series s USING (series_id)) t""",
    "event_identifiers": """(SELECT s.account_id, s.livemode, s.meter_id, s.customer, i.digest,
                                    i.event_ts, i.received_ms
                             FROM event_identifiers i JOIN event_series s USING (series_id)) t""",
}


def _history() -> list[MeterEventsRecord]:
    """Raw and hourly events with resends, late events into past windows, and a cancel. As
    ingest does, a record holds one customer's events (so it lands in that customer's
    partition, with the cancels of those events)."""
    records: list[MeterEventsRecord] = []
    for n in range(40):
        events = [(f"raw-{n}-{k}", f"cus_{n % 4}", str(n + k), NOW - k * 60) for k in range(5)]
        records.append(events_record(NOW * 1000 + n, f"r{n:04d}", events))
        windowed = [(f"win-{n}", f"cus_{n % 3}", str(n), NOW - (n % 5) * 3600)]
        records.append(events_record(NOW * 1000 + n, f"w{n:04d}", windowed, meter="mtr_hourly"))
    records.append(events_record(NOW * 1000 + 99, "again", [("raw-3-1", "cus_3", "999", NOW)]))
    records.append(CancelRecord("acct_1", False, NOW * 1000 + 100, "c1", "mtr_1", "tokens",
                                "raw-5-2", "cus_1"))  # fmt: skip
    return records


async def _snapshot(database_url: str) -> dict[str, list[Any]]:
    conn = await asyncpg.connect(database_url)
    try:
        return {
            table: [
                tuple(r)
                for r in await conn.fetch(
                    f"SELECT * FROM {SOURCES.get(table, table)} WHERE account_id = 'acct_1' "
                    f"ORDER BY {keys}"
                )
            ]
            for table, keys in TABLES.items()
        }
    finally:
        await conn.close()


@pytest.mark.usefixtures("aggregator")
async def test_a_rollup_group_reset_reads_again_and_changes_nothing(
    ingest_settings: Settings, database_url: str, kafka_bootstrap: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO accounts (id, name) VALUES ('acct_1', 'reset');
               INSERT INTO meters (id, account_id, livemode, event_name, display_name, formula,
                   customer_key, value_key, event_time_window, created, updated)
               VALUES ('mtr_hourly', 'acct_1', false, 'gb', 'GB', 'sum', 'c', 'v', 'hour', 0, 0)"""
        )
    finally:
        await conn.close()
    settings = ingest_settings.with_overrides(consumer_group=f"g-{ingest_settings.topic_prefix}")
    group = settings.aggregator.consumer_group
    topic = meter_events_topic(settings.topic_prefix)
    before_ms = int(time.time() * 1000)
    records = _history()
    await fold_records(database_url, kafka_bootstrap, topic, records)
    env = cli_env(settings)

    listed = await meterflow(env, "consumers", "--json")
    assert listed.code == 0, listed.err
    groups = {(g["group"], g["topic"]): g for g in orjson.loads(listed.out)}
    ours = groups[(group, topic)]
    assert ours["state"] == "Stable"
    assert ours["members"] == 1
    assert sum(p["stored"] or 0 for p in ours["partitions"]) == len(records)
    assert all(p["lag"] == 0 for p in ours["partitions"])
    assert all(p["owner"] for p in ours["partitions"])  # the one member holds all twelve
    text = await meterflow(env, "consumers")
    assert f"{group}  {topic}  Stable, 1 member(s), lag 0" in text.out

    snapshot = await _snapshot(database_url)
    cancelled = [row for row in snapshot["meter_events"] if row[-1]]
    assert [row[4] for row in cancelled] == ["raw-5-2"]  # the cancel applied, to be read again
    reset = ("consumers", "reset", group, "--to-time", str(before_ms // 1000 - 5))
    planned = await meterflow(env, *reset, "--dry-run")
    assert planned.code == 0, planned.err
    assert "would move" in planned.out
    assert f"{len(records):,} records to read again" in planned.out
    assert await folded_offsets(database_url, topic) == len(records)  # a dry run moves nothing

    done = await meterflow(env, *reset)
    assert done.code == 0, done.err
    assert f"{len(records):,} records to read again" in done.out
    assert await folded_offsets(database_url, topic) == 0

    # The running consumer's next batch (here another account's event) is fenced: it seeks
    # back to the stored offsets and folds every record again.
    other = EventsRecord("acct_2", False, NOW * 1000, "other", (AcceptedEvent(
        "mtr_2", "tokens", "other-1", "cus_9", "1", NOW),))  # fmt: skip
    await produce(kafka_bootstrap, topic, [other])

    async def read_again() -> bool:
        return await folded_offsets(database_url, topic) == len(records) + 1

    await wait_until(read_again, 60, "the group to read its records again", interval_s=0.1)
    assert await _snapshot(database_url) == snapshot


async def test_resets_that_could_change_something_are_refused(ingest_settings: Settings) -> None:
    settings = ingest_settings.with_overrides(consumer_group="meterflow-aggregator")
    env = cli_env(settings)
    two_days_ago = str(int(time.time()) - 2 * 86_400)
    too_far = await meterflow(
        env, "consumers", "reset", "meterflow-aggregator", "--to-time", two_days_ago
    )
    assert too_far.code == 2
    assert "at most 24 hours back" in too_far.err
    reports = await meterflow(
        env, "consumers", "reset", "meterflow-aggregator-error-reports", "--to-time", "0"
    )
    assert reports.code == 2
    assert "would report them again" in reports.err
    unknown = await meterflow(env, "consumers", "reset", "someone-else", "--to-time", "0")
    assert unknown.code == 2
    assert "does not know" in unknown.err

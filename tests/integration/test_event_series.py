"""Series ids: created once per (account, mode, meter, customer), cached only when committed."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from aggregator.rollups.columns import EventColumns, Segment
from aggregator.rollups.series import EventSeries
from meterflow.records.meter_events import AcceptedEvent, EventsRecord

pytestmark = pytest.mark.integration


def _run(account: str, *customers: str) -> Segment:
    columns = EventColumns()
    columns.add(
        EventsRecord(
            account_id=account,
            livemode=False,
            received_ms=1,
            batch="b",
            events=tuple(
                AcceptedEvent("mtr_1", "tokens", f"e{n}", c, "1", 60)
                for n, c in enumerate(customers)
            ),
        )
    )
    return Segment(events=columns)


async def _stored(conn: asyncpg.Connection, ids: list[int]) -> dict[int, str]:
    rows = await conn.fetch(
        "SELECT series_id, customer FROM event_series WHERE series_id = ANY($1::bigint[])", ids
    )
    return {r["series_id"]: r["customer"] for r in rows}


async def test_each_series_gets_one_id_whoever_asks(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    other = await asyncpg.connect(database_url)
    try:
        first, second = _run("acct_s1", "cus_1", "cus_2", "cus_1"), _run("acct_s1", "cus_2")
        await EventSeries().assign(conn, [first])
        ids = first.events.series_id
        assert ids[0] == ids[2] != ids[1]
        assert await _stored(conn, ids) == {ids[0]: "cus_1", ids[1]: "cus_2"}

        # Another process, and two connections racing for the same new series, agree.
        await EventSeries().assign(other, [second])
        assert second.events.series_id == [ids[1]]
        racing = [_run("acct_s1", "cus_3", "cus_4"), _run("acct_s1", "cus_4", "cus_3")]
        await asyncio.gather(
            EventSeries().assign(conn, [racing[0]]), EventSeries().assign(other, [racing[1]])
        )
        assert racing[0].events.series_id == racing[1].events.series_id[::-1]
    finally:
        await other.close()
        await conn.close()


async def test_an_id_learnt_in_a_rolled_back_transaction_is_not_kept(database_url: str) -> None:
    series = EventSeries()
    conn = await asyncpg.connect(database_url)
    try:
        doomed = _run("acct_s2", "cus_1")
        tr = conn.transaction()
        await tr.start()
        await series.assign(conn, [doomed])
        await tr.rollback()
        assert await _stored(conn, doomed.events.series_id) == {}

        again = _run("acct_s2", "cus_1")
        await series.assign(conn, [again])
        assert again.events.series_id != doomed.events.series_id
        assert await _stored(conn, again.events.series_id) == {again.events.series_id[0]: "cus_1"}
    finally:
        await conn.close()


async def test_a_full_cache_starts_again_and_ids_stay_right(database_url: str) -> None:
    series = EventSeries(max_cached=2)
    conn = await asyncpg.connect(database_url)
    try:
        runs = [_run("acct_s3", "cus_1", "cus_2"), _run("acct_s3", "cus_3", "cus_1")]
        for run in runs:
            await series.assign(conn, [run])
        ids = [i for run in runs for i in run.events.series_id]
        stored = await _stored(conn, ids)
        assert [stored[i] for i in ids] == ["cus_1", "cus_2", "cus_3", "cus_1"]
        assert ids[0] == ids[3]
    finally:
        await conn.close()

"""The usage reader against a real PostgreSQL: minute and hour rows as the fold leaves them, read
as batched totals (every formula), as one span's total, and as epoch-aligned buckets."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from aggregator.rollups.hour_store import hour_of, refresh_hours
from meterflow.meters import Formula
from meterflow.usage.keys import UsageSpan, UsageTotals
from meterflow.usage.reader import UsageBucket, usage_buckets, usage_total, usage_totals

pytestmark = pytest.mark.integration

HOUR = 1_717_243_200  # 2024-06-01T12:00:00Z
FORMULAS: tuple[Formula, ...] = ("sum", "count", "last")


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


# (meter, customer, minute_ts, value_sum, event_count, last_value, last received_ms, batch, index)
Minute = tuple[str, str, int, str, int, str, int, str, int]


async def _insert(conn: asyncpg.Connection, *minutes: Minute) -> None:
    """Minute rows, and their hours rebuilt from them, as the fold keeps both."""
    await conn.executemany(
        """INSERT INTO rollups_minute (account_id, livemode, meter_id, customer, minute_ts,
               value_sum, event_count, last_value, last_received_ms, last_receipt_batch,
               last_receipt_index)
           VALUES ('acct_1', false, $1, $2, $3, $4::numeric, $5, $6::numeric, $7, $8, $9)""",
        minutes,
    )
    await refresh_hours(conn, {("acct_1", False, m[0], m[1], hour_of(m[2])) for m in minutes})


def _span(meter: str, customer: str, start_s: int, end_s: int) -> UsageSpan:
    return ("acct_1", False, meter, customer, start_s, end_s)


@pytest.fixture
async def folded(conn: asyncpg.Connection) -> None:
    """mtr_1/cus_1: minute HOUR holds 1 and 2 (2 received last, at 1000), minute HOUR+60 holds
    10 (received earlier, at 900), the next hour holds 5 (received at 1100); mtr_2/cus_1 holds 4."""
    await _insert(
        conn,
        ("mtr_1", "cus_1", HOUR, "3", 2, "2", 1000, "b", 1),
        ("mtr_1", "cus_1", HOUR + 60, "10", 1, "10", 900, "a", 0),
        ("mtr_1", "cus_1", HOUR + 3600, "5", 1, "5", 1100, "c", 0),
        ("mtr_2", "cus_1", HOUR, "4", 1, "4", 1000, "b", 2),
    )


@pytest.mark.usefixtures("folded")
async def test_totals_of_many_spans_in_one_read_give_every_formula(
    conn: asyncpg.Connection,
) -> None:
    first_hour = _span("mtr_1", "cus_1", HOUR, HOUR + 3600)
    two_hours = _span("mtr_1", "cus_1", HOUR, HOUR + 7200)
    other_meter = _span("mtr_2", "cus_1", HOUR, HOUR + 3600)
    nobody = _span("mtr_1", "cus_2", HOUR, HOUR + 3600)
    found = await usage_totals(conn, [first_hour, two_hours, other_meter, nobody])
    # `last` follows receipt order, not event time: 10 has the latest timestamp of the first
    # hour but was received before 2.
    assert found == {
        first_hour: UsageTotals(Decimal(13), 3, Decimal(2)),
        two_hours: UsageTotals(Decimal(18), 4, Decimal(5)),
        other_meter: UsageTotals(Decimal(4), 1, Decimal(4)),
    }
    assert [found[two_hours].value(f) for f in FORMULAS] == [Decimal(18), Decimal(4), Decimal(5)]
    empty = found.get(nobody, UsageTotals())
    assert [empty.value(f) for f in FORMULAS] == [Decimal(0)] * 3
    assert await usage_totals(conn, []) == {}


@pytest.mark.usefixtures("folded")
async def test_one_span_reads_as_the_batch_does(conn: asyncpg.Connection) -> None:
    spans = [
        _span("mtr_1", "cus_1", HOUR, HOUR + 3600),
        _span("mtr_1", "cus_1", HOUR + 60, HOUR + 7200),
        _span("mtr_1", "cus_1", HOUR + 120, HOUR + 3600),  # no minute rows inside
        _span("mtr_1", "cus_2", HOUR, HOUR + 7200),
    ]
    batch = await usage_totals(conn, spans)
    for span in spans:
        assert await usage_total(conn, span) == batch.get(span, UsageTotals())


async def test_last_breaks_same_millisecond_ties_on_the_batch_id_bytewise(
    conn: asyncpg.Connection,
) -> None:
    # "a" sorts after "B" by code point, whatever the database's collation says.
    await _insert(
        conn,
        ("mtr_1", "cus_1", HOUR, "3", 1, "3", 5, "a", 0),
        ("mtr_1", "cus_1", HOUR + 60, "7", 1, "7", 5, "B", 0),
    )
    span = _span("mtr_1", "cus_1", HOUR, HOUR + 3600)
    assert (await usage_total(conn, span)).last_value == Decimal(3)
    assert (await usage_totals(conn, [span]))[span].last_value == Decimal(3)


@pytest.mark.usefixtures("folded")
async def test_buckets_are_epoch_aligned_non_empty_and_limited(conn: asyncpg.Connection) -> None:
    key = ("acct_1", False, "mtr_1", "cus_1")
    newest_first = await usage_buckets(
        conn, key, start_s=HOUR, end_s=HOUR + 3 * 3600, bucket_s=3600, limit=10
    )
    assert newest_first == [
        UsageBucket(HOUR + 3600, UsageTotals(Decimal(5), 1, Decimal(5))),
        UsageBucket(HOUR, UsageTotals(Decimal(13), 3, Decimal(2))),
    ]
    oldest = await usage_buckets(
        conn, key, start_s=HOUR, end_s=HOUR + 3 * 3600, bucket_s=3600, limit=1, oldest_first=True
    )
    assert oldest == [newest_first[1]]
    minutes = await usage_buckets(conn, key, start_s=HOUR, end_s=HOUR + 120, bucket_s=60, limit=10)
    assert [(b.start_s, b.totals.value("sum")) for b in minutes] == [
        (HOUR + 60, Decimal(10)),
        (HOUR, Decimal(3)),
    ]


async def test_spans_over_days_read_minutes_hours_and_days_as_the_minutes_add_up(
    conn: asyncpg.Connection,
) -> None:
    """Minute rows over five days; every span, whatever its edges, totals what its minute rows
    add up to, though whole days come from the day rollups and whole hours from the hours."""
    rng = random.Random(20261204)
    day0 = HOUR - HOUR % 86_400
    minutes = sorted({day0 - 7200 + rng.randrange(0, 5 * 1440 + 240) * 60 for _ in range(400)})
    await _insert(
        conn,
        *(
            ("mtr_1", "cus_1", ts, str(rng.randint(-5, 50)), rng.randint(1, 3),
             str(rng.randint(0, 9)), rng.randint(1, 10**6), "b", n)
            for n, ts in enumerate(minutes)
        ),
    )  # fmt: skip
    spans = [_span("mtr_1", "cus_1", day0, day0 + 3 * 86_400)]
    for _ in range(60):
        a, b = sorted(rng.sample(range(-180, 5 * 1440 + 300), 2))
        spans.append(_span("mtr_1", "cus_1", day0 + a * 60, day0 + b * 60))
    found = await usage_totals(conn, spans)
    for span in spans:
        expected = await conn.fetchrow(
            """SELECT sum(value_sum) AS value_sum, coalesce(sum(event_count), 0) AS event_count,
                      (array_agg(last_value ORDER BY last_received_ms DESC,
                                 last_receipt_batch COLLATE "C" DESC,
                                 last_receipt_index DESC))[1] AS last_value
               FROM rollups_minute WHERE meter_id = 'mtr_1' AND customer = 'cus_1'
                 AND minute_ts >= $1 AND minute_ts < $2""",
            span[4],
            span[5],
        )
        assert expected is not None
        if expected["event_count"] == 0:
            assert span not in found
        else:
            assert found[span] == UsageTotals(
                expected["value_sum"], expected["event_count"], expected["last_value"]
            ), span
    days = await conn.fetchval("SELECT count(*) FROM rollups_day")
    assert days >= 5  # the whole days were read from there

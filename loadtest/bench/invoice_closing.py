"""Closing many subscriptions at one period end.

One account, one ``sum`` meter with a per-unit metered daily price, and ``subscriptions``
customers each subscribed to it, every period ending at the same second a little after the setup.
Each customer has usage in the period (a few minutes of rollups, written as the fold would have
left them, with their hours). The stack's aggregator closes every period at its end (a draft
invoice each) and finalizes every invoice once the grace period is over; the phase reports how
long after the period's end every draft existed, and how long after the grace period's end every
invoice was finalized, and checks every amount.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx

from meterflow.store.accounts import NewAccount

_DAY_S = 86_400
_POLL_S = 0.2
_UNIT_AMOUNT = 3  # cents per unit
_MINUTES = 3  # minutes of usage per customer


async def _catalog(base_url: str, key: str) -> tuple[str, str]:
    """A meter and its metered daily price through the API; returns (meter id, price id)."""
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10.0
    ) as client:
        meter = await client.post(
            "/v1/billing/meters",
            data={
                "display_name": "closing",
                "event_name": "closing",
                "default_aggregation[formula]": "sum",
            },
        )
        meter.raise_for_status()
        meter_id: str = meter.json()["id"]
        price = await client.post(
            "/v1/prices",
            data={
                "currency": "usd",
                "unit_amount": str(_UNIT_AMOUNT),
                "recurring[interval]": "day",
                "recurring[usage_type]": "metered",
                "recurring[meter]": meter_id,
                "product_data[name]": "closing",
            },
        )
        price.raise_for_status()
        price_id: str = price.json()["id"]
    return meter_id, price_id


async def _subscriptions(
    conn: asyncpg.Connection,
    account_id: str,
    meter_id: str,
    price_id: str,
    *,
    count: int,
    period_end: int,
) -> None:
    """``count`` customers and subscriptions whose daily period ends at ``period_end``, and their
    usage: customer ``n`` used ``n + 1`` units in each of :data:`_MINUTES` minutes."""
    start = period_end - _DAY_S
    first_minute = start - start % 60 + 120
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO customers (id, account_id, livemode, name, created)
               SELECT 'cus_close' || n, $1, false, 'c' || n, $2
               FROM generate_series(0, $3 - 1) AS n""",
            account_id,
            start,
            count,
        )
        await conn.execute(
            """INSERT INTO subscriptions (id, account_id, livemode, customer_id, status, currency,
                   billing_cycle_anchor, start_date, created)
               SELECT 'sub_close' || n, $1, false, 'cus_close' || n, 'active', 'usd', $2, $2, $2
               FROM generate_series(0, $3 - 1) AS n""",
            account_id,
            start,
            count,
        )
        await conn.execute(
            """INSERT INTO subscription_items (id, account_id, livemode, subscription_id,
                   price_id, created)
               SELECT 'si_close' || n, $1, false, 'sub_close' || n, $2, $3
               FROM generate_series(0, $4 - 1) AS n""",
            account_id,
            price_id,
            start,
            count,
        )
        await conn.execute(
            """INSERT INTO rollups_minute (account_id, livemode, meter_id, customer, minute_ts,
                   value_sum, event_count, last_value, last_received_ms, last_receipt_batch,
                   last_receipt_index)
               SELECT $1, false, $2, 'cus_close' || n, t, n + 1, 1, n + 1, t * 1000,
                      'bench-closing', 0
               FROM generate_series(0, $3 - 1) AS n,
                    generate_series($4::bigint, $4::bigint + ($5 - 1) * 60, 60) AS t""",
            account_id,
            meter_id,
            count,
            first_minute,
            _MINUTES,
        )
        await conn.execute(
            """INSERT INTO rollups_hour
               SELECT account_id, livemode, meter_id, customer, minute_ts - minute_ts % 3600,
                      sum(value_sum), sum(event_count), max(last_value), max(last_received_ms),
                      'bench-closing', 0
               FROM rollups_minute WHERE account_id = $1
               GROUP BY account_id, livemode, meter_id, customer, minute_ts - minute_ts % 3600""",
            account_id,
        )


async def _count(conn: asyncpg.Connection, account_id: str, statuses: tuple[str, ...]) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM invoices WHERE account_id = $1 AND status = ANY($2::text[])",
            account_id,
            list(statuses),
        )
    )


async def _wait_for(
    conn: asyncpg.Connection,
    account_id: str,
    statuses: tuple[str, ...],
    count: int,
    deadline: float,
) -> float | None:
    """The time at which ``count`` invoices had one of ``statuses``; None past the deadline."""
    while time.time() < deadline:
        if await _count(conn, account_id, statuses) >= count:
            return time.time()
        await asyncio.sleep(_POLL_S)
    return None


async def measure_closing(
    base_url: str,
    database_url: str,
    account: NewAccount,
    *,
    subscriptions: int,
    grace_s: int,
    lead_s: float,
    deadline_s: float,
) -> dict[str, Any]:
    """Set up ``subscriptions`` subscriptions whose period ends ``lead_s`` from now, then time
    their closing by the stack's aggregator (whose grace period is ``grace_s``)."""
    meter_id, price_id = await _catalog(base_url, account.secret_key)
    conn = await asyncpg.connect(database_url)
    try:
        period_end = int(time.time() + lead_s)
        started = time.time()
        await _subscriptions(
            conn, account.account_id, meter_id, price_id, count=subscriptions,
            period_end=period_end,
        )  # fmt: skip
        setup_s = time.time() - started
        if time.time() >= period_end:
            raise RuntimeError(f"the setup took {setup_s:.1f} s, past the period's end")
        grace_end = period_end + grace_s
        drafted = await _wait_for(
            conn, account.account_id, ("draft", "open", "paid"), count=subscriptions,
            deadline=period_end + deadline_s,
        )  # fmt: skip
        finalized = await _wait_for(
            conn, account.account_id, ("open", "paid"), count=subscriptions,
            deadline=grace_end + deadline_s,
        )  # fmt: skip
        wrong = await conn.fetchval(
            """SELECT count(*) FROM invoices i
               WHERE i.account_id = $1 AND i.status = 'open'
                 AND i.amount_due <> (substr(i.customer_id, 10)::int + 1) * $2 * $3""",
            account.account_id,
            _MINUTES,
            _UNIT_AMOUNT,
        )
        return {
            "subscriptions": subscriptions,
            "grace_s": grace_s,
            "setup_s": round(setup_s, 2),
            "all_drafted_after_period_end_s": None
            if drafted is None
            else round(drafted - period_end, 2),
            "all_finalized_after_grace_end_s": None
            if finalized is None
            else round(finalized - grace_end, 2),
            "finalized": await _count(conn, account.account_id, ("open", "paid")),
            "wrong_amounts": int(wrong),
        }
    finally:
        await conn.close()

"""Exactly one invoice per period while aggregator processes are SIGKILLed mid-close."""

from __future__ import annotations

import os
import time

import asyncpg
import httpx
import pytest

from tests.conftest import AccountFactory
from tests.fixtures.aggregator_processes import Aggregators
from tests.fixtures.billing import Billing
from tests.fixtures.meter_events import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DAY = 86_400
SUBSCRIPTIONS = 120
PERIODS = 3  # ended periods per subscription, all due at once


async def test_sigkill_mid_close_gives_each_period_exactly_one_invoice(
    *,
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    aggregator: None,
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    account = await make_account()
    billing = Billing(http, account.secret_key)
    tokens = await billing.meter("tokens", "sum")
    price = await billing.price(tokens, unit_amount="1", **{"recurring[interval]": "day"})
    start = int(time.time()) // 60 * 60 - PERIODS * DAY - 600
    customers = [
        (await billing.post("/v1/customers", {"name": f"c{i}"}))["id"] for i in range(SUBSCRIPTIONS)
    ]
    for i, customer in enumerate(customers):
        for k in range(PERIODS):
            await billing.event(
                "tokens", customer, f"e{i}-{k}", value=str((i + 1) * (k + 1)),
                timestamp=str(start + k * DAY + 60),
            )  # fmt: skip
    db = await asyncpg.connect(database_url)
    try:

        async def folded() -> bool:
            count = await db.fetchval(
                "SELECT coalesce(sum(event_count), 0) FROM rollups_minute WHERE account_id = $1",
                account.account_id,
            )
            return bool(count == SUBSCRIPTIONS * PERIODS)

        await wait_until(folded, 60, "every event to be folded", interval_s=0.2)
        subscriptions = {
            (
                await billing.post(
                    "/v1/subscriptions",
                    {"customer": c, "items[0][price]": price, "backdate_start_date": str(start)},
                )
            )["id"]: i
            for i, c in enumerate(customers)
        }
        aggregators = Aggregators(
            {
                **os.environ,
                "DATABASE_URL": database_url,
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "METERFLOW_TOPIC_PREFIX": topic_prefix,
                "METERFLOW_CONSUMER_GROUP": f"g-{topic_prefix}",
                "METERFLOW_INVOICE_GRACE_S": "0",  # close and finalize in one transaction
                "METERFLOW_INVOICE_TICK_S": "0.05",
            }
        )
        expected = SUBSCRIPTIONS * PERIODS

        async def invoiced() -> int:
            return int(
                await db.fetchval(
                    "SELECT count(*) FROM invoices WHERE account_id = $1", account.account_id
                )
            )

        try:
            await aggregators.start()
            await aggregators.start()  # two closers race for the same rows
            kills = 0
            target = 0
            while kills < 4 and await invoiced() < expected:
                target = min(expected, (await invoiced()) + 25)

                async def progressed(target: int = target) -> bool:
                    return await invoiced() >= target

                await wait_until(progressed, 60, "closing to make progress", interval_s=0.01)
                await aggregators.kill_one()  # SIGKILL mid-close
                kills += 1
                await aggregators.start()

            async def all_final() -> bool:
                finals = await db.fetchval(
                    """SELECT count(*) FROM invoices
                       WHERE account_id = $1 AND status IN ('open', 'paid')""",
                    account.account_id,
                )
                return bool(finals == expected)

            await wait_until(all_final, 120, "every period to be invoiced", interval_s=0.2)
        finally:
            await aggregators.stop_all()
        rows = await db.fetch(
            """SELECT subscription_id, period_start, count(*) AS n, sum(subtotal) AS amount
               FROM invoices WHERE account_id = $1
               GROUP BY subscription_id, period_start""",
            account.account_id,
        )
        assert kills >= 2
        assert len(rows) == expected
        for row in rows:
            i = subscriptions[row["subscription_id"]]
            k = (row["period_start"] - start) // DAY
            assert (row["n"], row["amount"]) == (1, (i + 1) * (k + 1))
        events = await db.fetchval(
            """SELECT count(*) FROM v1_events
               WHERE account_id = $1 AND type = 'invoice.created'""",
            account.account_id,
        )
        assert events == expected
        lines = await db.fetchval(
            """SELECT count(*) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
               WHERE i.account_id = $1""",
            account.account_id,
        )
        assert lines == expected
    finally:
        await db.close()

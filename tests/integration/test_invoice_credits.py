"""Credits applied at finalization through the real pipeline, grants made with the API: every tie
rule of Stripe's order, and every grant that must not apply (voided before, another currency,
expired by finalization, not yet effective at the period's end, scoped to another price)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry

from aggregator.invoicing.closer import InvoiceCloser
from meterflow.settings import Settings
from tests.conftest import AccountFactory
from tests.fixtures.billing import Billing
from tests.fixtures.meter_events import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DAY = 86_400


async def test_finalization_consumes_grants_in_stripes_order_and_skips_ineligible_ones(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    aggregator: None,
    ingest_settings: Settings,
    database_url: str,
) -> None:
    account = await make_account()
    billing = Billing(http, account.secret_key)
    tokens = await billing.meter("tokens", "sum")
    price = await billing.price(tokens, unit_amount="1", **{"recurring[interval]": "day"})
    other_price = await billing.price(tokens, unit_amount="2", **{"recurring[interval]": "day"})
    customer = (await billing.post("/v1/customers", {"name": "Gil"}))["id"]
    now = int(time.time())
    start = now - DAY - 600
    period_end = start + DAY
    subscription = (
        await billing.post(
            "/v1/subscriptions",
            {"customer": customer, "items[0][price]": price, "backdate_start_date": str(start)},
        )
    )["id"]
    await billing.event("tokens", customer, "t1", value="10000", timestamp=str(start + 60))

    async def grant(name: str, **fields: str) -> str:
        form = {
            "customer": customer,
            "name": name,
            "amount[type]": "monetary",
            "amount[monetary][currency]": "usd",
            "amount[monetary][value]": "100",
            "effective_at": str(start),
        }
        if not any(k.startswith("applicability_config") for k in fields):
            form["applicability_config[scope][price_type]"] = "metered"
        grant_id: str = (await billing.post("/v1/billing/credit_grants", form | fields))["id"]
        return grant_id

    later = str(now + 20 * DAY)
    expected = [
        await grant("A: priority 10", priority="10"),
        await grant("B: earliest expiry", expires_at=str(now + 10 * DAY)),
        await grant("C: promotional", expires_at=later, category="promotional"),
        await grant("D: earlier effective", expires_at=later),
        await grant("E: later effective", expires_at=later, effective_at=str(start + 1)),
    ]
    created = int(time.time())

    async def next_second() -> bool:
        return int(time.time()) > created

    await wait_until(next_second, 5, "the clock to reach the next second", interval_s=0.01)
    expected.append(await grant("F: created later", expires_at=later, effective_at=str(start + 1)))
    expected.append(
        await grant("G: never expires, this price", **{
            "applicability_config[scope][prices][0][id]": price})
    )  # fmt: skip
    voided = await grant("H: voided before")
    await billing.post(f"/v1/billing/credit_grants/{voided}/void", {})
    await grant("I: euros", **{"amount[monetary][currency]": "eur"})
    expiring = await grant("J: expired by finalization", expires_at=str(now + 1800))
    await grant("K: effective after the period", effective_at=str(period_end + 1))
    await grant("L: another price", **{"applicability_config[scope][prices][0][id]": other_price})

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:

        async def folded() -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT count(*) FROM rollups_minute WHERE account_id = $1",
                    account.account_id,
                )
            )

        await wait_until(folded, 30, "the event to be folded")
        clock = [float(now + 3600)]  # J has expired by then
        closer = InvoiceCloser(
            ingest_settings.with_overrides(invoice_grace_s=0),
            pool,
            CollectorRegistry(),
            lambda: clock[0],
        )
        await closer.run_once()
        invoice = await pool.fetchrow(
            """SELECT id, status, subtotal, total_credits, amount_due FROM invoices
               WHERE subscription_id = $1""",
            subscription,
        )
        assert invoice is not None
        assert tuple(invoice)[1:] == ("open", 10_000, 700, 9_300)
        applied = await pool.fetch(
            """SELECT credit_grant_id, amount FROM credit_ledger
               WHERE invoice_id = $1 AND reason = 'credits_applied' ORDER BY seq""",
            invoice["id"],
        )
        assert [(r["credit_grant_id"], r["amount"]) for r in applied] == [
            (g, 100) for g in expected
        ]
        response = await http.get(
            f"/v1/invoices/{invoice['id']}",
            headers={"Authorization": f"Bearer {account.secret_key}"},
        )
        body = response.json()
        assert body["amount_due"] == 9_300
        assert [c["amount"] for c in body["lines"]["data"][0]["pretax_credit_amounts"]] == [100] * 7
        assert sum(c["amount"] for c in body["total_pretax_credit_amounts"]) == 700
        # The voided grant's remainder was debited at its void, never applied.
        reasons = await pool.fetch(
            "SELECT reason, amount FROM credit_ledger WHERE credit_grant_id = $1 ORDER BY seq",
            voided,
        )
        assert [tuple(r) for r in reasons] == [("credits_granted", 100), ("credits_voided", 100)]
        # The expired grant's remainder expired at its expires_at, never applied.
        reasons = await pool.fetch(
            """SELECT reason, amount, effective_at FROM credit_ledger
               WHERE credit_grant_id = $1 ORDER BY seq""",
            expiring,
        )
        assert [tuple(r) for r in reasons] == [
            ("credits_granted", 100, start),
            ("credits_expired", 100, now + 1800),
        ]
    finally:
        await asyncio.wait_for(pool.close(), 10)

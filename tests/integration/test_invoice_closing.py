"""Closing periods through the real pipeline (HTTP → Kafka → aggregator → PostgreSQL → closer):
the period's invoice, late usage during the grace period, finalization with credits, billing
thresholds with and without a cycle reset, cancellation, and grant expiry. The closer runs in this
process on a clock the test moves; everything else is real."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from aggregator.invoicing.closer import InvoiceCloser
from meterflow.settings import Settings
from meterflow.usage.reader import folded_event_count
from tests.conftest import AccountFactory
from tests.fixtures.billing import Billing
from tests.fixtures.meter_events import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DAY = 86_400
DAILY = {"recurring[interval]": "day"}


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def pool(database_url: str) -> Any:
    db = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    yield db
    await db.close()


def closer(settings: Settings, pool: asyncpg.Pool, clock: Clock) -> InvoiceCloser:
    return InvoiceCloser(
        settings.with_overrides(invoice_grace_s=3600), pool, CollectorRegistry(), clock
    )


async def invoices(pool: asyncpg.Pool, subscription: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        """SELECT id, billing_reason, status, period_start, period_end, subtotal, total_credits,
                  amount_due, close_key
           FROM invoices WHERE subscription_id = $1 ORDER BY seq""",
        subscription,
    )
    return rows


async def folded(pool: asyncpg.Pool, account: str, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        async with pool.acquire() as conn:
            return await folded_event_count(conn, account) >= count

    return check


async def event_types(pool: asyncpg.Pool, account: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT type FROM v1_events WHERE account_id = $1 AND type LIKE 'invoice.%' ORDER BY seq",
        account,
    )
    return [r["type"] for r in rows]


async def test_a_period_is_invoiced_at_its_end_and_finalized_with_late_usage_after_grace(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    aggregator: None,
    ingest_settings: Settings,
    pool: asyncpg.Pool,
) -> None:
    account = await make_account()
    billing = Billing(http, account.secret_key)
    tokens = await billing.meter("tokens", "sum")
    price = await billing.price(
        tokens, unit_amount="4", **DAILY,
        **{"transform_quantity[divide_by]": "100", "transform_quantity[round]": "up"},
    )  # fmt: skip
    customer = (await billing.post("/v1/customers", {"name": "Ada", "email": "a@x.test"}))["id"]
    clock = Clock()
    start = int(clock.now) - DAY - 600  # the first period ended ten minutes ago
    subscription = (
        await billing.post(
            "/v1/subscriptions",
            {"customer": customer, "items[0][price]": price, "backdate_start_date": str(start)},
        )
    )["id"]
    await billing.event("tokens", customer, "p1", value="1234", timestamp=str(start + 60))
    await billing.event("tokens", customer, "p2", value="500")  # the current period
    await billing.event("tokens", customer, "early", value="999", timestamp=str(start - 120))
    await wait_until(await folded(pool, account.account_id, 3), 30, "the events to be folded")

    close = closer(ingest_settings, pool, clock)
    await close.run_once()
    [draft] = await invoices(pool, subscription)
    assert (draft["billing_reason"], draft["status"]) == ("subscription_cycle", "draft")
    assert (draft["period_start"], draft["period_end"]) == (start, start + DAY)
    assert draft["subtotal"] == 52  # 1,234 tokens: 13 hundreds at 4 cents

    # Usage for the closed period, sent during the grace period, still counts.
    await billing.event("tokens", customer, "late", value="100", timestamp=str(start + 120))
    await wait_until(await folded(pool, account.account_id, 4), 30, "the late event")
    await close.run_once()
    assert (await invoices(pool, subscription))[0]["status"] == "draft"  # grace not over
    clock.now += 3600
    await close.run_once()
    await close.run_once()
    [final] = await invoices(pool, subscription)
    assert (final["status"], final["subtotal"], final["amount_due"]) == ("open", 56, 56)
    assert await event_types(pool, account.account_id) == ["invoice.created", "invoice.finalized"]
    lines = await pool.fetch(
        "SELECT quantity, amount, description FROM invoice_lines WHERE invoice_id = $1",
        final["id"],
    )
    assert [(int(r["quantity"]), r["amount"], r["description"]) for r in lines] == [
        (14, 56, f"14 \u00d7 {tokens}")  # the product is named after the meter here
    ]
    # The subscription renewed into its next period, which the preview now shows.
    row = await pool.fetchrow(
        "SELECT open_period_start, next_close_at FROM subscriptions WHERE id = $1", subscription
    )
    assert row is not None
    assert (row["open_period_start"], row["next_close_at"]) == (start + DAY, start + 2 * DAY)
    amount_due, _ = await billing.lines(customer)
    assert amount_due == 20  # 500 tokens


async def test_finalization_applies_credits_in_grant_order_and_records_the_ledger(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    aggregator: None,
    ingest_settings: Settings,
    pool: asyncpg.Pool,
) -> None:
    account = await make_account()
    billing = Billing(http, account.secret_key)
    calls = await billing.meter("calls", "count")
    price = await billing.price(calls, unit_amount="100", **DAILY)
    customer = (await billing.post("/v1/customers", {"name": "Bo"}))["id"]
    clock = Clock()
    start = int(clock.now) - DAY - 600
    subscription = (
        await billing.post(
            "/v1/subscriptions",
            {"customer": customer, "items[0][price]": price, "backdate_start_date": str(start)},
        )
    )["id"]
    for i in range(5):
        await billing.event("calls", customer, f"c{i}", timestamp=str(start + 60 + i))
    await wait_until(await folded(pool, account.account_id, 5), 30, "the events to be folded")
    # Three grants: the promotional one goes first (same priority and expiry), then the paid
    # one; the other currency's never applies.
    grants = {"paid": 150, "promotional": 300, "eur": 1000}
    for name, amount in grants.items():
        await pool.execute(
            """INSERT INTO credit_grants (id, account_id, livemode, customer_id, category,
                   priority, currency, amount, effective_at, created, updated)
               VALUES ($1, $2, false, $3, $4, 50, $5, $6, $7, $7, $7)""",
            f"credgr_{name}",
            account.account_id,
            customer,
            "promotional" if name == "promotional" else "paid",
            "eur" if name == "eur" else "usd",
            amount,
            start,
        )
        await pool.execute(
            """INSERT INTO credit_ledger (id, account_id, livemode, customer_id, credit_grant_id,
                   type, reason, amount, currency, effective_at, created, dedupe_key)
               VALUES ($1, $2, false, $3, $4, 'credit', 'credits_granted', $5, $6, $7, $7, $8)""",
            f"cbtxn_{name}",
            account.account_id,
            customer,
            f"credgr_{name}",
            amount,
            "eur" if name == "eur" else "usd",
            start,
            f"granted:credgr_{name}",
        )
    close = closer(ingest_settings, pool, clock)
    await close.run_once()
    clock.now += 3600
    await close.run_once()
    [invoice] = await invoices(pool, subscription)
    assert (invoice["status"], invoice["subtotal"]) == ("open", 500)
    assert (invoice["total_credits"], invoice["amount_due"]) == (450, 50)
    applied = await pool.fetch(
        """SELECT credit_grant_id, amount FROM credit_ledger
           WHERE invoice_id = $1 AND reason = 'credits_applied' ORDER BY seq""",
        invoice["id"],
    )
    assert [(r["credit_grant_id"], r["amount"]) for r in applied] == [
        ("credgr_promotional", 300),
        ("credgr_paid", 150),
    ]
    announced = await pool.fetch(
        """SELECT body FROM v1_events WHERE account_id = $1
             AND type = 'billing.credit_balance_transaction.created' ORDER BY seq""",
        account.account_id,
    )
    assert [
        (t["credit_grant"], t["debit"]["type"], t["debit"]["amount"]["monetary"]["value"])
        for t in (orjson.loads(r["body"])["data"]["object"] for r in announced)
    ] == [("credgr_promotional", "credits_applied", 300), ("credgr_paid", "credits_applied", 150)]


async def test_a_threshold_invoice_then_the_period_end_bill_the_usage_once(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    aggregator: None,
    ingest_settings: Settings,
    pool: asyncpg.Pool,
) -> None:
    account = await make_account()
    billing = Billing(http, account.secret_key)
    tokens = await billing.meter("tokens", "sum")
    # Graduated: the first 100 units at 2 cents, then 1 cent; a 50-cent flat fee in tier one.
    price = await billing.price(
        tokens, billing_scheme="tiered", tiers_mode="graduated", **DAILY,
        **{"tiers[0][up_to]": "100", "tiers[0][unit_amount]": "2",
           "tiers[0][flat_amount]": "50", "tiers[1][up_to]": "inf",
           "tiers[1][unit_amount]": "1"},
    )  # fmt: skip
    customer = (await billing.post("/v1/customers", {"name": "Cy"}))["id"]
    subscription = (
        await billing.post(
            "/v1/subscriptions",
            {
                "customer": customer,
                "items[0][price]": price,
                "billing_thresholds[amount_gte]": "300",
            },
        )
    )["id"]
    clock = Clock()
    close = closer(ingest_settings, pool, clock)
    await close.run_once()  # schedules the subscription
    await billing.event("tokens", customer, "t1", value="120")  # 50 + 200 + 20 = 270
    await wait_until(await folded(pool, account.account_id, 1), 30, "the first event")
    await close.run_once()
    assert await invoices(pool, subscription) == []
    await billing.event("tokens", customer, "t2", value="40")  # 310: the threshold
    await wait_until(await folded(pool, account.account_id, 2), 30, "the second event")
    await close.run_once()
    await close.run_once()  # reached once: one invoice
    [threshold] = await invoices(pool, subscription)
    assert (threshold["billing_reason"], threshold["status"]) == ("subscription_threshold", "open")
    assert threshold["subtotal"] == 310
    await billing.event("tokens", customer, "t3", value="25")
    await wait_until(await folded(pool, account.account_id, 3), 30, "the third event")
    amount_due, _ = await billing.lines(customer)
    assert amount_due == 25  # the preview shows only what is not billed yet
    period_end = await pool.fetchval(
        "SELECT next_close_at FROM subscriptions WHERE id = $1", subscription
    )
    clock.now = period_end + 3600
    await close.run_once()
    first, cycle = await invoices(pool, subscription)
    assert first["id"] == threshold["id"]
    assert (cycle["billing_reason"], cycle["status"], cycle["subtotal"]) == (
        "subscription_cycle",
        "open",
        25,
    )
    # Together they bill what one invoice would: 50 + 100 * 2 + 85 * 1.
    assert first["subtotal"] + cycle["subtotal"] == 335


async def test_a_threshold_with_reset_ends_the_period_and_restarts_the_cycle(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    aggregator: None,
    ingest_settings: Settings,
    pool: asyncpg.Pool,
) -> None:
    account = await make_account()
    billing = Billing(http, account.secret_key)
    tokens = await billing.meter("tokens", "sum")
    price = await billing.price(tokens, unit_amount="1", **DAILY)
    customer = (await billing.post("/v1/customers", {"name": "Di"}))["id"]
    clock = Clock()
    start = int(clock.now) - 3600
    subscription = (
        await billing.post(
            "/v1/subscriptions",
            {
                "customer": customer,
                "items[0][price]": price,
                "backdate_start_date": str(start),
                "billing_thresholds[amount_gte]": "100",
                "billing_thresholds[reset_billing_cycle_anchor]": "true",
            },
        )
    )["id"]
    await billing.event("tokens", customer, "t1", value="150", timestamp=str(start + 60))
    await wait_until(await folded(pool, account.account_id, 1), 30, "the event")
    close = closer(ingest_settings, pool, clock)
    await close.run_once()
    [threshold] = await invoices(pool, subscription)
    cut = int(clock.now) // 60 * 60
    assert (threshold["period_start"], threshold["period_end"]) == (start, cut)
    assert (threshold["subtotal"], threshold["status"]) == (150, "open")
    sub = await pool.fetchrow(
        """SELECT billing_cycle_anchor, open_period_start, next_close_at FROM subscriptions
           WHERE id = $1""",
        subscription,
    )
    assert sub is not None
    assert tuple(sub) == (cut, cut, cut + DAY)
    assert "customer.subscription.updated" in [
        r["type"]
        for r in await pool.fetch(
            "SELECT type FROM v1_events WHERE account_id = $1", account.account_id
        )
    ]
    amount_due, _ = await billing.lines(customer)
    assert amount_due == 0  # the new period has no usage yet


async def test_cancelling_with_invoice_now_invoices_the_period_so_far(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    aggregator: None,
    ingest_settings: Settings,
    pool: asyncpg.Pool,
) -> None:
    account = await make_account()
    billing = Billing(http, account.secret_key)
    tokens = await billing.meter("tokens", "sum")
    price = await billing.price(tokens, unit_amount="3", **DAILY)
    customer = (await billing.post("/v1/customers", {"name": "Ed"}))["id"]
    now_subscription = (
        await billing.post("/v1/subscriptions", {"customer": customer, "items[0][price]": price})
    )["id"]
    quiet_subscription = (
        await billing.post(
            "/v1/subscriptions",
            {
                "customer": customer,
                "items[0][price]": await billing.price(tokens, unit_amount="5", **DAILY),
            },
        )
    )["id"]
    await billing.event("tokens", customer, "t1", value="7")
    await wait_until(await folded(pool, account.account_id, 1), 30, "the event")
    headers = {"Authorization": f"Bearer {account.secret_key}"}
    response = await http.delete(
        f"/v1/subscriptions/{now_subscription}", params={"invoice_now": "true"}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"
    response = await http.delete(f"/v1/subscriptions/{quiet_subscription}", headers=headers)
    assert response.status_code == 200, response.text
    [invoice] = await invoices(pool, now_subscription)
    assert (invoice["billing_reason"], invoice["status"], invoice["subtotal"]) == (
        "subscription_update",
        "draft",
        21,
    )
    assert await invoices(pool, quiet_subscription) == []
    clock = Clock()
    clock.now += 3600
    await closer(ingest_settings, pool, clock).run_once()
    [final] = await invoices(pool, now_subscription)
    assert (final["status"], final["amount_due"]) == ("open", 21)
    # Cancelled subscriptions are never closed again.
    assert await invoices(pool, quiet_subscription) == []


async def test_cancel_at_period_end_ends_the_subscription_with_its_last_invoice(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    aggregator: None,
    ingest_settings: Settings,
    pool: asyncpg.Pool,
) -> None:
    account = await make_account()
    billing = Billing(http, account.secret_key)
    tokens = await billing.meter("tokens", "sum")
    price = await billing.price(tokens, unit_amount="2", **DAILY)
    customer = (await billing.post("/v1/customers", {"name": "Flo"}))["id"]
    subscription = (
        await billing.post(
            "/v1/subscriptions",
            {"customer": customer, "items[0][price]": price, "cancel_at_period_end": "true"},
        )
    )["id"]
    await billing.event("tokens", customer, "t1", value="11")
    await wait_until(await folded(pool, account.account_id, 1), 30, "the event")
    clock = Clock()
    close = closer(ingest_settings, pool, clock)
    await close.run_once()
    clock.now += DAY
    await close.run_once()
    [invoice] = await invoices(pool, subscription)
    assert (invoice["subtotal"], invoice["status"]) == (22, "draft")
    row = await pool.fetchrow(
        "SELECT status, ended_at FROM subscriptions WHERE id = $1", subscription
    )
    assert row is not None
    assert (row["status"], row["ended_at"]) == ("canceled", invoice["period_end"])
    deleted = await pool.fetchval(
        """SELECT body FROM v1_events WHERE account_id = $1
             AND type = 'customer.subscription.deleted'""",
        account.account_id,
    )
    assert orjson.loads(deleted)["data"]["object"]["status"] == "canceled"
    clock.now += DAY
    await close.run_once()
    assert len(await invoices(pool, subscription)) == 1


async def test_the_closer_expires_what_is_left_of_a_grant_once(
    make_account: AccountFactory, ingest_settings: Settings, pool: asyncpg.Pool
) -> None:
    account = await make_account()
    clock = Clock()
    now = int(clock.now)
    await pool.execute(
        """INSERT INTO customers (id, account_id, livemode, created)
           VALUES ('cus_exp', $1, false, $2)""",
        account.account_id,
        now,
    )
    await pool.execute(
        """INSERT INTO credit_grants (id, account_id, livemode, customer_id, category, priority,
               currency, amount, effective_at, expires_at, created, updated)
           VALUES ('credgr_exp', $1, false, 'cus_exp', 'paid', 50, 'usd', 700, $2, $3, $2, $2)""",
        account.account_id,
        now - 100,
        now - 10,
    )
    await pool.execute(
        """INSERT INTO credit_ledger (id, account_id, livemode, customer_id, credit_grant_id,
               type, reason, amount, currency, effective_at, created, dedupe_key)
           VALUES ('cbtxn_g', $1, false, 'cus_exp', 'credgr_exp', 'credit', 'credits_granted',
                   700, 'usd', $2, $2, 'granted:credgr_exp')""",
        account.account_id,
        now - 100,
    )
    close = closer(ingest_settings, pool, clock)
    await close.run_once()
    await close.run_once()
    rows = await pool.fetch(
        """SELECT reason, amount, effective_at FROM credit_ledger
           WHERE credit_grant_id = 'credgr_exp' ORDER BY seq"""
    )
    assert [tuple(r) for r in rows] == [
        ("credits_granted", 700, now - 100),
        ("credits_expired", 700, now - 10),
    ]
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("DELETE FROM credit_ledger WHERE credit_grant_id = 'credgr_exp'")

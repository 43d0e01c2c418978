"""Closing periods through the real pipeline (HTTP → Kafka → aggregator → PostgreSQL → closer):
the period's invoice, late usage during the grace period, finalization with credits, billing
thresholds with and without a cycle reset, cancellation, and grant expiry. The closer runs in this
process on a clock the test moves; everything else is real."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from aggregator.invoicing.closer import InvoiceCloser
from meterflow.settings import Settings
from meterflow.store.accounts import NewAccount
from meterflow.usage.reader import folded_event_count
from tests.conftest import AccountFactory
from tests.fixtures.billing import Billing
from tests.fixtures.invoices import Owner, insert_grant
from tests.fixtures.meter_events import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DAY = 86_400
GRACE_S = 3600
DAILY = {"recurring[interval]": "day"}


class Clock:
    """The closer's clock, which the test moves."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@dataclass
class Closing:
    """One account's billing through the API, its database, and a closer on a test clock."""

    account: NewAccount
    billing: Billing
    http: httpx.AsyncClient
    pool: asyncpg.Pool
    closer: InvoiceCloser
    clock: Clock

    async def customer(self, name: str) -> str:
        customer_id: str = (await self.billing.post("/v1/customers", {"name": name}))["id"]
        return customer_id

    async def subscribe(self, customer: str, price: str, **form: str) -> str:
        subscription = await self.billing.post(
            "/v1/subscriptions", {"customer": customer, "items[0][price]": price} | form
        )
        subscription_id: str = subscription["id"]
        return subscription_id

    async def folded(self, count: int) -> None:
        async def check() -> bool:
            async with self.pool.acquire() as conn:
                return await folded_event_count(conn, self.account.account_id) >= count

        await wait_until(check, 30, f"{count} events to be folded")

    async def close(self, *, passes: int = 1) -> None:
        for _ in range(passes):
            await self.closer.run_once()

    async def invoices(self, subscription: str) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            """SELECT id, billing_reason, status, period_start, period_end, subtotal,
                      total_credits, amount_due, close_key
               FROM invoices WHERE subscription_id = $1 ORDER BY seq""",
            subscription,
        )
        return rows

    async def events(self, prefix: str) -> list[dict[str, Any]]:
        """The v1 events of the account whose type starts with ``prefix``, oldest first."""
        rows = await self.pool.fetch(
            """SELECT body FROM v1_events WHERE account_id = $1 AND starts_with(type, $2)
               ORDER BY seq""",
            self.account.account_id,
            prefix,
        )
        return [orjson.loads(r["body"]) for r in rows]


@pytest.fixture
async def closing(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    aggregator: None,
    ingest_settings: Settings,
    database_url: str,
) -> AsyncIterator[Closing]:
    account = await make_account()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    clock = Clock()
    closer = InvoiceCloser(
        ingest_settings.with_overrides(invoice_grace_s=GRACE_S), pool, CollectorRegistry(), clock
    )
    try:
        yield Closing(account, Billing(http, account.secret_key), http, pool, closer, clock)
    finally:
        await pool.close()


async def test_a_period_is_invoiced_at_its_end_and_finalized_with_late_usage_after_grace(
    closing: Closing,
) -> None:
    billing = closing.billing
    tokens = await billing.meter("tokens", "sum")
    price = await billing.price(
        tokens, unit_amount="4", **DAILY,
        **{"transform_quantity[divide_by]": "100", "transform_quantity[round]": "up"},
    )  # fmt: skip
    customer = await closing.customer("Ada")
    start = int(closing.clock.now) - DAY - 600  # the first period ended ten minutes ago
    subscription = await closing.subscribe(customer, price, backdate_start_date=str(start))
    await billing.event("tokens", customer, "p1", value="1234", timestamp=str(start + 60))
    await billing.event("tokens", customer, "p2", value="500")  # the current period
    await billing.event("tokens", customer, "early", value="999", timestamp=str(start - 120))
    await closing.folded(3)

    await closing.close()
    [draft] = await closing.invoices(subscription)
    assert (draft["billing_reason"], draft["status"]) == ("subscription_cycle", "draft")
    assert (draft["period_start"], draft["period_end"]) == (start, start + DAY)
    assert draft["subtotal"] == 52  # 1,234 tokens: 13 hundreds at 4 cents

    # Usage for the closed period, sent during the grace period, still counts.
    await billing.event("tokens", customer, "late", value="100", timestamp=str(start + 120))
    await closing.folded(4)
    await closing.close()
    assert (await closing.invoices(subscription))[0]["status"] == "draft"  # grace not over
    closing.clock.now += GRACE_S
    await closing.close(passes=2)
    [final] = await closing.invoices(subscription)
    assert (final["status"], final["subtotal"], final["amount_due"]) == ("open", 56, 56)
    assert [e["type"] for e in await closing.events("invoice.")] == [
        "invoice.created",
        "invoice.finalized",
    ]
    lines = await closing.pool.fetch(
        "SELECT quantity, amount, description FROM invoice_lines WHERE invoice_id = $1",
        final["id"],
    )
    assert [(int(r["quantity"]), r["amount"], r["description"]) for r in lines] == [
        (14, 56, f"14 \u00d7 {tokens}")  # the product is named after the meter here
    ]
    # The subscription renewed into its next period, which the preview now shows.
    row = await closing.pool.fetchrow(
        "SELECT open_period_start, next_close_at FROM subscriptions WHERE id = $1", subscription
    )
    assert row is not None
    assert (row["open_period_start"], row["next_close_at"]) == (start + DAY, start + 2 * DAY)
    amount_due, _ = await billing.lines(customer)
    assert amount_due == 20  # 500 tokens


async def test_finalization_applies_credits_in_grant_order_and_records_the_ledger(
    closing: Closing,
) -> None:
    billing = closing.billing
    price = await billing.price(await billing.meter("calls", "count"), unit_amount="100", **DAILY)
    customer = await closing.customer("Bo")
    start = int(closing.clock.now) - DAY - 600
    subscription = await closing.subscribe(customer, price, backdate_start_date=str(start))
    for i in range(5):
        await billing.event("calls", customer, f"c{i}", timestamp=str(start + 60 + i))
    await closing.folded(5)
    # Three grants: the promotional one goes first (same priority and expiry), then the paid
    # one; the other currency's never applies.
    owner = Owner(closing.account.account_id)
    async with closing.pool.acquire() as conn:
        paid = await insert_grant(conn, owner, customer, 150, effective_at=start)
        promotional = await insert_grant(
            conn, owner, customer, 300, effective_at=start, category="promotional"
        )
        await insert_grant(conn, owner, customer, 1000, effective_at=start, currency="eur")
    await closing.close()
    closing.clock.now += GRACE_S
    await closing.close()
    [invoice] = await closing.invoices(subscription)
    assert (invoice["status"], invoice["subtotal"]) == ("open", 500)
    assert (invoice["total_credits"], invoice["amount_due"]) == (450, 50)
    applied = await closing.pool.fetch(
        """SELECT credit_grant_id, amount FROM credit_ledger
           WHERE invoice_id = $1 AND reason = 'credits_applied' ORDER BY seq""",
        invoice["id"],
    )
    assert [tuple(r) for r in applied] == [(promotional, 300), (paid, 150)]
    announced = [
        e["data"]["object"] for e in await closing.events("billing.credit_balance_transaction.")
    ]
    assert [
        (t["credit_grant"], t["debit"]["type"], t["debit"]["amount"]["monetary"]["value"])
        for t in announced
    ] == [(promotional, "credits_applied", 300), (paid, "credits_applied", 150)]


async def test_a_threshold_invoice_then_the_period_end_bill_the_usage_once(
    closing: Closing,
) -> None:
    billing = closing.billing
    tokens = await billing.meter("tokens", "sum")
    # Graduated: the first 100 units at 2 cents, then 1 cent; a 50-cent flat fee in tier one.
    price = await billing.price(
        tokens, billing_scheme="tiered", tiers_mode="graduated", **DAILY,
        **{"tiers[0][up_to]": "100", "tiers[0][unit_amount]": "2",
           "tiers[0][flat_amount]": "50", "tiers[1][up_to]": "inf",
           "tiers[1][unit_amount]": "1"},
    )  # fmt: skip
    customer = await closing.customer("Cy")
    subscription = await closing.subscribe(
        customer, price, **{"billing_thresholds[amount_gte]": "300"}
    )
    await closing.close()  # schedules the subscription
    await billing.event("tokens", customer, "t1", value="120")  # 50 + 200 + 20 = 270
    await closing.folded(1)
    await closing.close()
    assert await closing.invoices(subscription) == []
    await billing.event("tokens", customer, "t2", value="40")  # 310: the threshold
    await closing.folded(2)
    await closing.close(passes=2)  # reached once: one invoice
    [threshold] = await closing.invoices(subscription)
    assert (threshold["billing_reason"], threshold["status"]) == ("subscription_threshold", "open")
    assert threshold["subtotal"] == 310
    await billing.event("tokens", customer, "t3", value="25")
    await closing.folded(3)
    amount_due, _ = await billing.lines(customer)
    assert amount_due == 25  # the preview shows only what is not billed yet
    period_end = await closing.pool.fetchval(
        "SELECT next_close_at FROM subscriptions WHERE id = $1", subscription
    )
    closing.clock.now = period_end + GRACE_S
    await closing.close()
    first, cycle = await closing.invoices(subscription)
    assert first["id"] == threshold["id"]
    assert (cycle["billing_reason"], cycle["status"], cycle["subtotal"]) == (
        "subscription_cycle",
        "open",
        25,
    )
    # Together they bill what one invoice would: 50 + 100 * 2 + 85 * 1.
    assert first["subtotal"] + cycle["subtotal"] == 335


async def test_a_threshold_with_reset_ends_the_period_and_restarts_the_cycle(
    closing: Closing,
) -> None:
    billing = closing.billing
    price = await billing.price(await billing.meter("tokens", "sum"), unit_amount="1", **DAILY)
    customer = await closing.customer("Di")
    start = int(closing.clock.now) - 3600
    subscription = await closing.subscribe(
        customer, price, backdate_start_date=str(start),
        **{"billing_thresholds[amount_gte]": "100",
           "billing_thresholds[reset_billing_cycle_anchor]": "true"},
    )  # fmt: skip
    await billing.event("tokens", customer, "t1", value="150", timestamp=str(start + 60))
    await closing.folded(1)
    await closing.close()
    [threshold] = await closing.invoices(subscription)
    cut = int(closing.clock.now) // 60 * 60
    assert (threshold["period_start"], threshold["period_end"]) == (start, cut)
    assert (threshold["subtotal"], threshold["status"]) == (150, "open")
    sub = await closing.pool.fetchrow(
        """SELECT billing_cycle_anchor, open_period_start, next_close_at FROM subscriptions
           WHERE id = $1""",
        subscription,
    )
    assert sub is not None
    assert tuple(sub) == (cut, cut, cut + DAY)
    [updated] = await closing.events("customer.subscription.updated")
    assert updated["data"]["previous_attributes"]["billing_cycle_anchor"] == start
    amount_due, _ = await billing.lines(customer)
    assert amount_due == 0  # the new period has no usage yet


async def test_cancelling_with_invoice_now_invoices_the_period_so_far(closing: Closing) -> None:
    billing = closing.billing
    tokens = await billing.meter("tokens", "sum")
    customer = await closing.customer("Ed")
    now_subscription = await closing.subscribe(
        customer, await billing.price(tokens, unit_amount="3", **DAILY)
    )
    quiet_subscription = await closing.subscribe(
        customer, await billing.price(tokens, unit_amount="5", **DAILY)
    )
    await billing.event("tokens", customer, "t1", value="7")
    await closing.folded(1)
    headers = {"Authorization": f"Bearer {closing.account.secret_key}"}
    http = closing.http
    response = await http.delete(
        f"/v1/subscriptions/{now_subscription}", params={"invoice_now": "true"}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"
    response = await http.delete(f"/v1/subscriptions/{quiet_subscription}", headers=headers)
    assert response.status_code == 200, response.text
    [invoice] = await closing.invoices(now_subscription)
    assert (invoice["billing_reason"], invoice["status"], invoice["subtotal"]) == (
        "subscription_update",
        "draft",
        21,
    )
    assert await closing.invoices(quiet_subscription) == []
    # The grace period runs from the cancellation, a little after the test clock's start.
    closing.clock.now = time.time() + GRACE_S
    await closing.close()
    [final] = await closing.invoices(now_subscription)
    assert (final["status"], final["amount_due"]) == ("open", 21)
    # Cancelled subscriptions are never closed again.
    assert await closing.invoices(quiet_subscription) == []


async def test_cancel_at_period_end_ends_the_subscription_with_its_last_invoice(
    closing: Closing,
) -> None:
    billing = closing.billing
    price = await billing.price(await billing.meter("tokens", "sum"), unit_amount="2", **DAILY)
    customer = await closing.customer("Flo")
    subscription = await closing.subscribe(customer, price, cancel_at_period_end="true")
    await billing.event("tokens", customer, "t1", value="11")
    await closing.folded(1)
    await closing.close()
    # The period ends a day after the subscription was created, by the wall clock, which may be
    # a second past the test clock's start.
    closing.clock.now = await closing.pool.fetchval(
        "SELECT next_close_at FROM subscriptions WHERE id = $1", subscription
    )
    await closing.close()
    [invoice] = await closing.invoices(subscription)
    assert (invoice["subtotal"], invoice["status"]) == (22, "draft")
    row = await closing.pool.fetchrow(
        "SELECT status, ended_at FROM subscriptions WHERE id = $1", subscription
    )
    assert row is not None
    assert (row["status"], row["ended_at"]) == ("canceled", invoice["period_end"])
    [deleted] = await closing.events("customer.subscription.deleted")
    assert deleted["data"]["object"]["status"] == "canceled"
    closing.clock.now += DAY
    await closing.close()
    assert len(await closing.invoices(subscription)) == 1


async def test_the_closer_expires_what_is_left_of_a_grant_once(closing: Closing) -> None:
    now = int(closing.clock.now)
    customer = await closing.customer("Gus")
    async with closing.pool.acquire() as conn:
        grant = await insert_grant(
            conn, Owner(closing.account.account_id), customer, 700, effective_at=now - 100,
            expires_at=now - 10,
        )  # fmt: skip
    await closing.close(passes=2)
    rows = await closing.pool.fetch(
        """SELECT reason, amount, effective_at FROM credit_ledger
           WHERE credit_grant_id = $1 ORDER BY seq""",
        grant,
    )
    assert [tuple(r) for r in rows] == [
        ("credits_granted", 700, now - 100),
        ("credits_expired", 700, now - 10),
    ]
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await closing.pool.execute("DELETE FROM credit_ledger WHERE credit_grant_id = $1", grant)

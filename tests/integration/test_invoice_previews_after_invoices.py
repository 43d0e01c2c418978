"""Previews after real invoices (HTTP → Kafka → aggregator → PostgreSQL, invoices made by the
closer's own functions): a preview bills only what the period's earlier invoices did not, shows
the credits that would apply now, and bills the whole period again once the earlier invoice is
voided and its credits given back."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx
import pytest

from meterflow.billing.closing import invoice_period
from meterflow.billing.objects.owners import AccountMode
from meterflow.billing.objects.subscriptions import load_subscriptions
from tests.conftest import AccountFactory
from tests.fixtures.billing import Billing
from tests.fixtures.invoices import Owner, insert_grant
from tests.fixtures.meter_events import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def credit(amount: int, transaction: str | None = None) -> dict[str, Any]:
    return {
        "amount": amount,
        "credit_balance_transaction": transaction,
        "discount": None,
        "type": "credit_balance_transaction",
    }


async def test_a_preview_bills_what_is_not_invoiced_yet_with_the_credits_left(
    http: httpx.AsyncClient, make_account: AccountFactory, aggregator: None, database_url: str
) -> None:
    account = await make_account()
    billing = Billing(http, account.secret_key)
    price = await billing.price(await billing.meter("tokens", "sum"), unit_amount="1")
    customer = (await billing.post("/v1/customers", {"name": "Ada"}))["id"]
    subscription_id = (
        await billing.post("/v1/subscriptions", {"customer": customer, "items[0][price]": price})
    )["id"]
    now = int(time.time())
    conn = await asyncpg.connect(database_url)
    try:
        grant = await insert_grant(
            conn, Owner(account.account_id), customer, 300, effective_at=now - 3600
        )
        granted = await conn.fetchval("SELECT count(*) FROM credit_ledger")

        async def preview() -> dict[str, Any]:
            return await billing.post("/v1/invoices/create_preview", {"customer": customer})

        async def subtotal_is(amount: int) -> bool:
            subtotal: int = (await preview())["subtotal"]
            return subtotal == amount

        # 500 tokens at 1 cent; the grant's 300 would apply now, so 200 are due.
        await billing.event("tokens", customer, "e1", value="500")
        await wait_until(lambda: subtotal_is(500), 30, "the first event in the preview")
        first = await preview()
        [line] = first["lines"]["data"]
        assert line["id"].startswith("il_tmp_")
        assert (line["amount"], line["pretax_credit_amounts"]) == (500, [credit(300)])
        assert (first["total"], first["amount_due"], first["amount_remaining"]) == (200, 200, 200)
        assert first["total_pretax_credit_amounts"] == [credit(300)]
        assert await conn.fetchval("SELECT count(*) FROM credit_ledger") == granted  # nothing kept

        # A threshold invoice bills the period so far and takes the credits at finalization.
        owner = AccountMode(account.account_id, livemode=False)
        [subscription] = await load_subscriptions(
            conn, owner, "s.id = $3", [subscription_id], limit=1
        )
        period = subscription.period_at(now)
        async with conn.transaction():
            threshold = await invoice_period(
                conn, owner, subscription, period, reason="subscription_threshold",
                close_key=f"threshold:{period[0]}:1", now_s=now, finalize_at=now,
            )  # fmt: skip
        assert threshold is not None
        assert (threshold.status, threshold.subtotal, threshold.total) == ("open", 500, 200)
        after = await preview()
        assert (after["subtotal"], after["amount_due"]) == (0, 0)
        assert after["lines"]["data"][0]["pretax_credit_amounts"] == []

        # Later usage is all the preview bills; the grant has nothing left to give.
        await billing.event("tokens", customer, "e2", value="120")
        await wait_until(lambda: subtotal_is(120), 30, "the second event in the preview")
        later = await preview()
        assert (later["amount_due"], later["total_pretax_credit_amounts"]) == (120, [])

        # Voiding the threshold invoice gives its 300 back, and its usage is unbilled again.
        response = await http.post(
            f"/v1/invoices/{threshold.id}/void",
            headers={"Authorization": f"Bearer {account.secret_key}"},
        )
        assert (response.status_code, response.json()["status"]) == (200, "void")
        [applied] = [line.credits[0] for line in threshold.lines if line.credits]
        reinstated = await conn.fetchrow(
            """SELECT credit_grant_id, amount, invoice_id, invoice_line_id FROM credit_ledger
               WHERE dedupe_key = $1""",
            f"reinstated:{applied.transaction}",
        )
        assert reinstated is not None
        assert tuple(reinstated.values()) == (
            grant,
            300,
            threshold.id,
            threshold.lines[0].id,
        )
        whole = await preview()
        assert (whole["subtotal"], whole["amount_due"]) == (620, 320)
        assert whole["total_pretax_credit_amounts"] == [credit(300)]
    finally:
        await conn.close()

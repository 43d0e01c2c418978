"""The official Stripe Python SDK, unchanged, reads, pays and voids invoices the closer made:
list (filters, auto-pagination), retrieve, lines, pay out of band, void, and Stripe-shaped
errors for the states that refuse them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest
import stripe

from meterflow.billing.closing import invoice_period
from meterflow.billing.objects.owners import AccountMode
from meterflow.billing.objects.subscriptions import load_subscriptions
from tests.conftest import AccountFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

DAY = 86_400


def _client(key: str, base_url: str) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": base_url}, max_network_retries=0)


def _subscribe(key: str, base_url: str) -> tuple[str, str]:
    client = _client(key, base_url)
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 1500,
            "recurring": {"interval": "day"},
            "product_data": {"name": "Seat"},
        }
    )
    customer = client.v1.customers.create({"name": "Jenny Rosen"})
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    return customer.id, subscription.id


def _refusal(call: Any) -> tuple[int | None, str | None]:
    try:
        call()
    except stripe.InvalidRequestError as exc:
        return exc.http_status, exc.code
    raise AssertionError("the call was not refused")


def _drive(key: str, base_url: str, customer: str, created: int) -> dict[str, Any]:
    client = _client(key, base_url)
    invoices = client.v1.invoices
    listed = [i.id for i in invoices.list({"customer": customer, "limit": 2}).auto_paging_iter()]
    first, second, third = listed
    found = invoices.retrieve(first)
    lines = list(invoices.line_items.list(first, {"limit": 1}).auto_paging_iter())
    paid = invoices.pay(first, {"paid_out_of_band": True})
    voided = invoices.void_invoice(second)
    return {
        "listed": listed,
        "retrieved": (found.id, found.status, found.amount_due, found.number is not None),
        "lines": [(line.object, line.amount, line.invoice) for line in lines],
        "paid": (paid.status, paid.amount_paid, paid.amount_remaining),
        "voided": (voided.status, voided.status_transitions.voided_at is not None),
        "by_status": {
            status: [i.id for i in invoices.list({"status": status}).auto_paging_iter()]
            for status in ("open", "paid", "void")
        },
        "created": [
            len(invoices.list({"created": {"gte": created}}).data),
            len(invoices.list({"created": {"lt": created}}).data),
            len(invoices.list({"created": created}).data),
        ],
        "refusals": {
            "pay again": _refusal(lambda: invoices.pay(first, {"paid_out_of_band": True})),
            "pay void": _refusal(lambda: invoices.pay(second, {"paid_out_of_band": True})),
            "pay in band": _refusal(lambda: invoices.pay(third)),
            "void again": _refusal(lambda: invoices.void_invoice(second)),
            "void paid": _refusal(lambda: invoices.void_invoice(first)),
            "missing": _refusal(lambda: invoices.retrieve("in_missing")),
        },
        "third": invoices.retrieve(third).status,
    }


async def test_the_python_sdk_lists_retrieves_pays_and_voids_invoices(
    ingest_url: str, make_account: AccountFactory, database_url: str
) -> None:
    account = await make_account()
    customer, subscription_id = await asyncio.to_thread(_subscribe, account.secret_key, ingest_url)
    now = int(time.time())
    owner = AccountMode(account.account_id, livemode=False)
    conn = await asyncpg.connect(database_url)
    try:
        [subscription] = await load_subscriptions(
            conn, owner, "s.id = $3", [subscription_id], limit=1
        )
        made = []
        # Three past days' invoices, finalized at once: open, 1,500 each.
        for k in range(3):
            start = now - (10 - k) * DAY
            async with conn.transaction():
                invoice = await invoice_period(
                    conn, owner, subscription, (start, start + DAY),
                    reason="subscription_cycle", close_key=f"cycle:{start}", now_s=now,
                    finalize_at=now,
                )  # fmt: skip
            assert invoice is not None
            made.append(invoice.id)
    finally:
        await conn.close()
    result = await asyncio.to_thread(_drive, account.secret_key, ingest_url, customer, now)
    newest_first = made[::-1]
    assert result["listed"] == newest_first
    assert result["retrieved"] == (newest_first[0], "open", 1500, True)
    assert result["lines"] == [("line_item", 1500, newest_first[0])]
    assert result["paid"] == ("paid", 1500, 0)
    assert result["voided"] == ("void", True)
    assert result["by_status"] == {
        "open": [newest_first[2]],
        "paid": [newest_first[0]],
        "void": [newest_first[1]],
    }
    assert result["created"] == [3, 0, 3]
    assert result["refusals"] == {
        "pay again": (400, "invoice_unexpected_state"),
        "pay void": (400, "invoice_unexpected_state"),
        "pay in band": (400, "parameter_missing"),
        "void again": (400, "invoice_unexpected_state"),
        "void paid": (400, "invoice_unexpected_state"),
        "missing": (404, "resource_missing"),
    }
    assert result["third"] == "open"

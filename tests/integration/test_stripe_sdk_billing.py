"""The official Stripe SDKs, unchanged, run the Alpaca walkthrough: meter, metered price,
customer, subscription, events, and a preview with the exact amount."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import stripe

from tests.conftest import AccountFactory
from tests.fixtures.node_sdk import needs_node, run_node_script

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

POLL_DEADLINE_S = 30.0


def _alpaca(key: str, base_url: str) -> dict[str, Any]:
    client = stripe.StripeClient(key, base_addresses={"api": base_url}, max_network_retries=0)
    meter = client.v1.billing.meters.create(
        {
            "display_name": "Alpaca AI tokens",
            "event_name": "alpaca_ai_tokens",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 4,
            "transform_quantity": {"divide_by": 100, "round": "up"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            "product_data": {"name": "Alpaca AI tokens"},
        }
    )
    customer = client.v1.customers.create({"name": "Jenny Rosen", "email": "jenny@example.com"})
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    for i, value in enumerate(("1000", "234")):
        client.v1.billing.meter_events.create(
            {
                "event_name": "alpaca_ai_tokens",
                "identifier": f"sdk-billing-{i}",
                "payload": {"stripe_customer_id": customer.id, "value": value},
            }
        )
    deadline = time.monotonic() + POLL_DEADLINE_S
    while True:
        preview = client.v1.invoices.create_preview({"customer": customer.id})
        if preview.amount_due == 52 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    body: dict[str, Any] = preview.to_dict()
    line = body["lines"]["data"][0]
    return {
        "subscription": subscription.id,
        "item_period": (
            subscription["items"]["data"][0]["current_period_start"],
            subscription["items"]["data"][0]["current_period_end"],
        ),
        "amount_due": body["amount_due"],
        "line": (line["quantity"], line["amount"], line["pricing"]["price_details"]["price"]),
        "price": price.id,
        "preview_subscription": body["parent"]["subscription_details"]["subscription"],
    }


async def test_python_sdk_runs_the_alpaca_walkthrough(
    ingest_url: str, make_account: AccountFactory, aggregator: None
) -> None:
    key = (await make_account()).secret_key
    # The SDK is synchronous: run it in a worker thread so the event loop stays free.
    result = await asyncio.to_thread(_alpaca, key, ingest_url)
    assert result["amount_due"] == 52
    assert result["line"] == (13, 52, result["price"])
    assert result["preview_subscription"] == result["subscription"]
    start, end = result["item_period"]
    assert start < end


@needs_node
async def test_node_sdk_runs_the_alpaca_walkthrough(
    ingest_url: str, make_account: AccountFactory, aggregator: None
) -> None:
    key = (await make_account()).secret_key
    report = await run_node_script("billing.mjs", ingest_url, key)
    assert report["amountDue"] == 52
    assert report["line"] == [13, 52, report["price"]]
    assert report["previewSubscription"] == report["subscription"]

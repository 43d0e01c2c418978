"""The official Stripe SDKs, unchanged, drive billing credits: create, retrieve, update, list,
expire and void grants; the balance summary (by scope and by grant); balance transactions listed
and retrieved."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import stripe

from tests.conftest import AccountFactory
from tests.fixtures.node_sdk import needs_node, run_node_script

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _credits(key: str, base_url: str) -> dict[str, Any]:
    client = stripe.StripeClient(key, base_addresses={"api": base_url}, max_network_retries=0)
    meter = client.v1.billing.meters.create(
        {
            "display_name": "Alpaca AI tokens",
            "event_name": "alpaca_ai_tokens",
            "default_aggregation": {"formula": "sum"},
        }
    )
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 4,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            "product_data": {"name": "Alpaca AI tokens"},
        }
    )
    customer = client.v1.customers.create({"name": "Jenny Rosen"})
    grants = client.v1.billing.credit_grants
    grant = grants.create(
        {
            "customer": customer.id,
            "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 1000}},
            "applicability_config": {"scope": {"price_type": "metered"}},
            "category": "promotional",
            "name": "Welcome credits",
            "metadata": {"campaign": "spring"},
        }
    )
    scoped = grants.create(
        {
            "customer": customer.id,
            "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 250}},
            "applicability_config": {"scope": {"prices": [{"id": price.id}]}},
            "priority": 10,
        }
    )
    retrieved = grants.retrieve(grant.id)
    expires_at = int(time.time()) + 86_400
    updated = grants.update(grant.id, {"expires_at": expires_at, "metadata": {"batch": "7"}})
    listed = grants.list({"customer": customer.id, "limit": 1})
    summary = client.v1.billing.credit_balance_summary.retrieve(
        {
            "customer": customer.id,
            "filter": {
                "type": "applicability_scope",
                "applicability_scope": {"price_type": "metered"},
            },
        }
    )
    of_scoped = client.v1.billing.credit_balance_summary.retrieve(
        {"customer": customer.id, "filter": {"type": "credit_grant", "credit_grant": scoped.id}}
    )
    by_price = client.v1.billing.credit_balance_summary.retrieve(
        {
            "customer": customer.id,
            "filter": {
                "type": "applicability_scope",
                "applicability_scope": {"prices": [{"id": price.id}]},
            },
        }
    )
    expired = grants.expire(grant.id)
    voided = grants.void_grant(scoped.id)
    transactions = client.v1.billing.credit_balance_transactions.list({"customer": customer.id})
    first = client.v1.billing.credit_balance_transactions.retrieve(transactions.data[-1].id)
    by_grant = client.v1.billing.credit_balance_transactions.list({"credit_grant": scoped.id})
    after = client.v1.billing.credit_balance_summary.retrieve(
        {"customer": customer.id, "filter": {"type": "credit_grant", "credit_grant": grant.id}}
    )
    return {
        "grant": grant.to_dict(),
        "retrieved": retrieved.to_dict(),
        "updated": (updated.expires_at, updated.metadata.to_dict(), expires_at),
        "listed": ([g.id for g in listed.data], listed.has_more),
        "scoped": (scoped.id, scoped.applicability_config.scope.to_dict(), price.id),
        "summary": summary.to_dict()["balances"],
        "of_scoped": of_scoped.to_dict()["balances"],
        "by_price": by_price.to_dict()["balances"],
        "expired": (expired.expires_at is not None, expired.voided_at),
        "voided": voided.voided_at is not None,
        "transactions": [
            (t.type, t.to_dict()[t.type or ""]["type"], t.credit_grant) for t in transactions.data
        ],
        "first": (
            first.id,
            first.to_dict()["credit"]["amount"]["monetary"]["value"],
            first.credit_grant,
        ),
        "by_grant": [t.id for t in by_grant.data],
        "after": after.to_dict()["balances"],
        "customer": customer.id,
    }


def _usd(available: int, ledger: int) -> list[dict[str, Any]]:
    return [
        {
            "available_balance": {
                "type": "monetary",
                "monetary": {"currency": "usd", "value": available},
            },
            "ledger_balance": {
                "type": "monetary",
                "monetary": {"currency": "usd", "value": ledger},
            },
        }
    ]


async def test_python_sdk_drives_credit_grants_and_balances(
    ingest_url: str, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    # The SDK is synchronous: run it in a worker thread so the event loop stays free.
    result = await asyncio.to_thread(_credits, key, ingest_url)
    grant = result["grant"]
    assert grant["object"] == "billing.credit_grant"
    assert grant["amount"] == {"type": "monetary", "monetary": {"currency": "usd", "value": 1000}}
    assert (grant["category"], grant["priority"], grant["customer"]) == (
        "promotional",
        50,
        result["customer"],
    )
    assert result["retrieved"] == grant
    expires_at = result["updated"][2]
    assert result["updated"][:2] == (expires_at, {"batch": "7", "campaign": "spring"})
    scoped_id, scope, price = result["scoped"]
    assert scope == {"price_type": None, "prices": [{"id": price}]}
    assert result["listed"] == ([scoped_id], True)
    assert result["summary"] == _usd(1250, 1250)
    assert result["of_scoped"] == _usd(250, 250)
    assert result["by_price"] == _usd(1250, 1250)
    assert result["expired"] == (True, None)
    assert result["voided"] is True
    assert result["transactions"] == [
        ("debit", "credits_voided", scoped_id),
        ("debit", "credits_expired", grant["id"]),
        ("credit", "credits_granted", scoped_id),
        ("credit", "credits_granted", grant["id"]),
    ]
    first_id, value, first_grant = result["first"]
    assert (value, first_grant) == (1000, grant["id"])
    assert first_id.startswith("cbtxn_")
    assert len(result["by_grant"]) == 2
    assert result["after"] == _usd(0, 0)


@needs_node
async def test_node_sdk_drives_credit_grants_and_balances(
    ingest_url: str, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    report = await run_node_script("credits.mjs", ingest_url, key)
    assert report["grant"]["object"] == "billing.credit_grant"
    assert report["retrieved"] == report["grant"]
    assert report["updated"] == [report["expiresAt"], {"campaign": "spring", "batch": "7"}]
    assert report["listed"] == [report["grant"]["id"]]
    assert report["summary"] == _usd(1000, 1000)
    assert report["ofGrant"] == _usd(1000, 1000)
    assert report["expired"] is True
    assert report["voidedAt"] is not None
    assert report["transactions"] == [
        ["debit", "credits_voided", report["voidedGrant"]],
        ["credit", "credits_granted", report["voidedGrant"]],
        ["debit", "credits_expired", report["grant"]["id"]],
        ["credit", "credits_granted", report["grant"]["id"]],
    ]
    assert report["retrievedTransaction"] == report["firstTransaction"]
    assert report["after"] == []

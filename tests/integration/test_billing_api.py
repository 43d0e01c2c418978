"""Customers, products, prices and subscriptions over HTTP, and invoice previews rated from live
usage through the real pipeline."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx
import pytest

from meterflow.store.accounts import create_key
from tests.conftest import AccountFactory
from tests.fixtures.meter_events import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _post(
    http: httpx.AsyncClient, key: str, path: str, form: dict[str, str], status: int = 200
) -> dict[str, Any]:
    response = await http.post(path, data=form, headers=_auth(key))
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


async def _get(http: httpx.AsyncClient, key: str, path: str, **params: str) -> dict[str, Any]:
    response = await http.get(path, params=params, headers=_auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _meter(http: httpx.AsyncClient, key: str, event_name: str, formula: str) -> str:
    meter = await _post(
        http,
        key,
        "/v1/billing/meters",
        {
            "display_name": event_name,
            "event_name": event_name,
            "default_aggregation[formula]": formula,
            "customer_mapping[event_payload_key]": "stripe_customer_id",
            "customer_mapping[type]": "by_id",
        },
    )
    meter_id: str = meter["id"]
    return meter_id


async def test_customers_create_update_list_delete_and_stay_in_their_account(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    other = (await make_account("other")).secret_key
    created = await _post(
        http,
        key,
        "/v1/customers",
        {"name": "Jenny Rosen", "email": "jenny@example.com", "metadata[tier]": "gold"},
    )
    assert created["object"] == "customer"
    assert created["id"].startswith("cus_")
    assert (created["name"], created["email"], created["metadata"]) == (
        "Jenny Rosen",
        "jenny@example.com",
        {"tier": "gold"},
    )
    await _post(http, key, "/v1/customers", {"email": "someone@example.com"})
    updated = await _post(
        http, key, f"/v1/customers/{created['id']}", {"description": "VIP", "metadata[tier]": ""}
    )
    assert (updated["description"], updated["metadata"]) == ("VIP", {})
    listed = await _get(http, key, "/v1/customers", email="jenny@example.com")
    assert [c["id"] for c in listed["data"]] == [created["id"]]
    assert len((await _get(http, key, "/v1/customers"))["data"]) == 2
    # Another account sees none of it.
    missing = await http.get(f"/v1/customers/{created['id']}", headers=_auth(other))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "resource_missing"
    assert (await _get(http, other, "/v1/customers"))["data"] == []

    deleted = await http.delete(f"/v1/customers/{created['id']}", headers=_auth(key))
    assert deleted.json() == {"id": created["id"], "object": "customer", "deleted": True}
    fetched = await _get(http, key, f"/v1/customers/{created['id']}")
    assert fetched == {"id": created["id"], "object": "customer", "deleted": True}
    assert len((await _get(http, key, "/v1/customers"))["data"]) == 1


async def test_prices_with_tiers_transforms_and_inline_products(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    meter = await _meter(http, key, "alpaca_ai_tokens", "sum")
    per_hundred = await _post(
        http,
        key,
        "/v1/prices",
        {
            "currency": "usd",
            "unit_amount": "4",
            "transform_quantity[divide_by]": "100",
            "transform_quantity[round]": "up",
            "recurring[interval]": "month",
            "recurring[usage_type]": "metered",
            "recurring[meter]": meter,
            "product_data[name]": "Alpaca AI tokens",
            "lookup_key": "tokens_per_hundred",
        },
    )
    assert per_hundred["transform_quantity"] == {"divide_by": 100, "round": "up"}
    assert (per_hundred["unit_amount"], per_hundred["unit_amount_decimal"]) == (4, "4")
    assert per_hundred["recurring"]["meter"] == meter
    product = await _get(http, key, f"/v1/products/{per_hundred['product']}")
    assert product["name"] == "Alpaca AI tokens"

    tiered = await _post(
        http,
        key,
        "/v1/prices",
        {
            "currency": "usd",
            "product": product["id"],
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers[0][up_to]": "1000",
            "tiers[0][unit_amount_decimal]": "0.5",
            "tiers[0][flat_amount]": "100",
            "tiers[1][up_to]": "inf",
            "tiers[1][unit_amount]": "0",
            "recurring[interval]": "month",
            "recurring[usage_type]": "metered",
            "recurring[meter]": meter,
        },
    )
    assert "tiers" not in tiered
    assert (tiered["unit_amount"], tiered["unit_amount_decimal"]) == (None, None)
    expanded = await _get(http, key, f"/v1/prices/{tiered['id']}", **{"expand[]": "tiers"})
    assert expanded["tiers"][0] == {
        "flat_amount": 100,
        "flat_amount_decimal": "100",
        "unit_amount": None,
        "unit_amount_decimal": "0.5",
        "up_to": 1000,
    }
    assert expanded["tiers"][1]["up_to"] is None
    found = await _get(http, key, "/v1/prices", **{"lookup_keys[]": "tokens_per_hundred"})
    assert [p["id"] for p in found["data"]] == [per_hundred["id"]]
    archived = await _post(http, key, f"/v1/prices/{tiered['id']}", {"active": "false"})
    assert archived["active"] is False
    assert [p["id"] for p in (await _get(http, key, "/v1/prices"))["data"]] == [per_hundred["id"]]


async def test_bad_prices_and_subscriptions_get_a_clear_error_and_create_nothing(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    other = (await make_account("other")).secret_key
    meter = await _meter(http, key, "api_calls", "count")
    foreign_meter = await _meter(http, other, "api_calls", "count")
    product = (await _post(http, key, "/v1/products", {"name": "API"}))["id"]
    metered = {
        "currency": "usd",
        "product": product,
        "recurring[interval]": "month",
        "recurring[usage_type]": "metered",
        "recurring[meter]": meter,
    }
    tiers = {
        "billing_scheme": "tiered",
        "tiers_mode": "volume",
        "tiers[0][up_to]": "10",
        "tiers[0][unit_amount]": "5",
        "tiers[1][up_to]": "inf",
        "tiers[1][unit_amount]": "3",
    }
    cases: list[tuple[dict[str, str], int, str]] = [
        (metered | tiers | {"unit_amount": "5"}, 400, "unit_amount"),
        (metered | tiers | {"tiers[1][up_to]": "5"}, 400, "tiers[1][up_to]"),
        (metered | tiers | {"tiers[1][up_to]": "20"}, 400, "tiers[1][up_to]"),
        (
            metered
            | tiers
            | {"transform_quantity[divide_by]": "10", "transform_quantity[round]": "up"},
            400,
            "tiers",
        ),
        (
            metered
            | {
                "unit_amount": "5",
                "transform_quantity[divide_by]": "0",
                "transform_quantity[round]": "up",
            },
            400,
            "transform_quantity[divide_by]",
        ),
        (metered | {"unit_amount": "5", "colour": "red"}, 400, "colour"),
        (metered | {"unit_amount_decimal": "0.1234567890123"}, 400, "unit_amount_decimal"),
        (metered | {"unit_amount_decimal": "123456789"}, 400, "unit_amount_decimal"),
        (metered | {"unit_amount": "100000000"}, 400, "unit_amount"),
        (metered | {"unit_amount": "5", "recurring[meter]": "mtr_nope"}, 404, "recurring[meter]"),
        (
            metered | {"unit_amount": "5", "recurring[meter]": foreign_meter},
            404,
            "recurring[meter]",
        ),
        (metered | {"unit_amount": "5", "product": "prod_nope"}, 404, "product"),
        (
            {k: v for k, v in metered.items() if k != "recurring[meter]"} | {"unit_amount": "5"},
            400,
            "recurring[meter]",
        ),
    ]
    for form, status, param in cases:
        error = (await _post(http, key, "/v1/prices", form, status))["error"]
        assert error["param"] == param, (form, error)
        assert error["type"] == "invalid_request_error"
    assert (await _get(http, key, "/v1/prices", active="true"))["data"] == []

    usd = await _post(http, key, "/v1/prices", metered | {"unit_amount": "5"})
    eur = await _post(
        http,
        key,
        "/v1/prices",
        {"currency": "eur", "product": product, "unit_amount": "500",
         "recurring[interval]": "month"},
    )  # fmt: skip
    customer = (await _post(http, key, "/v1/customers", {"name": "A"}))["id"]
    subscription_cases: list[tuple[dict[str, str], int, str]] = [
        (
            {"customer": customer, "items[0][price]": usd["id"], "items[0][quantity]": "2"},
            400,
            "items[0][quantity]",
        ),
        (
            {"customer": customer, "items[0][price]": usd["id"], "items[1][price]": eur["id"]},
            400,
            "items[1][price]",
        ),
        ({"customer": "cus_nope", "items[0][price]": usd["id"]}, 404, "customer"),
        ({"customer": customer, "items[0][price]": "price_nope"}, 404, "items[0][price]"),
    ]
    for form, status, param in subscription_cases:
        error = (await _post(http, key, "/v1/subscriptions", form, status))["error"]
        assert error["param"] == param, (form, error)
    assert (await _get(http, key, "/v1/subscriptions", status="all"))["data"] == []


async def test_the_alpaca_walkthrough_previews_the_exact_amount_from_live_usage(
    http: httpx.AsyncClient, make_account: AccountFactory, aggregator: None
) -> None:
    key = (await make_account()).secret_key
    tokens = await _meter(http, key, "alpaca_ai_tokens", "sum")
    calls = await _meter(http, key, "api_requests", "count")
    per_hundred = await _post(
        http,
        key,
        "/v1/prices",
        {
            "currency": "usd",
            "unit_amount": "4",
            "transform_quantity[divide_by]": "100",
            "transform_quantity[round]": "up",
            "recurring[interval]": "month",
            "recurring[usage_type]": "metered",
            "recurring[meter]": tokens,
            "product_data[name]": "Alpaca AI tokens",
        },
    )
    per_call = await _post(
        http,
        key,
        "/v1/prices",
        {
            "currency": "usd",
            "unit_amount_decimal": "0.25",
            "recurring[interval]": "month",
            "recurring[usage_type]": "metered",
            "recurring[meter]": calls,
            "product_data[name]": "API requests",
        },
    )
    customers = [(await _post(http, key, "/v1/customers", {"name": n}))["id"] for n in "AB"]
    subscriptions = [
        await _post(
            http,
            key,
            "/v1/subscriptions",
            {
                "customer": c,
                "items[0][price]": per_hundred["id"],
                "items[1][price]": per_call["id"],
            },
        )
        for c in customers
    ]
    item = subscriptions[0]["items"]["data"][0]
    assert item["current_period_end"] > item["current_period_start"] >= int(time.time()) - 5
    assert "quantity" not in item

    now = int(time.time())
    events = [
        ("alpaca_ai_tokens", customers[0], {"value": "1000"}),
        ("alpaca_ai_tokens", customers[0], {"value": "234"}),
        ("alpaca_ai_tokens", customers[1], {"value": "50"}),
        # Before the period: never billed in it.
        ("alpaca_ai_tokens", customers[0], {"value": "999999", "timestamp": str(now - 86_400)}),
    ] + [("api_requests", customers[0], {"endpoint": "/v1/chat"})] * 3
    for i, (event_name, customer, extra) in enumerate(events):
        form = {
            "event_name": event_name,
            "identifier": f"evt-{i}",
            "payload[stripe_customer_id]": customer,
        } | {f"payload[{k}]" if k != "timestamp" else k: v for k, v in extra.items()}
        await _post(http, key, "/v1/billing/meter_events", form)

    async def amounts() -> list[int]:
        previews = [
            await _post(http, key, "/v1/invoices/create_preview", {"customer": c})
            for c in customers
        ]
        return [p["amount_due"] for p in previews]

    # A: 1,234 tokens are 13 hundreds at 4 cents (52) + 3 calls at 0.25 cents (0.75, rounds to 1).
    # B: 50 tokens are 1 hundred (4), no calls.
    async def settled() -> bool:
        return await amounts() == [53, 4]

    await wait_until(settled, 30, "previews rated from the folded usage")
    preview = await _post(http, key, "/v1/invoices/create_preview", {"customer": customers[0]})
    assert (preview["object"], preview["status"], preview["billing_reason"]) == (
        "invoice",
        "draft",
        "upcoming",
    )
    assert preview["id"].startswith("upcoming_in_")
    lines = {line["pricing"]["price_details"]["price"]: line for line in preview["lines"]["data"]}
    assert (lines[per_hundred["id"]]["quantity"], lines[per_hundred["id"]]["amount"]) == (13, 52)
    assert (lines[per_call["id"]]["quantity"], lines[per_call["id"]]["amount"]) == (3, 1)
    assert preview["subtotal"] == preview["total"] == 53
    assert preview["parent"]["subscription_details"]["subscription"] == subscriptions[0]["id"]


async def test_billing_objects_announce_v1_events_and_queue_their_webhooks(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    key = (await make_account()).secret_key
    await _post(
        http,
        key,
        "/v1/webhook_endpoints",
        {"url": "https://example.com/hook", "enabled_events[0]": "customer.created"},
    )
    customer = await _post(http, key, "/v1/customers", {"name": "A", "metadata[k]": "v"})
    await _post(http, key, f"/v1/customers/{customer['id']}", {"name": "B"})
    await _post(http, key, f"/v1/customers/{customer['id']}", {"name": "B"})  # no change
    deleted = await http.delete(f"/v1/customers/{customer['id']}", headers=_auth(key))
    assert deleted.status_code == 200
    price = await _post(
        http,
        key,
        "/v1/prices",
        {"currency": "usd", "unit_amount": "100", "recurring[interval]": "month",
         "product_data[name]": "Seats"},
    )  # fmt: skip
    await _post(http, key, f"/v1/prices/{price['id']}", {"nickname": "seats"})

    listed = (await _get(http, key, "/v1/events", limit="20"))["data"]
    assert [e["type"] for e in listed] == [
        "price.updated",
        "price.created",
        "product.created",
        "customer.deleted",
        "customer.updated",
        "customer.created",
    ]
    by_type = {e["type"]: e for e in listed}
    assert by_type["customer.created"]["data"]["object"]["name"] == "A"
    updated = by_type["customer.updated"]["data"]
    assert (updated["object"]["name"], updated["previous_attributes"]) == ("B", {"name": "A"})
    assert by_type["price.updated"]["data"]["previous_attributes"] == {"nickname": None}
    assert "previous_attributes" not in by_type["customer.created"]["data"]

    conn = await asyncpg.connect(database_url)
    try:
        queued = await conn.fetch("SELECT event_type, event_id FROM webhook_deliveries")
    finally:
        await conn.close()
    assert [(r["event_type"], r["event_id"]) for r in queued] == [
        ("customer.created", by_type["customer.created"]["id"])
    ]


async def test_billing_objects_of_one_mode_are_invisible_to_the_other(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    account = await make_account()
    conn = await asyncpg.connect(database_url)
    try:
        live_key = await create_key(conn, account.account_id, livemode=True)
    finally:
        await conn.close()
    test_key = account.secret_key
    customer = await _post(http, test_key, "/v1/customers", {"name": "test mode"})
    price = await _post(
        http,
        test_key,
        "/v1/prices",
        {"currency": "usd", "unit_amount": "100", "recurring[interval]": "month",
         "product_data[name]": "Seats"},
    )  # fmt: skip
    assert customer["livemode"] is False
    for path in (f"/v1/customers/{customer['id']}", f"/v1/prices/{price['id']}",
                 f"/v1/products/{price['product']}"):  # fmt: skip
        response = await http.get(path, headers=_auth(live_key))
        assert response.status_code == 404, (path, response.text)
    assert (await _get(http, live_key, "/v1/customers"))["data"] == []
    refused = await _post(
        http,
        live_key,
        "/v1/subscriptions",
        {"customer": customer["id"], "items[0][price]": price["id"]},
        404,
    )
    assert refused["error"]["param"] == "customer"


async def test_subscription_updates_add_change_and_remove_items(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    meter = await _meter(http, key, "api_calls", "count")
    monthly = {"currency": "usd", "recurring[interval]": "month", "product_data[name]": "X"}
    metered = await _post(
        http,
        key,
        "/v1/prices",
        monthly | {"unit_amount": "1", "recurring[usage_type]": "metered",
                   "recurring[meter]": meter},
    )  # fmt: skip
    seats = await _post(http, key, "/v1/prices", monthly | {"unit_amount": "500"})
    yearly = await _post(
        http, key, "/v1/prices", monthly | {"unit_amount": "500", "recurring[interval]": "year"}
    )
    customer = (await _post(http, key, "/v1/customers", {"name": "A"}))["id"]
    subscription = await _post(
        http, key, "/v1/subscriptions", {"customer": customer, "items[0][price]": metered["id"]}
    )
    path = f"/v1/subscriptions/{subscription['id']}"
    metered_item = subscription["items"]["data"][0]["id"]

    added = await _post(
        http, key, path, {"items[0][price]": seats["id"], "items[0][quantity]": "0"}
    )
    by_price = {i["price"]["id"]: i for i in added["items"]["data"]}
    assert by_price[seats["id"]]["quantity"] == 0
    seat_item = by_price[seats["id"]]["id"]
    changed = await _post(http, key, path, {"items[0][id]": seat_item, "items[0][quantity]": "3"})
    assert {i["id"]: i.get("quantity") for i in changed["items"]["data"]} == {
        metered_item: None,
        seat_item: 3,
    }
    for form, param in (
        ({"items[0][id]": metered_item, "items[0][quantity]": "2"}, "items[0][quantity]"),
        ({"items[0][price]": yearly["id"]}, "items[0][price]"),
        ({"items[0][price]": seats["id"]}, "items[0][price]"),
        ({"items[0][id]": "si_nope", "items[0][deleted]": "true"}, "items[0][id]"),
    ):
        response = await http.post(path, data=form, headers=_auth(key))
        assert response.status_code in (400, 404), response.text
        assert response.json()["error"]["param"] == param
    removed = await _post(
        http, key, path, {"items[0][id]": metered_item, "items[0][deleted]": "true"}
    )
    assert [i["id"] for i in removed["items"]["data"]] == [seat_item]
    emptied = await http.post(
        path, data={"items[0][id]": seat_item, "items[0][deleted]": "true"}, headers=_auth(key)
    )
    assert emptied.status_code == 400
    assert emptied.json()["error"]["param"] == "items"
    item = await _get(http, key, f"/v1/subscription_items/{seat_item}")
    assert (item["quantity"], item["subscription"]) == (3, subscription["id"])
    canceled = await http.delete(path, headers=_auth(key))
    assert canceled.json()["status"] == "canceled"
    assert (await _get(http, key, "/v1/subscriptions"))["data"] == []
    assert [
        s["id"] for s in (await _get(http, key, "/v1/subscriptions", status="all"))["data"]
    ] == [subscription["id"]]

"""Exact preview amounts through the real pipeline (HTTP → Kafka → aggregator → PostgreSQL →
preview): every pricing scheme, every formula, pre-aggregated windows, cancels, back-dated events,
negative totals, and two customers on one price."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import AccountFactory
from tests.fixtures.billing import Billing
from tests.fixtures.meter_events import rollups_disagreeing_with_minutes, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_previews_rate_every_scheme_formula_and_correction_exactly(
    http: httpx.AsyncClient, make_account: AccountFactory, aggregator: None, database_url: str
) -> None:
    billing = Billing(http, (await make_account()).secret_key)
    tokens = await billing.meter("tokens", "sum")
    calls = await billing.meter("calls", "count")
    seats = await billing.meter("seats", "last")
    storage = await billing.meter("storage", "sum", event_time_window="hour")
    prices = {
        "up": await billing.price(
            tokens, unit_amount="4", **{"transform_quantity[divide_by]": "100",
                                        "transform_quantity[round]": "up"}
        ),
        "down": await billing.price(
            tokens, unit_amount="4", **{"transform_quantity[divide_by]": "100",
                                        "transform_quantity[round]": "down"}
        ),
        "graduated": await billing.price(
            tokens, billing_scheme="tiered", tiers_mode="graduated",
            **{"tiers[0][up_to]": "1000", "tiers[0][unit_amount_decimal]": "0.5",
               "tiers[0][flat_amount]": "100", "tiers[1][up_to]": "inf",
               "tiers[1][unit_amount_decimal]": "0.1"},
        ),
        "volume": await billing.price(
            tokens, billing_scheme="tiered", tiers_mode="volume",
            **{"tiers[0][up_to]": "1000", "tiers[0][unit_amount]": "2",
               "tiers[1][up_to]": "inf", "tiers[1][unit_amount]": "1",
               "tiers[1][flat_amount]": "50"},
        ),
        "decimal": await billing.price(calls, unit_amount_decimal="0.25"),
        "last": await billing.price(seats, unit_amount="10"),
        "window": await billing.price(storage, unit_amount="1"),
    }  # fmt: skip
    main = (await billing.post("/v1/customers", {"name": "main"}))["id"]
    other = (await billing.post("/v1/customers", {"name": "other"}))["id"]
    await billing.post(
        "/v1/subscriptions",
        {"customer": main} | {f"items[{i}][price]": p for i, p in enumerate(prices.values())},
    )
    await billing.post("/v1/subscriptions", {"customer": other, "items[0][price]": prices["up"]})

    day_ago = str(int(time.time()) - 86_400)
    await billing.event("tokens", main, "t1", value="1000")
    await billing.event("tokens", main, "t2", value="550")
    await billing.event("tokens", main, "t3", value="-200")
    await billing.event("tokens", main, "t4", value="300")  # cancelled below
    await billing.event("tokens", main, "t5", value="999", timestamp=day_ago)  # before the period
    await billing.event("tokens", other, "o1", value="40")
    await billing.event("tokens", other, "o2", value="-90")  # the other's total is negative
    for i in range(3):
        await billing.event("calls", main, f"c{i}")  # a count meter's event needs no value
    await billing.event("calls", main, "c-old", timestamp=day_ago)
    await billing.event("seats", main, "s1", value="7")
    await billing.event("seats", main, "s2", value="9")  # received last: the `last` value
    await billing.event("storage", main, "g1", value="5")
    await billing.event("storage", main, "g2", value="8")  # the hour's survivor

    async def folded_with_the_cancelled_event() -> bool:
        return (await billing.lines(main))[1][prices["up"]] == 68  # 1,650 tokens: 17 x 4

    await wait_until(folded_with_the_cancelled_event, 30, "every event folded")
    await billing.post(
        "/v1/billing/meter_event_adjustments",
        {"event_name": "tokens", "type": "cancel", "cancel[identifier]": "t4"},
    )
    # 1,350 tokens: 14 hundreds up, 13 down; graduated 1,000 x 0.5 + 100 + 350 x 0.1;
    # volume 1,350 x 1 + 50; 3 calls x 0.25 = 0.75 → 1; last seat 9 x 10; hour survivor 8.
    expected = {
        "up": 56,
        "down": 52,
        "graduated": 635,
        "volume": 1400,
        "decimal": 1,
        "last": 90,
        "window": 8,
    }

    async def settled() -> bool:
        total, lines = await billing.lines(main)
        return lines == {prices[k]: v for k, v in expected.items()} and total == sum(
            expected.values()
        )

    await wait_until(settled, 30, "the cancel reflected in the preview")
    assert await billing.lines(other) == (0, {prices["up"]: 0})
    assert await rollups_disagreeing_with_minutes(database_url) == []

"""The credit balance summary through the real pipeline (HTTP → Kafka → aggregator → PostgreSQL
→ summary): the available balance drops as events are folded, draft invoices and open periods tie
credits up in grant order, and expired, pending, scoped and other-currency grants count as
documented."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx
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
GRANTS = "/v1/billing/credit_grants"
SUMMARY = "/v1/billing/credit_balance_summary"


class Credits(Billing):
    def __init__(self, http: httpx.AsyncClient, key: str) -> None:
        super().__init__(http, key)
        self.http = http
        self.headers = {"Authorization": f"Bearer {key}"}

    async def grant(
        self, customer: str, value: int, *, prices: tuple[str, ...] = (), currency: str = "usd",
        **extra: str,
    ) -> str:  # fmt: skip
        form = {
            "customer": customer,
            "amount[type]": "monetary",
            "amount[monetary][currency]": currency,
            "amount[monetary][value]": str(value),
        } | extra
        if prices:
            form |= {
                f"applicability_config[scope][prices][{i}][id]": p for i, p in enumerate(prices)
            }
        else:
            form["applicability_config[scope][price_type]"] = "metered"
        grant_id: str = (await self.post(GRANTS, form))["id"]
        return grant_id

    async def balances(self, customer: str, **filters: str) -> dict[str, tuple[int, int]]:
        """currency -> (available, ledger)."""
        params = {"customer": customer} | (
            filters
            or {
                "filter[type]": "applicability_scope",
                "filter[applicability_scope][price_type]": "metered",
            }
        )
        response = await self.http.get(SUMMARY, params=params, headers=self.headers)
        assert response.status_code == 200, response.text
        summary: dict[str, Any] = response.json()
        assert (summary["object"], summary["customer"]) == (
            "billing.credit_balance_summary",
            customer,
        )
        return {
            b["ledger_balance"]["monetary"]["currency"]: (
                b["available_balance"]["monetary"]["value"],
                b["ledger_balance"]["monetary"]["value"],
            )
            for b in summary["balances"]
        }

    async def of_grant(self, customer: str, grant: str) -> dict[str, tuple[int, int]]:
        return await self.balances(
            customer, **{"filter[type]": "credit_grant", "filter[credit_grant]": grant}
        )

    async def for_prices(self, customer: str, *prices: str) -> dict[str, tuple[int, int]]:
        scope = {f"filter[applicability_scope][prices][{i}][id]": p for i, p in enumerate(prices)}
        return await self.balances(customer, **{"filter[type]": "applicability_scope"} | scope)


@pytest.fixture
async def pool(database_url: str) -> Any:
    db = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield db
    await db.close()


async def test_available_balance_drops_live_as_events_are_folded(
    http: httpx.AsyncClient, make_account: AccountFactory, aggregator: None
) -> None:
    credits = Credits(http, (await make_account()).secret_key)
    tokens = await credits.meter("tokens", "sum")
    price = await credits.price(tokens, unit_amount="1")
    customer = (await credits.post("/v1/customers", {"name": "Ada"}))["id"]
    await credits.post("/v1/subscriptions", {"customer": customer, "items[0][price]": price})
    assert await credits.balances(customer) == {}
    await credits.grant(customer, 1000)
    assert await credits.balances(customer) == {"usd": (1000, 1000)}

    # The ledger balance stays: nothing is recorded until an invoice is finalized.
    async def dropped(expected: int) -> bool:
        return (await credits.balances(customer))["usd"] == (expected, 1000)

    await credits.event("tokens", customer, "e1", value="300")
    await wait_until(lambda: dropped(700), 30, "the event folded into the available balance")
    await credits.event("tokens", customer, "e2", value="2500")  # more than the grant
    await wait_until(lambda: dropped(0), 30, "the balance used up, never negative")


async def test_drafts_then_open_periods_take_credits_in_grant_order(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    aggregator: None,
    ingest_settings: Settings,
    pool: asyncpg.Pool,
) -> None:
    account = await make_account()
    credits = Credits(http, account.secret_key)
    tokens = await credits.meter("tokens", "sum")
    other = await credits.meter("other", "sum")
    daily = {"recurring[interval]": "day"}
    price = await credits.price(tokens, unit_amount="1", **daily)
    unused_price = await credits.price(other, unit_amount="1", **daily)
    customer = (await credits.post("/v1/customers", {"name": "Ada"}))["id"]
    now = int(time.time())
    start = now - DAY - 600  # the first period ended ten minutes ago
    await credits.post(
        "/v1/subscriptions",
        {"customer": customer, "items[0][price]": price, "backdate_start_date": str(start)},
    )
    await credits.event("tokens", customer, "first", value="300", timestamp=str(start + 60))
    await credits.event("tokens", customer, "now", value="200")

    async def folded(count: int) -> bool:
        async with pool.acquire() as conn:
            return await folded_event_count(conn, account.account_id) >= count

    await wait_until(lambda: folded(2), 30, "the events folded")
    # The closer writes the first period's draft, finalized an hour after the period's end.
    closer = InvoiceCloser(
        ingest_settings.with_overrides(invoice_grace_s=3600), pool, CollectorRegistry(),
        lambda: float(now),
    )  # fmt: skip
    await closer.run_once()
    status = await pool.fetchval("SELECT status FROM invoices WHERE customer_id = $1", customer)
    assert status == "draft"

    # In effect since the subscription started, so both qualify for the draft's period.
    first = await credits.grant(customer, 400, priority="0", effective_at=str(start))
    second = await credits.grant(customer, 1000, prices=(price,), priority="1",
                                 effective_at=str(start))  # fmt: skip
    elsewhere = await credits.grant(customer, 60, prices=(unused_price,), priority="2")
    euros = await credits.grant(customer, 50, currency="eur")
    past = await credits.grant(customer, 250, priority="100", effective_at=str(now - 7200),
                               expires_at=str(now + 3600))  # fmt: skip
    # Past its expiry, and the closer has not recorded it yet: in the ledger, not available.
    await pool.execute("UPDATE credit_grants SET expires_at = $2 WHERE id = $1", past, now - 60)
    pending = await credits.grant(customer, 77, effective_at=str(now + 3600))

    # The draft takes 300 of `first`; the open period its last 100, then 100 of `second`.
    assert await credits.balances(customer) == {"usd": (960, 1710), "eur": (50, 50)}
    assert await credits.of_grant(customer, first) == {"usd": (0, 400)}
    assert await credits.of_grant(customer, second) == {"usd": (900, 1000)}
    assert await credits.of_grant(customer, elsewhere) == {"usd": (60, 60)}
    assert await credits.of_grant(customer, euros) == {"eur": (50, 50)}
    assert await credits.of_grant(customer, past) == {"usd": (0, 250)}
    assert await credits.of_grant(customer, pending) == {"usd": (0, 0)}
    # By price: the grants for every metered price, and those listing the price.
    assert await credits.for_prices(customer, unused_price) == {"usd": (60, 710), "eur": (50, 50)}
    assert await credits.for_prices(customer, price) == {"usd": (900, 1650), "eur": (50, 50)}

    # Late usage for the draft's period (in its grace period) and new usage both show live.
    await credits.event("tokens", customer, "late", value="40", timestamp=str(start + 120))
    await credits.event("tokens", customer, "later", value="10")

    async def settled() -> bool:
        return (await credits.balances(customer))["usd"] == (910, 1710)

    await wait_until(settled, 30, "the late and the new usage in the available balance")
    assert await credits.of_grant(customer, second) == {"usd": (850, 1000)}

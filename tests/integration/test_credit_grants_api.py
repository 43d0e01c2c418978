"""``/v1/billing/credit_grants``, ``/v1/billing/credit_balance_transactions`` and
``/v1/billing/credit_balance_summary`` over real HTTP: every endpoint, the ledger entries and
events each change makes, every refused input (which creates nothing), account and mode
isolation, the append-only ledger, and the limit of 100 unused grants per customer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import pytest

from meterflow.store.accounts import create_key
from tests.conftest import AccountFactory
from tests.fixtures.billing import Billing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GRANTS = "/v1/billing/credit_grants"
TRANSACTIONS = "/v1/billing/credit_balance_transactions"
SUMMARY = "/v1/billing/credit_balance_summary"
METERED_SCOPE = {"applicability_config[scope][price_type]": "metered"}
METERED_FILTER = {
    "filter[type]": "applicability_scope",
    "filter[applicability_scope][price_type]": "metered",
}


def grant_form(
    customer: str, value: int = 1000, currency: str = "usd", **extra: str
) -> dict[str, str]:
    return (
        {
            "customer": customer,
            "amount[type]": "monetary",
            "amount[monetary][currency]": currency,
            "amount[monetary][value]": str(value),
        }
        | METERED_SCOPE
        | extra
    )


class Credits(Billing):
    """The billing helper, plus requests whose status the test checks itself."""

    def __init__(self, http: httpx.AsyncClient, key: str) -> None:
        super().__init__(http, key)
        self.http = http
        self.headers = {"Authorization": f"Bearer {key}"}

    async def send(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        if method == "GET":
            response = await self.http.get(path, params=form, headers=self.headers)
        else:
            response = await self.http.post(path, data=form or {}, headers=self.headers)
        body: dict[str, Any] = response.json()
        return response.status_code, body

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        status, body = await self.send("GET", path, params)
        assert status == 200, body
        return body

    async def customer(self, name: str = "Jenny") -> str:
        customer_id: str = (await self.post("/v1/customers", {"name": name}))["id"]
        return customer_id

    async def summary(self, customer: str, **filters: str) -> list[dict[str, Any]]:
        params = {"customer": customer} | (filters or METERED_FILTER)
        balances: list[dict[str, Any]] = (await self.get(SUMMARY, **params))["balances"]
        return balances


def money(currency: str, value: int) -> dict[str, Any]:
    return {"type": "monetary", "monetary": {"currency": currency, "value": value}}


def balance(currency: str, available: int, ledger: int) -> dict[str, Any]:
    return {
        "available_balance": money(currency, available),
        "ledger_balance": money(currency, ledger),
    }


async def grant_count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM credit_grants")
        return count
    finally:
        await conn.close()


async def test_grant_lifecycle_shapes_ledger_and_events(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    credits = Credits(http, (await make_account()).secret_key)
    customer = await credits.customer()
    before = int(time.time())
    created = await credits.post(
        GRANTS,
        grant_form(customer, 1500, name="Welcome", category="promotional", priority="10",
                   **{"metadata[campaign]": "spring"}),
    )  # fmt: skip
    assert created["id"].startswith("credgr_test_")
    assert set(created) == {
        "id", "object", "amount", "applicability_config", "category", "created", "customer",
        "customer_account", "effective_at", "expires_at", "livemode", "metadata", "name",
        "priority", "test_clock", "updated", "voided_at",
    }  # fmt: skip
    assert created["object"] == "billing.credit_grant"
    assert created["amount"] == {"type": "monetary", "monetary": {"currency": "usd", "value": 1500}}
    assert created["applicability_config"] == {"scope": {"price_type": "metered", "prices": None}}
    assert (created["category"], created["priority"], created["name"]) == (
        "promotional",
        10,
        "Welcome",
    )
    assert (created["customer"], created["customer_account"], created["test_clock"]) == (
        customer,
        None,
        None,
    )
    assert before <= created["effective_at"] == created["created"] == created["updated"]
    assert (created["expires_at"], created["voided_at"], created["livemode"]) == (None, None, False)
    assert created["metadata"] == {"campaign": "spring"}
    assert await credits.get(f"{GRANTS}/{created['id']}") == created

    # Stripe's defaults: paid, priority 50.
    plain = await credits.post(GRANTS, grant_form(customer, 200))
    assert (plain["category"], plain["priority"], plain["name"]) == ("paid", 50, None)
    listed = await credits.get(GRANTS, customer=customer)
    assert [g["id"] for g in listed["data"]] == [plain["id"], created["id"]]
    assert (listed["object"], listed["url"], listed["has_more"]) == ("list", GRANTS, False)
    page = await credits.get(GRANTS, limit="1")
    assert ([g["id"] for g in page["data"]], page["has_more"]) == ([plain["id"]], True)
    older = await credits.get(GRANTS, limit="1", starting_after=plain["id"])
    assert [g["id"] for g in older["data"]] == [created["id"]]

    later = int(time.time()) + 86_400
    updated = await credits.post(
        f"{GRANTS}/{created['id']}",
        {"expires_at": str(later), "metadata[campaign]": "", "metadata[batch]": "7"},
    )
    assert (updated["expires_at"], updated["metadata"]) == (later, {"batch": "7"})
    cleared = await credits.post(f"{GRANTS}/{created['id']}", {"expires_at": ""})
    assert cleared["expires_at"] is None

    # Every entry of the grant, newest first; the grant's credit took effect when it did.
    ledger = await credits.get(TRANSACTIONS, credit_grant=created["id"])
    (granted,) = ledger["data"]
    assert granted["id"].startswith("cbtxn_")
    assert granted == {
        "id": granted["id"],
        "object": "billing.credit_balance_transaction",
        "created": granted["created"],
        "credit": {
            "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 1500}},
            "credits_application_invoice_voided": None,
            "type": "credits_granted",
        },
        "credit_grant": created["id"],
        "debit": None,
        "effective_at": created["effective_at"],
        "livemode": False,
        "test_clock": None,
        "type": "credit",
    }
    assert await credits.get(f"{TRANSACTIONS}/{granted['id']}") == granted
    assert await credits.summary(customer) == [balance("usd", 1700, 1700)]

    expired = await credits.post(f"{GRANTS}/{created['id']}/expire", {})
    assert expired["expires_at"] is not None
    assert expired["expires_at"] >= before
    assert expired["voided_at"] is None
    voided = await credits.post(f"{GRANTS}/{plain['id']}/void", {})
    assert voided["voided_at"] is not None
    entries = (await credits.get(TRANSACTIONS, customer=customer))["data"]
    assert [
        (e["type"], (e["credit"] or e["debit"])["type"], e["credit_grant"]) for e in entries
    ] == [
        ("debit", "credits_voided", plain["id"]),
        ("debit", "credits_expired", created["id"]),
        ("credit", "credits_granted", plain["id"]),
        ("credit", "credits_granted", created["id"]),
    ]
    assert entries[0]["debit"] == {
        "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 200}},
        "credits_applied": None,
        "type": "credits_voided",
    }
    assert entries[1]["debit"]["amount"]["monetary"]["value"] == 1500
    assert await credits.summary(customer) == [balance("usd", 0, 0)]

    events = (await credits.get("/v1/events", limit="20"))["data"]
    kinds = [e["type"] for e in events if e["type"].startswith("billing.credit")]
    assert sorted(kinds) == sorted(
        ["billing.credit_grant.created"] * 2
        + ["billing.credit_grant.updated"] * 4  # two updates, the expiry and the void
        + ["billing.credit_balance_transaction.created"] * 4
    )
    (void_event,) = [
        e for e in events
        if e["type"] == "billing.credit_grant.updated"
        and e["data"]["object"]["id"] == plain["id"]
    ]  # fmt: skip
    changed = void_event["data"]["previous_attributes"]
    assert changed["voided_at"] is None
    assert set(changed) <= {"voided_at", "updated"}


async def test_refusals_are_stripe_shaped_and_create_nothing(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    credits = Credits(http, (await make_account()).secret_key)
    other = Credits(http, (await make_account("other")).secret_key)
    customer = await credits.customer()
    deleted = await credits.customer("gone")
    await http.delete(f"/v1/customers/{deleted}", headers=credits.headers)
    meter = await credits.meter("tokens", "sum")
    metered = await credits.price(meter, unit_amount="1")
    licensed = (await credits.post("/v1/prices", {"currency": "usd", "unit_amount": "500",
        "recurring[interval]": "month", "product_data[name]": "Seats"}))["id"]  # fmt: skip
    one_time = (await credits.post("/v1/prices", {"currency": "usd", "unit_amount": "500",
        "product_data[name]": "Setup"}))["id"]  # fmt: skip
    theirs = await other.price(await other.meter("tokens", "sum"), unit_amount="1")
    their_customer = await other.customer()
    now = int(time.time())

    def prices(*ids: str) -> dict[str, str]:
        return {f"applicability_config[scope][prices][{i}][id]": p for i, p in enumerate(ids)}

    def scoped(*ids: str) -> dict[str, str]:
        form = grant_form(customer)
        del form["applicability_config[scope][price_type]"]
        return form | prices(*ids)

    cases: list[tuple[dict[str, str], int, str | None]] = [
        (grant_form(customer, 0), 400, "amount[monetary][value]"),
        (grant_form(customer, -10), 400, "amount[monetary][value]"),
        (grant_form(customer, currency="us1"), 400, "amount[monetary][currency]"),
        (grant_form(customer, currency="xyz"), 400, "amount[monetary][currency]"),
        (grant_form(customer, currency="dollar"), 400, "amount[monetary][currency]"),
        (grant_form(customer) | prices(metered), 400, "applicability_config[scope][prices]"),
        (scoped(), 400, "applicability_config"),
        (scoped(licensed), 400, "applicability_config[scope][prices][0][id]"),
        (scoped(metered, one_time), 400, "applicability_config[scope][prices][1][id]"),
        (scoped("price_nope"), 404, "applicability_config[scope][prices][0][id]"),
        (scoped(theirs), 404, "applicability_config[scope][prices][0][id]"),
        (scoped(*[f"price_{i}" for i in range(21)]), 400, "applicability_config[scope][prices]"),
        (
            scoped(metered) | {"amount[monetary][currency]": "eur"},
            400,
            "applicability_config[scope][prices][0][id]",
        ),
        (
            grant_form(customer, effective_at=str(now + 100), expires_at=str(now + 100)),
            400,
            "expires_at",
        ),
        (
            grant_form(customer, effective_at=str(now + 200), expires_at=str(now + 100)),
            400,
            "expires_at",
        ),
        (grant_form(customer, expires_at=str(now - 10)), 400, "expires_at"),
        (grant_form(customer, priority="101"), 400, "priority"),
        (grant_form(customer, category="gift"), 400, "category"),
        (grant_form(customer, name="n" * 101), 400, "name"),
        (grant_form(customer, colour="red"), 400, "colour"),
        (grant_form(customer, customer_account="acct_1"), 400, "customer_account"),
        (grant_form("cus_nope"), 404, "customer"),
        (grant_form(deleted), 404, "customer"),
        (grant_form(their_customer), 404, "customer"),
    ]
    for form, status, param in cases:
        got, body = await credits.send("POST", GRANTS, form)
        assert got == status, (form, body)
        assert body["error"]["type"] == "invalid_request_error", body
        assert body["error"].get("param") == param, (form, body)
        if status == 404:
            assert body["error"]["code"] == "resource_missing"
    assert await grant_count(database_url) == 0

    # Unknown ids, and other accounts' objects, are missing everywhere.
    grant = await credits.post(GRANTS, grant_form(customer))
    transaction = (await credits.get(TRANSACTIONS, customer=customer))["data"][0]["id"]
    for method, path in [
        ("GET", f"{GRANTS}/credgr_nope"),
        ("POST", f"{GRANTS}/credgr_nope"),
        ("POST", f"{GRANTS}/credgr_nope/expire"),
        ("POST", f"{GRANTS}/credgr_nope/void"),
        ("GET", f"{TRANSACTIONS}/cbtxn_nope"),
    ]:
        got, body = await credits.send(method, path)
        assert (got, body["error"]["code"]) == (404, "resource_missing"), path
    for method, path in [
        ("GET", f"{GRANTS}/{grant['id']}"),
        ("POST", f"{GRANTS}/{grant['id']}"),
        ("POST", f"{GRANTS}/{grant['id']}/expire"),
        ("POST", f"{GRANTS}/{grant['id']}/void"),
        ("GET", f"{TRANSACTIONS}/{transaction}"),
    ]:
        got, body = await other.send(method, path)
        assert (got, body["error"]["code"]) == (404, "resource_missing"), path
    assert (await other.get(GRANTS))["data"] == []
    assert (await other.get(TRANSACTIONS, customer=customer))["data"] == []
    by_grant = {"filter[type]": "credit_grant", "filter[credit_grant]": grant["id"]}
    got, body = await other.send("GET", SUMMARY, {"customer": customer} | by_grant)
    assert (got, body["error"]["param"]) == (404, "customer")

    # Updates take expires_at and metadata only; a pending grant cannot expire.
    for form, param in [
        ({"name": "x"}, "name"),
        ({"expires_at": str(now - 5)}, "expires_at"),
        ({"expires_at": "tomorrow"}, "expires_at"),
    ]:
        got, body = await credits.send("POST", f"{GRANTS}/{grant['id']}", form)
        assert (got, body["error"]["param"]) == (400, param), body
    pending = await credits.post(GRANTS, grant_form(customer, effective_at=str(now + 3600)))
    got, body = await credits.send("POST", f"{GRANTS}/{pending['id']}/expire")
    assert got == 400
    assert "void it instead" in body["error"]["message"]

    # Lists and the summary need their required parameters.
    for path, params, param in [
        (TRANSACTIONS, {}, "customer"),
        (SUMMARY, by_grant, "customer"),
        (SUMMARY, {"customer": customer}, "filter"),
        (SUMMARY, {"customer": customer, "filter[type]": "credit_grant"}, "filter[credit_grant]"),
        (SUMMARY, {"customer": customer, "filter[type]": "applicability_scope"},
         "filter[applicability_scope]"),
        (SUMMARY, {"customer": customer, "filter[type]": "applicability_scope",
                   "filter[applicability_scope][price_type]": "metered",
                   "filter[applicability_scope][prices][0][id]": metered},
         "filter[applicability_scope][prices]"),
        (GRANTS, {"limit": "0"}, "limit"),
    ]:  # fmt: skip
        got, body = await credits.send("GET", path, params)
        assert (got, body["error"]["param"]) == (400, param), body
    for params, param in [
        ({"filter[type]": "credit_grant", "filter[credit_grant]": "credgr_nope"},
         "filter[credit_grant]"),
        ({"filter[type]": "applicability_scope",
          "filter[applicability_scope][prices][0][id]": "price_nope"},
         "filter[applicability_scope][prices][0][id]"),
    ]:  # fmt: skip
        got, body = await credits.send("GET", SUMMARY, {"customer": customer} | params)
        assert (got, body["error"]["code"], body["error"]["param"]) == (
            404,
            "resource_missing",
            param,
        )
    got, body = await credits.send("GET", GRANTS, {"starting_after": "credgr_nope"})
    assert (got, body["error"]["param"]) == (404, "starting_after")


async def test_void_is_refused_once_credits_were_applied_and_states_are_final(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    account = await make_account()
    credits = Credits(http, account.secret_key)
    customer = await credits.customer()
    applied = await credits.post(GRANTS, grant_form(customer, 500))
    conn = await asyncpg.connect(database_url)
    try:
        # An application as finalization records it (here without an invoice row).
        await conn.execute(
            """INSERT INTO credit_ledger (id, account_id, livemode, customer_id, credit_grant_id,
                   type, reason, amount, currency, effective_at, created, dedupe_key)
               VALUES ('cbtxn_applied', $1, false, $2, $3, 'debit', 'credits_applied', 120, 'usd',
                       $4, $4, 'applied:test')""",
            account.account_id,
            customer,
            applied["id"],
            int(time.time()),
        )
    finally:
        await conn.close()
    got, body = await credits.send("POST", f"{GRANTS}/{applied['id']}/void")
    assert got == 400
    assert "applied" in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
    assert (await credits.get(f"{GRANTS}/{applied['id']}"))["voided_at"] is None
    # It can still expire: what is left (380) is debited.
    await credits.post(f"{GRANTS}/{applied['id']}/expire", {})
    latest = (await credits.get(TRANSACTIONS, credit_grant=applied["id"], limit="1"))["data"][0]
    assert (latest["debit"]["type"], latest["debit"]["amount"]["monetary"]["value"]) == (
        "credits_expired",
        380,
    )
    got, body = await credits.send("POST", f"{GRANTS}/{applied['id']}/expire")
    assert got == 400
    assert "already expired" in body["error"]["message"]
    got, body = await credits.send("POST", f"{GRANTS}/{applied['id']}", {"expires_at": ""})
    assert (got, body["error"]["param"]) == (400, "expires_at")
    # Metadata of an expired grant still changes.
    await credits.post(f"{GRANTS}/{applied['id']}", {"metadata[note]": "done"})

    # A pending grant can be voided: its debit takes effect with its credit.
    later = int(time.time()) + 3600
    pending = await credits.post(GRANTS, grant_form(customer, 250, effective_at=str(later)))
    await credits.post(f"{GRANTS}/{pending['id']}/void", {})
    got, body = await credits.send("POST", f"{GRANTS}/{pending['id']}/void")
    assert got == 400
    assert "already been voided" in body["error"]["message"]
    entries = (await credits.get(TRANSACTIONS, credit_grant=pending["id"]))["data"]
    assert [(e["type"], e["effective_at"]) for e in entries] == [
        ("debit", later),
        ("credit", later),
    ]


async def test_the_ledger_is_append_only(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    credits = Credits(http, (await make_account()).secret_key)
    grant = await credits.post(GRANTS, grant_form(await credits.customer()))
    conn = await asyncpg.connect(database_url)
    try:
        for statement in (
            "UPDATE credit_ledger SET amount = 1 WHERE credit_grant_id = $1",
            "DELETE FROM credit_ledger WHERE credit_grant_id = $1",
        ):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(statement, grant["id"])
        # Recording the same fact twice records it once.
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                """INSERT INTO credit_ledger (id, account_id, livemode, customer_id,
                       credit_grant_id, type, reason, amount, currency, effective_at, created,
                       dedupe_key)
                   SELECT 'cbtxn_again', account_id, livemode, customer_id, credit_grant_id, type,
                          reason, amount, currency, effective_at, created, dedupe_key
                   FROM credit_ledger WHERE credit_grant_id = $1""",
                grant["id"],
            )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM credit_ledger WHERE credit_grant_id = $1", grant["id"]
            )
            == 1
        )
    finally:
        await conn.close()


async def test_grants_of_one_mode_are_invisible_to_the_other(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    account = await make_account()
    conn = await asyncpg.connect(database_url)
    try:
        live_key = await create_key(conn, account.account_id, livemode=True)
    finally:
        await conn.close()
    test = Credits(http, account.secret_key)
    live = Credits(http, live_key)
    customer = await test.customer()
    grant = await test.post(GRANTS, grant_form(customer))
    got, body = await live.send("POST", GRANTS, grant_form(customer))
    assert (got, body["error"]["param"]) == (404, "customer")
    got, _ = await live.send("GET", f"{GRANTS}/{grant['id']}")
    assert got == 404
    assert (await live.get(GRANTS))["data"] == []
    assert (await live.get(TRANSACTIONS, credit_grant=grant["id"]))["data"] == []
    live_customer = await live.customer()
    live_grant = await live.post(GRANTS, grant_form(live_customer, 70))
    assert live_grant["livemode"] is True
    assert not live_grant["id"].startswith("credgr_test_")
    assert await live.summary(live_customer) == [balance("usd", 70, 70)]
    assert [g["id"] for g in (await test.get(GRANTS))["data"]] == [grant["id"]]


async def test_a_customer_holds_at_most_100_unused_grants_even_when_racing(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    credits = Credits(http, (await make_account()).secret_key)
    customer = await credits.customer()
    neighbour = await credits.customer("neighbour")
    first = [await credits.post(GRANTS, grant_form(customer, 10)) for _ in range(99)]
    # Four creates racing for the last place: one gets it.
    racing = await asyncio.gather(
        *(credits.send("POST", GRANTS, grant_form(customer, 10)) for _ in range(4))
    )
    statuses = sorted(status for status, _ in racing)
    assert statuses == [200, 400, 400, 400], racing
    refused = next(body for status, body in racing if status == 400)
    assert refused["error"]["param"] == "customer"
    assert "100 unused credit grants" in refused["error"]["message"]
    # Another customer is not limited by this one's grants.
    await credits.post(GRANTS, grant_form(neighbour, 10))
    # A voided or expired grant is not unused; neither is a depleted one.
    await credits.post(f"{GRANTS}/{first[0]['id']}/void", {})
    await credits.post(GRANTS, grant_form(customer, 10))
    got, _ = await credits.send("POST", GRANTS, grant_form(customer, 10))
    assert got == 400
    await credits.post(f"{GRANTS}/{first[1]['id']}/expire", {})
    await credits.post(GRANTS, grant_form(customer, 10))

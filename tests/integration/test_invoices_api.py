"""``/v1/invoices`` over HTTP: retrieve, list (filters, pagination), lines, pay out of band and
void, with every refusal changing nothing; voiding gives back the credits the invoice took.
Invoices are written straight into PostgreSQL in the states the closer leaves them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from meterflow.store.accounts import create_key
from tests.conftest import AccountFactory
from tests.fixtures.billing import Billing
from tests.fixtures.invoices import (
    Credit,
    Line,
    Owner,
    StoredInvoice,
    insert_grant,
    insert_invoice,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

HOUR = 3600


@dataclass(frozen=True, slots=True)
class World:
    key: str
    owner: Owner
    customers: tuple[str, str]
    subscriptions: tuple[str, str]
    lines: tuple[Line, Line]  # a line of 100 for each subscription's item


async def world(http: httpx.AsyncClient, make_account: AccountFactory) -> World:
    account = await make_account()
    billing = Billing(http, account.secret_key)
    price = await billing.price(await billing.meter("tokens", "sum"), unit_amount="1")
    customers = [(await billing.post("/v1/customers", {"name": n}))["id"] for n in "AB"]
    subscriptions = [
        await billing.post("/v1/subscriptions", {"customer": c, "items[0][price]": price})
        for c in customers
    ]
    items = [s["items"]["data"][0]["id"] for s in subscriptions]
    return World(
        account.secret_key,
        Owner(account.account_id),
        (customers[0], customers[1]),
        (subscriptions[0]["id"], subscriptions[1]["id"]),
        (Line(items[0], price, 100), Line(items[1], price, 100)),
    )


async def call(
    http: httpx.AsyncClient, key: str, method: str, path: str, /, **params: Any
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"}
    if method == "GET":
        response = await http.get(path, params=params, headers=headers)
    else:
        response = await http.post(path, data=params, headers=headers)
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def ok(http: httpx.AsyncClient, key: str, method: str, path: str, /, **params: Any) -> Any:
    status, body = await call(http, key, method, path, **params)
    assert status == 200, body
    return body


async def error(
    http: httpx.AsyncClient, key: str, method: str, path: str, expect: int, /, **params: Any
) -> dict[str, Any]:
    got, body = await call(http, key, method, path, **params)
    assert got == expect, body
    found: dict[str, Any] = body["error"]
    return found


async def events(http: httpx.AsyncClient, key: str, event_type: str) -> list[dict[str, Any]]:
    """Events of ``event_type``, oldest first."""
    listed = await ok(http, key, "GET", "/v1/events", type=event_type, limit="100")
    found: list[dict[str, Any]] = listed["data"][::-1]
    return found


async def stored_invoice(
    conn: asyncpg.Connection,
    w: World,
    status: str,
    created: int,
    *,
    n: int = 0,
    lines: list[Line] | None = None,
    credits: list[Credit] | None = None,
) -> StoredInvoice:
    """An invoice of customer ``n``'s subscription, of one line of 100 unless ``lines``."""
    return await insert_invoice(
        conn,
        w.owner,
        subscription=w.subscriptions[n],
        customer=w.customers[n],
        status=status,
        created=created,
        lines=[w.lines[n]] if lines is None else lines,
        credits=credits or [],
    )


async def test_an_invoice_and_its_lines_are_read_only_by_their_account_and_mode(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    w = await world(http, make_account)
    other = (await make_account("other")).secret_key
    conn = await asyncpg.connect(database_url)
    try:
        live = await create_key(conn, w.owner.account_id, livemode=True)
        line = w.lines[0]
        lines = [Line(line.item, line.price, amount) for amount in (100, 200, 300)]
        stored = await stored_invoice(conn, w, "open", int(time.time()), lines=lines)
    finally:
        await conn.close()
    path = f"/v1/invoices/{stored.id}"
    invoice = await ok(http, w.key, "GET", path)
    assert (invoice["object"], invoice["id"], invoice["status"]) == ("invoice", stored.id, "open")
    assert (invoice["subtotal"], invoice["total"], invoice["amount_due"]) == (600, 600, 600)
    assert (invoice["amount_paid"], invoice["amount_remaining"]) == (0, 600)
    assert invoice["customer"] == w.customers[0]
    assert invoice["parent"]["subscription_details"]["subscription"] == w.subscriptions[0]
    assert [x["id"] for x in invoice["lines"]["data"]] == list(stored.lines)
    assert invoice["lines"]["url"] == f"{path}/lines"

    first = await ok(http, w.key, "GET", f"{path}/lines", limit="2")
    assert (first["object"], first["url"], first["has_more"]) == ("list", f"{path}/lines", True)
    assert first["data"] == invoice["lines"]["data"][:2]
    assert first["data"][1]["object"] == "line_item"
    assert first["data"][1]["invoice"] == stored.id
    a, b, c = stored.lines
    pages = {
        ("starting_after", b, "2"): ([c], False),
        ("starting_after", c, "2"): ([], False),
        ("ending_before", c, "1"): ([b], True),
        ("ending_before", b, "5"): ([a], False),
        ("ending_before", a, "5"): ([], False),
    }
    for (cursor, at, limit), (ids, has_more) in pages.items():
        page = await ok(http, w.key, "GET", f"{path}/lines", limit=limit, **{cursor: at})
        assert ([x["id"] for x in page["data"]], page["has_more"]) == (ids, has_more), cursor
    missing_line = await error(http, w.key, "GET", f"{path}/lines", 404, starting_after="il_x")
    assert (missing_line["code"], missing_line["param"]) == ("resource_missing", "starting_after")
    both = await error(http, w.key, "GET", f"{path}/lines", 400, starting_after=a, ending_before=c)
    assert both["code"] == "parameters_exclusive"
    expand = await error(http, w.key, "GET", path, 400, **{"expand[]": "customer"})
    assert expand["param"] == "expand"

    # Unknown ids, previews' ids, another account's and the other mode's are all missing.
    for key, invoice_id in ((w.key, "in_unknown"), (w.key, "upcoming_in_x"), (other, stored.id),
                            (live, stored.id)):  # fmt: skip
        for method, suffix, params in (
            ("GET", "", {}),
            ("GET", "/lines", {}),
            ("POST", "/pay", {"paid_out_of_band": "true"}),
            ("POST", "/void", {}),
        ):
            found = await error(
                http, key, method, f"/v1/invoices/{invoice_id}{suffix}", 404, **params
            )
            assert (found["code"], found["param"]) == ("resource_missing", "id"), suffix
            assert found["message"] == f"No such invoice: '{invoice_id}'"
    assert (await ok(http, w.key, "GET", path))["status"] == "open"


async def test_the_list_filters_by_customer_subscription_status_and_created_and_pages(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    w = await world(http, make_account)
    other = (await make_account("other")).secret_key
    t0 = int(time.time()) - 10 * HOUR
    conn = await asyncpg.connect(database_url)
    try:
        ids: list[str] = []
        for i, (n, status) in enumerate(
            [(0, "draft"), (0, "open"), (0, "paid"), (1, "void"), (1, "open")]
        ):
            ids.append((await stored_invoice(conn, w, status, t0 + 10 * i, n=n)).id)
    finally:
        await conn.close()
    one, two, three, four, five = ids

    async def listed(**params: str) -> list[str]:
        body = await ok(http, w.key, "GET", "/v1/invoices", **params)
        assert (body["object"], body["url"]) == ("list", "/v1/invoices")
        return [i["id"] for i in body["data"]]

    assert await listed() == [five, four, three, two, one]
    cases: list[tuple[dict[str, str], list[str]]] = [
        ({"customer": w.customers[0]}, [three, two, one]),
        ({"subscription": w.subscriptions[1]}, [five, four]),
        ({"status": "open"}, [five, two]),
        ({"status": "void"}, [four]),
        ({"status": "draft"}, [one]),
        ({"status": "uncollectible"}, []),
        ({"customer": w.customers[0], "status": "paid"}, [three]),
        ({"customer": "cus_nobody"}, []),
        ({"created": str(t0 + 20)}, [three]),
        ({"created[gte]": str(t0 + 10), "created[lt]": str(t0 + 40)}, [four, three, two]),
        ({"created[gt]": str(t0 + 40)}, []),
        ({"created[lte]": str(t0)}, [one]),
        ({"created[gt]": str(t0), "subscription": w.subscriptions[0]}, [three, two]),
    ]
    for params, expected in cases:
        assert await listed(**params) == expected, params

    pages: list[tuple[dict[str, str], list[str], bool]] = [
        ({"limit": "2"}, [five, four], True),
        ({"limit": "2", "starting_after": four}, [three, two], True),
        ({"limit": "2", "starting_after": two}, [one], False),
        ({"limit": "2", "ending_before": one}, [three, two], True),
        ({"limit": "2", "ending_before": three}, [five, four], False),
        ({"limit": "1", "starting_after": three, "customer": w.customers[0]}, [two], True),
        ({"limit": "5", "ending_before": two, "status": "open"}, [five], False),
    ]
    for params, expected, has_more in pages:
        body = await ok(http, w.key, "GET", "/v1/invoices", **params)
        assert ([i["id"] for i in body["data"]], body["has_more"]) == (expected, has_more), params

    refused: list[tuple[dict[str, str], int, str, str]] = [
        ({"starting_after": "in_unknown"}, 404, "resource_missing", "starting_after"),
        ({"ending_before": "in_unknown"}, 404, "resource_missing", "ending_before"),
        ({"status": "overdue"}, 400, "parameter_invalid", "status"),
        ({"created[since]": "1"}, 400, "parameter_unknown", "created[since]"),
        ({"created": "yesterday"}, 400, "parameter_invalid_integer", "created"),
        ({"created[gte]": "-1"}, 400, "parameter_invalid_integer", "created[gte]"),
        ({"starting_after": two, "ending_before": four}, 400, "parameters_exclusive",
         "ending_before"),
        ({"limit": "0"}, 400, "parameter_invalid_integer", "limit"),
        ({"collection_method": "send_invoice"}, 400, "parameter_unknown", "collection_method"),
    ]  # fmt: skip
    for params, http_status, code, param in refused:
        found = await error(http, w.key, "GET", "/v1/invoices", http_status, **params)
        assert (found["code"], found["param"]) == (code, param), params
    # Another account sees none of them, not even as a cursor.
    assert (await ok(http, other, "GET", "/v1/invoices"))["data"] == []
    cursor = await error(http, other, "GET", "/v1/invoices", 404, starting_after=five)
    assert cursor["param"] == "starting_after"


async def test_paying_out_of_band_marks_an_open_invoice_paid_once(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    w = await world(http, make_account)
    now = int(time.time())
    conn = await asyncpg.connect(database_url)
    try:
        invoices: dict[str, str] = {}
        for name in ("open", "json", "draft", "void", "paid"):
            status = "open" if name == "json" else name
            invoices[name] = (await stored_invoice(conn, w, status, now - HOUR)).id
        before = {
            name: await ok(http, w.key, "GET", f"/v1/invoices/{i}") for name, i in invoices.items()
        }
        pay = f"/v1/invoices/{invoices['open']}/pay"
        refusals: list[tuple[dict[str, str], str, str]] = [
            ({}, "parameter_missing", "paid_out_of_band"),
            ({"paid_out_of_band": "false"}, "parameter_invalid", "paid_out_of_band"),
            ({"paid_out_of_band": "maybe"}, "parameter_invalid_boolean", "paid_out_of_band"),
            ({"paid_out_of_band": "true", "payment_method": "pm_card_visa"}, "parameter_unknown",
             "payment_method"),
            ({"source": "tok_visa"}, "parameter_unknown", "source"),
            ({"paid_out_of_band": "true", "metadata[k]": "v"}, "parameter_unknown", "metadata"),
        ]  # fmt: skip
        for params, code, param in refusals:
            found = await error(http, w.key, "POST", pay, 400, **params)
            assert (found["code"], found["param"]) == (code, param), params
            if code != "parameter_invalid_boolean" and param != "metadata":
                assert "paid_out_of_band=true" in found["message"]

        low = int(time.time())
        paid = await ok(http, w.key, "POST", pay, paid_out_of_band="true")
        high = int(time.time())
        assert (paid["id"], paid["status"]) == (invoices["open"], "paid")
        assert (paid["amount_due"], paid["amount_paid"], paid["amount_remaining"]) == (100, 100, 0)
        assert low <= paid["status_transitions"]["paid_at"] <= high
        assert await ok(http, w.key, "GET", f"/v1/invoices/{invoices['open']}") == paid
        row = await conn.fetchrow(
            "SELECT paid_out_of_band, amount_paid FROM invoices WHERE id = $1", invoices["open"]
        )
        assert row is not None
        assert (row["paid_out_of_band"], row["amount_paid"]) == (True, 100)
        # A JSON body works as well as a form.
        response = await http.post(
            f"/v1/invoices/{invoices['json']}/pay",
            json={"paid_out_of_band": True},
            headers={"Authorization": f"Bearer {w.key}"},
        )
        assert (response.status_code, response.json()["status"]) == (200, "paid")

        wrong_state = {
            "open": "Invoice is already paid",
            "paid": "Invoice is already paid",
            "void": "Voided invoices cannot be paid.",
            "draft": "You cannot pay this invoice because it has a status of draft",
        }
        for name, message in wrong_state.items():
            path = f"/v1/invoices/{invoices[name]}/pay"
            found = await error(http, w.key, "POST", path, 400, paid_out_of_band="true")
            assert found["code"] == "invoice_unexpected_state"
            assert found["message"].startswith(message), found
        after = {
            name: await ok(http, w.key, "GET", f"/v1/invoices/{i}") for name, i in invoices.items()
        }
    finally:
        await conn.close()
    assert after["open"] == paid
    for name in ("draft", "void", "paid"):
        assert after[name] == before[name]
    paid_events = await events(http, w.key, "invoice.paid")
    assert [(e["data"]["object"]["id"], e["data"]["object"]["status"]) for e in paid_events] == [
        (invoices["open"], "paid"),
        (invoices["json"], "paid"),
    ]


async def ledger_after(conn: asyncpg.Connection, seq: int) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        """SELECT id, type, reason, credit_grant_id, amount, invoice_id, invoice_line_id,
                  dedupe_key, effective_at
           FROM credit_ledger WHERE seq > $1 ORDER BY seq""",
        seq,
    )
    return [tuple(r.values()) for r in rows]


async def balance(conn: asyncpg.Connection, grant: str) -> int:
    value = await conn.fetchval(
        """SELECT sum(CASE WHEN type = 'credit' THEN amount ELSE -amount END)
           FROM credit_ledger WHERE credit_grant_id = $1""",
        grant,
    )
    return int(value)


async def test_voiding_gives_back_the_credits_applied_and_expires_those_of_expired_grants(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    w = await world(http, make_account)
    now = int(time.time())
    customer = w.customers[0]
    item, price = w.lines[0].item, w.lines[0].price
    conn = await asyncpg.connect(database_url)
    try:
        lasting = await insert_grant(conn, w.owner, customer, 1000, effective_at=now - 5 * HOUR)
        expired = await insert_grant(
            conn, w.owner, customer, 500, effective_at=now - 5 * HOUR, expires_at=now - 60
        )
        voided = await stored_invoice(
            conn,
            w,
            "open",
            now - 2 * HOUR,
            lines=[Line(item, price, 400), Line(item, price, 500)],
            credits=[Credit(0, lasting, 250), Credit(0, expired, 150), Credit(1, lasting, 300)],
        )
        kept = await stored_invoice(conn, w, "open", now - HOUR, credits=[Credit(0, lasting, 100)])
        others = {
            status: (await stored_invoice(conn, w, status, now - HOUR)).id
            for status in ("draft", "paid")
        }
        seq = await conn.fetchval("SELECT max(seq) FROM credit_ledger")
        balances = {g: await balance(conn, g) for g in (lasting, expired)}
        assert balances == {lasting: 350, expired: 350}

        before = await ok(http, w.key, "GET", f"/v1/invoices/{voided.id}")
        assert before["amount_due"] == 200
        assert [c["amount"] for c in before["total_pretax_credit_amounts"]] == [250, 150, 300]
        low = int(time.time())
        void = await ok(http, w.key, "POST", f"/v1/invoices/{voided.id}/void")
        high = int(time.time())
        assert (void["status"], void["amount_remaining"]) == ("void", 0)
        assert low <= void["status_transitions"]["voided_at"] <= high
        # What the invoice showed stays as it was: a voided invoice keeps its amounts and lines.
        for field in ("subtotal", "total", "amount_due", "lines", "total_pretax_credit_amounts"):
            assert void[field] == before[field], field

        appended = await ledger_after(conn, seq)
        effective = {row[-1] for row in appended}
        assert len(effective) == 1
        [at] = effective
        assert low <= at <= high
        first, second = voided.lines
        a1, a2, a3 = voided.applied
        assert [row[1:-1] for row in appended] == [
            ("credit", "credits_application_invoice_voided", lasting, 250, voided.id, first,
             f"reinstated:{a1}"),
            ("credit", "credits_application_invoice_voided", expired, 150, voided.id, first,
             f"reinstated:{a2}"),
            ("debit", "credits_expired", expired, 150, None, None, f"expired:reinstated:{a2}"),
            ("credit", "credits_application_invoice_voided", lasting, 300, voided.id, second,
             f"reinstated:{a3}"),
        ]  # fmt: skip
        assert {g: await balance(conn, g) for g in (lasting, expired)} == {
            lasting: 350 + 550,
            expired: 350,
        }

        # Voiding again, or voiding what is not open, is refused and changes nothing.
        for invoice_id, status in ((voided.id, "void"), (others["draft"], "draft"),
                                   (others["paid"], "paid")):  # fmt: skip
            found = await error(http, w.key, "POST", f"/v1/invoices/{invoice_id}/void", 400)
            assert found["code"] == "invoice_unexpected_state"
            assert f"because it has a status of {status}" in found["message"]
        paying = await error(
            http, w.key, "POST", f"/v1/invoices/{voided.id}/pay", 400, paid_out_of_band="true"
        )
        assert paying["message"] == "Voided invoices cannot be paid."
        assert await ledger_after(conn, seq) == appended
        assert await ok(http, w.key, "GET", f"/v1/invoices/{voided.id}") == void
        assert (await ok(http, w.key, "GET", f"/v1/invoices/{kept.id}"))["status"] == "open"
    finally:
        await conn.close()

    [voided_event] = await events(http, w.key, "invoice.voided")
    assert voided_event["data"]["object"] == void
    transactions = [
        e["data"]["object"]
        for e in await events(http, w.key, "billing.credit_balance_transaction.created")
    ]
    assert [t["id"] for t in transactions] == [row[0] for row in appended]
    assert transactions[0] == {
        "id": appended[0][0],
        "object": "billing.credit_balance_transaction",
        "created": at,
        "credit": {
            "amount": {"monetary": {"currency": "usd", "value": 250}, "type": "monetary"},
            "credits_application_invoice_voided": {
                "invoice": voided.id,
                "invoice_line_item": first,
            },
            "type": "credits_application_invoice_voided",
        },
        "credit_grant": lasting,
        "debit": None,
        "effective_at": at,
        "livemode": False,
        "test_clock": None,
        "type": "credit",
    }
    assert transactions[2]["debit"] == {
        "amount": {"monetary": {"currency": "usd", "value": 150}, "type": "monetary"},
        "credits_applied": None,
        "type": "credits_expired",
    }


async def test_concurrent_voids_give_the_credits_back_once(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    w = await world(http, make_account)
    now = int(time.time())
    conn = await asyncpg.connect(database_url)
    try:
        grant = await insert_grant(conn, w.owner, w.customers[0], 300, effective_at=now - HOUR)
        line = w.lines[0]
        stored = await stored_invoice(
            conn,
            w,
            "open",
            now - 60,
            lines=[line, line],
            credits=[Credit(0, grant, 100), Credit(1, grant, 100)],
        )
        seq = await conn.fetchval("SELECT max(seq) FROM credit_ledger")
        path = f"/v1/invoices/{stored.id}/void"
        answers = await asyncio.gather(*(call(http, w.key, "POST", path) for _ in range(6)))
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200] + [400] * 5
        assert {b["error"]["code"] for s, b in answers if s == 400} == {"invoice_unexpected_state"}
        reinstated = [row[2] for row in await ledger_after(conn, seq)]
        assert reinstated == ["credits_application_invoice_voided"] * 2
        assert await balance(conn, grant) == 300
    finally:
        await conn.close()
    assert len(await events(http, w.key, "invoice.voided")) == 1

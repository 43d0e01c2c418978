"""Credit balance alerts through ``/v1/billing/alerts`` over real HTTP against a real PostgreSQL:
Stripe's shape, retrieve, list filters, status changes, the customer check, the per-customer
limit, bad input that creates nothing, and the Stripe Python SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import httpx
import pytest
import stripe

from meterflow.store.accounts import create_key
from tests.conftest import AccountFactory
from tests.fixtures.credit_alerts import ALERTS, credit_alert_form
from tests.fixtures.meter_events_http import auth, create_meter, v1_error

pytestmark = pytest.mark.integration

OLD_VERSION = {"Stripe-Version": "2024-06-20"}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def _customer(http: httpx.AsyncClient, key: str, name: str = "Jenny") -> str:
    response = await http.post("/v1/customers", data={"name": name}, headers=auth(key))
    assert response.status_code == 200, response.text
    customer_id: str = response.json()["id"]
    return customer_id


async def _create(
    http: httpx.AsyncClient, key: str, customer: str, value: int = 500, **extra: str
) -> dict[str, Any]:
    form = credit_alert_form(customer, value) | extra
    response = await http.post(ALERTS, data=form, headers=auth(key))
    assert response.status_code == 200, response.text
    alert: dict[str, Any] = response.json()
    return alert


async def _alert_rows(pool: asyncpg.Pool, account_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM billing_alerts WHERE account_id = $1", account_id
    )
    return count


def _threshold(customer: str, value: int, currency: str = "usd") -> dict[str, Any]:
    return {
        "filters": [{"customer": customer, "type": "customer"}],
        "lte": {
            "balance_type": "monetary",
            "custom_pricing_unit": None,
            "monetary": {"currency": currency, "value": value},
        },
    }


async def test_create_retrieve_and_both_shapes(
    http: httpx.AsyncClient, make_account: AccountFactory, pool: asyncpg.Pool
) -> None:
    key = (await make_account()).secret_key
    jenny = await _customer(http, key)
    alert = await _create(http, key, jenny, 500)
    assert alert["id"].startswith("alrt_test_")
    assert alert == {
        "id": alert["id"],
        "object": "billing.alert",
        "alert_type": "credit_balance_threshold",
        "livemode": False,
        "status": "active",
        "title": "Credits running low",
        "credit_balance_threshold": _threshold(jenny, 500),
        "usage_threshold": None,
    }
    path = f"{ALERTS}/{alert['id']}"
    assert (await http.get(path, headers=auth(key))).json() == alert
    # Expanding the usage alert's meter changes nothing on a credit balance alert.
    expanded = await http.get(path, params={"expand[]": "usage_threshold.meter"}, headers=auth(key))
    assert expanded.json() == alert
    old = (await http.get(path, headers={**auth(key), **OLD_VERSION})).json()
    assert old == {
        **{k: v for k, v in alert.items() if k != "usage_threshold"},
        "filter": {"customer": jenny, "subscription": None, "subscription_item": None},
        "usage_threshold_config": None,
    }

    # JSON bodies work as forms do; the currency is stored lower case; 0 is a value.
    as_json = await http.post(
        ALERTS,
        json={
            "alert_type": "credit_balance_threshold",
            "title": "Out of credits",
            "credit_balance_threshold": {
                "lte": {"balance_type": "monetary", "monetary": {"currency": "EUR", "value": 0}},
                "filters": [{"type": "customer", "customer": jenny}],
            },
        },
        headers=auth(key),
    )
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["credit_balance_threshold"] == _threshold(jenny, 0, "eur")

    # Each starts armed, and its customer is due for an evaluation at once.
    states = await pool.fetch(
        "SELECT alert_id, armed, firings FROM credit_alert_states ORDER BY alert_id"
    )
    assert [tuple(s) for s in states] == sorted(
        [(alert["id"], True, 0), (as_json.json()["id"], True, 0)]
    )
    rechecks = await pool.fetch("SELECT customer_id, due_s FROM credit_alert_rechecks")
    assert [tuple(r) for r in rechecks] == [(jenny, 0)]


async def test_list_filters_and_status_changes(
    http: httpx.AsyncClient, make_account: AccountFactory, pool: asyncpg.Pool
) -> None:
    key = (await make_account()).secret_key
    meter = await create_meter(http, key)
    jenny, ann = await _customer(http, key, "Jenny"), await _customer(http, key, "Ann")
    usage = await http.post(
        ALERTS,
        data={
            "alert_type": "usage_threshold",
            "title": "Tokens",
            "usage_threshold[gte]": "10",
            "usage_threshold[meter]": meter["id"],
            "usage_threshold[recurrence]": "one_time",
            "usage_threshold[filters][0][type]": "customer",
            "usage_threshold[filters][0][customer]": jenny,
        },
        headers=auth(key),
    )
    assert usage.status_code == 200, usage.text
    assert usage.json()["credit_balance_threshold"] is None
    for_jenny = await _create(http, key, jenny)
    for_ann = await _create(http, key, ann)

    async def ids(**params: str) -> list[str]:
        response = await http.get(ALERTS, params=params, headers=auth(key))
        assert response.status_code == 200, response.text
        return [a["id"] for a in response.json()["data"]]

    assert await ids() == [for_ann["id"], for_jenny["id"], usage.json()["id"]]
    assert await ids(alert_type="credit_balance_threshold") == [for_ann["id"], for_jenny["id"]]
    assert await ids(alert_type="usage_threshold") == [usage.json()["id"]]
    assert await ids(customer=jenny) == [for_jenny["id"], usage.json()["id"]]
    assert await ids(meter=meter["id"]) == [usage.json()["id"]]
    expanded = await http.get(
        ALERTS, params={"expand[]": "data.usage_threshold.meter"}, headers=auth(key)
    )
    assert [a["usage_threshold"] for a in expanded.json()["data"][:2]] == [None, None]
    assert expanded.json()["data"][2]["usage_threshold"]["meter"] == meter

    path = f"{ALERTS}/{for_jenny['id']}"
    await pool.execute("DELETE FROM credit_alert_rechecks")
    deactivated = await http.post(path + "/deactivate", headers=auth(key))
    assert deactivated.json() == {**for_jenny, "status": "inactive"}
    assert await pool.fetchval("SELECT count(*) FROM credit_alert_rechecks") == 0
    # Reactivated, its customer is due for an evaluation again.
    activated = await http.post(path + "/activate", headers=auth(key))
    assert activated.json() == for_jenny
    rechecks = await pool.fetch("SELECT customer_id, due_s FROM credit_alert_rechecks")
    assert [tuple(r) for r in rechecks] == [(jenny, 0)]
    archived = await http.post(path + "/archive", headers=auth(key))
    assert archived.json() == {**for_jenny, "status": "archived"}
    assert v1_error(await http.get(path, headers=auth(key)), 404)["code"] == "resource_missing"
    assert await ids(alert_type="credit_balance_threshold") == [for_ann["id"]]


async def test_the_customer_must_be_the_callers(
    http: httpx.AsyncClient, make_account: AccountFactory, pool: asyncpg.Pool, database_url: str
) -> None:
    account = await make_account()
    key = account.secret_key
    conn = await asyncpg.connect(database_url)
    try:
        live_key = await create_key(conn, account.account_id, livemode=True)
    finally:
        await conn.close()
    other_key = (await make_account("other")).secret_key
    deleted = await _customer(http, key, "Gone")
    assert (await http.delete(f"/v1/customers/{deleted}", headers=auth(key))).status_code == 200
    for customer in (
        "cus_unknown",
        deleted,
        await _customer(http, other_key, "Elsewhere"),
        await _customer(http, live_key, "Live"),
    ):
        response = await http.post(ALERTS, data=credit_alert_form(customer, 5), headers=auth(key))
        error = v1_error(response, 400)
        assert (error["code"], error["param"]) == (
            "resource_missing",
            "credit_balance_threshold[filters][0][customer]",
        )
        assert error["message"] == f"No such customer: '{customer}'"
    assert await _alert_rows(pool, account.account_id) == 0

    # Alerts of one mode or account are invisible to the others.
    live = await _create(http, live_key, await _customer(http, live_key, "Live 2"))
    assert live["livemode"] is True
    for other in (key, other_key):
        assert v1_error(await http.get(f"{ALERTS}/{live['id']}", headers=auth(other)), 404)
        listed = await http.get(ALERTS, headers=auth(other))
        assert listed.json()["data"] == []


async def test_at_most_25_per_customer_even_when_racing(
    http: httpx.AsyncClient, make_account: AccountFactory, pool: asyncpg.Pool
) -> None:
    account = await make_account()
    key = account.secret_key
    jenny = await _customer(http, key)
    alerts = await asyncio.gather(*(_create(http, key, jenny, n) for n in range(20)))
    racing = await asyncio.gather(
        *(http.post(ALERTS, data=credit_alert_form(jenny, 1), headers=auth(key)) for _ in range(8))
    )
    assert sorted(r.status_code for r in racing) == [200] * 5 + [400] * 3
    error = v1_error(next(r for r in racing if r.status_code == 400), 400)
    assert error["param"] == "credit_balance_threshold[filters][0][customer]"
    assert "25" in error["message"]
    # Another customer has a limit of its own; archiving frees a place.
    await _create(http, key, await _customer(http, key, "Ann"))
    await http.post(f"{ALERTS}/{alerts[0]['id']}/archive", headers=auth(key))
    await _create(http, key, jenny)
    assert await _alert_rows(pool, account.account_id) == 27


_LTE = "credit_balance_threshold[lte]"
_FILTER = "credit_balance_threshold[filters][0]"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({f"{_LTE}[balance_type]": "custom_pricing_unit"}, f"{_LTE}[balance_type]"),
        ({f"{_LTE}[monetary][currency]": "dollars"}, f"{_LTE}[monetary][currency]"),
        ({f"{_LTE}[monetary][currency]": "xyz"}, f"{_LTE}[monetary][currency]"),
        ({f"{_LTE}[monetary][value]": "-1"}, f"{_LTE}[monetary][value]"),
        ({f"{_LTE}[monetary][value]": "12.5"}, f"{_LTE}[monetary][value]"),
        ({f"{_LTE}[monetary][value]": None}, f"{_LTE}[monetary][value]"),
        ({f"{_FILTER}[customer]": ""}, f"{_FILTER}[customer]"),
        ({f"{_FILTER}[customer]": None}, f"{_FILTER}[customer]"),
        ({f"{_FILTER}[type]": None, f"{_FILTER}[customer]": None},
         "credit_balance_threshold[filters]"),
        ({f"{_FILTER}[type]": "tenant"}, f"{_FILTER}[type]"),
        ({"usage_threshold[gte]": "5"}, "usage_threshold"),
        ({"filter[customer]": "cus_1"}, "filter"),
        ({"alert_type": "usage_threshold"}, "credit_balance_threshold"),
        ({"title": ""}, "title"),
    ],
)  # fmt: skip
async def test_bad_input_is_a_400_and_creates_nothing(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    pool: asyncpg.Pool,
    change: dict[str, str | None],
    param: str,
) -> None:
    """A None in ``change`` leaves the field out."""
    account = await make_account()
    jenny = await _customer(http, account.secret_key)
    form = {k: v for k, v in (credit_alert_form(jenny, 500) | change).items() if v is not None}
    response = await http.post(ALERTS, data=form, headers=auth(account.secret_key))
    assert v1_error(response, 400)["param"] == param
    assert await _alert_rows(pool, account.account_id) == 0
    assert await pool.fetchval("SELECT count(*) FROM credit_alert_states") == 0


def _sdk_calls(key: str, base_url: str, customer: str) -> dict[str, Any]:
    client = stripe.StripeClient(key, base_addresses={"api": base_url}, max_network_retries=0)
    alerts = client.v1.billing.alerts
    # stripe 16's typed parameters predate credit balance alerts; the request is Stripe's.
    params: Any = {
        "alert_type": "credit_balance_threshold",
        "title": "SDK",
        "credit_balance_threshold": {
            "lte": {"balance_type": "monetary", "monetary": {"currency": "usd", "value": 250}},
            "filters": [{"type": "customer", "customer": customer}],
        },
    }
    created = alerts.create(params)
    listed = alerts.list(cast(Any, {"alert_type": "credit_balance_threshold"}))
    return {
        "created": created.to_dict(),
        "retrieved": alerts.retrieve(created.id).to_dict(),
        "listed": [a.id for a in listed.data],
        "deactivated": alerts.deactivate(created.id).status,
    }


async def test_the_python_sdk_manages_credit_balance_alerts(
    http: httpx.AsyncClient, ingest_url: str, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    jenny = await _customer(http, key)
    report = await asyncio.to_thread(_sdk_calls, key, ingest_url, jenny)
    created = report["created"]
    assert created["credit_balance_threshold"] == _threshold(jenny, 250)
    assert created["usage_threshold"] is None
    assert report["retrieved"] == created
    assert report["listed"] == [created["id"]]
    assert report["deactivated"] == "inactive"

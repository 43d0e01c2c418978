"""The billing alerts API over real HTTP against a real PostgreSQL: shapes, the per-(meter,
customer) limit under concurrency, status changes, scoping, and the older request shape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import AccountFactory
from tests.fixtures.meter_events_http import auth, create_meter, v1_error

pytestmark = pytest.mark.integration

ALERTS = "/v1/billing/alerts"
ALERT_KEYS = {"id", "object", "alert_type", "livemode", "status", "title", "usage_threshold",
              "credit_balance_threshold"}  # fmt: skip
LEGACY_KEYS = {"id", "object", "alert_type", "livemode", "status", "title", "filter",
               "usage_threshold_config"}  # fmt: skip
OLD_VERSION = {"Stripe-Version": "2024-06-20"}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


def _form(meter_id: str, customer: str | None = "cus_1", **extra: str) -> dict[str, str]:
    form = {
        "alert_type": "usage_threshold",
        "title": "Tokens over 1000",
        "usage_threshold[gte]": "1000",
        "usage_threshold[meter]": meter_id,
        "usage_threshold[recurrence]": "one_time",
        **extra,
    }
    if customer is not None:
        form["usage_threshold[filters][0][type]"] = "customer"
        form["usage_threshold[filters][0][customer]"] = customer
    return form


async def _create(
    http: httpx.AsyncClient, key: str, meter_id: str, customer: str | None = "cus_1", **extra: str
) -> dict[str, Any]:
    response = await http.post(ALERTS, data=_form(meter_id, customer, **extra), headers=auth(key))
    assert response.status_code == 200, response.text
    alert: dict[str, Any] = response.json()
    return alert


async def _alert_rows(pool: asyncpg.Pool, account_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM billing_alerts WHERE account_id = $1", account_id
    )
    return count


async def test_create_and_retrieve_answer_the_current_shape(
    http: httpx.AsyncClient, make_account: AccountFactory, pool: asyncpg.Pool
) -> None:
    key = (await make_account()).secret_key
    meter = await create_meter(http, key)
    before_s = int(time.time())
    alert = await _create(http, key, meter["id"])
    assert set(alert) == ALERT_KEYS
    assert alert["id"].startswith("alrt_test_")
    assert alert == {
        "id": alert["id"],
        "object": "billing.alert",
        "alert_type": "usage_threshold",
        "livemode": False,
        "status": "active",
        "title": "Tokens over 1000",
        "credit_balance_threshold": None,
        "usage_threshold": {
            "filters": [{"customer": "cus_1", "type": "customer"}],
            "gte": 1000,
            "meter": meter["id"],
            "recurrence": "one_time",
        },
    }
    path = f"{ALERTS}/{alert['id']}"
    assert (await http.get(path, headers=auth(key))).json() == alert

    # Without a filter the alert watches every customer; JSON bodies work as forms do.
    everyone = await http.post(
        ALERTS,
        json={
            "alert_type": "usage_threshold",
            "title": "Anyone over 5",
            "usage_threshold": {"gte": 5, "meter": meter["id"], "recurrence": "daily"},
        },
        headers=auth(key),
    )
    assert everyone.status_code == 200, everyone.text
    assert everyone.json()["usage_threshold"]["filters"] is None
    assert everyone.json()["usage_threshold"]["recurrence"] == "daily"

    # expand embeds the meter object exactly as the meters API renders it.
    expanded = await http.get(path, params={"expand[]": "usage_threshold.meter"}, headers=auth(key))
    assert expanded.json()["usage_threshold"]["meter"] == meter
    created = await _create(
        http, key, meter["id"], "cus_2", **{"expand[0]": "usage_threshold.meter"}
    )
    assert created["usage_threshold"]["meter"] == meter
    bad_expand = await http.get(path, params={"expand[]": "customer"}, headers=auth(key))
    assert v1_error(bad_expand, 400)["param"] == "expand"

    # Stripe's object has no created time; the row keeps one for ordering and the evaluator.
    created_s = await pool.fetchval("SELECT created FROM billing_alerts WHERE id = $1", alert["id"])
    assert before_s <= created_s <= int(time.time())


async def test_list_filters_paginates_and_leaves_out_archived(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    tokens = await create_meter(http, key)
    storage = await create_meter(http, key, event_name="gb_stored")
    a = await _create(http, key, tokens["id"], "cus_a")
    b = await _create(http, key, storage["id"], "cus_b")
    c = await _create(http, key, tokens["id"], None)
    archived = await _create(http, key, tokens["id"], "cus_d")
    archive = await http.post(f"{ALERTS}/{archived['id']}/archive", headers=auth(key))
    assert archive.status_code == 200

    async def ids(**params: str) -> tuple[list[str], bool]:
        response = await http.get(ALERTS, params=params, headers=auth(key))
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["object"], body["url"]) == ("list", ALERTS)
        return [x["id"] for x in body["data"]], body["has_more"]

    assert await ids() == ([c["id"], b["id"], a["id"]], False)
    assert await ids(meter=tokens["id"]) == ([c["id"], a["id"]], False)
    assert await ids(meter=storage["id"], alert_type="usage_threshold") == ([b["id"]], False)
    assert await ids(meter="mtr_test_unknown") == ([], False)
    assert await ids(limit="1") == ([c["id"]], True)
    assert await ids(limit="1", starting_after=c["id"]) == ([b["id"]], True)
    assert await ids(limit="2", starting_after=b["id"]) == ([a["id"]], False)
    assert await ids(limit="1", ending_before=a["id"]) == ([b["id"]], True)
    assert await ids(ending_before=b["id"]) == ([c["id"]], False)

    expanded = await http.get(
        ALERTS, params={"expand[]": "data.usage_threshold.meter"}, headers=auth(key)
    )
    assert [x["usage_threshold"]["meter"]["id"] for x in expanded.json()["data"]] == [
        tokens["id"], storage["id"], tokens["id"],
    ]  # fmt: skip

    missing = await http.get(ALERTS, params={"starting_after": "alrt_nope"}, headers=auth(key))
    assert v1_error(missing, 404)["param"] == "starting_after"
    assert await ids(alert_type="credit_balance_threshold") == ([], False)
    assert await ids(customer="cus_a") == ([a["id"]], False)
    for params, param in (
        ({"alert_type": "spend_threshold"}, "alert_type"),
        ({"limit": "0"}, "limit"),
        ({"status": "active"}, "status"),
    ):
        assert (
            v1_error(await http.get(ALERTS, params=params, headers=auth(key)), 400)["param"]
            == param
        )


async def test_activate_deactivate_and_irreversible_archive(
    http: httpx.AsyncClient, make_account: AccountFactory, pool: asyncpg.Pool
) -> None:
    key = (await make_account()).secret_key
    meter = await create_meter(http, key)
    alert = await _create(http, key, meter["id"])
    path = f"{ALERTS}/{alert['id']}"

    deactivated = (await http.post(path + "/deactivate", headers=auth(key))).json()
    assert deactivated == {**alert, "status": "inactive"}
    assert (await http.get(path, headers=auth(key))).json()["status"] == "inactive"
    assert (await http.post(path + "/deactivate", headers=auth(key))).json() == deactivated
    activated = (await http.post(path + "/activate", headers=auth(key))).json()
    assert activated == alert
    # Activating an active alert changes nothing and answers the object.
    assert (await http.post(path + "/activate", headers=auth(key))).json() == alert

    archived = await http.post(path + "/archive", headers=auth(key))
    assert archived.status_code == 200
    assert archived.json() == {**alert, "status": "archived"}
    # Archived alerts are gone from the API: every further call is a 404.
    for method, suffix in (
        ("GET", ""), ("POST", "/activate"), ("POST", "/deactivate"), ("POST", "/archive"),
    ):  # fmt: skip
        response = await http.request(method, path + suffix, headers=auth(key))
        assert v1_error(response, 404)["code"] == "resource_missing"
    # The row stays (firings refer to it), archived for good.
    status = await pool.fetchval("SELECT status FROM billing_alerts WHERE id = $1", alert["id"])
    assert status == "archived"

    unknown = await http.post(f"{ALERTS}/alrt_test_nope/activate", headers=auth(key))
    assert v1_error(unknown, 404)["code"] == "resource_missing"
    # An id no database text can hold is an unknown URL, never a server error.
    for method, suffix in (("GET", ""), ("POST", "/archive")):
        nul = await http.request(method, f"{ALERTS}/alrt%00x{suffix}", headers=auth(key))
        assert v1_error(nul, 404)["message"].startswith("Unrecognized request URL")
    update = await http.post(path, data={"title": "x"}, headers=auth(key))
    assert v1_error(update, 404)["message"].startswith("Unrecognized request URL (POST: ")
    extra = await http.post(
        f"{ALERTS}/{alert['id']}/activate", data={"title": "x"}, headers=auth(key)
    )
    assert v1_error(extra, 400)["code"] == "parameter_unknown"


async def test_the_26th_alert_for_a_meter_and_customer_is_refused(
    http: httpx.AsyncClient, make_account: AccountFactory, pool: asyncpg.Pool
) -> None:
    account = await make_account()
    key = account.secret_key
    meter = await create_meter(http, key)
    alerts = [await _create(http, key, meter["id"], "cus_1") for _ in range(25)]
    # Inactive alerts still count towards the limit.
    await http.post(f"{ALERTS}/{alerts[0]['id']}/deactivate", headers=auth(key))

    refused = await http.post(ALERTS, data=_form(meter["id"], "cus_1"), headers=auth(key))
    error = v1_error(refused, 400)
    assert error["param"] == "usage_threshold[meter]"
    assert "25" in error["message"]
    assert await _alert_rows(pool, account.account_id) == 25

    # Other customers, and "every customer" (no filter), are other keys with their own limit.
    await _create(http, key, meter["id"], "cus_2")
    await _create(http, key, meter["id"], None)
    assert await _alert_rows(pool, account.account_id) == 27

    # Archiving one frees its place.
    await http.post(f"{ALERTS}/{alerts[1]['id']}/archive", headers=auth(key))
    await _create(http, key, meter["id"], "cus_1")
    again = await http.post(ALERTS, data=_form(meter["id"], "cus_1"), headers=auth(key))
    v1_error(again, 400)
    assert await _alert_rows(pool, account.account_id) == 28


async def test_concurrent_creates_at_24_leave_exactly_25(
    http: httpx.AsyncClient, make_account: AccountFactory, pool: asyncpg.Pool
) -> None:
    account = await make_account()
    key = account.secret_key
    meter = await create_meter(http, key)
    await asyncio.gather(*(_create(http, key, meter["id"], None) for _ in range(24)))
    assert await _alert_rows(pool, account.account_id) == 24

    racing = await asyncio.gather(
        *(http.post(ALERTS, data=_form(meter["id"], None), headers=auth(key)) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in racing)
    assert statuses == [200] + [400] * 7, [r.text for r in racing]
    assert await _alert_rows(pool, account.account_id) == 25


async def test_unknown_inactive_and_foreign_meters_are_refused(
    http: httpx.AsyncClient, make_account: AccountFactory, pool: asyncpg.Pool
) -> None:
    account = await make_account()
    key = account.secret_key
    other_key = (await make_account("other")).secret_key
    foreign = await create_meter(http, other_key)

    unknown = await http.post(ALERTS, data=_form("mtr_test_nope"), headers=auth(key))
    error = v1_error(unknown, 400)
    assert (error["code"], error["param"]) == ("resource_missing", "usage_threshold[meter]")
    assert error["message"] == "No such billing meter: 'mtr_test_nope'"
    not_mine = await http.post(ALERTS, data=_form(foreign["id"]), headers=auth(key))
    assert v1_error(not_mine, 400)["code"] == "resource_missing"

    meter = await create_meter(http, key)
    await http.post(f"/v1/billing/meters/{meter['id']}/deactivate", headers=auth(key))
    inactive = await http.post(ALERTS, data=_form(meter["id"]), headers=auth(key))
    error = v1_error(inactive, 400)
    assert error["param"] == "usage_threshold[meter]"
    assert "inactive" in error["message"]
    assert await _alert_rows(pool, account.account_id) == 0


async def test_other_accounts_and_modes_cannot_see_an_alert(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    meter = await create_meter(http, key)
    alert = await _create(http, key, meter["id"])
    for other in ((await make_account("other")).secret_key,
                  (await make_account("live", livemode=True)).secret_key):  # fmt: skip
        path = f"{ALERTS}/{alert['id']}"
        assert v1_error(await http.get(path, headers=auth(other)), 404)["param"] == "id"
        archive = await http.post(path + "/archive", headers=auth(other))
        assert v1_error(archive, 404)["code"] == "resource_missing"
        listed = await http.get(ALERTS, headers=auth(other))
        assert listed.json()["data"] == []
        cursor = await http.get(ALERTS, params={"starting_after": alert["id"]}, headers=auth(other))
        v1_error(cursor, 404)
    assert (await http.get(f"{ALERTS}/{alert['id']}", headers=auth(key))).json() == alert


async def test_older_shape_in_and_out(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    meter = await create_meter(http, key)
    legacy_form = {
        "alert_type": "usage_threshold",
        "title": "Old integration",
        "usage_threshold_config[gte]": "50",
        "usage_threshold_config[meter]": meter["id"],
        "usage_threshold_config[recurrence]": "one_time",
        "filter[customer]": "cus_old",
    }
    # An old Stripe-Version gets the old shape back.
    old = await http.post(ALERTS, data=legacy_form, headers={**auth(key), **OLD_VERSION})
    assert old.status_code == 200, old.text
    alert = old.json()
    assert set(alert) == LEGACY_KEYS
    assert alert["filter"] == {"customer": "cus_old", "subscription": None,
                               "subscription_item": None}  # fmt: skip
    assert alert["usage_threshold_config"] == {
        "gte": 50, "meter": meter["id"], "recurrence": "one_time",
    }  # fmt: skip
    path = f"{ALERTS}/{alert['id']}"
    assert (await http.get(path, headers={**auth(key), **OLD_VERSION})).json() == alert
    listed = await http.get(ALERTS, headers={**auth(key), **OLD_VERSION})
    assert listed.json()["data"] == [alert]
    expanded = await http.get(
        path,
        params={"expand[]": "usage_threshold_config.meter"},
        headers={**auth(key), **OLD_VERSION},
    )
    assert expanded.json()["usage_threshold_config"]["meter"] == meter

    # The same alert under a current version (or none) shows the current shape.
    for headers in ({}, {"Stripe-Version": "2024-09-30.acacia"}):
        current = (await http.get(path, headers={**auth(key), **headers})).json()
        assert set(current) == ALERT_KEYS
        assert current["usage_threshold"]["filters"] == [{"customer": "cus_old",
                                                          "type": "customer"}]  # fmt: skip
    deactivated = await http.post(path + "/deactivate", headers={**auth(key), **OLD_VERSION})
    assert deactivated.json() == {**alert, "status": "inactive"}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"usage_threshold[gte]": "-1"}, "usage_threshold[gte]"),
        ({"usage_threshold[gte]": "1.5"}, "usage_threshold[gte]"),
        ({"usage_threshold[gte]": "1e9"}, "usage_threshold[gte]"),
        ({"usage_threshold[gte]": "99999999999999999999999999"}, "usage_threshold[gte]"),
        ({"usage_threshold[recurrence]": "weekly"}, "usage_threshold[recurrence]"),
        ({"usage_threshold[filters][1][type]": "customer",
          "usage_threshold[filters][1][customer]": "cus_2"}, "usage_threshold[filters]"),
        ({"usage_threshold[filters][0][customer]": "cus\x01"},
         "usage_threshold[filters][0][customer]"),
        ({"usage_threshold[filters][0][customer]": "c" * 501},
         "usage_threshold[filters][0][customer]"),
        ({"filter[customer]": "cus_1"}, "filter"),
        ({"filter[subscription]": "sub_1"}, "filter"),
        ({"title": "t" * 257}, "title"),
        ({"alert_type": "spend"}, "alert_type"),
        ({"usage_threshold[gte][x]": "1"}, "usage_threshold[gte]"),
        ({"surprise": "1"}, "surprise"),
    ],
)  # fmt: skip
async def test_bad_input_is_a_400_and_creates_nothing(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    pool: asyncpg.Pool,
    change: dict[str, str],
    param: str,
) -> None:
    account = await make_account()
    meter = await create_meter(http, account.secret_key)
    form = {**_form(meter["id"]), **change}
    response = await http.post(ALERTS, data=form, headers=auth(account.secret_key))
    error = v1_error(response, 400)
    assert error["param"] == param
    assert await _alert_rows(pool, account.account_id) == 0

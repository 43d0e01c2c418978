"""The meters API over real HTTP against a real PostgreSQL: shapes, pagination, every error path."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import pytest

from meterflow.store.accounts import create_key, revoke_key
from tests.conftest import AccountFactory

pytestmark = pytest.mark.integration

METER_KEYS = {
    "id", "object", "created", "customer_mapping", "default_aggregation", "display_name",
    "event_name", "event_time_window", "livemode", "status", "status_transitions", "updated",
    "value_settings",
}  # fmt: skip


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _create(
    http: httpx.AsyncClient, key: str, event_name: str = "alpaca_ai_tokens", **extra: str
) -> dict[str, Any]:
    form = {
        "display_name": "Alpaca AI tokens",
        "event_name": event_name,
        "default_aggregation[formula]": "sum",
        **extra,
    }
    response = await http.post("/v1/billing/meters", data=form, headers=_auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["type"] in ("invalid_request_error", "api_error", "rate_limit_error")
    return error


async def test_create_fills_stripe_defaults_and_exact_shape(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    account = await make_account()
    meter = await _create(http, account.secret_key)
    assert set(meter) == METER_KEYS
    assert meter["object"] == "billing.meter"
    assert meter["id"].startswith("mtr_test_")
    assert meter["customer_mapping"] == {"event_payload_key": "stripe_customer_id", "type": "by_id"}
    assert meter["value_settings"] == {"event_payload_key": "value"}
    assert meter["default_aggregation"] == {"formula": "sum"}
    assert meter["event_time_window"] is None
    assert meter["status"] == "active"
    assert meter["status_transitions"] == {"deactivated_at": None}
    assert meter["livemode"] is False
    assert meter["created"] == meter["updated"]


async def test_create_accepts_json_and_custom_settings(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    account = await make_account()
    response = await http.post(
        "/v1/billing/meters",
        json={
            "display_name": "GB stored",
            "event_name": "gb_stored",
            "default_aggregation": {"formula": "last"},
            "customer_mapping": {"event_payload_key": "customer", "type": "by_id"},
            "value_settings": {"event_payload_key": "gb"},
            "event_time_window": "hour",
        },
        headers=_auth(account.secret_key),
    )
    assert response.status_code == 200, response.text
    meter = response.json()
    assert meter["customer_mapping"]["event_payload_key"] == "customer"
    assert meter["value_settings"] == {"event_payload_key": "gb"}
    assert (meter["event_time_window"], meter["default_aggregation"]["formula"]) == ("hour", "last")


async def test_retrieve_update_deactivate_reactivate(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    meter = await _create(http, key)
    path = f"/v1/billing/meters/{meter['id']}"
    assert (await http.get(path, headers=_auth(key))).json() == meter

    renamed = await http.post(path, data={"display_name": "Tokens"}, headers=_auth(key))
    assert renamed.json()["display_name"] == "Tokens"
    assert (await http.get(path, headers=_auth(key))).json()["display_name"] == "Tokens"

    deactivated = (await http.post(path + "/deactivate", headers=_auth(key))).json()
    assert deactivated["status"] == "inactive"
    assert isinstance(deactivated["status_transitions"]["deactivated_at"], int)
    assert deactivated["updated"] == deactivated["status_transitions"]["deactivated_at"]
    # Deactivating again is an idempotent success that changes nothing.
    again = (await http.post(path + "/deactivate", headers=_auth(key))).json()
    assert again == deactivated

    reactivated = (await http.post(path + "/reactivate", headers=_auth(key))).json()
    assert reactivated["status"] == "active"
    assert reactivated["status_transitions"] == {"deactivated_at": None}


async def test_list_paginates_newest_first_and_filters_by_status(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    ids = [(await _create(http, key, f"event_{i}"))["id"] for i in range(5)]
    await http.post(f"/v1/billing/meters/{ids[1]}/deactivate", headers=_auth(key))
    newest_first = list(reversed(ids))

    first = (await http.get("/v1/billing/meters", params={"limit": 2}, headers=_auth(key))).json()
    assert first["object"] == "list"
    assert first["url"] == "/v1/billing/meters"
    assert [m["id"] for m in first["data"]] == newest_first[:2]
    assert first["has_more"] is True

    params: dict[str, str | int] = {"limit": 2, "starting_after": newest_first[1]}
    second = (await http.get("/v1/billing/meters", params=params, headers=_auth(key))).json()
    assert [m["id"] for m in second["data"]] == newest_first[2:4]
    params = {"limit": 2, "starting_after": newest_first[3]}
    last = (await http.get("/v1/billing/meters", params=params, headers=_auth(key))).json()
    assert ([m["id"] for m in last["data"]], last["has_more"]) == ([newest_first[4]], False)

    params = {"limit": 2, "ending_before": newest_first[4]}
    back = (await http.get("/v1/billing/meters", params=params, headers=_auth(key))).json()
    assert ([m["id"] for m in back["data"]], back["has_more"]) == (newest_first[2:4], True)

    default = (await http.get("/v1/billing/meters", headers=_auth(key))).json()
    assert len(default["data"]) == 5
    inactive = await http.get(
        "/v1/billing/meters", params={"status": "inactive"}, headers=_auth(key)
    )
    assert [m["id"] for m in inactive.json()["data"]] == [ids[1]]
    active = await http.get("/v1/billing/meters", params={"status": "active"}, headers=_auth(key))
    assert ids[1] not in [m["id"] for m in active.json()["data"]]


async def test_accounts_and_modes_are_isolated(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    alice = await make_account("alice")
    bob = await make_account("bob")
    meter = await _create(http, alice.secret_key)
    path = f"/v1/billing/meters/{meter['id']}"

    for method, url in (
        ("GET", path),
        ("POST", path),
        ("POST", path + "/deactivate"),
        ("POST", path + "/reactivate"),
    ):
        response = await http.request(method, url, headers=_auth(bob.secret_key))
        assert _error(response, 404)["code"] == "resource_missing"
    listed = await http.get("/v1/billing/meters", headers=_auth(bob.secret_key))
    assert listed.json()["data"] == []
    # Bob may use the same event name in his own account.
    await _create(http, bob.secret_key)
    # Alice's meter is untouched by Bob's attempts.
    assert (await http.get(path, headers=_auth(alice.secret_key))).json() == meter

    conn = await asyncpg.connect(database_url)
    try:
        live_key = await create_key(conn, alice.account_id, livemode=True)
    finally:
        await conn.close()
    assert _error(await http.get(path, headers=_auth(live_key)), 404)["code"] == "resource_missing"
    live_meter = await _create(http, live_key)  # same event name, other mode
    assert live_meter["livemode"] is True
    assert not live_meter["id"].startswith("mtr_test_")
    test_list = await http.get("/v1/billing/meters", headers=_auth(alice.secret_key))
    assert [m["id"] for m in test_list.json()["data"]] == [meter["id"]]


async def test_authentication(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str
) -> None:
    account = await make_account()
    assert _error(await http.get("/v1/billing/meters"), 401)["type"] == "invalid_request_error"
    unknown = "sk_test_" + "a" * 48
    error = _error(await http.get("/v1/billing/meters", headers=_auth(unknown)), 401)
    assert unknown not in error["message"]
    for header in ("Bearer pk_test_123", "Token abc", "Basic ###"):
        response = await http.get("/v1/billing/meters", headers={"Authorization": header})
        _error(response, 401)
    basic = await http.get("/v1/billing/meters", auth=(account.secret_key, ""))
    assert basic.status_code == 200

    conn = await asyncpg.connect(database_url)
    try:
        assert await revoke_key(conn, account.secret_key)
    finally:
        await conn.close()
    # The auth cache TTL is 0.5 s in tests: the revoked key must stop working within it.
    deadline = time.monotonic() + 5.0
    while (
        await http.get("/v1/billing/meters", headers=_auth(account.secret_key))
    ).status_code != 401:
        assert time.monotonic() < deadline, "revoked key still accepted"
        await asyncio.sleep(0.05)


async def _meter_count(http: httpx.AsyncClient, key: str) -> int:
    response = await http.get("/v1/billing/meters", params={"limit": 100}, headers=_auth(key))
    return len(response.json()["data"])


@pytest.mark.parametrize(
    ("form", "code", "param"),
    [
        ({"display_name": "x"}, "parameter_missing", "default_aggregation"),
        ({"default_aggregation[formula]": "sum", "display_name": "x"}, "parameter_missing",
         "event_name"),
        ({"default_aggregation[formula]": "max", "display_name": "x", "event_name": "e"},
         "parameter_invalid", "default_aggregation[formula]"),
        ({"default_aggregation[formula]": "sum", "display_name": "x" * 251, "event_name": "e"},
         "string_too_long", "display_name"),
        ({"default_aggregation[formula]": "sum", "display_name": "x", "event_name": "e" * 101},
         "string_too_long", "event_name"),
        ({"default_aggregation[formula]": "sum", "display_name": "", "event_name": "e"},
         "parameter_invalid_empty", "display_name"),
        ({"default_aggregation[formula]": "sum", "display_name": "x", "event_name": "e",
          "unknown_thing": "1"}, "parameter_unknown", "unknown_thing"),
        ({"default_aggregation[formula]": "sum", "display_name": "x", "event_name": "e",
          "event_time_window": "minute"}, "parameter_invalid", "event_time_window"),
        ({"default_aggregation[formula]": "sum", "display_name": "x", "event_name": "e",
          "customer_mapping[type]": "by_id"}, "parameter_missing",
         "customer_mapping[event_payload_key]"),
        ({"default_aggregation[formula]": "sum", "display_name": "x", "event_name": "e",
          "expand[]": "customer"}, "parameter_invalid", "expand"),
    ],
)  # fmt: skip
async def test_create_rejects_bad_input_and_changes_nothing(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    form: dict[str, str],
    code: str,
    param: str,
) -> None:
    key = (await make_account()).secret_key
    response = await http.post("/v1/billing/meters", data=form, headers=_auth(key))
    error = _error(response, 400)
    assert (error["code"], error["param"]) == (code, param)
    assert await _meter_count(http, key) == 0


async def test_wrong_types_malformed_bodies_and_sizes(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    headers = _auth(key)
    url = "/v1/billing/meters"
    wrong_type = await http.post(
        url,
        json={"display_name": 5, "event_name": "e", "default_aggregation": {"formula": "sum"}},
        headers=headers,
    )
    assert _error(wrong_type, 400)["param"] == "display_name"
    not_an_object = await http.post(
        url,
        json={"display_name": "x", "event_name": "e", "default_aggregation": "sum"},
        headers=headers,
    )
    assert _error(not_an_object, 400)["param"] == "default_aggregation"
    malformed = await http.post(
        url, content=b"{not json", headers={**headers, "Content-Type": "application/json"}
    )
    _error(malformed, 400)
    json_array = await http.post(
        url, content=b"[]", headers={**headers, "Content-Type": "application/json"}
    )
    _error(json_array, 400)
    xml = await http.post(url, content=b"<a/>", headers={**headers, "Content-Type": "text/xml"})
    _error(xml, 415)
    duplicate = await http.post(
        url,
        content=b"display_name=a&display_name=b",
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert _error(duplicate, 400)["param"] == "display_name"
    huge = await http.post(url, content=b"display_name=" + b"x" * 2_000_000, headers=headers)
    _error(huge, 413)
    not_utf8 = await http.post(
        url,
        content=b"display_name=\xff\xfe",
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    _error(not_utf8, 400)
    assert await _meter_count(http, key) == 0


async def test_routes_methods_ids_and_list_parameters(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    headers = _auth(key)
    meter = await _create(http, key)
    assert _error(await http.get("/v1/nothing", headers=headers), 404)["message"].startswith(
        "Unrecognized request URL"
    )
    # A known path with a method it does not serve is an unknown URL, as with Stripe (not 405).
    wrong_method = await http.delete(f"/v1/billing/meters/{meter['id']}", headers=headers)
    assert _error(wrong_method, 404)["message"] == (
        f"Unrecognized request URL (DELETE: /v1/billing/meters/{meter['id']})."
    )
    assert "allow" not in wrong_method.headers
    missing = await http.get("/v1/billing/meters/mtr_test_nope", headers=headers)
    assert (_error(missing, 404)["code"], _error(missing, 404)["param"]) == (
        "resource_missing",
        "id",
    )
    for params, status, param in (
        ({"limit": "0"}, 400, "limit"),
        ({"limit": "101"}, 400, "limit"),
        ({"limit": "ten"}, 400, "limit"),
        ({"status": "archived"}, 400, "status"),
        ({"starting_after": meter["id"], "ending_before": meter["id"]}, 400, "ending_before"),
        ({"starting_after": "mtr_test_unknown"}, 404, "starting_after"),
        ({"colour": "red"}, 400, "colour"),
    ):
        response = await http.get("/v1/billing/meters", params=params, headers=headers)
        assert _error(response, status)["param"] == param, params

    duplicate = await http.post(
        "/v1/billing/meters",
        data={
            "display_name": "again",
            "event_name": meter["event_name"],
            "default_aggregation[formula]": "count",
        },
        headers=headers,
    )
    assert _error(duplicate, 400)["code"] == "resource_already_exists"
    immutable = await http.post(
        f"/v1/billing/meters/{meter['id']}", data={"event_name": "other"}, headers=headers
    )
    assert _error(immutable, 400)["param"] == "event_name"
    assert (await http.get(f"/v1/billing/meters/{meter['id']}", headers=headers)).json() == meter
    assert await _meter_count(http, key) == 1


async def test_operational_endpoints_and_metrics(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    key = (await make_account()).secret_key
    await _create(http, key)
    await http.get("/v1/billing/meters/mtr_test_nope", headers=_auth(key))
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).json() == {"status": "ready"}
    metrics = (await http.get("/metrics")).text
    assert (
        'meterflow_http_requests_total{method="POST",route="/v1/billing/meters",status="200"} 1.0'
        in metrics
    )
    assert 'route="/v1/billing/meters/{id}",status="404"' in metrics
    assert "meterflow_http_request_duration_seconds_bucket" in metrics
    assert 'meterflow_db_pool_connections{state="max"} 4.0' in metrics
    # The 500 counter exists but no route ever incremented it.
    assert "# TYPE meterflow_http_server_errors_total counter" in metrics
    assert not [line for line in metrics.splitlines() if line.startswith("meterflow_http_server_")]

"""``/v1/webhook_endpoints`` over real HTTP and through the Stripe Python SDK, and the delivery log
(``/v1/webhook_endpoints/:id/deliveries``) after real deliveries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import stripe
from prometheus_client import CollectorRegistry

from aggregator.webhooks.worker import WebhookDeliveryWorker
from meterflow.settings import Settings
from tests.conftest import AccountFactory
from tests.fixtures.error_reports import create_events, meter_event
from tests.fixtures.meter_events import wait_until
from tests.fixtures.meter_events_http import auth, v1_error
from tests.fixtures.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

ENDPOINT_KEYS = {
    "id",
    "object",
    "api_version",
    "application",
    "created",
    "description",
    "enabled_events",
    "livemode",
    "metadata",
    "status",
    "url",
}
BASE = "/v1/webhook_endpoints"
THIN_TYPE = "v1.billing.meter.error_report_triggered"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    yield pool
    await pool.close()


async def _create(http: httpx.AsyncClient, key: str, url: str, **extra: str) -> dict[str, Any]:
    form = {"url": url, "enabled_events[]": "*", **extra}
    response = await http.post(BASE, data=form, headers=auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_create_retrieve_update_list_delete(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    account = await make_account()
    key = account.secret_key
    created = await _create(http, key, "http://127.0.0.1:9000/hooks", description="local")
    assert set(created) == ENDPOINT_KEYS | {"secret"}
    assert created["object"] == "webhook_endpoint"
    assert created["id"].startswith("we_")
    assert created["secret"].startswith("whsec_")
    assert (created["status"], created["enabled_events"], created["description"]) == (
        "enabled",
        ["*"],
        "local",
    )
    assert abs(created["created"] - time.time()) < 60

    path = f"{BASE}/{created['id']}"
    retrieved = (await http.get(path, headers=auth(key))).json()
    assert set(retrieved) == ENDPOINT_KEYS
    assert retrieved == {k: v for k, v in created.items() if k != "secret"}

    updated = await http.post(
        path,
        json={
            "url": "https://hooks.example.com/stripe",
            "enabled_events": ["v1.billing.meter.no_meter_found"],
            "disabled": True,
            "description": "",
            "metadata": {"team": "billing"},
        },
        headers=auth(key),
    )
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert (body["url"], body["enabled_events"], body["status"], body["description"]) == (
        "https://hooks.example.com/stripe",
        ["v1.billing.meter.no_meter_found"],
        "disabled",
        None,
    )
    assert body["metadata"] == {"team": "billing"}
    enabled = (await http.post(path, data={"disabled": "false"}, headers=auth(key))).json()
    assert enabled["status"] == "enabled"
    assert enabled["metadata"] == {"team": "billing"}

    second = await _create(http, key, "http://127.0.0.1:9001/hooks")
    listed = (await http.get(BASE, params={"limit": 1}, headers=auth(key))).json()
    assert (listed["object"], listed["url"], listed["has_more"]) == ("list", BASE, True)
    assert [e["id"] for e in listed["data"]] == [second["id"]]
    rest = await http.get(BASE, params={"starting_after": second["id"]}, headers=auth(key))
    assert [e["id"] for e in rest.json()["data"]] == [created["id"]]

    deleted = await http.delete(path, headers=auth(key))
    assert deleted.json() == {"id": created["id"], "object": "webhook_endpoint", "deleted": True}
    assert v1_error(await http.get(path, headers=auth(key)), 404)["code"] == "resource_missing"
    assert v1_error(await http.delete(path, headers=auth(key)), 404)["code"] == "resource_missing"


async def test_bad_parameters_and_other_accounts(
    http: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    account = await make_account()
    stranger = await make_account("stranger")
    key = account.secret_key
    cases: list[tuple[dict[str, str], str]] = [
        ({"enabled_events[]": "*"}, "url"),
        ({"url": "ftp://example.com/x", "enabled_events[]": "*"}, "url"),
        ({"url": "http://127.0.0.1/x"}, "enabled_events"),
        (
            {"url": "http://127.0.0.1/x", "enabled_events[]": "charge.succeeded"},
            "enabled_events[0]",
        ),
        ({"url": "http://127.0.0.1/x", "enabled_events[]": "*", "connect": "true"}, "connect"),
    ]
    for form, param in cases:
        error = v1_error(await http.post(BASE, data=form, headers=auth(key)), 400)
        assert error["param"] == param, (form, error)
    created = await _create(http, key, "http://127.0.0.1:9000/hooks")
    path = f"{BASE}/{created['id']}"
    for response in (
        await http.get(path, headers=auth(stranger.secret_key)),
        await http.post(path, data={"disabled": "true"}, headers=auth(stranger.secret_key)),
        await http.delete(path, headers=auth(stranger.secret_key)),
        await http.get(f"{path}/deliveries", headers=auth(stranger.secret_key)),
    ):
        assert v1_error(response, 404)["code"] == "resource_missing"
    assert (await http.get(BASE, headers=auth(stranger.secret_key))).json()["data"] == []
    error = v1_error(await http.post(path, data={"disabled": "maybe"}, headers=auth(key)), 400)
    assert error["param"] == "disabled"


async def test_the_python_sdk_manages_endpoints(
    ingest_url: str, make_account: AccountFactory
) -> None:
    account = await make_account()
    found = await asyncio.to_thread(_use_sdk, account.secret_key, ingest_url)
    assert found["created"][0].startswith("we_")
    assert found["created"][1].startswith("whsec_")
    assert found["retrieved_secret"] is None
    assert found["updated"] == ("disabled", ["v1.billing.meter.error_report_triggered"])
    assert found["listed"] == [found["created"][0]]
    assert found["deleted"] is True


def _use_sdk(key: str, base_url: str) -> dict[str, Any]:
    client = stripe.StripeClient(key, base_addresses={"api": base_url}, max_network_retries=0)
    found: dict[str, Any] = {}
    endpoint = client.v1.webhook_endpoints.create(
        {"url": "http://127.0.0.1:9000/hooks", "enabled_events": ["*"]}
    )
    found["created"] = (endpoint.id, endpoint.secret)
    retrieved = client.v1.webhook_endpoints.retrieve(endpoint.id)
    found["retrieved_secret"] = retrieved.to_dict().get("secret")
    updated = client.v1.webhook_endpoints.update(
        endpoint.id,
        # The SDK's enum names v1 snapshot events only; meterflow's endpoints take thin ones too.
        {"disabled": True, "enabled_events": [THIN_TYPE]},  # type: ignore[arg-type]
    )
    found["updated"] = (updated.status, updated.enabled_events)
    found["listed"] = [e.id for e in client.v1.webhook_endpoints.list().auto_paging_iter()]
    found["deleted"] = client.v1.webhook_endpoints.delete(endpoint.id).deleted
    return found


async def test_the_delivery_log_shows_every_attempt(
    http: httpx.AsyncClient,
    pool: asyncpg.Pool,
    make_account: AccountFactory,
    ingest_settings: Settings,
) -> None:
    account = await make_account()
    settings = ingest_settings.with_overrides(webhook_backoff_base_s=0.1, webhook_max_attempts=3)
    async with WebhookReceiver([503]) as hook:
        endpoint = await _create(http, account.secret_key, hook.url)
        events = await create_events(
            pool, [meter_event(account.account_id, "mtr_a", int(time.time() * 1000))]
        )
        worker = WebhookDeliveryWorker(settings, pool, CollectorRegistry(), poll_interval_s=0.05)
        task = asyncio.create_task(worker.run())
        path = f"{BASE}/{endpoint['id']}/deliveries"

        async def succeeded() -> bool:
            response = await http.get(path, headers=auth(account.secret_key))
            return [d["status"] for d in response.json()["data"]] == ["succeeded"]

        try:
            await wait_until(succeeded, 15, "the delivery to succeed")
        finally:
            worker.request_stop()
            await asyncio.wait_for(task, 10)
    log = (await http.get(path, headers=auth(account.secret_key))).json()
    assert (log["object"], log["has_more"], log["url"]) == ("list", False, path)
    (delivery,) = log["data"]
    assert delivery["id"].startswith("whdel_")
    assert (delivery["object"], delivery["webhook_endpoint"], delivery["event"]) == (
        "webhook_delivery",
        endpoint["id"],
        events[0].id,
    )
    assert (delivery["status"], delivery["attempt_count"], delivery["next_attempt_at"]) == (
        "succeeded",
        2,
        None,
    )
    assert [(a["attempt"], a["status_code"], a["error"]) for a in delivery["attempts"]] == [
        (1, 503, "HTTP 503"),
        (2, 200, None),
    ]
    assert all(a["duration_ms"] >= 0 for a in delivery["attempts"])

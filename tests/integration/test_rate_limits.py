"""Rate limits over real HTTP: every endpoint counts against a per-account limit, failed
authentications block the client's address (before any key lookup), the operational endpoints
stay open, and each 429 is counted by endpoint class and reason. Loopback only: the blocked and
the bystander clients connect from 127.0.0.2 and 127.0.0.3."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from deploy.ports import free_port
from ingest.app import IngestApp
from ingest.edge.routing import Route
from meterflow.settings import Settings
from tests.conftest import AccountFactory
from tests.fixtures.hostile_http import metric_samples
from tests.fixtures.ingest_server import running_ingest
from tests.fixtures.meter_events_http import EVENT_NAME, auth, create_meter, mark_processed

pytestmark = pytest.mark.integration

OPERATIONAL = {"/healthz", "/readyz", "/metrics"}
METER_EVENTS = {"/v1/billing/meter_events", "/v2/billing/meter_events"}
STREAM = "/v2/billing/meter_event_stream"
SESSION = "/v2/billing/meter_event_session"
_PARAMETER = re.compile(r"\{\w+\}")


async def _served_routes(settings: Settings) -> list[Route]:
    app = IngestApp(settings, CollectorRegistry())
    await app.startup()
    try:
        return app.routes
    finally:
        await app.shutdown()


def _limited(settings: Settings, **changes: Any) -> Iterator[str]:
    with running_ingest(settings.with_overrides(http_port=free_port(), **changes)) as url:
        yield url


@pytest.fixture
def api_limited(ingest_settings: Settings) -> Iterator[str]:
    yield from _limited(ingest_settings, rate_limit_api_test_per_s=2, rate_limit_api_live_per_s=6)


@pytest.fixture
def default_limits(ingest_settings: Settings) -> Iterator[str]:
    defaults = Settings().ingest
    yield from _limited(
        ingest_settings,
        rate_limit_api_test_per_s=defaults.rate_limit_api_test_per_s,
        rate_limit_api_live_per_s=defaults.rate_limit_api_live_per_s,
        rate_limit_auth_failures=defaults.rate_limit_auth_failures,
    )


@pytest.fixture
def auth_limited(ingest_settings: Settings) -> Iterator[str]:
    yield from _limited(
        ingest_settings,
        rate_limit_auth_failures=5,
        rate_limit_auth_failures_window_s=10.0,
        rate_limit_auth_block_s=1.0,
    )


@pytest.fixture
async def client_from(auth_limited: str) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """Clients of ``auth_limited`` connecting from two loopback addresses, not 127.0.0.1."""
    clients = {
        address: httpx.AsyncClient(
            base_url=auth_limited,
            transport=httpx.AsyncHTTPTransport(local_address=address),
            timeout=10.0,
        )
        for address in ("127.0.0.2", "127.0.0.3")
    }
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.aclose()


def _assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit"), error
    assert error["message"]
    assert int(response.headers["retry-after"]) >= 1


def _refused(metrics_text: str, endpoint_class: str, reason: str) -> float:
    samples = metric_samples(metrics_text, "meterflow_rate_limited_total")
    wanted = {"endpoint_class": endpoint_class, "reason": reason}
    return sum(value for labels, value in samples if labels == wanted)


def _counter(metrics_text: str, name: str) -> float:
    return sum(value for _, value in metric_samples(metrics_text, name))


async def _send(
    http: httpx.AsyncClient, route: Route, key: str, times: int
) -> list[httpx.Response]:
    """``times`` requests at once to ``route``, its path parameters filled with an unknown id."""
    path = _PARAMETER.sub("nope_1", route.template)
    return await asyncio.gather(
        *(http.request(route.method, path, headers=auth(key)) for _ in range(times))
    )


async def test_every_route_counts_against_a_limit_and_only_operational_ones_are_exempt(
    ingest_settings: Settings,
) -> None:
    routes = await _served_routes(ingest_settings)
    by_class: dict[str, set[str]] = {}
    for route in routes:
        by_class.setdefault(route.limit_class, set()).add(route.template)
    assert by_class.pop("operational") == OPERATIONAL
    assert by_class.pop("meter_events") == METER_EVENTS
    assert by_class.pop("stream") == {STREAM}
    assert set(by_class) == {"api"}
    assert {"/v1/billing/meter_event_adjustments", "/v2/billing/meter_event_adjustments"} | {
        SESSION,
        "/v1/billing/meters",
        "/v1/billing/meters/{id}/event_summaries",
    } <= by_class["api"]


async def test_every_api_endpoint_answers_429_past_its_accounts_limit(
    ingest_settings: Settings, api_limited: str, make_account: AccountFactory
) -> None:
    routes = [r for r in await _served_routes(ingest_settings) if r.limit_class == "api"]
    refused = 0
    async with httpx.AsyncClient(base_url=api_limited, timeout=10.0) as http:
        for route in (r for r in routes if r.authenticated):
            key = (await make_account()).secret_key
            # A fresh account's bucket holds one second's worth (2 in test mode): both pass.
            assert all(r.status_code != 429 for r in await _send(http, route, key, 2)), route
            over = [r for r in await _send(http, route, key, 4) if r.status_code == 429]
            assert over, f"{route.method} {route.template} is not limited"
            for response in over:
                _assert_rate_limited(response)
            refused += len(over)
        live = (await make_account(livemode=True)).secret_key
        answers = await asyncio.gather(
            *(http.get("/v1/billing/meters", headers=auth(live)) for _ in range(6))
        )
        assert [r.status_code for r in answers] == [200] * 6  # live mode: 6 per second
        metrics = (await http.get("/metrics")).text
    assert _refused(metrics, "api", "account") == refused


async def test_a_burst_of_cancels_is_held_to_the_default_test_mode_limit(
    default_limits: str, make_account: AccountFactory, database_url: str
) -> None:
    account = await make_account()
    async with httpx.AsyncClient(base_url=default_limits, timeout=10.0) as http:
        meter = await create_meter(http, account.secret_key)  # takes 1 of the 25
        await mark_processed(database_url, account.account_id, "evt_1", meter["id"])
        body = {"event_name": EVENT_NAME, "type": "cancel", "cancel": {"identifier": "evt_1"}}
        started = time.monotonic()
        answers = await asyncio.gather(
            *(
                http.post(
                    "/v2/billing/meter_event_adjustments",
                    json=body,
                    headers=auth(account.secret_key),
                )
                for _ in range(100)
            )
        )
        elapsed_s = time.monotonic() - started
        metrics = (await http.get("/metrics")).text
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {200, 429}, statuses
    # 24 left in the bucket, plus 25 per second while the burst lasted.
    assert 24 <= statuses.count(200) <= 24 + 25 * elapsed_s + 1, (statuses, elapsed_s)
    for response in answers:
        if response.status_code == 429:
            _assert_rate_limited(response)
    assert _refused(metrics, "api", "account") == statuses.count(429)


async def test_failed_authentications_block_the_address_until_the_block_ends(
    make_account: AccountFactory, client_from: dict[str, httpx.AsyncClient]
) -> None:
    account = await make_account()
    guesser, bystander = client_from["127.0.0.2"], client_from["127.0.0.3"]
    meters = "/v1/billing/meters"
    meter = await create_meter(bystander, account.secret_key)
    wrong = auth("sk_test_" + "x" * 24)

    for _ in range(5):  # the limit: 5 failures within 10 s
        assert (await guesser.get(meters, headers=wrong)).status_code == 401
    _assert_rate_limited(await guesser.get(meters, headers=wrong))
    # Blocked before the key is looked up: a valid key gets 429 too, on every kind of endpoint.
    _assert_rate_limited(await guesser.get(meters, headers=auth(account.secret_key)))
    _assert_rate_limited(await guesser.post(STREAM, json={"events": []}, headers=wrong))
    blocked = await guesser.post("/v2/billing/meter_events", json={}, headers=wrong)
    _assert_rate_limited(blocked)
    assert set(blocked.json()["error"]) == {"type", "code", "message"}  # v2's error shape
    for path in sorted(OPERATIONAL):
        assert (await guesser.get(path)).status_code == 200, path
    # Other addresses are not affected.
    assert (await bystander.get(meters, headers=auth(account.secret_key))).status_code == 200
    assert (await bystander.get(meters, headers=wrong)).status_code == 401

    last = await guesser.get(meters, headers=auth(account.secret_key))
    _assert_rate_limited(last)
    await asyncio.sleep(int(last.headers["retry-after"]))
    after = await guesser.get(f"{meters}/{meter['id']}", headers=auth(account.secret_key))
    assert after.status_code == 200, after.text
    assert after.json()["id"] == meter["id"]
    assert (await guesser.get(meters, headers=wrong)).status_code == 401  # counting afresh

    metrics = (await bystander.get("/metrics")).text
    assert _counter(metrics, "meterflow_auth_failures_total") == 5 + 1 + 1  # none while blocked
    assert _refused(metrics, "api", "address") == 3
    assert _refused(metrics, "stream", "address") == 1
    assert _refused(metrics, "meter_events", "address") == 1


async def test_revoked_session_tokens_do_not_block_the_address(
    make_account: AccountFactory, client_from: dict[str, httpx.AsyncClient]
) -> None:
    account = await make_account()
    client = client_from["127.0.0.2"]
    created = await client.post(SESSION, json={}, headers=auth(account.secret_key))
    assert created.status_code == 200, created.text
    token = created.json()["authentication_token"]
    revoked = await client.post(f"{SESSION}/revoke", json={}, headers=auth(account.secret_key))
    assert revoked.status_code == 200, revoked.text
    for _ in range(10):  # twice the failure limit
        answer = await client.post(STREAM, json={"events": []}, headers=auth(token))
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "billing_meter_event_session_expired"
    listed = await client.get("/v1/billing/meters", headers=auth(account.secret_key))
    assert listed.status_code == 200, listed.text
